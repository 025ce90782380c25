// Row reductions on the GPU: one 256-thread block per row, f32 accumulation.
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

}  // namespace

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
