// gemv kernels for __half (see gemv_cuda.cuh).
#include "core/ops/gemv_cuda.cuh"

namespace mmattn {

void gemv_run_f16(const GemvParams& p, StreamHandle s) {
  gemv_detail::Args a{p.x, p.weight, p.bias, p.norm_weight, p.y, int(p.m), int(p.n), int(p.k), int(p.x_stride),
                      p.eps, p.accumulate, 1, p.weight_static};
  gemv_detail::run<__half>(a, p.input, s);
}

}  // namespace mmattn
