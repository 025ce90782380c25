// Softmax rows with an online (max, sum) pass and a write pass, so x is read twice:
//   cols <= 1024: one warp per row (8 rows per 256-thread block), shuffles only;
//   longer rows:  one 512-thread block per row, (max, sum) pairs merged through shared memory.
#include "core/cuda_reduce.cuh"
#include "core/cuda_types.cuh"
#include "core/ops/softmax.h"

namespace mmattn {

namespace {

constexpr int kWarpRowMax = 1024;
constexpr int kRowsPerBlock = 8;
constexpr int kBlockThreads = 512;

// Running state: max m and sum s of exp(v - m). m == -inf means "nothing seen" (s == 0).
struct MaxSum {
  float m, s;
};
__device__ __forceinline__ MaxSum ms_merge(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.m, b.m);
  if (m == -INFINITY) return {m, 0.f};  // also keeps exp(-inf - -inf) = NaN out
  return {m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
}
__device__ __forceinline__ MaxSum ms_add(MaxSum a, float v) { return ms_merge(a, MaxSum{v, 1.f}); }
__device__ __forceinline__ MaxSum warp_ms(MaxSum a) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    MaxSum b{__shfl_xor_sync(0xffffffffu, a.m, o), __shfl_xor_sync(0xffffffffu, a.s, o)};
    a = ms_merge(a, b);
  }
  return a;
}

template <class T>
__device__ __forceinline__ void write_row(const T* xr, T* yr, int cols, int first, int step, float scale, MaxSum t,
                                          bool log) {
  // All -inf row: m = -inf, s = 0 -> NaN, as PyTorch.
  if (t.m == -INFINITY) t.s = NAN;
  if (log) {
    const float lse = t.m + logf(t.s);
    for (int c = first; c < cols; c += step) yr[c] = from_f32<T>(to_f32(xr[c]) * scale - lse);
  } else {
    const float inv = 1.f / t.s;
    for (int c = first; c < cols; c += step) yr[c] = from_f32<T>(expf(to_f32(xr[c]) * scale - t.m) * inv);
  }
}

template <class T>
__global__ void softmax_warp_kernel(const T* __restrict__ x, T* __restrict__ y, long long rows, int cols, float scale,
                                    bool log) {
  const long long row = blockIdx.x * (long long)kRowsPerBlock + threadIdx.x / 32;
  if (row >= rows) return;  // the whole warp leaves together
  const int lane = threadIdx.x & 31;
  const T* xr = x + row * cols;
  MaxSum t{-INFINITY, 0.f};
  for (int c = lane; c < cols; c += 32) t = ms_add(t, to_f32(xr[c]) * scale);
  t = warp_ms(t);
  write_row(xr, y + row * cols, cols, lane, 32, scale, t, log);
}

template <class T>
__global__ void softmax_block_kernel(const T* __restrict__ x, T* __restrict__ y, int cols, float scale, bool log) {
  __shared__ float sm[32], ss[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const T* xr = x + (long long)blockIdx.x * cols;
  MaxSum t{-INFINITY, 0.f};
  for (int c = threadIdx.x; c < cols; c += blockDim.x) t = ms_add(t, to_f32(xr[c]) * scale);
  t = warp_ms(t);
  if (lane == 0) {
    sm[warp] = t.m;
    ss[warp] = t.s;
  }
  __syncthreads();
  t = lane < nwarps ? MaxSum{sm[lane], ss[lane]} : MaxSum{-INFINITY, 0.f};
  t = warp_ms(t);  // every warp reduces the same 32 values, so every thread has the row's result
  write_row(xr, y + (long long)blockIdx.x * cols, cols, threadIdx.x, blockDim.x, scale, t, log);
}

}  // namespace

void softmax_cuda(const SoftmaxParams& p, StreamHandle s) {
  dispatch_float(p.dtype, p.log ? "log_softmax" : "softmax", [&]<class T>() {
    const auto x = static_cast<const T*>(p.x);
    const auto y = static_cast<T*>(p.y);
    const int cols = int(p.cols);
    if (cols <= kWarpRowMax) {
      const long long blocks = (p.rows + kRowsPerBlock - 1) / kRowsPerBlock;
      softmax_warp_kernel<T><<<unsigned(blocks), kRowsPerBlock * 32, 0, s>>>(x, y, p.rows, cols, p.scale, p.log);
    } else {
      softmax_block_kernel<T><<<unsigned(p.rows), kBlockThreads, 0, s>>>(x, y, cols, p.scale, p.log);
    }
    MMATTN_CUDA_CHECK_LAUNCH("softmax");
  });
}

}  // namespace mmattn
