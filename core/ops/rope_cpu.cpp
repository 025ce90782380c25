// CPU RoPE reference: f32, the same operation order as the PyTorch references
// (x*cos and rotated*sin rounded separately, then summed).
#include "core/ops/rope.h"

namespace mmattn {

void rope_cpu(const RopeParams& p) {
  const float* x = static_cast<const float*>(p.x);
  float* y = static_cast<float*>(p.y);
  const int64_t half = p.d / 2;
  for (int64_t b = 0; b < p.b; ++b)
    for (int64_t t = 0; t < p.t; ++t) {
      const float* c = p.cos + t * half;
      const float* s = p.sin + t * half;
      for (int64_t h = 0; h < p.h; ++h) {
        const float* xr = x + b * p.x_sb + t * p.x_st + h * p.x_sh;
        float* yr = y + b * p.y_sb + t * p.y_st + h * p.y_sh;
        for (int64_t i = 0; i < half; ++i) {
          // pair (i0, i1): HalfSplit (i, i + D/2), Interleaved (2i, 2i + 1)
          const int64_t i0 = p.style == RopeStyle::HalfSplit ? i : 2 * i;
          const int64_t i1 = p.style == RopeStyle::HalfSplit ? i + half : 2 * i + 1;
          const float x0 = xr[i0], x1 = xr[i1];  // read both before writing (in place)
          const float a0 = x0 * c[i], b0 = -x1 * s[i];
          const float a1 = x1 * c[i], b1 = x0 * s[i];
          yr[i0] = a0 + b0;
          yr[i1] = a1 + b1;
        }
      }
    }
}

}  // namespace mmattn
