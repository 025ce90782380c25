// Image decoding and CLIP preprocessing: parity with transformers' CLIPImageProcessor (golden
// uint8 crops and pixel_values made by tools/golden/llava.py), Pillow's resampler on hand-computed
// cases, PIL's mode conversions, expand2square, center crop, preprocessor_config.json, and errors.
#include <unistd.h>

#include <cstdio>  // before jpeglib.h

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#if MMATTN_HAS_LIBJPEG
#include <jpeglib.h>
#endif

#include "core/safetensors.h"
#include "test_util.h"
#include "vision/clip_preprocess.h"
#include "vision/image.h"
#include "vision/resample.h"

using namespace mmattn;
using namespace mmattn::test;
namespace fs = std::filesystem;

namespace {

std::string images_dir() { return source_dir() + "/assets/images"; }

struct TempDir {
  fs::path path;
  TempDir() {
    std::string t = (fs::temp_directory_path() / "mmattn_vis_XXXXXX").string();
    if (!::mkdtemp(t.data())) throw std::runtime_error("mkdtemp failed");
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

Image load_bytes(const std::string& bytes, const ImageLoadOptions& opt = {}) {
  return load_image_from_memory(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "<test>", opt);
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// --- a minimal PNG writer for what stb_image_write cannot make (16-bit samples) ---------------
uint32_t crc32(const std::string& s) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : s) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
  }
  return ~c;
}
void put32(std::string& s, uint32_t v) {
  for (int i = 3; i >= 0; --i) s.push_back(char((v >> (8 * i)) & 0xFF));
}
std::string chunk(const std::string& type, const std::string& data) {
  std::string s;
  put32(s, uint32_t(data.size()));
  std::string td = type + data;
  s += td;
  put32(s, crc32(td));
  return s;
}
// zlib stream of stored (uncompressed) deflate blocks.
std::string zlib_stored(const std::string& raw) {
  std::string z = {char(0x78), char(0x01)};
  size_t pos = 0;
  do {
    const size_t n = std::min<size_t>(65535, raw.size() - pos);
    const bool last = pos + n == raw.size();
    z.push_back(char(last ? 1 : 0));
    z.push_back(char(n & 0xFF));
    z.push_back(char(n >> 8));
    z.push_back(char(~n & 0xFF));
    z.push_back(char((~n >> 8) & 0xFF));
    z += raw.substr(pos, n);
    pos += n;
  } while (pos < raw.size());
  uint32_t a = 1, b = 0;
  for (unsigned char c : raw) {
    a = (a + c) % 65521;
    b = (b + a) % 65521;
  }
  put32(z, b << 16 | a);
  return z;
}
// color_type: 0 gray, 2 RGB, 4 gray+alpha, 6 RGBA; samples big-endian 16-bit, row-major.
std::string png16(int w, int h, int color_type, const std::vector<uint16_t>& samples) {
  const int ch = color_type == 0 ? 1 : color_type == 2 ? 3 : color_type == 4 ? 2 : 4;
  std::string ihdr;
  put32(ihdr, uint32_t(w));
  put32(ihdr, uint32_t(h));
  ihdr += {char(16), char(color_type), 0, 0, 0};
  std::string raw;
  for (int y = 0; y < h; ++y) {
    raw.push_back(0);  // filter: none
    for (int i = 0; i < w * ch; ++i) {
      const uint16_t v = samples[size_t(y) * w * ch + i];
      raw.push_back(char(v >> 8));
      raw.push_back(char(v & 0xFF));
    }
  }
  return std::string("\x89PNG\r\n\x1a\n", 8) + chunk("IHDR", ihdr) + chunk("IDAT", zlib_stored(raw)) + chunk("IEND", "");
}

struct DiffStats {
  int max_abs = 0;
  double frac_differ = 0;
};
DiffStats diff_u8(const Image& got, const Tensor& want) {
  DiffStats d;
  const uint8_t* w = want.contiguous().data<uint8_t>();
  size_t differ = 0;
  for (size_t i = 0; i < got.rgb.size(); ++i) {
    const int e = std::abs(int(got.rgb[i]) - int(w[i]));
    d.max_abs = std::max(d.max_abs, e);
    differ += e != 0;
  }
  d.frac_differ = double(differ) / double(got.rgb.size());
  return d;
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// FNV-1a of the [336, 336, 3] uint8 crops PIL 12.3 makes (on the GPU machine, transformers 5.17's
// CLIPImageProcessorPil gives the same bytes):
//   im = Image.open(f).convert("RGB"); w, h = im.size
//   nw, nh = (336, int(336 * h / w)) if w <= h else (int(336 * w / h), 336)
//   a = np.asarray(im.resize((nw, nh), Image.BICUBIC))
//   a[(nh - 336) // 2:][:336, (nw - 336) // 2:][:, :336].tobytes()
const std::map<std::string, uint64_t> kPilCropHash = {
    {"astronaut.png", 0x6b93fb04c8420e4aull},
    {"camera.png", 0x1c03991e869f97e3ull},
    {"chelsea.png", 0xed0622fe2e547b47ull},
    {"coco_val2017_000000039769.png", 0xebeef2be74f5f191ull},
    {"coffee.png", 0x223eb1bd75ec20c9ull},
    {"extreme_ironing.jpg", 0x144c7aba4f4de419ull},
    {"rocket.png", 0x7a424f9cc026c724ull},
    {"waterview.jpg", 0x7cc8cb9fe508ffcfull},
};

Image random_image(int w, int h, uint64_t seed) {
  Image img(w, h);
  std::mt19937_64 rng(seed);
  for (auto& v : img.rgb) v = uint8_t(rng() & 0xFF);
  return img;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Parity with transformers on every image in assets/images.

TEST(ClipPreprocess, GoldenCropsEveryAssetImage) {
  // The golden crops come from transformers 5's CLIPImageProcessor, i.e. its torchvision backend
  // on PIL-decoded images: with libjpeg decoding and the torch resampler they must be identical.
  // The Pillow resampler (transformers' PIL backend) must give PIL's bytes (kPilCropHash); it
  // differs from torchvision by up to 2 levels (chelsea, an upscale).
  SafeTensorsFile golden(golden_dir() + "/tiny_llava_preprocess.safetensors");
  const ClipPreprocessConfig cfg;  // LLaVA-1.5 / CLIP-336: the golden processor's settings
  ASSERT_EQ(cfg.resize_impl, ResampleImpl::kTorch);
  ClipPreprocessConfig pil_cfg = cfg;
  pil_cfg.resize_impl = ResampleImpl::kPillow;
  const bool libjpeg = std::string(jpeg_decoder_name()) == "libjpeg";
  std::printf("  JPEG decoder: %s\n", jpeg_decoder_name());
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(images_dir())) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  EXPECT_EQ(files.size(), 8u);
  for (const auto& p : files) {
    const std::string stem = p.stem().string(), ext = p.extension().string();
    const std::string name = "clip_u8_" + stem;
    ASSERT_TRUE(golden.has(name)) << "no golden crop for " << p;
    const Tensor want = golden.get(name);
    ASSERT_EQ(want.shape(), (Shape{336, 336, 3}));
    const Image img = load_image(p.string());
    const Image crop = clip_resize_crop(img, cfg);
    ASSERT_EQ(crop.width, 336);
    ASSERT_EQ(crop.height, 336);
    const DiffStats d = diff_u8(crop, want);
    const DiffStats dp = diff_u8(clip_resize_crop(img, pil_cfg), want);
    const auto [rw, rh] = clip_resize_size(img.width, img.height, cfg);
    std::printf("  %-30s %4dx%-4d -> %dx%d  torch: max|diff| %d, %.4f%% differ;  pillow: max|diff| %d, %.4f%% differ\n",
                p.filename().c_str(), img.width, img.height, rw, rh, d.max_abs, 100.0 * d.frac_differ, dp.max_abs,
                100.0 * dp.frac_differ);
    if (ext == ".png" || libjpeg) {
      EXPECT_EQ(d.max_abs, 0) << p;
      const Image pil_crop = clip_resize_crop(img, pil_cfg);
      const std::string bytes(pil_crop.rgb.begin(), pil_crop.rgb.end());
      ASSERT_TRUE(kPilCropHash.count(p.filename().string())) << p;
      EXPECT_EQ(fnv1a(bytes), kPilCropHash.at(p.filename().string())) << p << ": Pillow arithmetic differs from PIL's";
    } else {
      EXPECT_LE(d.max_abs, 3) << p << " (stb's JPEG decoder fallback vs libjpeg-turbo)";
    }
  }
}

TEST(ClipPreprocess, GoldenPixelValues) {
  SafeTensorsFile golden(golden_dir() + "/tiny_llava_golden.safetensors");
  const Tensor want = golden.get("pixel_values");
  ASSERT_EQ(want.shape(), (Shape{1, 3, 336, 336}));
  const ClipPreprocessConfig cfg;
  const Tensor got = clip_preprocess(load_image(images_dir() + "/extreme_ironing.jpg"), cfg);
  ASSERT_EQ(got.shape(), (Shape{3, 336, 336}));
  const double step = 1.0 / 255.0 / *std::min_element(cfg.std.begin(), cfg.std.end());
  const double m = max_abs_diff(got.unsqueeze(0), want);
  std::printf("  pixel_values max|diff| %.3g (one 8-bit step: %.6f)\n", m, step);
  // Equal crops: only f32 rounding differs (transformers fuses rescale into mean/std).
  EXPECT_LE(m, std::string(jpeg_decoder_name()) == "libjpeg" ? 1e-5 : 3 * step + 1e-5);
  // Where the uint8 crop agrees, the values agree to float rounding.
  const Tensor crop_want = SafeTensorsFile(golden_dir() + "/tiny_llava_preprocess.safetensors").get("clip_u8_extreme_ironing");
  const Image crop = clip_resize_crop(load_image(images_dir() + "/extreme_ironing.jpg"), cfg);
  const uint8_t* cw = crop_want.data<uint8_t>();
  const auto g = got.to_floats(), w = want.to_floats();
  double m_same = 0;
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 336 * 336; ++i)
      if (crop.rgb[size_t(i) * 3 + c] == cw[size_t(i) * 3 + c])
        m_same = std::max(m_same, double(std::fabs(g[size_t(c) * 336 * 336 + i] - w[size_t(c) * 336 * 336 + i])));
  EXPECT_LT(m_same, 1e-5);
}

// ------------------------------------------------------------------------------------------------
// The resampler.

TEST(Resample, ConstantStaysConstant) {
  for (auto f : {ResampleFilter::kBicubic, ResampleFilter::kBilinear})
    for (auto [w, h, ow, oh] : std::vector<std::array<int, 4>>{{17, 9, 5, 3}, {5, 3, 17, 9}, {100, 1, 33, 7}, {1, 1, 4, 4}}) {
      Image img(w, h);
      for (size_t i = 0; i < img.rgb.size(); i += 3) img.rgb[i] = 0, img.rgb[i + 1] = 128, img.rgb[i + 2] = 255;
      const Image out = resize_pil(img, ow, oh, f);
      ASSERT_EQ(out.width, ow);
      ASSERT_EQ(out.height, oh);
      for (size_t i = 0; i < out.rgb.size(); i += 3)
        ASSERT_TRUE(out.rgb[i] == 0 && out.rgb[i + 1] == 128 && out.rgb[i + 2] == 255)
            << resample_filter_name(f) << " " << w << "x" << h << " -> " << ow << "x" << oh << " at " << i / 3;
    }
}

TEST(Resample, SameSizeIsACopy) {
  const Image img = random_image(13, 7, 1);
  const Image out = resize_bicubic_pil(img, 13, 7);
  EXPECT_EQ(out.rgb, img.rgb);
}

TEST(Resample, HandComputedOneRow) {
  // Bilinear 4 -> 2: scale 2, support 2; output 0 reads pixels 0..2 with triangle weights
  // .75 .75 .25 (normalised 3/7 3/7 1/7); output 1 reads 1..3 with 1/7 3/7 3/7.
  Image row(4, 1);
  const uint8_t v[4] = {0, 100, 200, 250};
  for (int x = 0; x < 4; ++x) row.px(x, 0)[0] = row.px(x, 0)[1] = row.px(x, 0)[2] = v[x];
  Image out = resize_pil(row, 2, 1, ResampleFilter::kBilinear);
  EXPECT_EQ(out.px(0, 0)[0], 71);   // 500 / 7 = 71.43
  EXPECT_EQ(out.px(1, 0)[0], 207);  // 1450 / 7 = 207.14
  // Bicubic 2 -> 4 (upsampling, a = -0.5): [0, 255] -> [0 (clipped -22.5), 53, 202, 255 (clipped)].
  Image two(2, 1);
  two.px(1, 0)[0] = two.px(1, 0)[1] = two.px(1, 0)[2] = 255;
  out = resize_bicubic_pil(two, 4, 1);
  const uint8_t want[4] = {0, 53, 202, 255};
  for (int x = 0; x < 4; ++x) EXPECT_EQ(out.px(x, 0)[1], want[x]) << x;
  // The same along a column (vertical pass only).
  Image col(1, 2);
  col.px(0, 1)[2] = 255;
  out = resize_bicubic_pil(col, 1, 4);
  for (int y = 0; y < 4; ++y) EXPECT_EQ(out.px(0, y)[2], want[y]) << y;
}

TEST(Resample, TapsMatchPillowBounds) {
  // 570 -> 504 bicubic (extreme_ironing): support 2 * 570/504, ksize 2 * ceil(2.26) + 1 = 7.
  const ResampleTaps t = resample_taps(570, 504, ResampleFilter::kBicubic, ResampleImpl::kPillow);
  EXPECT_EQ(t.ksize, 7);
  EXPECT_EQ(t.first[0], 0);
  EXPECT_EQ(t.first.back() + t.count.back(), 570);
  for (size_t i = 0; i < t.first.size(); ++i) {
    int64_t sum = 0;
    for (int j = 0; j < t.count[i]; ++j) sum += t.w[i * t.ksize + j];
    EXPECT_NEAR(double(sum), double(1 << 22), 8.0) << i;
  }
}

TEST(Resample, TorchInt16Precision) {
  // torch: the most fractional bits for which the largest weight fits an int16; same bounds and,
  // up to rounding, the same weights as Pillow's.
  for (auto [in, out] : std::vector<std::pair<int, int>>{{570, 504}, {1000, 503}, {300, 336}, {97, 5}, {2, 4}}) {
    const ResampleTaps t = resample_taps(in, out, ResampleFilter::kBicubic, ResampleImpl::kTorch);
    const ResampleTaps p = resample_taps(in, out, ResampleFilter::kBicubic, ResampleImpl::kPillow);
    EXPECT_EQ(p.precision, 22);
    EXPECT_EQ(t.first, p.first);
    EXPECT_EQ(t.count, p.count);
    int32_t wmax = 0;
    for (int32_t w : t.w) wmax = std::max(wmax, w);
    EXPECT_LT(wmax, 1 << 15) << in << "->" << out;
    EXPECT_GE(2 * wmax + 1, 1 << 15) << in << "->" << out << ": one more bit would still fit";
    for (size_t i = 0; i < t.w.size(); ++i)
      EXPECT_LE(std::fabs(t.w[i] / double(1 << t.precision) - p.w[i] / double(1 << 22)), 1.0 / (1 << t.precision));
  }
  // The two arithmetics differ on real data, by at most 1 per pass.
  const Image img = random_image(97, 61, 3);
  const Image a = resize_image(img, 40, 30, ResampleFilter::kBicubic, ResampleImpl::kTorch);
  const Image b = resize_image(img, 40, 30, ResampleFilter::kBicubic, ResampleImpl::kPillow);
  int md = 0;
  for (size_t i = 0; i < a.rgb.size(); ++i) md = std::max(md, std::abs(int(a.rgb[i]) - int(b.rgb[i])));
  EXPECT_LE(md, 2);
}

TEST(Resample, MatchesDoubleReferenceWithinRounding) {
  // Single-pass (one row) results against sum(v * w) in double, rounded: fixed point may differ
  // by one only where the exact value sits next to .5.
  const Image img = random_image(97, 1, 7);
  for (int ow : {1, 5, 31, 96, 98, 300}) {
    const ResampleTaps t = resample_taps(97, ow, ResampleFilter::kBicubic, ResampleImpl::kPillow);
    const Image out = resize_bicubic_pil(img, ow, 1);
    for (int x = 0; x < ow; ++x)
      for (int c = 0; c < 3; ++c) {
        double s = 0;
        for (int j = 0; j < t.count[x]; ++j) s += img.px(t.first[x] + j, 0)[c] * (t.w[x * t.ksize + j] / double(1 << 22));
        const double ref = std::clamp(std::floor(s + 0.5), 0.0, 255.0);
        EXPECT_LE(std::fabs(out.px(x, 0)[c] - ref), 1.0) << ow << " " << x;
      }
  }
}

TEST(Resample, BadSizesAreErrors) {
  const Image img = random_image(4, 4, 2);
  EXPECT_THROW(resize_bicubic_pil(img, 0, 4), ShapeError);
  EXPECT_THROW(resize_bicubic_pil(img, 4, -1), ShapeError);
  EXPECT_THROW(resize_bicubic_pil(Image(), 4, 4), ShapeError);
}

// ------------------------------------------------------------------------------------------------
// Geometry: sizes, expand2square, center crop.

TEST(ClipPreprocess, ResizeSizeAsTransformers) {
  ClipPreprocessConfig cfg;
  EXPECT_EQ(clip_resize_size(570, 380, cfg), (std::pair<int, int>{504, 336}));
  EXPECT_EQ(clip_resize_size(451, 300, cfg), (std::pair<int, int>{505, 336}));  // 505.12 truncated
  EXPECT_EQ(clip_resize_size(300, 451, cfg), (std::pair<int, int>{336, 505}));
  EXPECT_EQ(clip_resize_size(1000, 667, cfg), (std::pair<int, int>{503, 336}));
  EXPECT_EQ(clip_resize_size(512, 512, cfg), (std::pair<int, int>{336, 336}));
  EXPECT_EQ(clip_resize_size(100, 100, cfg), (std::pair<int, int>{336, 336}));
  cfg.size_h = 224, cfg.size_w = 300;
  EXPECT_EQ(clip_resize_size(570, 380, cfg), (std::pair<int, int>{300, 224}));
}

TEST(ClipPreprocess, ExpandToSquareAsLlava) {
  const auto bg = mean_color_u8(ClipPreprocessConfig().mean);
  EXPECT_EQ(int(bg[0]), 122);  // int(0.48145466 * 255) = int(122.77)
  EXPECT_EQ(int(bg[1]), 116);
  EXPECT_EQ(int(bg[2]), 104);
  const Image wide = random_image(5, 2, 3);
  Image sq = expand_to_square(wide, bg);
  ASSERT_EQ(sq.width, 5);
  ASSERT_EQ(sq.height, 5);
  // paste at (0, (5 - 2) // 2 = 1)
  for (int y = 0; y < 5; ++y)
    for (int x = 0; x < 5; ++x) {
      const uint8_t* p = sq.px(x, y);
      if (y == 1 || y == 2) {
        EXPECT_EQ(0, std::memcmp(p, wide.px(x, y - 1), 3)) << x << "," << y;
      } else {
        EXPECT_TRUE(p[0] == 122 && p[1] == 116 && p[2] == 104) << x << "," << y;
      }
    }
  const Image tall = random_image(2, 5, 4);
  sq = expand_to_square(tall, bg);
  ASSERT_EQ(sq.width, 5);
  for (int y = 0; y < 5; ++y) EXPECT_EQ(0, std::memcmp(sq.px(1, y), tall.px(0, y), 6));  // at x = 1
  EXPECT_EQ(sq.px(0, 0)[0], 122);
  EXPECT_EQ(sq.px(3, 0)[0], 122);
  // pad_to_square in the pipeline: a 2:1 image becomes a square before the resize (here to the
  // same size, so the result is exactly the padded image), then an 8x8 resize of it.
  ClipPreprocessConfig cfg;
  cfg.pad_to_square = true;
  cfg.shortest_edge = cfg.crop_h = cfg.crop_w = 16;
  Image red(16, 8);
  for (size_t i = 0; i < red.rgb.size(); i += 3) red.rgb[i] = 255;
  Image out = clip_resize_crop(red, cfg);
  ASSERT_EQ(out.width, 16);
  for (int y = 0; y < 16; ++y) {
    const uint8_t* p = out.px(7, y);
    if (y >= 4 && y < 12) {
      EXPECT_TRUE(p[0] == 255 && p[1] == 0 && p[2] == 0) << y;
    } else {
      EXPECT_TRUE(p[0] == 122 && p[1] == 116 && p[2] == 104) << y;
    }
  }
  cfg.shortest_edge = cfg.crop_h = cfg.crop_w = 8;
  out = clip_resize_crop(red, cfg);
  EXPECT_EQ(out.width, 8);
  EXPECT_EQ(out.height, 8);
  const Tensor t = clip_preprocess(red, cfg);
  EXPECT_EQ(t.shape(), (Shape{3, 8, 8}));
}

TEST(ClipPreprocess, CenterCropOffsetsAndPadding) {
  const Image img = random_image(7, 6, 5);
  Image c = center_crop(img, 4, 3);  // left (7-4)//2 = 1, top (6-3)//2 = 1
  for (int y = 0; y < 3; ++y)
    for (int x = 0; x < 4; ++x) EXPECT_EQ(0, std::memcmp(c.px(x, y), img.px(x + 1, y + 1), 3));
  // Smaller than the crop: zero padding, image at (8 - 7) // 2 = 0 and (9 - 6) // 2 = 1.
  c = center_crop(img, 8, 9);
  for (int y = 0; y < 9; ++y)
    for (int x = 0; x < 8; ++x) {
      const bool inside = x < 7 && y >= 1 && y < 7;
      if (inside) {
        EXPECT_EQ(0, std::memcmp(c.px(x, y), img.px(x, y - 1), 3));
      } else {
        EXPECT_TRUE(c.px(x, y)[0] == 0 && c.px(x, y)[1] == 0 && c.px(x, y)[2] == 0) << x << "," << y;
      }
    }
  // numpy path (transformers' PIL backend): the offset rounds up, (8 - 7 + 1) // 2 = 1, (9 - 6 + 1) // 2 = 2.
  c = center_crop(img, 8, 9, /*pad_offset_round_up=*/true);
  EXPECT_EQ(0, std::memcmp(c.px(1, 2), img.px(0, 0), 3));
  EXPECT_EQ(c.px(0, 2)[0] | c.px(0, 2)[1] | c.px(0, 2)[2], 0);
}

TEST(ClipPreprocess, NormalisesToChw) {
  Image img(2, 1);
  img.px(0, 0)[0] = 255, img.px(1, 0)[2] = 51;
  ClipPreprocessConfig cfg;
  cfg.do_resize = cfg.do_center_crop = false;
  const Tensor t = clip_preprocess(img, cfg);
  ASSERT_EQ(t.shape(), (Shape{3, 1, 2}));
  const auto v = t.to_floats();
  EXPECT_NEAR(v[0], (1.f - cfg.mean[0]) / cfg.std[0], 1e-6);
  EXPECT_NEAR(v[1], (0.f - cfg.mean[0]) / cfg.std[0], 1e-6);
  EXPECT_NEAR(v[5], (0.2f - cfg.mean[2]) / cfg.std[2], 1e-6);
  cfg.do_normalize = false;
  EXPECT_NEAR(clip_preprocess(img, cfg).to_floats()[0], 1.f, 1e-7);
  cfg.do_rescale = false;
  EXPECT_NEAR(clip_preprocess(img, cfg).to_floats()[5], 51.f, 1e-7);
}

// clip_preprocess_to on the CPU: the host path in the asked dtype, the crop handed back (the CUDA
// path is checked bit for bit against this in test_clip_preprocess_cuda).
TEST(ClipPreprocess, ToDeviceOnTheCpu) {
  const Image img = load_image(images_dir() + "/extreme_ironing.jpg");
  ClipPreprocessConfig cfg;
  cfg.pad_to_square = true;
  Image crop;
  const Tensor t = clip_preprocess_to(img, cfg, Device::cpu(), DType::BF16, &crop);
  ASSERT_EQ(t.dtype(), DType::BF16);
  ASSERT_EQ(t.shape(), (Shape{3, 336, 336}));
  const Image want = clip_resize_crop(img, cfg);
  EXPECT_TRUE(crop.rgb == want.rgb);
  EXPECT_EQ(t.to_floats(), clip_normalize(want, cfg).to(DType::BF16).to_floats());
  EXPECT_THROW(clip_preprocess_to(img, cfg, Device::cpu(), DType::U8), ShapeError);
  EXPECT_THROW(clip_preprocess_to(Image(), cfg, Device::cpu(), DType::F32), ShapeError);
}

// ------------------------------------------------------------------------------------------------
// preprocessor_config.json

TEST(ClipPreprocess, ConfigFromHfJson) {
  // llava-hf/llava-1.5-7b-hf's preprocessor_config.json
  const Json j = Json::parse(R"({
    "crop_size": {"height": 336, "width": 336}, "do_center_crop": true, "do_convert_rgb": true,
    "do_normalize": true, "do_rescale": true, "do_resize": true,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_processor_type": "CLIPImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711], "processor_class": "LlavaProcessor",
    "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 336}})");
  const auto c = ClipPreprocessConfig::from_json(j, "preprocessor_config.json");
  const ClipPreprocessConfig d;
  EXPECT_EQ(c.shortest_edge, 336);
  EXPECT_EQ(c.crop_h, 336);
  EXPECT_EQ(c.crop_w, 336);
  EXPECT_EQ(c.resample, ResampleFilter::kBicubic);
  EXPECT_FLOAT_EQ(c.rescale, d.rescale);
  for (int i = 0; i < 3; ++i) {
    EXPECT_FLOAT_EQ(c.mean[i], d.mean[i]);
    EXPECT_FLOAT_EQ(c.std[i], d.std[i]);
  }
  // Old-style ints; absent keys take CLIPImageProcessor's defaults (224).
  auto o = ClipPreprocessConfig::from_json(Json::parse(R"({"size": 336, "crop_size": 320, "resample": 2})"), "x");
  EXPECT_EQ(o.shortest_edge, 336);
  EXPECT_EQ(o.crop_h, 320);
  EXPECT_EQ(o.resample, ResampleFilter::kBilinear);
  EXPECT_EQ(c.resize_impl, ResampleImpl::kTorch);
  o = ClipPreprocessConfig::from_json(Json::parse(R"({"image_processor_type": "CLIPImageProcessorPil"})"), "x");
  EXPECT_EQ(o.resize_impl, ResampleImpl::kPillow);
  o = ClipPreprocessConfig::from_json(Json::parse("{}"), "x");
  EXPECT_EQ(o.shortest_edge, 224);
  EXPECT_EQ(o.crop_w, 224);
  o = ClipPreprocessConfig::from_json(Json::parse(R"({"size": {"height": 384, "width": 384}, "image_mean": 0.5})"), "x");
  EXPECT_EQ(o.size_h, 384);
  EXPECT_FLOAT_EQ(o.mean[2], 0.5f);
}

