// CPU conv2d: per (sample, group), im2col over a band of output rows, then one sgemm
//   y_g [Og, rows*OW] = w_g [Og, Cg*kh*kw] @ col [Cg*kh*kw, rows*OW]
// with the band sized so the col buffer stays under kColBudget floats (a 512-channel 3x3 conv on a
// 1024x1024 image would otherwise need an 18 GB buffer). 1x1 / stride 1 / no padding reads x directly.
#include <cblas.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "core/ops/conv2d.h"

namespace mmattn {

namespace {
constexpr int64_t kColBudget = int64_t(8) << 20;  // floats (32 MiB)

void check_blas_int(int64_t v, const char* what) {
  MMATTN_CHECK(v <= std::numeric_limits<int>::max(), UnsupportedError, "conv2d_cpu: ", what, " = ", v,
               " exceeds the BLAS int range");
}
}  // namespace

void conv2d_cpu(const Conv2dParams& p) {
  const float* x = static_cast<const float*>(p.x);
  const float* w = static_cast<const float*>(p.w);
  const float* bias = static_cast<const float*>(p.bias);
  float* y = static_cast<float*>(p.y);
  const int64_t cg = p.c / p.groups, og = p.o / p.groups;
  const int64_t ckk = cg * p.kh * p.kw;
  const int64_t hw = p.h * p.w_in, out_hw = p.oh * p.ow;
  check_blas_int(ckk, "C/groups*kh*kw");
  check_blas_int(out_hw, "OH*OW");
  check_blas_int(hw, "H*W");
  const bool pointwise = p.kh == 1 && p.kw == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_h == 0 &&
                         p.pad_w == 0;  // then OH*OW == H*W and col == x
  const int64_t band = std::clamp<int64_t>(kColBudget / std::max<int64_t>(1, ckk * p.ow), 1, p.oh);
  std::vector<float> col(pointwise ? 0 : size_t(ckk * band * p.ow));

  for (int64_t n = 0; n < p.n; ++n)
    for (int64_t g = 0; g < p.groups; ++g) {
      const float* xg = x + (n * p.c + g * cg) * hw;
      const float* wg = w + g * og * ckk;
      float* yg = y + (n * p.o + g * og) * out_hw;
      if (pointwise) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(og), int(out_hw), int(cg), 1.f, wg, int(cg), xg,
                    int(hw), 0.f, yg, int(out_hw));
        continue;
      }
      for (int64_t r0 = 0; r0 < p.oh; r0 += band) {
        const int64_t rows = std::min(band, p.oh - r0);
        const int64_t cols = rows * p.ow;
        // col[(ci*kh + ky)*kw + kx][(oy - r0)*OW + ox] = x[ci][oy*sh - ph + ky*dh][ox*sw - pw + kx*dw] (0 outside)
        for (int64_t ci = 0; ci < cg; ++ci)
          for (int64_t ky = 0; ky < p.kh; ++ky)
            for (int64_t kx = 0; kx < p.kw; ++kx) {
              float* crow = col.data() + ((ci * p.kh + ky) * p.kw + kx) * cols;
              const float* xc = xg + ci * hw;
              for (int64_t oy = r0; oy < r0 + rows; ++oy) {
                float* dst = crow + (oy - r0) * p.ow;
                const int64_t iy = oy * p.stride_h - p.pad_h + ky * p.dil_h;
                if (iy < 0 || iy >= p.h) {
                  std::fill(dst, dst + p.ow, 0.f);
                  continue;
                }
                const float* src = xc + iy * p.w_in;
                for (int64_t ox = 0; ox < p.ow; ++ox) {
                  const int64_t ix = ox * p.stride_w - p.pad_w + kx * p.dil_w;
                  dst[ox] = (ix >= 0 && ix < p.w_in) ? src[ix] : 0.f;
                }
              }
            }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(og), int(cols), int(ckk), 1.f, wg, int(ckk),
                    col.data(), int(cols), 0.f, yg + r0 * p.ow, int(out_hw));
      }
    }
  if (bias)
    for (int64_t n = 0; n < p.n; ++n)
      for (int64_t o = 0; o < p.o; ++o) {
        float* yo = y + (n * p.o + o) * out_hw;
        for (int64_t i = 0; i < out_hw; ++i) yo[i] += bias[o];
      }
}

}  // namespace mmattn
