#include "vision/image_transforms.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <random>
#include <utility>
#include <vector>

#include "core/error.h"
#include "vision/resample.h"

namespace mmattn {

namespace {

struct Name {
  ImageTransformKind k;
  const char* name;
};
constexpr Name kNames[] = {{ImageTransformKind::HFlip, "hflip"},
                           {ImageTransformKind::VFlip, "vflip"},
                           {ImageTransformKind::Rotate, "rotate"},
                           {ImageTransformKind::ColorJitter, "color_jitter"},
                           {ImageTransformKind::Blur, "blur"},
                           {ImageTransformKind::ResizedCrop, "resized_crop"}};

// torch's float -> uint8 cast of a value already clamped to [0, 255]: truncation.
uint8_t trunc_u8(float v) { return uint8_t(std::clamp(v, 0.f, 255.f)); }

// v2 _blend(image, other, ratio) for one value: trunc(clamp(v r + (1 - r) o)); torch's add_ with
// alpha is a fused multiply-add in its vectorised CPU kernel.
uint8_t blend(uint8_t v, float other, float r, float one_minus_r) {
  return trunc_u8(std::fma(other, one_minus_r, float(v) * r));
}

// v2 _rgb_to_grayscale_image (float, preserve_dtype False), floored as the uint8 callers do.
float grey_floor(const uint8_t* p) {
  return std::floor(std::fma(float(p[2]), 0.114f, std::fma(float(p[1]), 0.587f, float(p[0]) * 0.2989f)));
}

// Reflect padding's source index (torch's "reflect": the edge is not repeated), folded again for
// offsets beyond one period (torch requires pad < size; a 1-pixel side reads itself).
int reflect(int i, int n) {
  if (n == 1) return 0;
  const int period = 2 * (n - 1);
  i %= period;
  if (i < 0) i += period;
  return i < n ? i : period - i;
}

// std::mt19937_64 -> [0, 1) with 53 random bits (documented in the header).
double uniform01(std::mt19937_64& g) { return double(g() >> 11) * 0x1.0p-53; }

void check_factor(const char* what, double f) {
  MMATTN_CHECK(f >= 0 && std::isfinite(f), ConfigError, what, ": factor must be >= 0, got ", f);
}

}  // namespace

const char* image_transform_name(ImageTransformKind k) {
  for (const auto& n : kNames)
    if (n.k == k) return n.name;
  return "?";
}

bool parse_image_transform(const std::string& name, ImageTransformKind* out) {
  for (const auto& n : kNames)
    if (name == n.name) {
      *out = n.k;
      return true;
    }
  return false;
}

// --- geometry ------------------------------------------------------------------------------------

Image hflip(const Image& img) {
  Image out(img.width, img.height);
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x) std::copy_n(img.px(img.width - 1 - x, y), 3, out.px(x, y));
  return out;
}

Image vflip(const Image& img) {
  Image out(img.width, img.height);
  for (int y = 0; y < img.height; ++y) std::copy_n(img.px(0, img.height - 1 - y), 3 * size_t(img.width), out.px(0, y));
  return out;
}