TEST(ClipPreprocess, ConfigErrorsNameThePath) {
  auto err = [](const char* text) {
    return error_of([&] { ClipPreprocessConfig::from_json(Json::parse(text), "pp.json"); });
  };
  std::string e = err(R"({"resample": 1})");
  EXPECT_NE(e.find("pp.json: $.resample"), std::string::npos) << e;
  e = err(R"({"size": {"longest_edge": 5, "shortest_edge": 3}})");
  EXPECT_NE(e.find("$.size.longest_edge"), std::string::npos) << e;
  e = err(R"({"image_std": [0.5, 0.5]})");
  EXPECT_NE(e.find("$.image_std"), std::string::npos) << e;
  e = err(R"({"crop_size": {"height": 5}})");
  EXPECT_NE(e.find("$.crop_size.width"), std::string::npos) << e;
  e = err(R"({"do_resize": "yes"})");
  EXPECT_NE(e.find("$.do_resize"), std::string::npos) << e;
  e = err(R"({"size": 0})");
  EXPECT_NE(e.find("shortest_edge"), std::string::npos) << e;
  EXPECT_THROW(ClipPreprocessConfig::from_json(Json::parse(R"({"image_std": [1, 0, 1]})"), "x"), ConfigError);
  EXPECT_THROW(ClipPreprocessConfig::from_json_file("/nonexistent/preprocessor_config.json"), IoError);
}

