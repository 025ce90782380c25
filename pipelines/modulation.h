#pragma once
// Hallucination mitigation for LLaVA by attention-head modulation and contrastive decoding.
// Definitions (and the official code each follows): docs/modulation.md. Spec:
//   "modulation": [{"method": "pai", "alpha": 0.2, "start_layer": 2, "end_layer": -1}, ...]
// Attention-level methods become one LlavaModulator (an AttentionModulator for LlamaModel::forward:
// key classes text / image over the cache slots, per-layer per-head gains); contrastive methods
// add a second branch decoded in the same batch as the request (LlavaPipeline).
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "attention/attention.h"
#include "core/json_reader.h"
#include "language/llama.h"
#include "vision/image_transforms.h"

namespace mmattn {

enum class ModMethod { PAI, PAINT, ADHH, VCD, DAMRO, VAR, RITUAL, VHR };
const char* mod_method_name(ModMethod m);

struct ModulationConfig {
  ModMethod method = ModMethod::PAI;
  // pai: image-key logits of the last query row z <- z + alpha |z| in layers [start_layer, end_layer)
  double alpha = 0.2;
  int start_layer = 2;
  int end_layer = -1;  // -1: the model's depth
  // pai (cfg > 1: guidance against a text-only branch, logits = l_txt + cfg (l_img - l_txt)) and
  // vcd: plausibility cut-off beta (tokens with p < beta max p of the image branch are excluded)
  double cfg = 1.0;
  double beta = 0.1;
  // vcd / damro: logits = (1 + cd_alpha) l_img - cd_alpha l_negative (vcd default 1, damro 2);
  // vcd: noise_step of the DDPM schedule; damro: topk outlier image tokens form the negative branch
  double cd_alpha = 1.0;
  int noise_step = 500;
  int topk = 10;
  // paint: PAI boosts alpha_local on the "local" image tokens (top local_ratio by ViT layer 0's
  // [CLS] attention) and alpha_summary on the "summary" ones (the feature layer's [CLS]-attention
  // outliers); other image tokens get none. start_layer / end_layer / cfg as pai.
  double alpha_local = 0.7, alpha_summary = 0.3, local_ratio = 0.25;
  // adhh: (layer, head) pairs whose last-row attention to the text after the image, when >=
  // threshold, is zeroed without renormalisation (defaults: LLaVA-1.5-7B's 20 heads, 0.4)
  std::vector<std::pair<int, int>> heads;
  double threshold = 0.4;
  // var: in the prefill, a token is a sink of layer l when |h / sqrt(mean(h^2) + 1e-6)| of the
  // layer's input exceeds tau in one of sink_dims (LLaVA-1.5-7B's massive-activation dims); in
  // layers [start_layer, end_layer), on the rows after the image, each head whose visual-sink share
  // of the image attention is <= rho and whose image attention is >= summ keeps p of every sink's
  // weight and gives the rest to the other image tokens (row sums unchanged)
  std::vector<int> sink_dims = {2533, 1415};
  double tau = 20, p = 0.6, rho = 0.5, summ = 0.2;
  // ritual: logits = l_img + alpha_pos l_transformed, the second branch the same prompt with the
  // raw image transformed before preprocessing (transform: one kind, or unset = uniform over the
  // six), its draws seeded by seed (unset: the request's sampling seed); plausibility beta as vcd
  double alpha_pos = 3.0;
  std::optional<ImageTransformKind> transform;
  std::optional<uint64_t> seed;
  // vhr: at the first decoding step, per layer in `layers` (empty: 1 and the last 14, as for
  // LLaVA-1.5-7B), the heads whose vision-aware head divergence ||o_img - o_txt||_2 (last prompt
  // row, head output before o_proj, with and without the image) is above the layer's median get
  // their outputs scaled by gain (2) from then on; the selection runs layer by layer, the earlier
  // layers already reinforced. filter (default on): the paper's outlier filter first (vhr_select);
  // off gives its "outlier VHR" ablation (docs/modulation.md#vhr)
  double gain = 2.0;
  std::vector<int> layers;
  bool filter = true;
  std::string path;  // JSON path named in errors

