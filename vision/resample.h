#pragma once
// Bit-exact antialiased resampling of 8-bit RGB images as Pillow (Image.resize(size, BILINEAR |
// BICUBIC), no box, no reducing_gap) and torch (interpolate(uint8, antialias=True), CPU) do it: the
// resize inside transformers' CLIP preprocessing (PIL backend / torchvision backend).
//
// The algorithm (Pillow's libImaging/Resample.c, ImagingResample for 8 bits per channel):
//  - Separable convolution, antialiased: for a scale s = in/out, the filter is stretched by
//    max(s, 1), so its support is filter.support * max(s, 1) input pixels.
//  - Output pixel i has centre (i + 0.5) * s; its taps are the input pixels
//    [int(centre - support + 0.5), int(centre + support + 0.5)) clipped to the image, with weight
//    filter((j - centre + 0.5) / max(s, 1)), normalised to sum 1 per output pixel (in double).
//  - Weights become fixed point with P fractional bits, each rounded half away from zero; a pixel
//    is clip8((2^(P-1) + sum v * w) >> P). Pillow: P = PRECISION_BITS = 32 - 8 - 2 = 22. torch
//    (Pillow-SIMD's scheme): int16 weights, P chosen per pass (see ResampleImpl).
//  - Horizontal pass first (only the rows the vertical pass reads), into an intermediate 8-bit
//    image, then the vertical pass (both libraries). A pass whose size does not change is skipped
//    (so resizing to the same size returns a copy).
//  - Bicubic is Keys' cubic with a = -0.5 (support 2); bilinear is the triangle (support 1).
// Pitfall: the intermediate rounding to 8 bits is part of the result; doing both passes in
// float (as torch's float path does) differs by 1 at some pixels.
#include <cstdint>
#include <vector>

#include "vision/image.h"

namespace mmattn {

// Values are PIL's Image.Resampling numbers (what preprocessor_config.json's "resample" holds).
enum class ResampleFilter { kBilinear = 2, kBicubic = 3 };
const char* resample_filter_name(ResampleFilter f);  // "bilinear", "bicubic"

// Whose fixed-point arithmetic to reproduce. The weights (in double) are the same in both.
enum class ResampleImpl {
  // PIL Image.resize: int32 weights with 22 fractional bits. transformers < 5's
  // CLIPImageProcessor and its PIL backend ("CLIPImageProcessorPil") resize this way.
  kPillow,
  // torch.nn.functional.interpolate(uint8, antialias=True) on the CPU (AVX2 kernel and generic
  // fallback alike), which is what torchvision's resize runs for uint8 bilinear/bicubic and so what
  // transformers >= 5's default (torchvision) CLIPImageProcessor gives: int16 weights with the
  // most fractional bits (<= 22) for which the pass's largest weight fits, typically 14-15.
  // Differs from kPillow by 1 at ~0.1-0.6% of the pixels (rarely 2 after both passes).
  kTorch,
};
const char* resample_impl_name(ResampleImpl i);  // "pillow", "torch"

// ShapeError for an empty input or a non-positive output size.
Image resize_image(const Image& img, int out_w, int out_h, ResampleFilter filter, ResampleImpl impl);
inline Image resize_pil(const Image& img, int out_w, int out_h, ResampleFilter filter) {
  return resize_image(img, out_w, out_h, filter, ResampleImpl::kPillow);
}
inline Image resize_bicubic_pil(const Image& img, int out_w, int out_h) {
  return resize_pil(img, out_w, out_h, ResampleFilter::kBicubic);
}

// The fixed-point taps of one resampling pass (exposed for tests): output pixel i reads
// count[i] input pixels from first[i] with weights w[i * ksize + j] (sum ~ 2^precision).
struct ResampleTaps {
  int ksize = 0;
  int precision = 0;  // fractional bits of w
  std::vector<int> first, count;
  std::vector<int32_t> w;
};
ResampleTaps resample_taps(int in_size, int out_size, ResampleFilter filter, ResampleImpl impl);

}  // namespace mmattn