// ------------------------------------------------------------------------------------------------
// Decoding: PIL's convert("RGB") semantics.

TEST(ImageIo, GrayAlphaAndRgbaConvertLikePil) {
  // gray: replicated
  const uint8_t gray[6] = {0, 10, 20, 200, 254, 255};
  Image img = load_bytes(encode_png(gray, 3, 2, 1));
  ASSERT_EQ(img.width, 3);
  ASSERT_EQ(img.height, 2);
  for (int i = 0; i < 6; ++i)
    EXPECT_TRUE(img.rgb[i * 3] == gray[i] && img.rgb[i * 3 + 1] == gray[i] && img.rgb[i * 3 + 2] == gray[i]) << i;
  // gray + alpha: alpha dropped, even when 0 (no compositing onto black or white)
  const uint8_t ga[4] = {77, 0, 200, 128};
  img = load_bytes(encode_png(ga, 2, 1, 2));
  EXPECT_TRUE(img.rgb[0] == 77 && img.rgb[1] == 77 && img.rgb[2] == 77);
  EXPECT_TRUE(img.rgb[3] == 200 && img.rgb[5] == 200);
  // RGBA: alpha dropped
  const uint8_t rgba[8] = {10, 20, 30, 0, 40, 50, 60, 255};
  img = load_bytes(encode_png(rgba, 2, 1, 4));
  const uint8_t want[6] = {10, 20, 30, 40, 50, 60};
  EXPECT_EQ(0, std::memcmp(img.rgb.data(), want, 6));
  // RGB round trip through save_png / load_image
  TempDir tmp;
  const Image r = random_image(9, 4, 11);
  save_png(r, tmp / "r.png");
  EXPECT_EQ(load_image(tmp / "r.png").rgb, r.rgb);
}

