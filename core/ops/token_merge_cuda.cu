// VisionZip's merge plan on the GPU: one block, the same operations in the same order as the CPU
// reference (token_merge.cpp), so the lists are bit for bit the host's.
#include <cmath>

#include "core/cuda_check.h"
#include "core/cuda_scan.cuh"
#include "core/kernel_smem.h"
#include "core/ops/token_merge.h"

namespace mmattn {

namespace {

constexpr int kThreads = 1024;

// The reference's L2 norm of a metric row: f64 squares summed in column order, then
// max(float(sqrt), 1e-12) as std::max (a NaN stays NaN).
__device__ float row_norm(const float* m, int d) {
  double s = 0;
  for (int c = 0; c < d; ++c) s = __dadd_rn(s, __dmul_rn(double(m[c]), double(m[c])));
  const float n = float(sqrt(s));
  return n < 1e-12f ? 1e-12f : n;
}

__global__ void __launch_bounds__(kThreads) merge_plan_kernel(MergePlanParams p) {
  extern __shared__ float unit[];  // [T][d + 1]: every token's unit row (padded: conflict-free per-thread rows)
  __shared__ unsigned char dom[kMergeDeviceTokens];
  __shared__ short rest[kMergeDeviceTokens];  // rest position -> token
  __shared__ short best[kMergeDeviceTokens];  // rest position -> its target (-1: a target itself)
  __shared__ float norm[kMergeDeviceTokens];
  __shared__ int count[kMergeDeviceTargets];     // members per target
  __shared__ int base[kMergeDeviceTargets + 1];  // first entry of each target's row
  __shared__ int warp_sums[32];
  const int T = int(p.tokens), d = int(p.d), ld = d + 1, D = int(p.n_dominant), C = int(p.targets),
            nt = int(blockDim.x);
  for (int t = threadIdx.x; t < T; t += nt) dom[t] = t == 0;
  for (int j = threadIdx.x; j < C; j += nt) count[j] = 0;
  for (int i = threadIdx.x; i < T * d; i += nt) unit[(i / d) * ld + i % d] = p.metric[i];  // coalesced
  __syncthreads();
  for (int e = threadIdx.x; e + 1 < D; e += nt) dom[p.dominant[e] + 1] = 1;
  for (int t = threadIdx.x; t < T; t += nt) norm[t] = row_norm(unit + t * ld, d);
  __syncthreads();
  for (int i = threadIdx.x; i < T * d; i += nt) {  // the unit rows, in place
    float* u = unit + (i / d) * ld + i % d;
    *u = __fdiv_rn(*u, norm[i / d]);
  }
  __syncthreads();
  // the rest in index order (each thread a contiguous run of tokens)
  const int per = (T + nt - 1) / nt, lo = min(T, int(threadIdx.x) * per), hi = min(T, lo + per);
  int mine = 0;
  for (int t = lo; t < hi; ++t) mine += !dom[t];
  int at = block_exclusive_scan(mine, warp_sums);
  for (int t = lo; t < hi; ++t)
    if (!dom[t]) rest[at++] = short(t);
  __syncthreads();
  const int R = T - D, step = max(1, R / max(int(p.contextual), 1));
  for (int i = threadIdx.x; i < R; i += nt) {
    if (i % step == 0 && i / step < C) {
      best[i] = -1;
      continue;
    }
    const float* ua = unit + rest[i] * ld;
    int b = 0;
    float best_sim = -INFINITY;
    for (int j = 0; j < C; ++j) {
      const float* ub = unit + rest[j * step] * ld;  // (the same address across the warp: a broadcast)
      float s = 0.f;
      for (int c = 0; c < d; ++c) s = __fadd_rn(s, __fmul_rn(ua[c], ub[c]));
      if (s > best_sim) best_sim = s, b = j;
    }
    best[i] = short(b);
    if (C > 0) atomicAdd(&count[b], 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int e = D;
    for (int j = 0; j < C; ++j) base[j] = e, e += 1 + count[j];
    base[C] = e;
  }
  __syncthreads();
  // dominant rows (token order = row order), then one row per target
  for (int t = threadIdx.x; t < T; t += nt) {
    if (!dom[t]) continue;
    int r = 0;  // dominant tokens before t
    for (int u = 0; u < t; ++u) r += dom[u];
    p.offsets[r] = r, p.heads[r] = t, p.index[r] = t, p.weights[r] = 1.f;
  }
  for (int j = threadIdx.x; j < C; j += nt) {
    const int target = rest[j * step];
    p.offsets[D + j] = base[j], p.heads[D + j] = target;
    p.index[base[j]] = target, p.weights[base[j]] = 1.f;
  }
  if (threadIdx.x == 0) p.offsets[D + C] = base[C];
  for (int i = threadIdx.x; i < R; i += nt) {
    const int b = best[i];
    if (b < 0 || C == 0) continue;
    int k = 0;  // members of b before this one (index order)
    for (int u = 0; u < i; ++u) k += best[u] == b;
    const int e = base[b] + 1 + k;
    p.index[e] = rest[i], p.weights[e] = __fdiv_rn(1.f, float(count[b]));
  }
}

}  // namespace

void visionzip_merge_plan_cuda(const MergePlanParams& p, StreamHandle s) {
  MMATTN_CHECK(visionzip_merge_plan_on_device(p.tokens, p.d, p.targets), UnsupportedError, "visionzip_merge_plan: ",
               p.tokens, " tokens of ", p.d, " floats / ", p.targets, " targets exceed the device plan's limits");
  const int threads = int(p.tokens < kThreads ? (p.tokens + 31) / 32 * 32 : kThreads);
  const size_t smem = size_t(p.tokens) * size_t(p.d + 1) * sizeof(float);
  kernel_smem_allow(reinterpret_cast<const void*>(merge_plan_kernel), int(kMergeDeviceUnitFloats * sizeof(float)));
  merge_plan_kernel<<<1, threads, smem, s>>>(p);
  MMATTN_CUDA_CHECK_LAUNCH("visionzip_merge_plan");
}

}  // namespace mmattn
