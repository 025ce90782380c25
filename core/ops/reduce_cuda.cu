// Row reductions on the GPU: one block per row (vector_norm: 256 threads, f32 accumulation;
// argmax: up to 1024).
#include <algorithm>

#include "core/cuda_reduce.cuh"
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