TEST(ImageIo, SixteenBitPng) {
  // RGB16 / RGBA16 / GA16: the high byte (PIL's ;16B unpackers)
  Image img = load_bytes(png16(2, 1, 2, {0x1234, 0xFFFF, 0x00FF, 0x8000, 0x7FFF, 0x0100}));
  const uint8_t want_rgb[6] = {0x12, 0xFF, 0x00, 0x80, 0x7F, 0x01};
  EXPECT_EQ(0, std::memcmp(img.rgb.data(), want_rgb, 6));
  img = load_bytes(png16(1, 1, 6, {0xAB00, 0x0100, 0xFFFF, 0x0000}));
  EXPECT_TRUE(img.rgb[0] == 0xAB && img.rgb[1] == 0x01 && img.rgb[2] == 0xFF);
  img = load_bytes(png16(1, 1, 4, {0x4321, 0x0000}));
  EXPECT_TRUE(img.rgb[0] == 0x43 && img.rgb[1] == 0x43 && img.rgb[2] == 0x43);
  // Gray16: PIL's "I;16" -> RGB saturates at 255; kHighByte scales instead.
  const std::string g16 = png16(4, 1, 0, {0, 200, 256, 0xFFFF});
  img = load_bytes(g16);
  const uint8_t sat[4] = {0, 200, 255, 255};
  for (int i = 0; i < 4; ++i)
    EXPECT_TRUE(img.rgb[i * 3] == sat[i] && img.rgb[i * 3 + 1] == sat[i] && img.rgb[i * 3 + 2] == sat[i]) << i;
  ImageLoadOptions hb;
  hb.gray16 = Gray16::kHighByte;
  img = load_bytes(g16, hb);
  const uint8_t high[4] = {0, 0, 1, 255};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(img.rgb[i * 3 + 1], high[i]) << i;
}

