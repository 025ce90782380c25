#pragma once
// Block-wide scans for one-block selection kernels (core/ops/reduce_cuda.cu,
// core/ops/token_merge_cuda.cu).
namespace mmattn {

// Exclusive prefix sum of one count per thread over the block (blockDim.x a multiple of 32, at
// most 1024; warp_sums: 32 ints of shared memory). Ends with the block synchronised.
__device__ inline int block_exclusive_scan(int v, int* warp_sums) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  int inc = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int t = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += t;
  }
  if (lane == 31) warp_sums[warp] = inc;
  __syncthreads();
  if (warp == 0) {
    int w = lane < warps ? warp_sums[lane] : 0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int t = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o) w += t;
    }
    if (lane < warps) warp_sums[lane] = w;  // inclusive over warps
  }
  __syncthreads();
  return inc - v + (warp > 0 ? warp_sums[warp - 1] : 0);
}

}  // namespace mmattn
