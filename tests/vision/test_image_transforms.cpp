// RITUAL's image transforms (vision/image_transforms.h): each against the torch reference of
// torchvision v2's uint8 kernels (tools/golden/image_transforms.py) on small hand-made images,
// hand-computed cases, the resized crop's box and resize, and the documented random draws.
#include <algorithm>
#include <map>
#include <set>

#include "core/checkpoint.h"
#include "test_util.h"
#include "vision/image_transforms.h"
#include "vision/resample.h"

using namespace mmattn;
using namespace mmattn::test;

namespace {

Image golden(const std::string& name) {
  static Checkpoint g(golden_dir() + "/image_transforms.safetensors");
  return Image::from_tensor(g.load(name, Device::cpu(), DType::U8));
}

// Pixels differing, and the largest difference.
std::pair<int, int> diff(const Image& a, const Image& b) {
  EXPECT_EQ(a.width, b.width);
  EXPECT_EQ(a.height, b.height);
  int n = 0, m = 0;
  for (size_t i = 0; i < a.rgb.size() && i < b.rgb.size(); ++i) {
    const int d = std::abs(int(a.rgb[i]) - int(b.rgb[i]));
    n += d ? 1 : 0;
    m = std::max(m, d);
  }
  return {n, m};
}

Image make(int w, int h, std::initializer_list<uint8_t> rgb) {
  Image img(w, h);
  std::copy(rgb.begin(), rgb.end(), img.rgb.begin());
  return img;
}

}  // namespace

TEST(ImageTransforms, MatchTorchReference) {
  const Image a = golden("img_a"), sq = golden("img_sq"), b = golden("img_b");
  const std::map<std::string, Image> got = {
      {"hflip_a", hflip(a)},
      {"vflip_a", vflip(a)},
      {"rotate_a_30", rotate_image(a, 30.0)},
      {"rotate_a_m137_5", rotate_image(a, -137.5)},
      {"rotate_a_180", rotate_image(a, 180.0)},
      {"rotate_a_400", rotate_image(a, 400.0)},
      {"rotate_sq_90", rotate_image(sq, 90.0)},
      {"rotate_sq_m90", rotate_image(sq, -90.0)},
      {"rotate_sq_45", rotate_image(sq, 45.0)},
      {"brightness_a_1_37", adjust_brightness(a, 1.37)},
      {"brightness_a_0", adjust_brightness(a, 0.0)},
      {"contrast_a_0_61", adjust_contrast(a, 0.61)},
      {"contrast_a_1_9", adjust_contrast(a, 1.9)},
      {"saturation_a_1_8", adjust_saturation(a, 1.8)},
      {"saturation_a_0", adjust_saturation(a, 0.0)},
      {"hue_a_0_23", adjust_hue(a, 0.23)},
      {"hue_a_m0_41", adjust_hue(a, -0.41)},
      {"hue_a_0_5", adjust_hue(a, 0.5)},
      {"hue_sq_m0_5", adjust_hue(sq, -0.5)},
  };
  for (const auto& [name, img] : got) {
    const auto [n, m] = diff(img, golden(name));
    EXPECT_EQ(n, 0) << name << ": " << n << " values differ, by up to " << m;
  }
  ImageTransform j;
  j.kind = ImageTransformKind::ColorJitter;
  j.order = {2, 0, 3, 1};
  j.brightness = 1.2, j.contrast = 0.7, j.saturation = 1.5, j.hue = -0.2;
  EXPECT_EQ(diff(apply_image_transform(a, j), golden("jitter_a")).first, 0);
  // the blur accumulates in double where torch's conv2d is float32: equal except where the exact
  // value lies within float error of a rounding boundary (none on these images)
  for (const auto& [name, k, s] : {std::tuple<const char*, int, double>{"blur_b_13_1_7", 13, 1.7},
                                   {"blur_b_13_2_0", 13, 2.0}, {"blur_b_3_0_8", 3, 0.8}}) {
    const auto [n, m] = diff(gaussian_blur(b, k, s), golden(name));
    EXPECT_EQ(n, 0) << name << ": " << n << " values differ, by up to " << m;
  }
  // the transforms really change the images
  EXPECT_GT(diff(rotate_image(a, 30.0), a).first, 20);
  EXPECT_GT(diff(gaussian_blur(b, 13, 1.7), b).first, 200);
}