TEST(ImageIo, GrayscaleAssetIsReplicated) {
  const Image img = load_image(images_dir() + "/camera.png");
  ASSERT_EQ(img.width, 512);
  for (size_t i = 0; i < img.rgb.size(); i += 3)
    ASSERT_TRUE(img.rgb[i] == img.rgb[i + 1] && img.rgb[i] == img.rgb[i + 2]) << i / 3;
}

TEST(ImageIo, ProgressiveAndBaselineJpeg) {
  const Image a = load_image(images_dir() + "/waterview.jpg");  // progressive
  EXPECT_EQ(a.width, 1000);
  EXPECT_EQ(a.height, 667);
  const Image b = load_image(images_dir() + "/extreme_ironing.jpg");  // baseline
  EXPECT_EQ(b.width, 570);
  EXPECT_EQ(b.height, 380);
  const std::string bytes = read_bytes(images_dir() + "/extreme_ironing.jpg");
  EXPECT_EQ(load_bytes(bytes).rgb, b.rgb);
}

#if MMATTN_HAS_LIBJPEG
// A JPEG made with libjpeg itself (q100 by default): 1 (gray), 3 (RGB: luma sampling factors hs x
// vs, chroma 1 x 1) or 4 (CMYK, stored as given, Adobe marker) components.
std::string make_jpeg(int w, int h, int comps, const std::vector<uint8_t>& px, int quality = 100, int hs = 2,
                      int vs = 2, bool progressive = false) {
  jpeg_compress_struct c;
  jpeg_error_mgr e;
  c.err = jpeg_std_error(&e);
  jpeg_create_compress(&c);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&c, &buf, &size);
  c.image_width = JDIMENSION(w);
  c.image_height = JDIMENSION(h);
  c.input_components = comps;
  c.in_color_space = comps == 1 ? JCS_GRAYSCALE : comps == 3 ? JCS_RGB : JCS_CMYK;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, quality, TRUE);
  if (comps == 3) c.comp_info[0].h_samp_factor = hs, c.comp_info[0].v_samp_factor = vs;
  if (progressive) jpeg_simple_progression(&c);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(px.data()) + size_t(c.next_scanline) * w * comps;
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  std::string out(reinterpret_cast<const char*>(buf), size);
  std::free(buf);
  return out;
}

