// CUDA GEMM through cuBLASLt. Row-major C [m, n] = A [m, k] @ op(B) is computed as the column-major
// product C^T [n, m] = op(B)^T [n, k] @ A^T [k, m]: the row-major buffers, read column-major, are
// already the transposes, so nothing is copied. The bias (length n = rows of C^T) goes through
// CUBLASLT_EPILOGUE_BIAS, added in f32 before the single rounding to the output dtype.
//
// Per thread: one cublasLt handle per device (deliberately never destroyed: thread-exit order
// against the CUDA runtime's teardown is unspecified), one 32 MiB workspace per stream (persistent,
// so a captured CUDA graph keeps a valid pointer), and a plan cache (descriptors + heuristic
// algorithm) keyed by everything the heuristic depends on, including pointer alignments.
#include <cublasLt.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <type_traits>
#include <unordered_map>

#include "core/cuda_types.cuh"
#include "core/ops/linear.h"
#include "core/stream_scratch.h"

#define MMATTN_CUBLAS_CHECK(call)                                                                        \
  do {                                                                                                   \
    cublasStatus_t st_ = (call);                                                                         \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                                    \
      MMATTN_THROW(CudaError, #call, " failed: ", cublasLtGetStatusName(st_), " (", cublasLtGetStatusString(st_), \
                   ")");                                                                                 \
  } while (0)

