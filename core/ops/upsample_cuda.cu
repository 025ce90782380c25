// Nearest upsampling: one thread per output element, copying elem_size-byte words.
#include <cstdint>

#include "core/cuda_types.cuh"
#include "core/ops/upsample.h"

namespace mmattn {

namespace {

__device__ __forceinline__ long long nearest_src(long long dst, long long in, long long out, float scale) {
  if (out == in) return dst;
  if (out == 2 * in) return dst >> 1;
  const long long s = (long long)floorf(float(dst) * scale);
  return s < in - 1 ? s : in - 1;
}

template <class W>
__global__ void upsample_nearest2d_kernel(const W* __restrict__ x, W* __restrict__ y, UpsampleNearestParams p) {
  const long long n = p.planes * p.out_h * p.out_w;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const long long ox = i % p.out_w;
    const long long oy = (i / p.out_w) % p.out_h;
    const long long pl = i / (p.out_w * p.out_h);
    const long long sy = nearest_src(oy, p.in_h, p.out_h, p.scale_h);
    const long long sx = nearest_src(ox, p.in_w, p.out_w, p.scale_w);
    y[i] = x[(pl * p.in_h + sy) * p.in_w + sx];
  }
}

template <class W>
void launch(const UpsampleNearestParams& p, StreamHandle s) {
  const long long n = p.planes * p.out_h * p.out_w;
  upsample_nearest2d_kernel<W><<<grid_for(n, 256), 256, 0, s>>>(static_cast<const W*>(p.x), static_cast<W*>(p.y), p);
  MMATTN_CUDA_CHECK_LAUNCH("upsample_nearest2d");
}

}  // namespace

void upsample_nearest2d_cuda(const UpsampleNearestParams& p, StreamHandle s) {
  switch (p.elem_size) {
    case 1: launch<uint8_t>(p, s); break;
    case 2: launch<uint16_t>(p, s); break;
    case 4: launch<uint32_t>(p, s); break;
    case 8: launch<unsigned long long>(p, s); break;
    default: MMATTN_THROW(UnsupportedError, "upsample_nearest2d: element size ", p.elem_size);
  }
}

}  // namespace mmattn