Image rotate_image(const Image& img, double degrees) {
  MMATTN_CHECK(std::isfinite(degrees), ConfigError, "rotate: the angle must be finite, got ", degrees);
  const int W = img.width, H = img.height;
  double a = std::fmod(degrees, 360.0);  // Python's angle % 360
  if (a < 0) a += 360.0;
  // the exact paths of v2 rotate_image (torch.rot90)
  if (a == 0) return img;
  if (a == 180) return vflip(hflip(img));
  if ((a == 90 || a == 270) && W == H) {
    Image out(W, H);
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x)  // rot90 k=1: out[y][x] = in[x][W-1-y]; k=3: in[W-1-x][y]
        std::copy_n(a == 90 ? img.px(W - 1 - y, x) : img.px(y, W - 1 - x), 3, out.px(x, y));
    return out;
  }
  // _get_inverse_affine_matrix(centre 0, -a) -> theta (float32) / (size / 2), as _affine_grid
  const double t = -a * (std::numbers::pi / 180.0);
  const float hw = 0.5f * float(W), hh = 0.5f * float(H);
  const float t00 = float(std::cos(t)) / hw, t10 = float(std::sin(t)) / hw;
  const float t01 = float(-std::sin(t)) / hh, t11 = float(std::cos(t)) / hh;
  Image out(W, H);  // zero = fill
  for (int i = 0; i < H; ++i) {
    const float y = float(i) - 0.5f * float(H - 1);
    for (int j = 0; j < W; ++j) {
      const float x = float(j) - 0.5f * float(W - 1);
      const float gx = x * t00 + y * t10 + 0.f, gy = x * t01 + y * t11 + 0.f;
      // grid_sample, nearest, align_corners False: (g + 1) * size / 2 - 0.5, rounded half to even
      const float ix = std::nearbyint((gx + 1.f) * hw - 0.5f), iy = std::nearbyint((gy + 1.f) * hh - 0.5f);
      if (ix >= 0 && ix <= float(W - 1) && iy >= 0 && iy <= float(H - 1))
        std::copy_n(img.px(int(ix), int(iy)), 3, out.px(j, i));
    }
  }
  return out;
}

Image resized_crop(const Image& img, const CropBox& b, int out_w, int out_h) {
  MMATTN_CHECK(b.width > 0 && b.height > 0 && b.left >= 0 && b.top >= 0 && b.left + b.width <= img.width &&
                   b.top + b.height <= img.height,
               ShapeError, "resized_crop: box (top ", b.top, ", left ", b.left, ", ", b.width, "x", b.height,
               ") is not inside the ", img.width, "x", img.height, " image");
  Image crop(b.width, b.height);
  for (int y = 0; y < b.height; ++y) std::copy_n(img.px(b.left, b.top + y), 3 * size_t(b.width), crop.px(0, y));
  return resize_image(crop, out_w, out_h, ResampleFilter::kBilinear, ResampleImpl::kTorch);
}

// --- colour ---------------------------------------------------------------------------------------

Image adjust_brightness(const Image& img, double factor) {
  check_factor("adjust_brightness", factor);
  const float f = float(factor);
  Image out = img;
  for (uint8_t& v : out.rgb) v = trunc_u8(float(v) * f);
  return out;
}

Image adjust_contrast(const Image& img, double factor) {
  check_factor("adjust_contrast", factor);
  const size_t n = size_t(img.width) * size_t(img.height);
  double sum = 0;  // exact for integer greys (torch's float32 sum is exact up to 2^24)
  for (size_t i = 0; i < n; ++i) sum += grey_floor(&img.rgb[3 * i]);
  const float mean = float(sum) / float(n);
  const float r = float(factor), rr = float(1.0 - factor);
  Image out = img;
  for (uint8_t& v : out.rgb) v = blend(v, mean, r, rr);
  return out;
}

Image adjust_saturation(const Image& img, double factor) {
  check_factor("adjust_saturation", factor);
  const float r = float(factor), rr = float(1.0 - factor);
  Image out = img;
  for (size_t i = 0; i < out.rgb.size(); i += 3) {
    const float g = grey_floor(&img.rgb[i]);
    for (size_t c = 0; c < 3; ++c) out.rgb[i + c] = blend(img.rgb[i + c], g, r, rr);
  }
  return out;
}

