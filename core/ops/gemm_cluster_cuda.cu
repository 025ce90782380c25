// Host side of the cluster product (kernel: gemm_cluster_cuda.cuh, instantiated per dtype in
// gemm_cluster_bf16.cu / gemm_cluster_f16.cu).
#include <atomic>
#include <cstdint>
#include <cstdlib>

#include "core/ops/gemm_cluster_cuda.cuh"

namespace mmattn {

void cluster_gemm_run_bf16(const cluster_gemm::Args& a, int split, int kind, StreamHandle s);
void cluster_gemm_run_f16(const cluster_gemm::Args& a, int split, int kind, StreamHandle s);
bool cluster_gemm_built_bf16();
bool cluster_gemm_built_f16();

namespace {
// MMATTN_CLUSTER_GEMM=1 every product it takes, =0 none, unset: the long-k ones (bench/NOTES.md,
// sessions 13 and 18)
std::atomic<int> g_route{[] {
  const char* e = std::getenv("MMATTN_CLUSTER_GEMM");
  return e && e[0] == '1' ? kClusterGemmAll : e && e[0] == '0' ? kClusterGemmNone : kClusterGemmLongK;
}()};
// which kernel (gemm_cluster_cuda.cuh run()): MMATTN_CLUSTER_KERNEL=1 the ring kernel, 2 the streaming
// kernel where the build and device have it (else the ring kernel), unset / 0 the same (A/B in dev_step)
const int g_kind = [] {
  const char* e = std::getenv("MMATTN_CLUSTER_KERNEL");
  const int v = e ? std::atoi(e) : 0;
  return v == 1 || v == 2 ? v : 0;
}();
}  // namespace

void set_cluster_gemm_route(int route) {
  MMATTN_CHECK(route >= kClusterGemmNone && route <= kClusterGemmLongK, ConfigError, "set_cluster_gemm_route: route ",
               route, " is not kClusterGemmNone, kClusterGemmAll or kClusterGemmLongK");
  g_route = route;
}
int cluster_gemm_route() { return g_route; }

bool cluster_gemm_routes(const GemmParams& p) {
  if (p.m <= kGemvMaxRows || p.m > kClusterGemmMaxRows) return false;
  const int route = g_route;
  if (route == kClusterGemmNone) return false;
  if (route == kClusterGemmLongK && (p.k < kClusterGemmLongKMin || !cluster_gemm_streaming_available())) return false;
  return cluster_gemm_supported(p);
}
bool cluster_gemm_streaming_available() { return sm90::kernels_available(); }

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

namespace {

// Checks split and kind, then runs Args a of dtype dt (the entry points' shared tail).
void run_args(const cluster_gemm::Args& a, DType dt, int split, int kind, StreamHandle s, const char* fn) {
  MMATTN_CHECK(split >= 0 && split <= cluster_gemm::kMaxSplit, UnsupportedError, fn, ": split ", split, " outside 0..",
               cluster_gemm::kMaxSplit);
  MMATTN_CHECK(kind >= -1 && kind <= 2 && (kind != 2 || cluster_gemm_streaming_available()), UnsupportedError, fn,
               ": kernel ", kind, " unavailable");
  if (kind < 0) kind = g_kind;
  if (dt == DType::BF16)
    cluster_gemm_run_bf16(a, split, kind, s);
  else
    cluster_gemm_run_f16(a, split, kind, s);
}

}  // namespace

void cluster_gemm_cuda(const GemmParams& p, StreamHandle s, int split, int kind) {
  MMATTN_CHECK(cluster_gemm_supported(p), UnsupportedError, "cluster_gemm_cuda: unsupported problem m=", p.m,
               " n=", p.n, " k=", p.k, " dtype ", dtype_name(p.dtype), " (check cluster_gemm_supported first)");
  const cluster_gemm::Args a{p.a, p.b, p.bias, p.c, int(p.m), int(p.n), int(p.k), p.accumulate, p.b_static, 0, 0};
  run_args(a, p.dtype, split, kind, s, "cluster_gemm_cuda");
}

void cluster_qkv_rope_cuda(const GemmParams& p, const QkvRopeOutputs& o, StreamHandle s, int split, int kind) {
  GemmParams q = p;
  q.c = o.out[0];  // (for the support check's alignment only; the outputs are o's)
  MMATTN_CHECK(cluster_gemm_supported(q) && !p.accumulate, UnsupportedError, "cluster_qkv_rope_cuda: unsupported problem m=",
               p.m, " n=", p.n, " k=", p.k);
  MMATTN_CHECK(o.head_dim >= 8 && o.head_dim % 8 == 0 && cluster_gemm::kRows % o.head_dim == 0 && o.cos && o.sin &&
                   o.q_cols % o.head_dim == 0 && o.k_cols % o.head_dim == 0 && p.n % o.head_dim == 0,
               UnsupportedError, "cluster_qkv_rope_cuda: head_dim ", o.head_dim, " with sections ", o.q_cols, " / ",
               o.k_cols, " of ", p.n);
  cluster_gemm::Args a{p.a, p.b, p.bias, o.out[0], int(p.m), int(p.n), int(p.k), false, p.b_static, 0, 0};
  a.rope_cos = o.cos, a.rope_sin = o.sin;
  for (int i = 0; i < 3; ++i) a.ys[i] = o.out[i], a.lds[i] = o.ld[i];
  a.sec1 = int(o.q_cols), a.sec2 = int(o.q_cols + o.k_cols), a.head_dim = int(o.head_dim);
  run_args(a, p.dtype, split, kind, s, "cluster_qkv_rope_cuda");
}

}  // namespace mmattn
