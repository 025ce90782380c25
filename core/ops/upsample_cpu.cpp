// CPU nearest upsampling: source indices per axis precomputed with PyTorch's rule, then copies.
#include <cmath>
#include <cstring>
#include <vector>

#include "core/ops/upsample.h"

namespace mmattn {

namespace {
int64_t nearest_src(int64_t dst, int64_t in, int64_t out, float scale) {
  if (out == in) return dst;
  if (out == 2 * in) return dst >> 1;
  const int64_t s = int64_t(std::floor(float(dst) * scale));
  return s < in - 1 ? s : in - 1;
}
}  // namespace

void upsample_nearest2d_cpu(const UpsampleNearestParams& p) {
  std::vector<int64_t> sy(size_t(p.out_h)), sx(size_t(p.out_w));
  for (int64_t i = 0; i < p.out_h; ++i) sy[i] = nearest_src(i, p.in_h, p.out_h, p.scale_h);
  for (int64_t i = 0; i < p.out_w; ++i) sx[i] = nearest_src(i, p.in_w, p.out_w, p.scale_w);
  const size_t es = size_t(p.elem_size);
  const char* x = static_cast<const char*>(p.x);
  char* y = static_cast<char*>(p.y);
  for (int64_t pl = 0; pl < p.planes; ++pl)
    for (int64_t oy = 0; oy < p.out_h; ++oy) {
      const char* xr = x + ((pl * p.in_h + sy[oy]) * p.in_w) * es;
      char* yr = y + ((pl * p.out_h + oy) * p.out_w) * es;
      for (int64_t ox = 0; ox < p.out_w; ++ox) std::memcpy(yr + ox * es, xr + sx[ox] * es, es);
    }
}

}  // namespace mmattn