namespace mmattn {

namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;
constexpr size_t kMaxPlans = 1024;  // the cache is cleared when it grows past this (many distinct M)

cudaDataType_t cuda_dtype(DType t) {
  switch (t) {
    case DType::F32: return CUDA_R_32F;
    case DType::F16: return CUDA_R_16F;
    case DType::BF16: return CUDA_R_16BF;
    default: MMATTN_THROW(UnsupportedError, "gemm_cuda: dtype ", dtype_name(t), " is not a float type");
  }
}

// Largest power of two (at most 256, cuBLASLt's default assumption) dividing the address.
uint32_t alignment_of(const void* p, int64_t batch_stride_bytes) {
  uint64_t v = reinterpret_cast<uintptr_t>(p) | 256u;
  if (batch_stride_bytes > 0) v |= uint64_t(batch_stride_bytes);
  return uint32_t(v & (~v + 1));
}

struct PlanKey {
  int device;
  int64_t batch, m, n, k, stride_a, stride_b, stride_c;
  DType dtype;
  bool f32_out, trans_b, bias, tf32;
  uint32_t align_a, align_b, align_c, align_bias;
  bool operator==(const PlanKey& o) const {
    return device == o.device && batch == o.batch && m == o.m && n == o.n && k == o.k && stride_a == o.stride_a &&
           stride_b == o.stride_b && stride_c == o.stride_c && dtype == o.dtype && f32_out == o.f32_out &&
           trans_b == o.trans_b && bias == o.bias && tf32 == o.tf32 && align_a == o.align_a && align_b == o.align_b &&
           align_c == o.align_c && align_bias == o.align_bias;
  }
};
struct PlanKeyHash {
  size_t operator()(const PlanKey& k) const {
    size_t h = 1469598103934665603ull;
    auto mix = [&h](uint64_t v) { h = (h ^ v) * 1099511628211ull; };
    for (int64_t v : {k.batch, k.m, k.n, k.k, k.stride_a, k.stride_b, k.stride_c}) mix(uint64_t(v));
    mix(uint64_t(k.device) << 32 | uint64_t(k.dtype) << 8 | uint64_t(k.f32_out) << 3 | uint64_t(k.trans_b) << 2 |
        uint64_t(k.bias) << 1 | uint64_t(k.tf32));
    mix(uint64_t(k.align_a) << 48 | uint64_t(k.align_b) << 32 | uint64_t(k.align_c) << 16 | k.align_bias);
    return h;
  }
};

struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;  // column-major A = our b, B = our a
  cublasLtMatmulAlgo_t algo{};
  bool bias_fused = false;
  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {  // host-side frees only; statuses are irrelevant here
    if (lc) cublasLtMatrixLayoutDestroy(lc);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

struct ThreadState {
  std::unordered_map<int, cublasLtHandle_t> handles;
  std::unordered_map<PlanKey, std::unique_ptr<Plan>, PlanKeyHash> plans;
};
thread_local ThreadState t_state;

cublasLtHandle_t handle_for(int device) {
  auto it = t_state.handles.find(device);
  if (it != t_state.handles.end()) return it->second;
  cublasLtHandle_t h;
  MMATTN_CUBLAS_CHECK(cublasLtCreate(&h));
  t_state.handles.emplace(device, h);
  return h;
}

void* workspace_for(StreamHandle s) {
  static const char owner = 0;
  return stream_scratch(&owner, s, kWorkspaceBytes);
}

void make_layout(cublasLtMatrixLayout_t* l, cudaDataType_t t, uint64_t rows, uint64_t cols, int64_t ld,
                 int64_t batch, int64_t stride) {
  MMATTN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(l, t, rows, cols, ld));
  if (batch > 1) {
    const int32_t count = int32_t(batch);
    MMATTN_CUBLAS_CHECK(
        cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
    MMATTN_CUBLAS_CHECK(
        cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
  }
}

// Descriptors plus the heuristic's first choice. When no algorithm supports the fused bias
// epilogue for this shape, the plan runs without it and the bias is added by a small kernel.
std::unique_ptr<Plan> make_plan(const GemmParams& p, const PlanKey& key, cublasLtHandle_t handle) {
  auto plan = std::make_unique<Plan>();
  const cudaDataType_t dt = cuda_dtype(p.dtype);
  const cublasComputeType_t compute =
      (p.dtype == DType::F32 && p.allow_tf32) ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  MMATTN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->op, compute, CUDA_R_32F));
  const cublasOperation_t ta = p.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, tb = CUBLAS_OP_N;
  MMATTN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  MMATTN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  // Column-major A: b stored [k, n] row-major reads as n x k (ld n); stored [n, k] reads as k x n
  // (ld k) and is transposed by op T. Column-major B: a [m, k] reads as k x m (ld k). C: n x m (ld n).
  if (p.trans_b)
    make_layout(&plan->la, dt, uint64_t(p.k), uint64_t(p.n), p.k, p.batch, p.stride_b);
  else
    make_layout(&plan->la, dt, uint64_t(p.n), uint64_t(p.k), p.n, p.batch, p.stride_b);
  make_layout(&plan->lb, dt, uint64_t(p.k), uint64_t(p.m), p.k, p.batch, p.stride_a);
  make_layout(&plan->lc, p.f32_out ? CUDA_R_32F : dt, uint64_t(p.n), uint64_t(p.m), p.n, p.batch, p.stride_c);

  cublasLtMatmulPreference_t pref;
  MMATTN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  std::unique_ptr<std::remove_pointer_t<cublasLtMatmulPreference_t>, void (*)(cublasLtMatmulPreference_t)> pref_guard(
      pref, [](cublasLtMatmulPreference_t q) { cublasLtMatmulPreferenceDestroy(q); });
  const uint64_t ws = kWorkspaceBytes;
  MMATTN_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  const uint32_t aligns[4] = {key.align_b, key.align_a, key.align_c, key.align_c};  // column-major A, B, C, D
  const cublasLtMatmulPreferenceAttributes_t align_attrs[4] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  for (int i = 0; i < 4; ++i)
    MMATTN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, align_attrs[i], &aligns[i], sizeof(aligns[i])));

  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (p.bias) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    MMATTN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    // The heuristic reads the bias pointer's alignment.
    MMATTN_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p.bias, sizeof(p.bias)));
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle, plan->op, plan->la, plan->lb, plan->lc,
                                                             plan->lc, pref, 1, &result, &found);
    if (st != CUBLAS_STATUS_SUCCESS && st != CUBLAS_STATUS_NOT_SUPPORTED) MMATTN_CUBLAS_CHECK(st);
    if (st == CUBLAS_STATUS_SUCCESS && found > 0) {
      plan->bias_fused = true;
    } else {
      const cublasLtEpilogue_t none = CUBLASLT_EPILOGUE_DEFAULT;
      MMATTN_CUBLAS_CHECK(
          cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &none, sizeof(none)));
      found = 0;
    }
  }
  if (!plan->bias_fused) {
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle, plan->op, plan->la, plan->lb, plan->lc,
                                                             plan->lc, pref, 1, &result, &found);
    if (st != CUBLAS_STATUS_NOT_SUPPORTED) MMATTN_CUBLAS_CHECK(st);
    MMATTN_CHECK(st == CUBLAS_STATUS_SUCCESS && found > 0, CudaError,
                 "cublasLtMatmulAlgoGetHeuristic found no algorithm for ", dtype_name(p.dtype), " batch=", p.batch,
                 " m=", p.m, " n=", p.n, " k=", p.k, " trans_b=", p.trans_b, " alignments a/b/c=", key.align_a, "/",
                 key.align_b, "/", key.align_c);
  }
  plan->algo = result.algo;
  return plan;
}

