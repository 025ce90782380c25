// Cluster products for __nv_bfloat16 (see gemm_cluster_cuda.cuh).
#include "core/ops/gemm_cluster_cuda.cuh"

namespace mmattn {

void cluster_gemm_run_bf16(const cluster_gemm::Args& a, int split, int kind, StreamHandle s) {
  cluster_gemm::run<__nv_bfloat16>(a, split, kind, s);
}
bool cluster_gemm_built_bf16() { return cluster_gemm::built<__nv_bfloat16>(); }

}  // namespace mmattn