// Bands of rows decoded by threads of their own give the pixels of one decoder: every chroma
// subsampling (fancy upsampling reads rows across a band's edge), baseline and progressive, odd
// sizes, gray and CMYK, and the asset photos.
TEST(ImageIo, JpegBandsEqualOneDecoder) {
  auto check = [](const std::string& bytes, const std::string& what) {
    ImageLoadOptions one;
    one.jpeg_bands = 1;
    const Image ref = load_image_from_memory(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), what, one);
    for (int bands : {2, 3, 4, 7}) {
      ImageLoadOptions o;
      o.jpeg_bands = bands;
      const Image got = load_image_from_memory(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), what, o);
      ASSERT_EQ(got.width, ref.width) << what;
      ASSERT_EQ(got.height, ref.height) << what;
      size_t bad = 0;
      for (size_t i = 0; i < ref.rgb.size(); ++i) bad += got.rgb[i] != ref.rgb[i];
      EXPECT_EQ(bad, 0u) << what << ", " << bands << " bands";
    }
  };
  check(read_bytes(images_dir() + "/extreme_ironing.jpg"), "extreme_ironing.jpg");
  check(read_bytes(images_dir() + "/waterview.jpg"), "waterview.jpg (progressive)");
  struct Shape {
    int w, h, comps, hs, vs;
    bool progressive;
  };
  for (const Shape& sh : {Shape{333, 257, 3, 2, 2, false}, Shape{640, 97, 3, 2, 1, false}, Shape{129, 301, 3, 1, 1, false},
                          Shape{250, 250, 3, 1, 2, false}, Shape{401, 203, 3, 2, 2, true}, Shape{300, 211, 1, 1, 1, false},
                          Shape{96, 130, 4, 1, 1, false}}) {
    std::vector<uint8_t> px(size_t(sh.w) * sh.h * sh.comps);
    uint32_t r = 12345;
    for (int y = 0; y < sh.h; ++y)
      for (int x = 0; x < sh.w; ++x)
        for (int c = 0; c < sh.comps; ++c) {
          r = r * 1664525u + 1013904223u;  // smooth gradients plus noise: every frequency band busy
          px[(size_t(y) * sh.w + x) * sh.comps + c] = uint8_t((x * (c + 1) + y * (3 - c % 3) + (r >> 27)) & 0xff);
        }
    check(make_jpeg(sh.w, sh.h, sh.comps, px, 85, sh.hs, sh.vs, sh.progressive),
          std::to_string(sh.w) + "x" + std::to_string(sh.h) + " comps " + std::to_string(sh.comps) + " sampling " +
              std::to_string(sh.hs) + "x" + std::to_string(sh.vs) + (sh.progressive ? " progressive" : ""));
  }
}

