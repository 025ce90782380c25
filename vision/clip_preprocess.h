#pragma once
// CLIP image preprocessing as transformers' CLIPImageProcessor does it, plus LLaVA's
// pad-to-square:
//   [expand2square] -> resize (shortest edge, or exact size) -> center crop -> rescale -> normalise
// producing F32 [3, crop_h, crop_w] (CHW, RGB).
//
//  - expand2square (LLaVA mm_utils, image_aspect_ratio "pad"): a square canvas of side
//    max(w, h) filled with tuple(int(m * 255) for m in image_mean), the image pasted at
//    ((side - w) // 2, (side - h) // 2).
//  - Shortest-edge resize (get_resize_output_image_size, default_to_square=False): the short side
//    becomes shortest_edge, the long side int(shortest_edge * long / short) (truncated).
//    Resampling (vision/resample.h), bicubic or bilinear, reproduces torchvision's uint8
//    antialiased resize (transformers >= 5 default backend) or Pillow's (PIL backend, transformers
//    4, the original LLaVA code); the two differ by 1 (rarely 2) levels at ~0.1-0.6% of the pixels.
//  - Center crop: top = (h - crop_h) // 2, left = (w - crop_w) // 2. A side smaller than the crop
//    is first zero-padded, the image placed at (crop - size) // 2 by the torchvision backend and
//    rounded up by the numpy/PIL one (followed with resize_impl kPillow). With shortest_edge >= the
//    crop size, as every CLIP/LLaVA config has, no padding happens.
//  - Rescale and normalise in f32: (v * rescale_factor - mean[c]) / std[c].
#include <array>
#include <string>

#include "core/json_reader.h"
#include "core/tensor.h"
#include "vision/image.h"
#include "vision/resample.h"

namespace mmattn {

struct ClipPreprocessConfig {
  // Defaults: LLaVA-1.5's CLIP ViT-L/14-336 (openai/clip-vit-large-patch14-336).
  bool do_resize = true;
  int shortest_edge = 336;
  int size_h = 0, size_w = 0;  // both > 0: resize to exactly this (HF size {"height", "width"})
  ResampleFilter resample = ResampleFilter::kBicubic;
  // Whose arithmetic the resize reproduces (vision/resample.h): transformers >= 5's default
  // CLIPImageProcessor runs torchvision (kTorch); its PIL backend and transformers 4 run Pillow.
  ResampleImpl resize_impl = ResampleImpl::kTorch;
  bool do_center_crop = true;
  int crop_h = 336, crop_w = 336;
  bool pad_to_square = false;  // LLaVA's expand2square before everything else
  bool do_rescale = true;
  float rescale = 1.f / 255.f;
  bool do_normalize = true;
  std::array<float, 3> mean = {0.48145466f, 0.4578275f, 0.40821073f};
  std::array<float, 3> std = {0.26862954f, 0.26130258f, 0.27577711f};

  // Reads a HF preprocessor_config.json (CLIPImageProcessor keys; image_processor_type
  // "CLIPImageProcessorPil" selects the Pillow arithmetic, anything else torchvision's). Keys it
  // lacks take CLIPImageProcessor's own defaults (size 224, crop 224, bicubic, OpenAI CLIP mean/std,
  // everything enabled), not the LLaVA defaults above. Other keys are ignored (HF configs carry
  // many). Unsupported values (e.g. resample 0/1/4/5, size {"longest_edge"}) are ConfigErrors
  // naming the file and the JSON path. pad_to_square is not a preprocessor key (it is LLaVA's
  // image_aspect_ratio) and stays false.
  static ClipPreprocessConfig from_json(const Json& j, const std::string& where);
  static ClipPreprocessConfig from_json_file(const std::string& path);
  // ConfigError for non-positive sizes or a zero std.
  void validate() const;
};

// (width, height) after the resize step for an input of w x h.
std::pair<int, int> clip_resize_size(int w, int h, const ClipPreprocessConfig& cfg);
// LLaVA's expand2square with the given background colour.
Image expand_to_square(const Image& img, const std::array<uint8_t, 3>& background);
// tuple(int(m * 255) for m in mean): LLaVA's padding colour.
std::array<uint8_t, 3> mean_color_u8(const std::array<float, 3>& mean);
// transformers' center crop (with zero padding when the image is smaller; see above for the
// padding offset).
Image center_crop(const Image& img, int crop_w, int crop_h, bool pad_offset_round_up = false);

// Everything up to (not including) rescale/normalise: the uint8 image the model will see.
Image clip_resize_crop(const Image& img, const ClipPreprocessConfig& cfg);
// F32 [3, H, W] CPU tensor: the full preprocessing.
Tensor clip_preprocess(const Image& img, const ClipPreprocessConfig& cfg);
// Rescale + normalise only (HWC uint8 -> CHW f32).
Tensor clip_normalize(const Image& img, const ClipPreprocessConfig& cfg);

}  // namespace mmattn
