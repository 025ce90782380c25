// Greedy max-min selection (core/ops/diversity.h). First, nearest_kernel: every item's distance to
// its nearest neighbour, 32 items per block (one per lane), the rows split over 32 warps (the whole
// matrix is read once, by many blocks). Then the selection in one block; up to 1024 items, one per
// thread (greedy_max_min_small_kernel, below). Past that, thread t owns items t, t + T, ...
// (T = the block size, n rounded up to whole warps, at most 1024; their distance to the selection
// and taken flag in shared memory). Each step is one pass over the owned items and an argmax with
// the host's tie rule (lower index wins) that costs one block barrier: every warp reduces its own
// candidates, publishes them in a double-buffered slot array, and after the barrier every warp
// reduces the slots itself (the next step writes the other buffer, so no second barrier is needed).
// Distances use explicit round-to-nearest operations in the host's order, so the selection is the
// host's exactly.
#include <algorithm>
#include <cstdint>

#include "core/cuda_types.cuh"
#include "core/ops/diversity.h"

namespace mmattn {

namespace {

constexpr int kThreads = 1024;
constexpr int kNone = 0x7fffffff;

struct Best {
  float v;
  int i;
};

__device__ __forceinline__ Best pick(Best a, Best b) { return (b.v > a.v || (b.v == a.v && b.i < a.i)) ? b : a; }

__device__ __forceinline__ Best warp_best(Best x) {
#pragma unroll
  for (int o = 16; o; o >>= 1) x = pick(x, Best{__shfl_xor_sync(0xffffffffu, x.v, o), __shfl_xor_sync(0xffffffffu, x.i, o)});
  return x;
}

// The block's best: slots[] (one per warp) is written before and read after one barrier.
__device__ __forceinline__ Best block_best(Best x, Best* slots) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  x = warp_best(x);
  if (lane == 0) slots[warp] = x;
  __syncthreads();
  return warp_best(lane < warps ? slots[lane] : Best{-INFINITY, kNone});
}

__device__ __forceinline__ float dist(const GreedyMaxMinParams& p, int i, int j) {
  const float nn = __fmul_rn(p.norms[i], p.norms[j]);
  return __fsub_rn(1.f, __fdiv_rn(p.gram[int64_t(i) * p.n + j], nn < 1e-8f ? 1e-8f : nn));
}

__device__ __forceinline__ float min_keep(float m, float d) { return d < m ? d : m; }  // std::min(m, d)

// nearest[j] = min_{i != j} d(i, j) (min_keep from +inf: order-free, NaN distances never taken).
__global__ void __launch_bounds__(kThreads) nearest_kernel(GreedyMaxMinParams p) {
  __shared__ float part[32][33];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n = int(p.n);
  const int j = blockIdx.x * 32 + lane;
  float m = INFINITY;
  if (j < n)
    for (int i = warp; i < n; i += 32)
      if (i != j) m = min_keep(m, dist(p, i, j));
  part[warp][lane] = m;
  __syncthreads();
  if (warp == 0 && j < n) {
    for (int w = 1; w < 32; ++w) m = min_keep(m, part[w][lane]);
    p.nearest[j] = m;
  }
}

__global__ void __launch_bounds__(kThreads) greedy_max_min_kernel(GreedyMaxMinParams p) {
  extern __shared__ float to_sel[];  // [n], then taken [n] bytes
  uint8_t* taken = reinterpret_cast<uint8_t*>(to_sel + p.n);
  __shared__ Best slots[2][32];
  const int n = int(p.n), T = int(blockDim.x);
  for (int s = threadIdx.x; s < p.k; s += T) p.out[s] = -1;
  Best mine{-INFINITY, kNone};
  for (int j = threadIdx.x; j < n; j += T) {
    const float nearest = p.nearest[j];
    if (nearest > mine.v) mine = Best{nearest, j};
    to_sel[j] = INFINITY;
    taken[j] = 0;
  }
  const Best first = block_best(mine, slots[1]);
  int cur = first.i == kNone ? 0 : first.i;
  for (int s = 0; s < p.k; ++s) {
    if (threadIdx.x == 0) p.out[s] = cur;
    Best m{-INFINITY, kNone};
    for (int j = threadIdx.x; j < n; j += T) {
      if (j == cur) taken[j] = 1;  // the owner marks it: no other thread reads taken[j]
      const float t = min_keep(to_sel[j], dist(p, cur, j));
      to_sel[j] = t;
      if (!taken[j] && t > m.v) m = Best{t, j};
    }
    const Best nxt = block_best(m, slots[s & 1]);  // slots[1] of the first pick is free again
    if (nxt.i == kNone) break;
    cur = nxt.i;
  }
}

// n <= blockDim.x: one item per thread, its state in registers, and each argmax as a 32-bit key
// (order-preserving bits of the distance; 0 = no candidate: taken, NaN or -inf, which the host's
// `t > best` never takes) reduced with __reduce_max_sync, ties to the lowest lane (= lowest index)
// by a ballot. One block barrier per step, as above.
__device__ __forceinline__ unsigned key_of(float t) {
  if (!(t > -INFINITY)) return 0u;
  const unsigned u = __float_as_uint(t);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// (max key, lowest idx holding it) over the warp; idx must increase with the lane.
__device__ __forceinline__ void warp_argmax(unsigned& key, int& idx) {
  const unsigned mx = __reduce_max_sync(0xffffffffu, key);
  const int src = __ffs(__ballot_sync(0xffffffffu, key == mx)) - 1;
  idx = __shfl_sync(0xffffffffu, idx, src);
  key = mx;
}

// The block's best index (-1: none); keys/idxs [32] written before and read after one barrier.
__device__ __forceinline__ int block_argmax(unsigned key, int idx, unsigned* keys, int* idxs) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  warp_argmax(key, idx);
  if (lane == 0) keys[warp] = key, idxs[warp] = idx;
  __syncthreads();
  key = lane < warps ? keys[lane] : 0u;
  idx = lane < warps ? idxs[lane] : kNone;
  warp_argmax(key, idx);
  return key ? idx : -1;
}

__global__ void __launch_bounds__(kThreads) greedy_max_min_small_kernel(GreedyMaxMinParams p) {
  __shared__ unsigned keys[2][32];
  __shared__ int idxs[2][32];
  const int n = int(p.n), j = threadIdx.x;
  const bool own = j < n;
  for (int s = threadIdx.x; s < p.k; s += blockDim.x) p.out[s] = -1;
  const float nj = own ? p.norms[j] : 0.f;
  float to_sel = INFINITY;
  bool taken = false;
  int cur = block_argmax(own ? key_of(p.nearest[j]) : 0u, j, keys[1], idxs[1]);
  if (cur < 0) cur = 0;
  for (int s = 0; s < p.k; ++s) {
    if (threadIdx.x == 0) p.out[s] = cur;
    unsigned key = 0u;
    if (own) {
      if (j == cur) taken = true;
      const float nn = __fmul_rn(p.norms[cur], nj);  // dist(p, cur, j)
      const float d = __fsub_rn(1.f, __fdiv_rn(p.gram[int64_t(cur) * n + j], nn < 1e-8f ? 1e-8f : nn));
      to_sel = min_keep(to_sel, d);
      if (!taken) key = key_of(to_sel);
    }
    const int nxt = block_argmax(key, j, keys[s & 1], idxs[s & 1]);  // keys[1] of the first pick is free again
    if (nxt < 0) break;
    cur = nxt;
  }
}

}  // namespace

void greedy_max_min_cuda(const GreedyMaxMinParams& p, StreamHandle s) {
  const size_t smem = size_t(p.n) * (sizeof(float) + 1);
  const int threads = int(std::min<int64_t>(kThreads, std::max<int64_t>(32, (p.n + 31) / 32 * 32)));
  nearest_kernel<<<unsigned((p.n + 31) / 32), kThreads, 0, s>>>(p);
  MMATTN_CUDA_CHECK_LAUNCH("greedy_max_min (nearest)");
  if (p.n <= kThreads)
    greedy_max_min_small_kernel<<<1, threads, 0, s>>>(p);
  else
    greedy_max_min_kernel<<<1, threads, smem, s>>>(p);
  MMATTN_CUDA_CHECK_LAUNCH("greedy_max_min");
}

}  // namespace mmattn