  static ModulationConfig parse(JsonReader& r);
  // Layer / head ranges against the model (ConfigError naming the field); n_heads 0 = unchecked.
  void resolve(int n_layers, int n_heads = 0);
  bool contrastive() const {
    return method == ModMethod::VCD || method == ModMethod::DAMRO || method == ModMethod::RITUAL ||
           ((method == ModMethod::PAI || method == ModMethod::PAINT) && cfg != 1.0);
  }
  Json to_json() const;
};

struct ModulationSet {
  std::vector<ModulationConfig> items;
  // Reads the "modulation" array at key `key` of r (absent = empty).
  static ModulationSet parse(JsonReader& r, const std::string& key);
  void resolve(int n_layers, int n_heads = 0);
  bool empty() const { return items.empty(); }
  bool attention() const;  // has an attention-level method
  const ModulationConfig* find(ModMethod m) const;
  // The contrastive method (at most one per set; ConfigError otherwise), or nullptr.
  const ModulationConfig* contrastive() const;
  Json to_json() const;
};

// VHR's head selection in one layer (the paper's Eq. 6-7), from each head's VHD and its text-only
// output energy ta[h] = ||o_txt[h]||_2^2: with `filter`, a head whose VHD and TA both lie above
// their layer's mean + standard deviation (over the heads; unbiased, as torch.std) counts with VHD
// 0 ("negatively vision-sensitive": its output surges without the image); then the heads whose VHD
// is above the median (torch.median: the lower middle for an even count) are chosen, ascending.
// A non-finite value selects nothing.
std::vector<int> vhr_select(const std::vector<float>& vhd, const std::vector<float>& ta, bool filter);

// The attention-level methods of a set for one forward batch. spans[b]: sequence b's image tokens
// as original positions [first, first + count) (count 0: none).
// VHR's head selection, inside the request's own prefill (no second prefill): wraps the request's
// modulator (`inner`, may be null) on the image branch, and runs the text-only branch (each prompt
// without its image token: `text_embeds` [B, Lt, hidden], text_valid[b] rows; its own small cache)
// layer by layer inside the image branch's hooks. At each VHR layer the last rows' head outputs of
// the two branches give VHD and TA per head; the heads vhr_select chooses get gain `c.gain` in both
// branches from that layer's o_proj on, so later layers see the reinforced stream (VHR's
// layer-by-layer selection). Sequences with text_valid[b] == 0 select nothing (gains 1). The batch
// is the image branch's.
class VhrSelector : public AttentionModulator {
 public:
  VhrSelector(const ModulationConfig& c, const LlamaModel& lm, AttentionModulator* inner, const Tensor& text_embeds,
              std::vector<int> text_valid);
  ~VhrSelector() override;
  const HeadModulation* modulation(int layer, const KVCache& cache, int64_t n_rows) override;
  const Conditional* conditional(int layer, const KVCache& cache, int64_t n_rows) override;
  bool wants_head_outputs(int layer) const override;
  void head_outputs(int layer, const Tensor& out) override;
  const Tensor* head_gains(int layer, int64_t batch) override;
  bool last_row_only() const override { return false; }
  void layer_input(int layer, const Tensor& x, const std::vector<std::vector<int32_t>>& positions) override;
  bool replaces_attention(int layer) const override;
  Tensor attend(int layer, const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt,
                const std::vector<std::vector<int32_t>>& positions) override;
  // sequence b, per layer: the selected heads, ascending (empty: not a VHR layer), and VHD per head
  const std::vector<std::vector<int>>& heads(int64_t b) const { return heads_[size_t(b)]; }
  const std::vector<std::vector<float>>& vhd(int64_t b) const { return vhd_[size_t(b)]; }
  const std::vector<std::vector<float>>& ta(int64_t b) const { return ta_[size_t(b)]; }  // text-only energy

