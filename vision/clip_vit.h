#pragma once
// The CLIP vision tower (transformers' CLIPVisionModel / CLIPVisionTransformer), as LLaVA uses it.
//
//   embeddings  = cat([class_embedding, conv2d(pixels, patch_embedding.weight, stride = patch)])
//                 + position_embedding.weight                                     [B, 1 + N, D]
//   h_0         = pre_layrnorm(embeddings)            (sic: CLIP's spelling; BEFORE the encoder)
//   h_{i+1}     = layer_i(h_i),  layer: x + attn(layer_norm1(x)); x + fc2(act(fc1(layer_norm2(x))))
//                 attn: q/k/v/out projections with bias, scale 1/sqrt(head_dim), no mask
//   last        = h_L, post_layernorm(h_L[:, 0]) is CLIP's pooled output (unused by LLaVA)
// hidden_states[i] = h_i (i = 0..L, as transformers' `hidden_states` tuple: L + 1 entries), so
// LLaVA's vision_feature_layer -2 is h_{L-1}: only L - 1 layers run.
//
// Weight names are the module path under `prefix` (the part before "embeddings."):
//   <prefix>embeddings.patch_embedding.weight [D, C, P, P]   (no bias)
//   <prefix>embeddings.class_embedding [D]
//   <prefix>embeddings.position_embedding.weight [N + 1, D]
//   <prefix>pre_layrnorm.{weight,bias} [D]
//   <prefix>encoder.layers.<i>.{layer_norm1,layer_norm2}.{weight,bias} [D]
//   <prefix>encoder.layers.<i>.self_attn.{q,k,v,out}_proj.{weight [D, D], bias [D]}
//   <prefix>encoder.layers.<i>.mlp.fc1.{weight [I, D], bias [I]}, mlp.fc2.{weight [D, I], bias [D]}
//   <prefix>post_layernorm.{weight,bias} [D]
// Prefixes seen in the wild (detect_llava_prefixes picks one): "vision_tower.vision_model."
// (llava-hf checkpoints on the Hub), "vision_tower." (transformers 5 save_pretrained),
// "model.vision_tower.vision_model." / "model.vision_tower." (transformers' current module tree),
// "vision_model." (a bare CLIPVisionModel).
// A missing or mis-shaped tensor is a WeightError naming it (Checkpoint::load).
//
// Weights live on `device` in `dtype` (CPU: F32 only; CUDA: BF16 or F16, the attention core's
// dtypes). q/k/v are fused into one [3D, D] projection at load time (one GEMM per layer).
// Pitfall: the attention core supports head_dim 64/72/80/96/128 only; other head dims (e.g. the
// tiny test model's 16) are zero-padded to the next supported size (q.k and the first head_dim
// output columns are unchanged; the scale stays 1/sqrt(head_dim)). ViT-L/14 has head_dim 64.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/checkpoint.h"
#include "core/hf_config.h"
#include "core/ops/activation.h"
#include "core/tensor.h"

namespace mmattn {

// Where a LLaVA checkpoint keeps its vision tower and projector: `vision_tower` is the prefix of
// "embeddings.patch_embedding.weight", `projector` that of "linear_1.weight".
struct LlavaPrefixes {
  std::string vision_tower;  // e.g. "vision_tower.vision_model."
  std::string projector;     // e.g. "multi_modal_projector."
};
// Tries the known schemes in order (see above; projector: "multi_modal_projector.",
// "model.multi_modal_projector."). WeightError listing what was looked for when none matches.
LlavaPrefixes detect_llava_prefixes(const Checkpoint& ckpt);

struct ClipEncoderLayerWeights {
  Tensor ln1_w, ln1_b, ln2_w, ln2_b;
  Tensor qkv_w, qkv_b;  // [3D, D], [3D]: rows q_proj, k_proj, v_proj
  Tensor out_w, out_b;  // [D, D], [D]
  Tensor fc1_w, fc1_b;  // [I, D], [I]
  Tensor fc2_w, fc2_b;  // [D, I], [D]
};

struct ClipVisionOutput {
  Tensor last;                        // h_n [B, 1 + N, D] after the layers that ran
  std::vector<Tensor> hidden_states;  // h_0 .. h_n when asked for, else empty
};

class ClipVisionTower {
 public:
  // Loads the embeddings, pre_layrnorm and the first `num_layers` encoder layers (-1: all, and then
  // post_layernorm too). LLaVA needs only feature_layer's layers (see layers_for_feature_layer).
  static ClipVisionTower load(const Checkpoint& ckpt, const std::string& prefix, const ClipVisionConfig& cfg,
                              Device device, DType dtype, int64_t num_layers = -1);

  // Number of encoder layers that must run for hidden_states[feature_layer] (negative counts from
  // the end of the L + 1 entries). ConfigError when out of range.
  static int64_t layers_for_feature_layer(const ClipVisionConfig& cfg, int64_t feature_layer);

