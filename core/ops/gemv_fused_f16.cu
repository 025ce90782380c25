// gemv kernels with paired outputs (SwiGLU, q/k/v + RoPE) for __half (see gemv_cuda.cuh).
#include "core/ops/gemv_cuda.cuh"

namespace mmattn {

void gemv_run_paired_f16(const GemvParams& p, StreamHandle s) {
  gemv_detail::run_paired<__half>(gemv_detail::args_of(p), p.input, p.output, s);
}

}  // namespace mmattn
