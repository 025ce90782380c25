#pragma once
// LLaVA's multimodal projector (transformers' LlavaMultiModalProjector) and the image encoder that
// chains it after the CLIP tower (LlavaModel.get_image_features):
//   image_features = linear_2(act(linear_1(features)))          act: projector_hidden_act ("gelu", erf)
//   features       = hidden_states[vision_feature_layer] of the tower, [CLS] dropped by the
//                    "default" strategy ("full" keeps it); a list of layers is concatenated along
//                    the hidden dim, so linear_1 takes vision hidden_size * len(list) inputs.
// Weights: <prefix>linear_1.{weight [T, V], bias [T]}, <prefix>linear_2.{weight [T, T], bias [T]}
// (V: vision features, T: text hidden size; biases only with multimodal_projector_bias). The prefix
// is "multi_modal_projector." (llava-hf) or "model.multi_modal_projector." (detect_llava_prefixes).
#include <cstdint>
#include <string>

#include "core/checkpoint.h"
#include "core/hf_config.h"
#include "core/ops/activation.h"
#include "core/tensor.h"
#include "vision/clip_vit.h"

namespace mmattn {

class LlavaProjector {
 public:
  static LlavaProjector load(const Checkpoint& ckpt, const std::string& prefix, int64_t in_features,
                             int64_t out_features, Activation act, bool bias, Device device, DType dtype);
  // in = vision hidden_size * number of feature layers, out = text hidden_size.
  static LlavaProjector load(const Checkpoint& ckpt, const std::string& prefix, const LlavaConfig& cfg,
                             Device device, DType dtype);
  // [..., in] (converted to the projector's device and dtype) -> [..., out]
  Tensor forward(const Tensor& features) const;
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }

 private:
  int64_t in_ = 0, out_ = 0;
  Activation act_ = Activation::Gelu;
  Device device_;
  DType dtype_ = DType::F32;
  Tensor w1_, b1_, w2_, b2_;
};

// Tower (only the layers the feature layers need) + projector, as LLaVA's get_image_features.
class LlavaImageEncoder {
 public:
  // Prefixes from detect_llava_prefixes(ckpt).
  static LlavaImageEncoder load(const Checkpoint& ckpt, const LlavaConfig& cfg, Device device, DType dtype);
  static LlavaImageEncoder load(const Checkpoint& ckpt, const LlavaPrefixes& prefixes, const LlavaConfig& cfg,
                                Device device, DType dtype);
  // pixel_values [B, 3, H, W] -> the selected vision features [B, N, V] (before the projector).
  // `kept`, when given, receives the tower's pass with its hidden states.
  Tensor vision_features(const Tensor& pixel_values, ClipVisionOutput* kept = nullptr) const;
  // pixel_values [B, 3, H, W] -> image features [B, N, T] (N = 576 for LLaVA-1.5).
  Tensor encode(const Tensor& pixel_values, ClipVisionOutput* kept = nullptr) const {
    return projector_.forward(vision_features(pixel_values, kept));
  }
  const ClipVisionTower& tower() const { return tower_; }
  const LlavaProjector& projector() const { return projector_; }
  const LlavaPrefixes& prefixes() const { return prefixes_; }
  const std::vector<int64_t>& feature_layers() const { return layers_; }
  bool feature_layer_is_list() const { return layer_is_list_; }
  bool drops_cls() const { return drop_cls_; }

 private:
  ClipVisionTower tower_;
  LlavaProjector projector_;
  LlavaPrefixes prefixes_;
  std::vector<int64_t> layers_;
  bool layer_is_list_ = false;
  bool drop_cls_ = true;
};

}  // namespace mmattn