TEST(ImageIo, GrayAndCmykJpegConvertLikePil) {
  std::vector<uint8_t> gray(16 * 8);
  for (size_t i = 0; i < gray.size(); ++i) gray[i] = uint8_t(i * 2);
  Image img = load_bytes(make_jpeg(16, 8, 1, gray));
  ASSERT_EQ(img.width, 16);
  for (size_t i = 0; i < gray.size(); ++i) {
    ASSERT_TRUE(img.rgb[i * 3] == img.rgb[i * 3 + 1] && img.rgb[i * 3] == img.rgb[i * 3 + 2]) << i;
    EXPECT_LE(std::abs(int(img.rgb[i * 3]) - int(gray[i])), 2) << i;
  }
  // Stored CMYK (200, 150, 100, 230) everywhere. PIL reads it as inverted (Adobe): c, m, y, k =
  // 55, 105, 155, 25; cmyk2rgb: nk = 230, channel = nk - MULDIV255(c, nk) -> (180, 135, 90).
  std::vector<uint8_t> cmyk;
  for (int i = 0; i < 16 * 16; ++i) cmyk.insert(cmyk.end(), {200, 150, 100, 230});
  img = load_bytes(make_jpeg(16, 16, 4, cmyk));
  for (size_t i = 0; i < img.rgb.size(); i += 3) {
    EXPECT_NEAR(img.rgb[i], 180, 1) << i / 3;
    EXPECT_NEAR(img.rgb[i + 1], 135, 1) << i / 3;
    EXPECT_NEAR(img.rgb[i + 2], 90, 1) << i / 3;
  }
}
#endif

