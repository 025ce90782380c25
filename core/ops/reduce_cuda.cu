// Row reductions on the GPU: one block per row (vector_norm: 256 threads, f32 accumulation;
// argmax: up to 1024).
#include <algorithm>

#include "core/cuda_reduce.cuh"
#include "core/cuda_scan.cuh"
#include "core/cuda_types.cuh"
#include "core/ops/reduce.h"

namespace mmattn {

namespace {

template <class T, int P>
__global__ void vector_norm_kernel(const T* __restrict__ x, float* __restrict__ y, long long cols) {
  __shared__ float scratch[32];
  const T* xr = x + blockIdx.x * cols;
  float acc = 0.f;
  for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
    const float v = to_f32(xr[c]);
    acc += P == 1 ? fabsf(v) : v * v;
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) y[blockIdx.x] = P == 1 ? acc : sqrtf(acc);
}

// argmax: each value as a 64-bit key, the float's bits mapped to an order-preserving unsigned
// (NaN -> 0, below -inf; -0 -> +0) above the complemented column (the lower column wins ties); the
// row's answer is the largest key.
__device__ __forceinline__ unsigned long long argmax_key(float v, long long c) {
  unsigned bits = __float_as_uint(v == 0.f ? 0.f : v);
  bits = v != v ? 0u : (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
  return (static_cast<unsigned long long>(bits) << 32) | (0xffffffffu - static_cast<unsigned>(c));
}

template <class T>
__global__ void __launch_bounds__(1024) argmax_kernel(const T* __restrict__ x, int64_t* __restrict__ y, long long cols) {
  __shared__ unsigned long long best[32];
  const T* xr = x + blockIdx.x * cols;
  unsigned long long k = 0;
  for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
    const unsigned long long kc = argmax_key(to_f32(xr[c]), c);
    k = kc > k ? kc : k;
  }
  for (int o = 16; o > 0; o >>= 1) {
    const unsigned long long other = __shfl_xor_sync(0xffffffffu, k, o);
    k = other > k ? other : k;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) best[warp] = k;
  __syncthreads();
  if (warp == 0) {
    k = lane < int(blockDim.x >> 5) ? best[lane] : 0;
    for (int o = 16; o > 0; o >>= 1) {
      const unsigned long long other = __shfl_xor_sync(0xffffffffu, k, o);
      k = other > k ? other : k;
    }
    if (lane == 0) y[blockIdx.x] = int64_t(0xffffffffu - static_cast<unsigned>(k & 0xffffffffu));
  }
}

}  // namespace

void argmax_cuda(const ArgmaxParams& p, StreamHandle s) {
  MMATTN_CHECK(p.cols <= (int64_t(1) << 32) - 1, UnsupportedError, "argmax: rows of ", p.cols,
               " values (at most 2^32 - 1 on the GPU)");
  dispatch_float(p.dtype, "argmax", [&]<class T>() {
    const int threads = int(std::min<int64_t>(1024, (p.cols + 31) / 32 * 32));
    argmax_kernel<T><<<unsigned(p.rows), threads, 0, s>>>(static_cast<const T*>(p.x), p.y, p.cols);
    MMATTN_CUDA_CHECK_LAUNCH("argmax");
  });
}

void vector_norm_cuda(const VectorNormParams& p, StreamHandle s) {
  dispatch_float(p.dtype, "vector_norm", [&]<class T>() {
    const dim3 grid(unsigned(p.rows));
    if (p.p == 1)
      vector_norm_kernel<T, 1><<<grid, 256, 0, s>>>(static_cast<const T*>(p.x), p.y, p.cols);
    else
      vector_norm_kernel<T, 2><<<grid, 256, 0, s>>>(static_cast<const T*>(p.x), p.y, p.cols);
    MMATTN_CUDA_CHECK_LAUNCH("vector_norm");
  });
}

}  // namespace mmattn

// --- selections: one block each (pipelines/pruning.cpp queues them between the ViT and the
// projector, so the kept set never makes a host round trip) -------------------------------------

