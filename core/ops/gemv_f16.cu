// gemv kernels for __half (see gemv_cuda.cuh).
#include "core/ops/gemv_cuda.cuh"

namespace mmattn {

void gemv_run_f16(const GemvParams& p, StreamHandle s) {
  gemv_detail::run<__half>(gemv_detail::args_of(p), p.input, s);
}

}  // namespace mmattn
