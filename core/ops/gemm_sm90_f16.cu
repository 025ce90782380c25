// The Hopper skinny product for f16 (gemm_sm90.cuh).
#include "core/ops/gemm_sm90.cuh"

namespace mmattn {
void skinny_run_f16(const GemmParams& p, StreamHandle s) { skinny::run<__half>(p, s); }
}  // namespace mmattn
