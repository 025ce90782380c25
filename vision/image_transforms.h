#pragma once
// RITUAL's random image transforms (sangminwoo/RITUAL; docs/modulation.md) on 8-bit RGB images.
// Each follows torchvision.transforms.v2's kernel for uint8 tensors, float32 arithmetic in the same
// order (fused multiply-add where torch's vectorised CPU kernels fuse "a + alpha * b"):
//  - hflip / vflip.
//  - rotate_image(deg): v2 rotate_image, nearest, expand False, about the image centre, fill 0.
//    deg mod 360 of 0 / 180 (and 90 / 270 on square images) are exact transposes; otherwise output
//    pixel (x, y) reads input pixel nearbyint((g + 1) * size / 2 - 0.5) of the float32 sampling
//    grid g = theta [x - (W-1)/2, y - (H-1)/2, 1] / (size / 2), theta the inverse rotation
//    [cos t, sin t, 0; -sin t, cos t, 0] at t = -deg (so positive angles turn counter-clockwise);
//    reads outside the image give 0.
//  - adjust_brightness / contrast / saturation (v2 _blend: trunc(clamp(f v + (1 - f) d))) with
//    d = 0, the mean of the floored grey image, or the floored grey pixel; grey =
//    0.2989 r + 0.587 g + 0.114 b. adjust_hue: v2's float HSV round trip, h <- (h + f) mod 1,
//    back to uint8 as trunc(x * 255.999).
//  - gaussian_blur(k, sigma): weights softmax(-(x / sigma)^2) at x = linspace(-(k-1)/(2 sqrt 2),
//    (k-1)/(2 sqrt 2), k) (the normalised Gaussian exp(-i^2 / (2 sigma^2))), separable, reflect
//    padding (edge not repeated), rounded half to even. Accumulated in double, so a pixel can
//    differ by 1 from torch's float32 conv2d where the exact value is within ~1e-4 of a half.
//  - resized_crop(box, w, h): the box, then vision/resample.h's antialiased bilinear resize with
//    torch's arithmetic (kTorch), as v2's resized_crop on a uint8 tensor.
// RITUAL runs torchvision on PIL images, whose PIL kernels round differently (e.g. PIL's rotation
// samples at pixel centres with floor, its contrast mean is an integer): mmattn follows the
// tensor kernels; the random draws cannot match RITUAL's anyway.
//
// Random draws (draw_image_transform), from std::mt19937_64(seed); u = (next() >> 11) * 2^-53 in
// [0, 1), one u per draw, in this order:
//  1. the kind, when not given: floor(6 u) over hflip, vflip, rotate, color_jitter, blur,
//     resized_crop (RITUAL's random.choice);
//  2. its parameters: rotate: angle -180 + 360 u (RandomRotation(180)); color_jitter: the order of
//     (brightness, contrast, saturation, hue) by Fisher-Yates (i = 3..1: swap i with floor((i + 1) u)),
//     then brightness 2u, contrast 2u, saturation 2u, hue u - 0.5 (ColorJitter(1, 1, 1, 0.5));
//     blur: kernel 13, sigma 1.5 + 0.5 u (GaussianBlur(13, (1.5, 2))); resized_crop:
//     RandomResizedCrop(size) with scale (0.08, 1), ratio (3/4, 4/3): up to 10 tries of area
//     A (0.08 + 0.92 u), log-ratio log(3/4) + (log(4/3) - log(3/4)) u, w = round(sqrt(a r)),
//     h = round(sqrt(a / r)); a fitting box takes top floor((H - h + 1) u), left floor((W - w + 1) u);
//     else the central crop of the ratio clamped to [3/4, 4/3].
#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "vision/image.h"

namespace mmattn {

enum class ImageTransformKind { HFlip, VFlip, Rotate, ColorJitter, Blur, ResizedCrop };
inline constexpr int kNumImageTransforms = 6;
// "hflip", "vflip", "rotate", "color_jitter", "blur", "resized_crop"
const char* image_transform_name(ImageTransformKind k);
// false for an unknown name.
bool parse_image_transform(const std::string& name, ImageTransformKind* out);

Image hflip(const Image& img);
Image vflip(const Image& img);
Image rotate_image(const Image& img, double degrees);
Image adjust_brightness(const Image& img, double factor);  // factor >= 0
Image adjust_contrast(const Image& img, double factor);    // factor >= 0
Image adjust_saturation(const Image& img, double factor);  // factor >= 0
Image adjust_hue(const Image& img, double factor);         // factor in [-0.5, 0.5]
Image gaussian_blur(const Image& img, int kernel_size, double sigma);  // odd kernel_size, sigma > 0

struct CropBox {
  int top = 0, left = 0, height = 0, width = 0;
};
// ShapeError for a box outside the image or an empty one.
Image resized_crop(const Image& img, const CropBox& box, int out_w, int out_h);

// One drawn transform with its parameters.
struct ImageTransform {
  ImageTransformKind kind = ImageTransformKind::HFlip;
  double angle = 0;  // rotate, degrees
  // color_jitter: adjustments in this order (0 brightness, 1 contrast, 2 saturation, 3 hue)
  std::array<int, 4> order = {0, 1, 2, 3};
  double brightness = 1, contrast = 1, saturation = 1, hue = 0;
  int kernel_size = 13;  // blur
  double sigma = 1.5;
  CropBox box;           // resized_crop
  int out_w = 0, out_h = 0;
  // e.g. "rotate(angle=-12.5)", for logs and reports.
  std::string describe() const;
};

// The draw above for an image of width x height; resized_crop resizes to out_w x out_h.
ImageTransform draw_image_transform(std::optional<ImageTransformKind> kind, int width, int height, int out_w,
                                    int out_h, uint64_t seed);
Image apply_image_transform(const Image& img, const ImageTransform& t);

}  // namespace mmattn