 private:
  class TextHooks;
  void select(int layer, const Tensor& text_out);  // VHD and heads of layer l from both branches

  AttentionModulator* inner_;
  double gain_;
  bool filter_;
  std::vector<bool> on_;
  std::vector<int> text_valid_;
  std::vector<std::vector<std::vector<int>>> heads_;  // [b][layer]
  std::vector<std::vector<std::vector<float>>> vhd_;  // [b][layer]
  std::vector<std::vector<std::vector<float>>> ta_;   // [b][layer]
  std::vector<Tensor> gains_;                         // per layer: [B, Hq] in the model's dtype (undefined: none)
  Tensor image_out_;                                  // the image branch's last rows of the current layer
  int n_heads_;
  DType dtype_;
  Device device_;
  std::unique_ptr<TextHooks> hooks_;
  KVCache text_cache_;
  std::unique_ptr<LlamaModel::Stepper> text_;
};

class LlavaModulator : public AttentionModulator {
 public:
  LlavaModulator(const ModulationSet& set, const LlamaModel& lm, std::vector<std::pair<int64_t, int64_t>> spans);
  const HeadModulation* modulation(int layer, const KVCache& cache, int64_t n_rows) override;
  const Conditional* conditional(int layer, const KVCache& cache, int64_t n_rows) override;
  // A batch slot got a new request (continuous batching): its image span; classes are rebuilt.
  void set_span(int64_t b, std::pair<int64_t, int64_t> span);
  // PAINT: the class of each image token of sequence b (1 other, 2 local, 3 summary; empty = all 1).
  void set_image_classes(int64_t b, std::vector<uint8_t> classes);
  // VAR: sink detection in the prefill, redistribution in attend(), on every row after the image.
  bool last_row_only() const override { return !var_on_ && !vhr_on_; }
  void layer_input(int layer, const Tensor& x, const std::vector<std::vector<int32_t>>& positions) override;
  bool replaces_attention(int layer) const override;
  Tensor attend(int layer, const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt,
                const std::vector<std::vector<int32_t>>& positions) override;
  // VAR: the sink positions of sequence b in layer l (sorted; empty before its prefill).
  std::vector<int32_t> sinks(int layer, int64_t b) const;
  // --save-head-map: the next forward with rows of sequence b (its prefill, or the last rows of a
  // two-step prefill) records, per layer and head, the attention mass of b's last row on the image
  // keys (the final weights, after any modulation). ConfigError with adhh (its layers decide on the
  // device from a class mass the modulator does not see).
  void record_image_mass(int64_t b);
  // F32 [layers * heads] (layer-major) once every layer has recorded; empty before.
  std::vector<float> image_mass(int64_t b) const;
  // VHR: sequence b's heads of each layer (VhrSelector::heads()) get `gain` on every row from now
  // on (set_span clears them).
  void set_head_gains(int64_t b, const std::vector<std::vector<int>>& heads, double gain);
  const Tensor* head_gains(int layer, int64_t batch) override;

 private:
  const Tensor& key_class(const KVCache& cache, int layer);

