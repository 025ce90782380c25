// CLIP preprocessing on the GPU (clip_preprocess_to on CUDA) against the host path, bit for bit:
// every shared image and hand-made awkward ones (a 1x1, a thin strip, upscaling, an image already
// at the crop size, one smaller than the crop), both resampling arithmetics, both filters,
// expand2square, exact-size resize, crop padding, no crop / no resize, and all float dtypes.
#include <cstring>
#include <filesystem>
#include <random>

#include "test_util.h"
#include "vision/clip_preprocess.h"
#include "vision/image.h"

using namespace mmattn;
using namespace mmattn::test;
namespace fs = std::filesystem;

namespace {

Image random_image(int w, int h, uint32_t seed) {
  Image img(w, h);
  std::mt19937 rng(seed);
  for (auto& v : img.rgb) v = uint8_t(rng() & 0xFF);
  return img;
}

std::vector<std::pair<std::string, Image>> test_images() {
  std::vector<std::pair<std::string, Image>> out;
  for (const auto& e : fs::directory_iterator(source_dir() + "/assets/images")) {
    const std::string ext = e.path().extension().string();
    if (ext == ".jpg" || ext == ".png") out.emplace_back(e.path().filename().string(), load_image(e.path().string()));
  }
  out.emplace_back("1x1", random_image(1, 1, 1));
  out.emplace_back("strip 400x3", random_image(400, 3, 2));
  out.emplace_back("small 37x23 (upscaled)", random_image(37, 23, 3));
  out.emplace_back("crop-sized 336x336", random_image(336, 336, 4));
  out.emplace_back("tall 211x517", random_image(211, 517, 5));
  return out;
}

std::vector<std::pair<std::string, ClipPreprocessConfig>> test_configs() {
  std::vector<std::pair<std::string, ClipPreprocessConfig>> out;
  ClipPreprocessConfig c;
  out.emplace_back("default (torch bicubic)", c);
  ClipPreprocessConfig pil = c;
  pil.resize_impl = ResampleImpl::kPillow;
  out.emplace_back("pillow", pil);
  ClipPreprocessConfig pad = c;
  pad.pad_to_square = true;
  out.emplace_back("pad_to_square", pad);
  ClipPreprocessConfig bil = pil;
  bil.resample = ResampleFilter::kBilinear;
  bil.pad_to_square = true;
  out.emplace_back("pillow bilinear pad", bil);
  ClipPreprocessConfig exact = c;
  exact.size_w = 301;
  exact.size_h = 173;  // smaller than the crop in height: zero padding
  exact.crop_w = 224;
  out.emplace_back("exact size 301x173, crop 224x336", exact);
  ClipPreprocessConfig padcrop = pil;
  padcrop.shortest_edge = 200;  // crop 336 > resized: padding offsets rounded up (pillow)
  out.emplace_back("pillow, crop larger than the image", padcrop);
  ClipPreprocessConfig nocrop = c;
  nocrop.do_center_crop = false;
  nocrop.do_normalize = false;
  out.emplace_back("no crop, no normalise", nocrop);
  ClipPreprocessConfig noresize = c;
  noresize.do_resize = false;
  noresize.do_rescale = false;
  out.emplace_back("no resize, no rescale", noresize);
  return out;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.data_ptr(), b.data_ptr(), size_t(a.numel()) * a.itemsize()) == 0;
}

}  // namespace

TEST(ClipPreprocessCuda, BitExactWithTheHostPath) {
  MMATTN_REQUIRE_GPU();
  int cases = 0;
  for (const auto& [iname, img] : test_images())
    for (const auto& [cname, cfg] : test_configs())
      for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
        SCOPED_TRACE(iname + ", " + cname + ", " + std::string(dtype_name(dt)));
        const Image want_crop = clip_resize_crop(img, cfg);
        const Tensor want = clip_normalize(want_crop, cfg).to(dt);
        Image got_crop;
        const Tensor got = clip_preprocess_to(img, cfg, Device::cuda(), dt, &got_crop);
        ASSERT_TRUE(got.is_cuda());
        const Tensor got_h = got.to(Device::cpu());
        ASSERT_EQ(got_crop.width, want_crop.width);
        ASSERT_EQ(got_crop.height, want_crop.height);
        EXPECT_TRUE(got_crop.rgb == want_crop.rgb);
        EXPECT_TRUE(same_bits(got_h, want)) << "max abs diff " << max_abs_diff(got_h, want);
        // without the crop download: same pixels
        EXPECT_TRUE(same_bits(clip_preprocess_to(img, cfg, Device::cuda(), dt).to(Device::cpu()), want));
        ++cases;
      }
  EXPECT_GT(cases, 100);
}

TEST(ClipPreprocessCuda, Errors) {
  MMATTN_REQUIRE_GPU();
  EXPECT_THROW(clip_preprocess_to(Image(), ClipPreprocessConfig{}, Device::cuda(), DType::BF16), ShapeError);
  EXPECT_THROW(clip_preprocess_to(random_image(8, 8, 1), ClipPreprocessConfig{}, Device::cuda(), DType::I32),
               ShapeError);
  ClipPreprocessConfig bad;
  bad.std[1] = 0.f;
  EXPECT_THROW(clip_preprocess_to(random_image(8, 8, 1), bad, Device::cuda(), DType::BF16), ConfigError);
}