// y [rows, n] += bias [n], in f32 with one rounding (only when the epilogue could not fuse it).
template <class T>
__global__ void add_bias_kernel(T* __restrict__ y, const T* __restrict__ bias, int64_t total, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = from_f32<T>(to_f32(y[i]) + to_f32(bias[i % n]));
}

}  // namespace

void gemm_cuda(const GemmParams& p, StreamHandle s) {
  MMATTN_CHECK(p.m >= 1 && p.n >= 1 && p.k >= 1 && p.batch >= 1, ShapeError, "gemm_cuda: empty problem m=", p.m,
               " n=", p.n, " k=", p.k, " batch=", p.batch, " (the launcher handles these)");
  MMATTN_CHECK(p.batch <= INT32_MAX, UnsupportedError, "gemm_cuda: batch ", p.batch, " exceeds int32");
  MMATTN_CHECK(!p.bias || p.batch == 1 || p.stride_c == p.m * p.n, UnsupportedError,
               "gemm_cuda: a bias needs a dense batched output");
  MMATTN_CHECK(!p.f32_out || !p.bias, UnsupportedError, "gemm_cuda: an f32 result takes no bias");
  MMATTN_CHECK(!p.c_in || (p.accumulate && !p.f32_out), UnsupportedError,
               "gemm_cuda: a separate C input is an accumulation into a result of the input type");
  const bool plain = !p.f32_out && !p.c_in;  // the skinny kernels write their result in place
  if (plain && skinny_gemm_sm90(p, s)) return;  // Hopper: weight by TMA, wgmma (m <= 128)
  // decode-sized: the skinny kernel (gemv_cuda.cuh)
  if (plain && p.batch == 1 && p.trans_b && p.m <= kGemvMaxRows) {
    GemvParams g;
    g.x = p.a, g.weight = p.b, g.bias = p.bias, g.y = p.c;
    g.m = p.m, g.n = p.n, g.k = p.k, g.x_stride = p.k;
    g.accumulate = p.accumulate;
    g.dtype = p.dtype;
    g.weight_static = p.b_static;
    if (gemv_cuda_supported(g)) return gemv_cuda(g, s);
  }
  // prefill-sized (9-128 rows), long k by default: the weight streamed once, split K over a cluster
  // (gemm_cluster_cuda.cuh)
  if (plain && cluster_gemm_routes(p)) return cluster_gemm_cuda(p, s);
  int device = 0;
  MMATTN_CUDA_CHECK(cudaGetDevice(&device));
  const int64_t es = int64_t(dtype_size(p.dtype));
  const bool batched = p.batch > 1;
  PlanKey key{device,
              p.batch,
              p.m,
              p.n,
              p.k,
              batched ? p.stride_a : 0,
              batched ? p.stride_b : 0,
              batched ? p.stride_c : 0,
              p.dtype,
              p.f32_out,
              p.trans_b,
              p.bias != nullptr,
              p.dtype == DType::F32 && p.allow_tf32,
              alignment_of(p.a, batched ? p.stride_a * es : 0),
              alignment_of(p.b, batched ? p.stride_b * es : 0),
              std::min(alignment_of(p.c, batched ? p.stride_c * (p.f32_out ? 4 : es) : 0),
                       p.c_in ? alignment_of(p.c_in, batched ? p.stride_c * es : 0) : 256u),
              p.bias ? alignment_of(p.bias, 0) : 256u};
  cublasLtHandle_t handle = handle_for(device);
  auto it = t_state.plans.find(key);
  if (it == t_state.plans.end()) {
    if (t_state.plans.size() >= kMaxPlans) t_state.plans.clear();
    it = t_state.plans.emplace(key, make_plan(p, key, handle)).first;
  }
  Plan& plan = *it->second;
  if (plan.bias_fused)
    MMATTN_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p.bias, sizeof(p.bias)));
  const float alpha = 1.f, beta = p.accumulate ? 1.f : 0.f;
  MMATTN_CUBLAS_CHECK(cublasLtMatmul(handle, plan.op, &alpha, p.b, plan.la, p.a, plan.lb, &beta,
                                     p.c_in ? p.c_in : p.c, plan.lc, p.c, plan.lc, &plan.algo, workspace_for(s),
                                     kWorkspaceBytes, s));
  if (p.bias && !plan.bias_fused) {
    dispatch_float(p.dtype, "linear(bias)", [&]<class T>() {
      const int64_t total = p.batch * p.m * p.n;  // C is dense when a bias is given (checked above)
      add_bias_kernel<T><<<grid_for(total, 256), 256, 0, s>>>(static_cast<T*>(p.c), static_cast<const T*>(p.bias),
                                                                total, p.n);
      MMATTN_CUDA_CHECK_LAUNCH("add_bias");
    });
  }
}

}  // namespace mmattn