namespace mmattn {

namespace {

constexpr int kSelectThreads = 1024;

__global__ void column_sum_kernel(ColumnSumParams p) {
  const int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= p.cols) return;
  float acc = 0.f;
  for (int64_t r = 0; r < p.rows; ++r) acc = __fadd_rn(acc, p.x[r * p.cols + c]);  // row order, as the host
  p.y[c] = __fdiv_rn(acc, p.divisor);
}

// order-preserving bits (NaN lowest, -0 = +0)
__device__ __forceinline__ unsigned order_key(float v) {
  const unsigned bits = __float_as_uint(v == 0.f ? 0.f : v);
  return v != v ? 0u : (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
}

// rank_i = #{j: key_j > key_i} + #{j < i: key_j = key_i}; i is kept when rank_i < k. The kept
// flags are then compacted in index order (each thread a contiguous run of indices).
__global__ void __launch_bounds__(kSelectThreads) top_k_kernel(TopKParams p) {
  __shared__ unsigned key[kSelectDeviceItems];
  __shared__ unsigned char kept[kSelectDeviceItems];
  __shared__ int warp_sums[32];
  const int n = int(p.n), T = int(blockDim.x);
  for (int i = threadIdx.x; i < n; i += T) key[i] = order_key(p.scores[i]);
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += T) {
    const unsigned ki = key[i];
    int rank = 0;
    for (int j = 0; j < n; ++j) {
      const unsigned kj = key[j];
      rank += (kj > ki) | ((kj == ki) & (j < i));
    }
    kept[i] = rank < p.k;
  }
  __syncthreads();
  const int per = (n + T - 1) / T, lo = min(n, int(threadIdx.x) * per), hi = min(n, lo + per);
  int count = 0;
  for (int i = lo; i < hi; ++i) count += kept[i];
  int at = block_exclusive_scan(count, warp_sums);
  for (int i = lo; i < hi; ++i)
    if (kept[i]) p.out[at++] = i;
}

// out[rank_i] = v_i, rank_i = #{j: v_j < v_i} + #{j < i: v_j = v_i}
__global__ void __launch_bounds__(kSelectThreads) sort_kernel(SortParams p) {
  __shared__ long long v[kSelectDeviceItems];
  const int n = int(p.n), T = int(blockDim.x);
  for (int i = threadIdx.x; i < n; i += T) v[i] = p.v[i];
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += T) {
    const long long vi = v[i];
    int rank = 0;
    for (int j = 0; j < n; ++j) {
      const long long vj = v[j];
      rank += (vj < vi) | ((vj == vi) & (j < i));
    }
    p.out[rank] = vi;
  }
}

int select_threads(int64_t n) { return int(std::min<int64_t>(kSelectThreads, (n + 31) / 32 * 32)); }

}  // namespace

void column_sum_cuda(const ColumnSumParams& p, StreamHandle s) {
  column_sum_kernel<<<unsigned((p.cols + 255) / 256), 256, 0, s>>>(p);
  MMATTN_CUDA_CHECK_LAUNCH("column_sum");
}

void top_k_indices_cuda(const TopKParams& p, StreamHandle s) {
  MMATTN_CHECK(p.n <= kSelectDeviceItems, UnsupportedError, "top_k_indices: ", p.n, " scores (at most ",
               kSelectDeviceItems, " on the GPU)");
  top_k_kernel<<<1, select_threads(p.n), 0, s>>>(p);
  MMATTN_CUDA_CHECK_LAUNCH("top_k_indices");
}

void sort_ascending_cuda(const SortParams& p, StreamHandle s) {
  MMATTN_CHECK(p.n <= kSelectDeviceItems, UnsupportedError, "sort_ascending: ", p.n, " values (at most ",
               kSelectDeviceItems, " on the GPU)");
  sort_kernel<<<1, select_threads(p.n), 0, s>>>(p);
  MMATTN_CUDA_CHECK_LAUNCH("sort_ascending");
}

}  // namespace mmattn