// ------------------------------------------------------------------------------------------------
// Bad input: every error names the file.

TEST(ImageIo, MissingFileIsIoError) {
  const std::string p = "/nonexistent/dir/cat.jpg";
  try {
    load_image(p);
    FAIL() << "no error";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
  TempDir tmp;
  EXPECT_THROW(load_image(tmp.path.string()), IoError);  // a directory
}

TEST(ImageIo, CorruptFilesAreFormatErrors) {
  TempDir tmp;
  const std::string jpg = read_bytes(images_dir() + "/extreme_ironing.jpg");
  const std::string png = read_bytes(images_dir() + "/chelsea.png");
  struct Case {
    std::string name, bytes, expect;
  };
  std::string bad_crc = png;
  bad_crc[bad_crc.size() / 2] ^= 0x5A;  // inside IDAT
  const std::vector<Case> cases = {
      {"head.jpg", jpg.substr(0, 100), "head.jpg"},
      {"half.jpg", jpg.substr(0, jpg.size() * 6 / 10), "truncated JPEG"},
      {"noeoi.jpg", jpg.substr(0, jpg.size() - 2), "truncated JPEG"},
      {"head.png", png.substr(0, 100), "PNG"},
      {"half.png", png.substr(0, png.size() / 2), "truncated PNG"},
      {"crc.png", bad_crc, "bad CRC"},
      {"notes.txt", "hello, this is not an image\n", "not a JPEG or PNG"},
      {"empty.png", "", "empty file"},
      {"sig.png", std::string("\x89PNG\r\n\x1a\n", 8) + "garbage-garbage-garbage", "PNG"},
      {"soi.jpg", std::string("\xFF\xD8\xFF\xE0", 4) + std::string(50, '\0'), "soi.jpg"},
  };
  for (const auto& c : cases) {
    const std::string p = tmp / c.name;
    write_bytes(p, c.bytes);
    try {
      load_image(p);
      ADD_FAILURE() << c.name << ": no error";
    } catch (const FormatError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(p), std::string::npos) << c.name << ": " << msg;
      EXPECT_NE(msg.find(c.expect), std::string::npos) << c.name << ": " << msg;
    } catch (const std::exception& e) {
      ADD_FAILURE() << c.name << ": wrong error type: " << e.what();
    }
  }
  // JPEG with bytes after EOI (some cameras append data) still loads.
  const Image ok = load_bytes(jpg + std::string(64, '\0'));
  EXPECT_EQ(ok.width, 570);
}

TEST(ImageIo, TensorRoundTrip) {
  const Image img = random_image(5, 3, 9);
  const Tensor t = img.to_tensor();
  EXPECT_EQ(t.shape(), (Shape{3, 5, 3}));
  EXPECT_EQ(Image::from_tensor(t).rgb, img.rgb);
  EXPECT_THROW((Image::from_tensor(Tensor::zeros({3, 5}, DType::U8))), ShapeError);
  EXPECT_THROW((Image::from_tensor(Tensor::zeros({3, 5, 3}, DType::F32))), ShapeError);
}
