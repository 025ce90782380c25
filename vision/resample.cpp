#include "vision/resample.h"

#include <algorithm>
#include <cmath>

namespace mmattn {

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

// Both kernels are written with Pillow's operation order: the coefficients are compared with
// Pillow's in double, and a different association can move a weight across a rounding boundary.
double bicubic(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}
double bilinear(double x) {
  if (x < 0.0) x = -x;
  if (x < 1.0) return 1.0 - x;
  return 0.0;
}

inline uint8_t clip8(int64_t acc, int precision) {
  const int64_t v = acc >> precision;  // arithmetic shift: floor
  return uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
}

// One pass over interleaved RGB rows. Horizontal: out row y reads in row y + row_offset.
void pass_horizontal(const Image& in, Image& out, int row_offset, const ResampleTaps& t) {
  for (int y = 0; y < out.height; ++y) {
    const uint8_t* src = in.px(0, y + row_offset);
    uint8_t* dst = out.px(0, y);
    for (int x = 0; x < out.width; ++x) {
      const int32_t* k = &t.w[size_t(x) * t.ksize];
      const uint8_t* s = src + size_t(t.first[x]) * 3;
      int64_t a0 = int64_t(1) << (t.precision - 1), a1 = a0, a2 = a0;
      for (int j = 0; j < t.count[x]; ++j) {
        a0 += int64_t(s[j * 3 + 0]) * k[j];
        a1 += int64_t(s[j * 3 + 1]) * k[j];
        a2 += int64_t(s[j * 3 + 2]) * k[j];
      }
      dst[x * 3 + 0] = clip8(a0, t.precision);
      dst[x * 3 + 1] = clip8(a1, t.precision);
      dst[x * 3 + 2] = clip8(a2, t.precision);
    }
  }
}

// Vertical: out row y reads in rows t.first[y] - row_offset .. (in is the horizontal pass output,
// which starts at source row row_offset).
void pass_vertical(const Image& in, Image& out, int row_offset, const ResampleTaps& t) {
  const size_t row = size_t(in.width) * 3;
  std::vector<int64_t> acc(row);
  for (int y = 0; y < out.height; ++y) {
    const int32_t* k = &t.w[size_t(y) * t.ksize];
    std::fill(acc.begin(), acc.end(), int64_t(1) << (t.precision - 1));
    for (int j = 0; j < t.count[y]; ++j) {
      const uint8_t* s = in.px(0, t.first[y] - row_offset + j);
      const int64_t kj = k[j];
      for (size_t i = 0; i < row; ++i) acc[i] += int64_t(s[i]) * kj;
    }
    uint8_t* dst = out.px(0, y);
    for (size_t i = 0; i < row; ++i) dst[i] = clip8(acc[i], t.precision);
  }
}

}  // namespace

const char* resample_impl_name(ResampleImpl i) { return i == ResampleImpl::kPillow ? "pillow" : "torch"; }

const char* resample_filter_name(ResampleFilter f) {
  switch (f) {
    case ResampleFilter::kBilinear: return "bilinear";
    case ResampleFilter::kBicubic: return "bicubic";
  }
  return "?";
}

ResampleTaps resample_taps(int in_size, int out_size, ResampleFilter filter, ResampleImpl impl) {
  MMATTN_CHECK(in_size > 0 && out_size > 0, ShapeError, "resample_taps: sizes ", in_size, " -> ", out_size);
  double (*fn)(double) = filter == ResampleFilter::kBicubic ? bicubic : bilinear;
  const double base_support = filter == ResampleFilter::kBicubic ? 2.0 : 1.0;

  // Pillow's precompute_coeffs; torch's _compute_indices_min_size_weights_aa is the same
  // arithmetic (its cubic is written differently but rounds identically: a = -0.5 scales exactly).
  const double scale = double(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = base_support * filterscale;
  ResampleTaps t;
  t.ksize = int(std::ceil(support)) * 2 + 1;
  t.first.resize(size_t(out_size));
  t.count.resize(size_t(out_size));
  std::vector<double> k(size_t(out_size) * t.ksize, 0.0);
  const double ss = 1.0 / filterscale;
  double wmax = 0.0;
  for (int i = 0; i < out_size; ++i) {
    const double center = (i + 0.5) * scale;
    // Truncation toward zero, then clamping, as the (int) casts do.
    const int lo = std::max(int(center - support + 0.5), 0);
    const int hi = std::min(int(center + support + 0.5), in_size);
    const int n = std::clamp(hi - lo, 0, t.ksize);  // torch clamps; Pillow never needs to
    double* ki = &k[size_t(i) * t.ksize];
    double ww = 0.0;
    for (int j = 0; j < n; ++j) {
      ki[j] = fn((j + lo - center + 0.5) * ss);
      ww += ki[j];
    }
    if (ww != 0.0)
      for (int j = 0; j < n; ++j) {
        ki[j] /= ww;
        wmax = std::max(wmax, ki[j]);
      }
    t.first[i] = lo;
    t.count[i] = n;
  }
  if (impl == ResampleImpl::kPillow) {
    t.precision = kPrecisionBits;
  } else {
    // torch: the most bits for which the largest weight still fits an int16.
    for (t.precision = 0; t.precision < 22; ++t.precision)
      if (int(0.5 + wmax * (1 << (t.precision + 1))) >= (1 << 15)) break;
  }
  t.w.assign(k.size(), 0);
  const double one = double(1 << t.precision);
  for (size_t j = 0; j < k.size(); ++j) {
    const double v = k[j] * one;
    t.w[j] = int32_t(k[j] < 0 ? -0.5 + v : 0.5 + v);  // half away from zero
  }
  return t;
}

Image resize_image(const Image& img, int out_w, int out_h, ResampleFilter filter, ResampleImpl impl) {
  MMATTN_CHECK(!img.empty(), ShapeError, "resize: empty input image (", img.width, "x", img.height, ")");
  MMATTN_CHECK(out_w > 0 && out_h > 0, ShapeError, "resize: output size ", out_w, "x", out_h,
               " must be positive");
  MMATTN_CHECK(img.rgb.size() == size_t(img.width) * img.height * 3, ShapeError, "resize: image of ",
               img.width, "x", img.height, " holds ", img.rgb.size(), " bytes");
  const bool need_h = out_w != img.width;
  const bool need_v = out_h != img.height;
  if (!need_h && !need_v) return img;

  const ResampleTaps vt = resample_taps(img.height, out_h, filter, impl);
  // Source rows the vertical pass reads: the horizontal pass produces only these.
  const int row_first = vt.first.front();
  const int row_last = vt.first.back() + vt.count.back();

  Image tmp;
  const Image* src = &img;
  int row_offset = 0;
  if (need_h) {
    const ResampleTaps ht = resample_taps(img.width, out_w, filter, impl);
    tmp = Image(out_w, need_v ? row_last - row_first : img.height);
    row_offset = need_v ? row_first : 0;
    pass_horizontal(img, tmp, row_offset, ht);
    if (!need_v) return tmp;
    src = &tmp;
  }
  Image out(src->width, out_h);
  pass_vertical(*src, out, row_offset, vt);
  return out;
}

}  // namespace mmattn