TEST(ImageTransforms, ByHand) {
  // 2 x 2: (x, y) = (0, 0) red, (1, 0) green, (0, 1) blue, (1, 1) grey 100
  const Image img = make(2, 2, {255, 0, 0, 0, 255, 0, 0, 0, 255, 100, 100, 100});
  EXPECT_EQ(hflip(img).rgb, make(2, 2, {0, 255, 0, 255, 0, 0, 100, 100, 100, 0, 0, 255}).rgb);
  EXPECT_EQ(vflip(img).rgb, make(2, 2, {0, 0, 255, 100, 100, 100, 255, 0, 0, 0, 255, 0}).rgb);
  EXPECT_EQ(rotate_image(img, 180).rgb, make(2, 2, {100, 100, 100, 0, 0, 255, 0, 255, 0, 255, 0, 0}).rgb);
  // counter-clockwise: the top-right pixel (green) goes to the top left
  EXPECT_EQ(rotate_image(img, 90).rgb, make(2, 2, {0, 255, 0, 100, 100, 100, 255, 0, 0, 0, 0, 255}).rgb);
  EXPECT_EQ(rotate_image(img, -270).rgb, rotate_image(img, 90).rgb);
  // brightness 1.5: 255 saturates, 100 -> 150
  EXPECT_EQ(adjust_brightness(img, 1.5).rgb, make(2, 2, {255, 0, 0, 0, 255, 0, 0, 0, 255, 150, 150, 150}).rgb);
  // hue + 0.5: red -> cyan, green -> magenta, blue -> yellow; grey stays
  EXPECT_EQ(adjust_hue(img, 0.5).rgb, make(2, 2, {0, 255, 255, 255, 0, 255, 255, 255, 0, 100, 100, 100}).rgb);
  // saturation 0: each pixel becomes floor(grey): red 76 (76.2195), green 149 (149.685), blue 29
  // (29.07), grey 100 99 (the weights sum to 0.9999, as torchvision's)
  EXPECT_EQ(adjust_saturation(img, 0).rgb, make(2, 2, {76, 76, 76, 149, 149, 149, 29, 29, 29, 99, 99, 99}).rgb);
  // contrast 0: every value becomes the mean grey (76 + 149 + 29 + 99) / 4 = 88.25, truncated
  for (uint8_t v : adjust_contrast(img, 0).rgb) EXPECT_EQ(v, 88);
  // a uniform image keeps its values under contrast and blur
  Image grey(9, 9);
  std::fill(grey.rgb.begin(), grey.rgb.end(), uint8_t(77));
  EXPECT_EQ(adjust_contrast(grey, 1.7).rgb, grey.rgb);
  EXPECT_EQ(gaussian_blur(grey, 13, 1.9).rgb, grey.rgb);
  EXPECT_THROW(adjust_hue(img, 0.6), ConfigError);
  EXPECT_THROW(gaussian_blur(img, 4, 1.0), ConfigError);
  EXPECT_THROW(adjust_contrast(img, -1), ConfigError);
}

