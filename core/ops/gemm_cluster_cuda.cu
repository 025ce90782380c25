// Host side of the cluster product (kernel: gemm_cluster_cuda.cuh, instantiated per dtype in
// gemm_cluster_bf16.cu / gemm_cluster_f16.cu).
#include <atomic>
#include <cstdint>
#include <cstdlib>

#include "core/ops/gemm_cluster_cuda.cuh"

namespace mmattn {

void cluster_gemm_run_bf16(const cluster_gemm::Args& a, int split, StreamHandle s);
void cluster_gemm_run_f16(const cluster_gemm::Args& a, int split, StreamHandle s);
bool cluster_gemm_built_bf16();
bool cluster_gemm_built_f16();

namespace {
// off unless MMATTN_CLUSTER_GEMM=1: measured slower than cuBLASLt (bench/NOTES.md, session 13)
std::atomic<bool> g_enabled{[] {
  const char* e = std::getenv("MMATTN_CLUSTER_GEMM");
  return e && e[0] == '1';
}()};
}  // namespace

void set_cluster_gemm_enabled(bool on) { g_enabled = on; }
bool cluster_gemm_enabled() { return g_enabled; }

bool cluster_gemm_supported(const GemmParams& p) {
  if (p.dtype != DType::BF16 && p.dtype != DType::F16) return false;
  if (p.batch != 1 || !p.trans_b || p.f32_out || p.c_in || p.allow_tf32) return false;
  if (p.m < 1 || p.m > kClusterGemmMaxRows || p.n < 1 || p.k < 8 || p.k % 8 != 0) return false;
  // (a block's weight-row offsets, 128 rows of k, are 32-bit)
  if (p.n > INT32_MAX / 2 || p.k > INT32_MAX / 128 || p.m * p.k > INT32_MAX || p.m * p.n > INT32_MAX) return false;
  if (!p.a || !p.b || !p.c || !aligned16(p.a) || !aligned16(p.b) || reinterpret_cast<uintptr_t>(p.c) % 8 != 0)
    return false;
  return p.dtype == DType::BF16 ? cluster_gemm_built_bf16() : cluster_gemm_built_f16();
}

void cluster_gemm_cuda(const GemmParams& p, StreamHandle s, int split) {
  MMATTN_CHECK(cluster_gemm_supported(p), UnsupportedError, "cluster_gemm_cuda: unsupported problem m=", p.m,
               " n=", p.n, " k=", p.k, " dtype ", dtype_name(p.dtype), " (check cluster_gemm_supported first)");
  MMATTN_CHECK(split >= 0 && split <= cluster_gemm::kMaxSplit, UnsupportedError, "cluster_gemm_cuda: split ", split,
               " outside 0..", cluster_gemm::kMaxSplit);
  cluster_gemm::Args a{p.a, p.b, p.bias, p.c, int(p.m), int(p.n), int(p.k), p.accumulate, p.b_static, 0, 0};
  if (p.dtype == DType::BF16)
    cluster_gemm_run_bf16(a, split, s);
  else
    cluster_gemm_run_f16(a, split, s);
}

}  // namespace mmattn
