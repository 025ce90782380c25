// CUDA RoPE: one thread per rotated pair. f32 math uses __fmul_rn/__fadd_rn so no FMA is
// contracted: the results then equal PyTorch's separate mul/add kernels.
#include "core/cuda_types.cuh"
#include "core/ops/rope.h"

namespace mmattn {

namespace {

template <class T>
__device__ __forceinline__ float round_t(float v) {
  return to_f32(from_f32<T>(v));
}

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
    float c = p.cos[t * half + i], s = p.sin[t * half + i];
    float y0, y1;
    if (S == RopeStyle::HalfSplit) {
      // transformers: cos/sin cast to x's dtype; q*cos, rotate_half(q)*sin and their sum each rounded
      c = round_t<T>(c);
      s = round_t<T>(s);
      y0 = __fadd_rn(round_t<T>(__fmul_rn(x0, c)), round_t<T>(__fmul_rn(-x1, s)));
      y1 = __fadd_rn(round_t<T>(__fmul_rn(x1, c)), round_t<T>(__fmul_rn(x0, s)));
    } else {
      // diffusers: (x.float() * cos + x_rotated.float() * sin).to(x.dtype)
      y0 = __fadd_rn(__fmul_rn(x0, c), __fmul_rn(-x1, s));
      y1 = __fadd_rn(__fmul_rn(x1, c), __fmul_rn(x0, s));
    }
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
