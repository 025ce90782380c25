#include "vision/projector.h"

#include <algorithm>

#include "core/ops/linear.h"

namespace mmattn {

LlavaProjector LlavaProjector::load(const Checkpoint& ckpt, const std::string& prefix, int64_t in_features,
                                    int64_t out_features, Activation act, bool bias, Device device, DType dtype) {
  MMATTN_CHECK(!(device.is_cpu() && dtype != DType::F32), UnsupportedError,
               "LlavaProjector: the CPU path computes in F32, not ", dtype_name(dtype));
  LlavaProjector p;
  p.in_ = in_features;
  p.out_ = out_features;
  p.act_ = act;
  p.device_ = device;
  p.dtype_ = dtype;
  p.w1_ = ckpt.load(prefix + "linear_1.weight", {out_features, in_features}, device, dtype);
  p.w2_ = ckpt.load(prefix + "linear_2.weight", {out_features, out_features}, device, dtype);
  if (bias) {
    p.b1_ = ckpt.load(prefix + "linear_1.bias", {out_features}, device, dtype);
    p.b2_ = ckpt.load(prefix + "linear_2.bias", {out_features}, device, dtype);
  }
  return p;
}

LlavaProjector LlavaProjector::load(const Checkpoint& ckpt, const std::string& prefix, const LlavaConfig& cfg,
                                    Device device, DType dtype) {
  const int64_t in = cfg.vision_config.hidden_size * int64_t(cfg.vision_feature_layer_is_list
                                                                  ? cfg.vision_feature_layers.size()
                                                                  : 1);
  return load(ckpt, prefix, in, cfg.text_config.hidden_size,
              parse_activation(cfg.projector_hidden_act, "projector_hidden_act"), cfg.multimodal_projector_bias,
              device, dtype);
}

Tensor LlavaProjector::forward(const Tensor& features) const {
  check_defined(features, "LlavaProjector", "features");
  MMATTN_CHECK(features.dim() >= 1 && features.size(-1) == in_, ShapeError, "LlavaProjector: features must be [..., ",
               in_, "], got ", features.desc());
  const Tensor x = features.to(device_, dtype_);
  return linear(apply_activation(linear(x, w1_, b1_), act_), w2_, b2_);
}

LlavaImageEncoder LlavaImageEncoder::load(const Checkpoint& ckpt, const LlavaConfig& cfg, Device device,
                                          DType dtype) {
  return load(ckpt, detect_llava_prefixes(ckpt), cfg, device, dtype);
}

LlavaImageEncoder LlavaImageEncoder::load(const Checkpoint& ckpt, const LlavaPrefixes& prefixes,
                                          const LlavaConfig& cfg, Device device, DType dtype) {
  const std::string& s = cfg.vision_feature_select_strategy;
  MMATTN_CHECK(s == "default" || s == "full", ConfigError, "vision_feature_select_strategy must be \"default\" or ",
               "\"full\", got \"", s, "\"");
  MMATTN_CHECK(!cfg.vision_feature_layers.empty(), ConfigError, "vision_feature_layer is an empty list");
  LlavaImageEncoder e;
  e.prefixes_ = prefixes;
  e.layers_ = cfg.vision_feature_layers;
  e.layer_is_list_ = cfg.vision_feature_layer_is_list || e.layers_.size() > 1;
  e.drop_cls_ = s == "default";
  int64_t need = 0;  // only the layers the features need (LLaVA-1.5: 23 of 24)
  for (int64_t f : e.layers_) need = std::max(need, ClipVisionTower::layers_for_feature_layer(cfg.vision_config, f));
  e.tower_ = ClipVisionTower::load(ckpt, prefixes.vision_tower, cfg.vision_config, device, dtype, need);
  e.projector_ = LlavaProjector::load(ckpt, prefixes.projector, cfg, device, dtype);
  return e;
}

Tensor LlavaImageEncoder::vision_features(const Tensor& pixel_values, ClipVisionOutput* kept) const {
  return layer_is_list_ ? tower_.features(pixel_values, layers_, drop_cls_, kept)
                        : tower_.features(pixel_values, layers_[0], drop_cls_, kept);
}

}  // namespace mmattn
