// CUDA RoPE: one thread per rotated pair (the rotation itself: core/ops/rope.cuh).
#include "core/ops/rope.cuh"

namespace mmattn {

namespace {

template <class T, RopeStyle S>
__global__ void rope_kernel(RopeParams p) {
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  const int64_t half = p.d / 2;
  const int64_t total = p.b * p.t * p.h * half;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx % half;
    int64_t r = idx / half;
    const int64_t h = r % p.h;
    r /= p.h;
    const int64_t t = r % p.t;
    const int64_t b = r / p.t;
    const T* xr = x + b * p.x_sb + t * p.x_st + h * p.x_sh;
    T* yr = y + b * p.y_sb + t * p.y_st + h * p.y_sh;
    const int64_t i0 = S == RopeStyle::HalfSplit ? i : 2 * i;
    const int64_t i1 = S == RopeStyle::HalfSplit ? i + half : 2 * i + 1;
    const float x0 = to_f32(xr[i0]), x1 = to_f32(xr[i1]);
    float y0, y1;
    rope_pair<T, S>(x0, x1, p.cos[t * half + i], p.sin[t * half + i], y0, y1);
    yr[i0] = from_f32<T>(y0);
    yr[i1] = from_f32<T>(y1);
  }
}

}  // namespace

void rope_cuda(const RopeParams& p, StreamHandle s) {
  dispatch_float(p.dtype, "apply_rope", [&]<class T>() {
    const int64_t total = p.b * p.t * p.h * (p.d / 2);
    if (p.style == RopeStyle::HalfSplit)
      rope_kernel<T, RopeStyle::HalfSplit><<<grid_for(total, 256), 256, 0, s>>>(p);
    else
      rope_kernel<T, RopeStyle::Interleaved><<<grid_for(total, 256), 256, 0, s>>>(p);
    MMATTN_CUDA_CHECK_LAUNCH("rope");
  });
}

}  // namespace mmattn
