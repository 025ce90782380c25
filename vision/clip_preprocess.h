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
// Where center_crop puts crop pixel (0, 0) in a w x h image: (x, y), negative or past the image
// where it pads. ShapeError for a non-positive crop size.
std::pair<int, int> center_crop_origin(int w, int h, int crop_w, int crop_h, bool pad_offset_round_up);

// Everything up to (not including) rescale/normalise: the uint8 image the model will see.
Image clip_resize_crop(const Image& img, const ClipPreprocessConfig& cfg);
// F32 [3, H, W] CPU tensor: the full preprocessing.
Tensor clip_preprocess(const Image& img, const ClipPreprocessConfig& cfg);
// Rescale + normalise only (HWC uint8 -> CHW f32).
Tensor clip_normalize(const Image& img, const ClipPreprocessConfig& cfg);

// The full preprocessing straight to `dtype` pixels [3, crop_h, crop_w] on `dev`, equal bit for
// bit to clip_preprocess(img, cfg).to(dev, dtype). On CUDA only the decoded 8-bit image and the
// resampling taps go up; expand2square (virtual: no padded copy), both resampling passes, the crop
// and the normalise run as two kernels with the same fixed-point taps and the same f32 operations
// (no FMA contraction) as the host path. `crop`, when given, receives clip_resize_crop's uint8
// image (on CUDA: downloaded, a synchronisation; ask only when it is needed); `crop_pixels`, when
// given, the same image as a U8 [crop_h, crop_w, 3] tensor on `dev` (no download). float dtypes only.
Tensor clip_preprocess_to(const Image& img, const ClipPreprocessConfig& cfg, Device dev, DType dtype,
                          Image* crop = nullptr, Tensor* crop_pixels = nullptr);

// The CUDA kernels' parameters (vision/clip_preprocess_cuda.cu). The source is a virtual canvas of
// canvas_w x canvas_h: the image at (pad_x, pad_y), `background` elsewhere (expand2square; no
// padding: canvas = image). Horizontal pass canvas -> tmp [canvas_h, out_w] (skipped when
// !horizontal: tmp unused, the vertical pass reads the canvas); vertical pass + center crop +
// normalise -> y [3, crop_h, crop_w] (and crop_u8 [crop_h, crop_w, 3] when not null). Crop pixel
// (x, y) is resized pixel (x + crop_x, y + crop_y), zero outside [0, out_w) x [0, out_h).
struct ClipPreprocessParams {
  const uint8_t* src = nullptr;  // [src_h, src_w, 3]
  int src_w = 0, src_h = 0;
  int canvas_w = 0, canvas_h = 0, pad_x = 0, pad_y = 0;
  uint8_t background[3] = {0, 0, 0};
  bool horizontal = true, vertical = true;
  int out_w = 0, out_h = 0;  // resized size
  // Taps (ResampleTaps, device int32): first[out], count[out], w[out * ksize]
  const int32_t *h_first = nullptr, *h_count = nullptr, *h_w = nullptr;
  const int32_t *v_first = nullptr, *v_count = nullptr, *v_w = nullptr;
  int h_ksize = 0, h_precision = 0, v_ksize = 0, v_precision = 0;
  uint8_t* tmp = nullptr;  // [canvas_h, out_w, 3]
  int crop_w = 0, crop_h = 0, crop_x = 0, crop_y = 0;
  float scale = 1.f, mean[3] = {0.f, 0.f, 0.f}, std[3] = {1.f, 1.f, 1.f};
  void* y = nullptr;  // [3, crop_h, crop_w] of y_dtype
  DType y_dtype = DType::F32;
  uint8_t* crop_u8 = nullptr;
};
void clip_preprocess_cuda(const ClipPreprocessParams& p, StreamHandle s);

}  // namespace mmattn
