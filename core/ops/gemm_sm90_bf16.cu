// The Hopper skinny product for bf16 (gemm_sm90.cuh).
#include "core/ops/gemm_sm90.cuh"

namespace mmattn {
void skinny_run_bf16(const GemmParams& p, StreamHandle s) { skinny::run<__nv_bfloat16>(p, s); }
}  // namespace mmattn