  std::vector<std::pair<int64_t, int64_t>> spans_;
  std::vector<std::vector<uint8_t>> image_classes_;
  std::vector<Tensor> abs_gain_;  // per layer: F32 [Hq, C] on the device, undefined = none
  std::vector<HeadModulation> mods_, alt_mods_;
  std::vector<Conditional> cond_;  // per layer: AD-HH (heads empty = none)
  std::vector<Tensor> adhh_weight_;  // per layer: F32 [Hq, C] post weights of the AD-HH alternative
  uint8_t post_text_class_ = 0;     // key class of the text after the image (2 unless PAINT uses it)
  // key classes built from the cache's positions: per layer, the tensor and the lengths it saw
  std::vector<Tensor> classes_;
  std::vector<std::vector<int64_t>> class_lens_;
  std::vector<bool> stale_;  // per layer: rebuild the classes at the next call
  // VAR (var_ null: off): per layer, per sequence, the sink positions; classes 2 image sink, 3 text sink
  bool var_on_ = false;
  ModulationConfig var_;
  std::vector<std::vector<std::vector<int32_t>>> sinks_;
  Tensor var_w_image_, var_w_sinks_;  // F32 [Hq, C] post weights selecting the non-sink image / sink keys
  bool var_replaces(int layer) const;
  // head map: the key classes that are image tokens (bit c = class c), per sequence the layers still
  // to record and the masses [layers * heads]
  int n_layers_ = 0, n_heads_ = 0;
  uint8_t image_class_bits_ = 0b0010;
  std::string adhh_path_;  // non-empty: the set has adhh
  std::vector<std::vector<bool>> mass_pending_;
  std::vector<std::vector<float>> mass_;
  // VHR: per sequence, per layer, the reinforced heads; per layer the device gains [batch, Hq] built
  // from them (empty: to rebuild, after a sequence's heads or the batch changed)
  std::vector<std::vector<std::vector<int>>> vhr_heads_;
  double vhr_gain_ = 1.0;
  std::vector<Tensor> head_gains_;
  int64_t head_gains_batch_ = 0;
  bool vhr_on_ = false;
  DType dtype_ = DType::F32;
  Device device_;
  void record_mass(int layer, const Tensor& class_mass, const std::vector<std::vector<int32_t>>& positions);
};

// PAINT's token classes for one image: 1 + N [CLS]-attention rows summed over heads of ViT layer 0
// (top_attn) and of the feature-producing layer (bottom), [CLS] column first. Per patch: 2 local,
// 3 summary, 1 other.
std::vector<uint8_t> paint_classes(const ModulationConfig& c, const std::vector<float>& top_attn,
                                   const std::vector<float>& bottom);

// The combined next-token scores of a contrastive method from the image branch's logits and the
// negative branch's (docs/modulation.md): VCD (1 + cd_alpha) l_img - cd_alpha l_neg on logits;
// RITUAL l_img + alpha_pos l_neg (l_neg: the transformed image's logits);
// PAI cfg (s - u) + u on log-softmax scores s (image) and u (text-only); then tokens whose
// image-branch probability is below beta times the largest get -inf.
std::vector<float> contrastive_scores(const ModulationConfig& c, const std::vector<float>& l_img,
                                      const std::vector<float>& l_neg);

// VCD's noised image: the DDPM forward process at step `t` of a linear beta schedule (1000 steps,
// beta 1e-4 .. 0.02): sqrt(abar_t) x + sqrt(1 - abar_t) eps, eps ~ N(0, 1) from `seed`, applied to
// the normalised pixel values (F32, any shape).
Tensor vcd_noised_pixels(const Tensor& pixels, int t, uint64_t seed);

// --save-head-map: a PNG of layers (rows) x heads (columns), 8 x 8 pixels a cell, coloured by the
// kept map's heatmap from the smallest value (dark blue) to the largest (yellow), and beside it the
// values as JSON (path with .png replaced by .json, else + ".json"). IoError on failure.
void save_head_map(const std::vector<float>& mass, int layers, int heads, const std::string& path, bool vhd = false);
// The JSON file save_head_map writes beside the PNG at `png_path`.
std::string head_map_json_path(const std::string& png_path);

// RITUAL's transform of a width x height raw image (vision/image_transforms.h's draw): c.transform,
// or one of the six when unset; parameters from c.seed, else request_seed. resized_crop resizes to
// out_w x out_h (RandomResizedCrop(336) for LLaVA-1.5: the CLIP crop size).
ImageTransform ritual_transform(const ModulationConfig& c, int width, int height, int out_w, int out_h,
                                uint64_t request_seed);

}  // namespace mmattn