TEST(ImageTransforms, ResizedCrop) {
  const Image b = golden("img_b");  // 16 x 12
  // the whole image at its own size is the image; a box at its own size is the box
  EXPECT_EQ(resized_crop(b, {0, 0, 12, 16}, 16, 12).rgb, b.rgb);
  const Image box = resized_crop(b, {3, 5, 4, 6}, 6, 4);
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 6; ++x)
      for (int c = 0; c < 3; ++c) EXPECT_EQ(box.px(x, y)[c], b.px(5 + x, 3 + y)[c]);
  // then torch's antialiased bilinear resize
  EXPECT_EQ(resized_crop(b, {3, 5, 4, 6}, 9, 7).rgb,
            resize_image(box, 9, 7, ResampleFilter::kBilinear, ResampleImpl::kTorch).rgb);
  EXPECT_THROW(resized_crop(b, {10, 0, 4, 4}, 4, 4), ShapeError);
  EXPECT_THROW(resized_crop(b, {0, 0, 0, 4}, 4, 4), ShapeError);
}

TEST(ImageTransforms, Draws) {
  // reproducible; the seed matters
  const ImageTransform t1 = draw_image_transform(std::nullopt, 570, 380, 336, 336, 7);
  EXPECT_EQ(t1.describe(), draw_image_transform(std::nullopt, 570, 380, 336, 336, 7).describe());
  std::set<std::string> seen;
  for (uint64_t s = 0; s < 20; ++s)
    seen.insert(draw_image_transform(ImageTransformKind::Rotate, 570, 380, 336, 336, s).describe());
  EXPECT_EQ(seen.size(), 20u);
  // the kind is uniform over the six; parameters stay in their ranges
  std::map<ImageTransformKind, int> count;
  const int n = 6000;
  for (uint64_t s = 0; s < uint64_t(n); ++s) {
    const ImageTransform t = draw_image_transform(std::nullopt, 570, 380, 336, 336, s);
    ++count[t.kind];
    EXPECT_GE(t.angle, -180.0);
    EXPECT_LT(t.angle, 180.0);
    if (t.kind == ImageTransformKind::ColorJitter) {
      std::array<int, 4> o = t.order;
      std::sort(o.begin(), o.end());
      EXPECT_EQ(o, (std::array<int, 4>{0, 1, 2, 3}));
      EXPECT_TRUE(t.brightness >= 0 && t.brightness < 2 && t.contrast >= 0 && t.contrast < 2 && t.saturation >= 0 &&
                  t.saturation < 2 && t.hue >= -0.5 && t.hue < 0.5);
    }
    if (t.kind == ImageTransformKind::Blur) EXPECT_TRUE(t.sigma >= 1.5 && t.sigma < 2.0 && t.kernel_size == 13);
    if (t.kind == ImageTransformKind::ResizedCrop) {
      const CropBox& b = t.box;
      EXPECT_TRUE(b.top >= 0 && b.left >= 0 && b.top + b.height <= 380 && b.left + b.width <= 570) << t.describe();
      const double area = double(b.width) * b.height / (570.0 * 380.0), ratio = double(b.width) / b.height;
      EXPECT_TRUE(area > 0.07 && area < 1.01 && ratio > 0.74 && ratio < 1.35) << t.describe();
      EXPECT_EQ(t.out_w, 336);
    }
  }
  ASSERT_EQ(count.size(), 6u);
  for (const auto& [k, c] : count) EXPECT_NEAR(c, n / 6, 150) << image_transform_name(k);  // ~5 sigma
  // a fixed kind is kept, and applying it gives the drawn size
  const ImageTransform rc = draw_image_transform(ImageTransformKind::ResizedCrop, 40, 30, 24, 20, 3);
  EXPECT_EQ(rc.kind, ImageTransformKind::ResizedCrop);
  const Image out =
      apply_image_transform(golden("img_b"), draw_image_transform(ImageTransformKind::ResizedCrop, 16, 12, 24, 20, 3));
  EXPECT_EQ(out.width, 24);
  EXPECT_EQ(out.height, 20);
  // names
  for (int i = 0; i < kNumImageTransforms; ++i) {
    ImageTransformKind k;
    ASSERT_TRUE(parse_image_transform(image_transform_name(ImageTransformKind(i)), &k));
    EXPECT_EQ(int(k), i);
  }
  ImageTransformKind k;
  EXPECT_FALSE(parse_image_transform("random", &k));
}
