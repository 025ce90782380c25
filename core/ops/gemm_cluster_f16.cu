// Cluster products for __half (see gemm_cluster_cuda.cuh).
#include "core/ops/gemm_cluster_cuda.cuh"

namespace mmattn {

void cluster_gemm_run_f16(const cluster_gemm::Args& a, int split, int kind, StreamHandle s) {
  cluster_gemm::run<__half>(a, split, kind, s);
}
bool cluster_gemm_built_f16() { return cluster_gemm::built<__half>(); }

}  // namespace mmattn