Image adjust_hue(const Image& img, double factor) {
  MMATTN_CHECK(factor >= -0.5 && factor <= 0.5, ConfigError, "adjust_hue: factor must be in [-0.5, 0.5], got ", factor);
  const float hue = float(factor), scale = float(1.0 / 255);
  // vpqt -> rgb by the sextant i (v2 _hsv_to_rgb)
  static constexpr int kSelect[3][6] = {{0, 2, 1, 1, 3, 0}, {3, 0, 0, 2, 1, 1}, {1, 1, 3, 0, 0, 2}};
  Image out = img;
  for (size_t px = 0; px < out.rgb.size(); px += 3) {
    const float r = float(img.rgb[px]) * scale, g = float(img.rgb[px + 1]) * scale, b = float(img.rgb[px + 2]) * scale;
    // _rgb_to_hsv
    const float maxc = std::max({r, g, b}), minc = std::min({r, g, b});
    const bool eqc = maxc == minc;
    const float range = maxc - minc;
    const float s = range / (eqc ? 1.f : maxc), div = eqc ? 1.f : range;
    const float rc = (maxc - r) / div, gc = (maxc - g) / div, bc = (maxc - b) / div;
    const float hg = ((rc + 2.f) - bc) * float(maxc == g && maxc != r);
    const float hr = (bc - gc) * float(maxc == r);
    const float hb = ((gc + 4.f) - rc) * float(maxc != r && maxc != g);
    float h = std::fmod((hr + hg + hb) * float(1.0 / 6.0) + 1.f, 1.f);
    // h <- (h + hue) remainder 1 (Python-style: the sign of the divisor)
    h = std::fmod(h + hue, 1.f);
    if (h != 0 && h < 0) h += 1.f;
    // _hsv_to_rgb
    const float h6 = h * 6.f, fi = std::floor(h6), f = h6 - fi;
    int i = int(fi) % 6;
    if (i < 0) i += 6;
    const float v = maxc, sxf = s * f, oms = 1.f - s;
    const float vpqt[4] = {v, std::clamp(oms * v, 0.f, 1.f), std::clamp((1.f - sxf) * v, 0.f, 1.f),
                           std::clamp((sxf + oms) * v, 0.f, 1.f)};
    for (int c = 0; c < 3; ++c) out.rgb[px + size_t(c)] = uint8_t(vpqt[kSelect[c][i]] * float(255.0 + 1.0 - 1e-3));
  }
  return out;
}

// --- blur ------------------------------------------------------------------------------------------

Image gaussian_blur(const Image& img, int k, double sigma) {
  MMATTN_CHECK(k >= 1 && k % 2 == 1, ConfigError, "gaussian_blur: kernel size must be odd and positive, got ", k);
  MMATTN_CHECK(sigma > 0 && std::isfinite(sigma), ConfigError, "gaussian_blur: sigma must be > 0, got ", sigma);
  const int W = img.width, H = img.height, r = k / 2;
  std::vector<double> w(static_cast<size_t>(k));
  double z = 0;
  for (int i = 0; i < k; ++i) z += (w[size_t(i)] = std::exp(-0.5 * (i - r) * (i - r) / (sigma * sigma)));
  for (double& x : w) x /= z;
  std::vector<double> tmp(size_t(W) * size_t(H) * 3);  // horizontal pass
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x)
      for (int c = 0; c < 3; ++c) {
        double s = 0;
        for (int i = 0; i < k; ++i) s += w[size_t(i)] * img.px(reflect(x + i - r, W), y)[c];
        tmp[(size_t(y) * W + x) * 3 + size_t(c)] = s;
      }
  Image out(W, H);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x)
      for (int c = 0; c < 3; ++c) {
        double s = 0;
        for (int i = 0; i < k; ++i) s += w[size_t(i)] * tmp[(size_t(reflect(y + i - r, H)) * W + x) * 3 + size_t(c)];
        out.px(x, y)[c] = uint8_t(std::clamp(std::nearbyint(s), 0.0, 255.0));
      }
  return out;
}

// --- RITUAL's draw -----------------------------------------------------------------------------------

std::string ImageTransform::describe() const {
  switch (kind) {
    case ImageTransformKind::Rotate: return str_cat("rotate(angle=", angle, ")");
    case ImageTransformKind::ColorJitter: {
      static const char* names[4] = {"brightness", "contrast", "saturation", "hue"};
      const double v[4] = {brightness, contrast, saturation, hue};
      std::string s = "color_jitter(";
      for (int i = 0; i < 4; ++i) s += str_cat(i ? ", " : "", names[order[size_t(i)]], "=", v[order[size_t(i)]]);
      return s + ")";
    }
    case ImageTransformKind::Blur: return str_cat("blur(kernel_size=", kernel_size, ", sigma=", sigma, ")");
    case ImageTransformKind::ResizedCrop:
      return str_cat("resized_crop(top=", box.top, ", left=", box.left, ", height=", box.height, ", width=", box.width,
                     ", size=", out_w, "x", out_h, ")");
    default: return image_transform_name(kind);
  }
}