  // pixel_values [B, C, image_size, image_size] (any device/float dtype; converted) ->
  // h_{num_layers} (-1: every loaded layer), optionally with h_0 .. h_{num_layers}.
  // On CUDA, pixel values already on the tower's device in its dtype run the layers as a CUDA graph
  // (core/cuda_graph.h: captured on the first call of each input shape / layer count / kept-states
  // choice, at most kMaxGraphs kept over forward and feature_taps; the outputs are copies the caller
  // owns): the same kernels as the eager pass, so the same values, without ~190 host-side launches
  // per image. feature_taps with taps runs as one graph too (the taps included).
  ClipVisionOutput forward(const Tensor& pixel_values, int64_t num_layers = -1,
                           bool keep_hidden_states = false) const;
  // hidden_states[feature_layer] ([B, 1 + N, D], or [B, N, D] without the [CLS] token when
  // drop_cls, as LLaVA's "default" strategy), running only the layers needed.
  // `kept`, when given, receives the pass with its hidden states (h_0 .. h_n).
  Tensor features(const Tensor& pixel_values, int64_t feature_layer, bool drop_cls,
                  ClipVisionOutput* kept = nullptr) const;
  // Several layers concatenated along the hidden dim (vision_feature_layer as a list):
  // [B, N (+1), D * layers.size()].
  Tensor features(const Tensor& pixel_values, const std::vector<int64_t>& feature_layers, bool drop_cls,
                  ClipVisionOutput* kept = nullptr) const;
  // The [CLS] query's attention probabilities at encoder layer `layer` (indexing transformers'
  // `attentions` tuple: 0..L-1, negative from the end, so -2 is VisionZip's attentions[-2]):
  // F32 [B, heads, 1 + N], each row summing to 1. Runs layers 0..layer-1 plus that layer's q/k.
  Tensor cls_attention(const Tensor& pixel_values, int64_t layer) const;
  // The same from encoder layer `layer`'s input x = hidden_states[layer] of a forward() that kept
  // them (layer 0..L-1; no layer is run again).
  Tensor cls_attention_at(const Tensor& x, int64_t layer) const;
  // hidden_states[feature_layer] ([CLS] included) and what token pruning reads from the encoder
  // layer that produced it (index layers_for_feature_layer - 1: VisionZip's / FasterVLM's
  // attentions[-2] for feature layer -2), from one forward pass.
  struct FeatureTaps {
    Tensor features;        // [B, 1 + N, D], the tower's dtype
    Tensor cls_attention;   // F32 [B, heads, 1 + N]: the [CLS] query's attention probabilities
    Tensor attention_mean;  // F32 [B, 1 + N, 1 + N]: the attention matrix averaged over heads
    Tensor key_mean;        // F32 [B, 1 + N, head_dim]: k_proj(layer_norm1(x)) (bias included, unscaled),
                            // averaged over heads (VisionZip's metric)
    Tensor cls_joint;       // F32 [B, 1 + N]: the [CLS] row of ONE attention over all hidden dims of
                            // q_proj / k_proj (scale hidden^-0.5; DAMRO's outlier ranking)
  };
  // What feature_taps computes besides the features (bits; each tap is a few small kernels, so a
  // caller asks for the ones it reads). kTapAttentionMatrix gives cls_attention too; none: the
  // features alone, from a plain forward.
  enum FeatureTap : unsigned { kTapClsAttention = 1, kTapAttentionMatrix = 2, kTapKeyMean = 4, kTapClsJoint = 8 };
  FeatureTaps feature_taps(const Tensor& pixel_values, int64_t feature_layer, unsigned taps) const;
  // CLIP's pooled output post_layernorm(h_L[:, 0]) [B, D]; needs every layer loaded.
  Tensor pooled(const ClipVisionOutput& out) const;

  // Pieces (e.g. for per-layer taps elsewhere).
  Tensor embed(const Tensor& pixel_values) const;  // h_0 [B, 1 + N, D]
  Tensor layer_forward(int64_t i, const Tensor& x) const;
  // The same with q, k, v of qkv(i, x) already computed.
  Tensor layer_forward(int64_t i, const Tensor& x, const Tensor& q, const Tensor& k, const Tensor& v) const;
  const ClipEncoderLayerWeights& layer(int64_t i) const;
  int64_t num_loaded_layers() const { return int64_t(layers_.size()); }
  const ClipVisionConfig& config() const { return cfg_; }
  const std::string& prefix() const { return prefix_; }
  Device device() const { return device_; }
  DType dtype() const { return dtype_; }
  static constexpr size_t kMaxGraphs = 8;

 private:
  struct Graphs;  // the captured passes (clip_vit.cpp), shared by copies of the tower
  ClipVisionOutput forward_eager(const Tensor& pixel_values, int64_t num_layers, bool keep_hidden_states) const;
  FeatureTaps feature_taps_eager(const Tensor& pixel_values, int64_t n_run, unsigned taps) const;
  // Whether a pass over pixel_values runs as a graph; fn(input)'s outputs through the graph of
  // (input shape, what), captured on first use, as copies the caller owns.
  bool graphable(const Tensor& pixel_values) const;
  std::vector<Tensor> graphed(const Tensor& pixel_values, const std::vector<int64_t>& what,
                              const std::function<std::vector<Tensor>(const Tensor&)>& fn) const;

  // q, k, v of layer i for input x: [B, L, H, head_dim] strided views of one fused projection.
  void qkv(int64_t i, const Tensor& x, Tensor& q, Tensor& k, Tensor& v) const;
  Tensor to_input(const Tensor& pixel_values) const;

  ClipVisionConfig cfg_;
  std::string prefix_;
  Device device_;
  DType dtype_ = DType::F32;
  Activation act_ = Activation::QuickGelu;
  Tensor patch_w_, class_emb_, pos_emb_, pre_ln_w_, pre_ln_b_, post_ln_w_, post_ln_b_;
  std::vector<ClipEncoderLayerWeights> layers_;
  std::shared_ptr<Graphs> graphs_;
};

}  // namespace mmattn