namespace {
// torchvision's RandomResizedCrop.make_params with scale (0.08, 1), ratio (3/4, 4/3).
CropBox draw_crop_box(std::mt19937_64& g, int W, int H) {
  const double area = double(W) * double(H), lo = std::log(3.0 / 4.0), hi = std::log(4.0 / 3.0);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * (0.08 + 0.92 * uniform01(g));
    const double ratio = std::exp(lo + (hi - lo) * uniform01(g));
    const int w = int(std::nearbyint(std::sqrt(target * ratio))), h = int(std::nearbyint(std::sqrt(target / ratio)));
    if (w > 0 && w <= W && h > 0 && h <= H) {
      const int top = int(uniform01(g) * double(H - h + 1)), left = int(uniform01(g) * double(W - w + 1));
      return {top, left, h, w};
    }
  }
  const double in_ratio = double(W) / double(H);
  int w = W, h = H;
  if (in_ratio < 3.0 / 4.0) h = int(std::nearbyint(double(w) / (3.0 / 4.0)));
  else if (in_ratio > 4.0 / 3.0) w = int(std::nearbyint(double(h) * (4.0 / 3.0)));
  return {(H - h) / 2, (W - w) / 2, h, w};
}
}  // namespace

ImageTransform draw_image_transform(std::optional<ImageTransformKind> kind, int width, int height, int out_w,
                                    int out_h, uint64_t seed) {
  MMATTN_CHECK(width > 0 && height > 0 && out_w > 0 && out_h > 0, ShapeError, "draw_image_transform: image ", width,
               "x", height, ", output ", out_w, "x", out_h);
  std::mt19937_64 g(seed);
  ImageTransform t;
  t.kind = kind ? *kind : kNames[std::min(int(uniform01(g) * kNumImageTransforms), kNumImageTransforms - 1)].k;
  switch (t.kind) {
    case ImageTransformKind::Rotate: t.angle = -180.0 + 360.0 * uniform01(g); break;
    case ImageTransformKind::ColorJitter:
      for (int i = 3; i >= 1; --i) std::swap(t.order[size_t(i)], t.order[size_t(uniform01(g) * double(i + 1))]);
      t.brightness = 2.0 * uniform01(g);
      t.contrast = 2.0 * uniform01(g);
      t.saturation = 2.0 * uniform01(g);
      t.hue = uniform01(g) - 0.5;
      break;
    case ImageTransformKind::Blur: t.sigma = 1.5 + 0.5 * uniform01(g); break;
    case ImageTransformKind::ResizedCrop:
      t.box = draw_crop_box(g, width, height);
      t.out_w = out_w, t.out_h = out_h;
      break;
    default: break;
  }
  return t;
}

Image apply_image_transform(const Image& img, const ImageTransform& t) {
  switch (t.kind) {
    case ImageTransformKind::HFlip: return hflip(img);
    case ImageTransformKind::VFlip: return vflip(img);
    case ImageTransformKind::Rotate: return rotate_image(img, t.angle);
    case ImageTransformKind::ColorJitter: {
      Image out = img;
      for (int f : t.order) {
        if (f == 0) out = adjust_brightness(out, t.brightness);
        else if (f == 1) out = adjust_contrast(out, t.contrast);
        else if (f == 2) out = adjust_saturation(out, t.saturation);
        else out = adjust_hue(out, t.hue);
      }
      return out;
    }
    case ImageTransformKind::Blur: return gaussian_blur(img, t.kernel_size, t.sigma);
    case ImageTransformKind::ResizedCrop: return resized_crop(img, t.box, t.out_w, t.out_h);
  }
  MMATTN_THROW(ConfigError, "apply_image_transform: unknown transform");
}

}  // namespace mmattn
