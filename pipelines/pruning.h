#pragma once
// Visual token pruning for LLaVA: FastV, PDrop, FasterVLM, VisionZip, DART, DivPrune and
// VFlowOpt-style recycling. The exact definitions (and the official code each follows) are in
// docs/pruning.md; this file and tools/golden/pruning.py implement them.
//
// Two kinds of method:
//   - before the LLM (fastervlm, visionzip, divprune, vflowopt's ViT stage): encode_visual_tokens()
//     runs the vision tower + projector and returns fewer image features; the prompt then simply
//     has fewer <image> tokens;
//   - inside the LLM (fastv, pdrop, dart, vflowopt's LLM stages): a LlavaTokenPruner is handed to
//     LlamaModel::forward for the prompt's prefill (language/llama.h, TokenPruner).
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/json_reader.h"
#include "core/tensor.h"
#include "language/llama.h"

namespace mmattn {

class JsonReader;
class LlavaImageEncoder;
struct Image;

enum class PruneMethod { None, FastV, PDrop, FasterVLM, VisionZip, Dart, DivPrune, VFlowOpt };
const char* prune_method_name(PruneMethod m);

struct PruningConfig {
  PruneMethod method = PruneMethod::None;
  int64_t keep = -1;   // image tokens kept; -1: from `ratio` or the method's default
  double ratio = -1;   // fraction of the image tokens kept (keep = round(ratio N))
  int layer = 2;                                  // fastv, dart: the LLM layer pruned before
  std::vector<int> layers = {8, 16, 24};          // pdrop stages
  double lambda = 0.5;                            // pdrop
  // visionzip ([CLS] counts among the dominant); -1: split from keep as 54:10 (keep 64 by default)
  int64_t dominant = -1, contextual = -1;
  int pivot_image = 4, pivot_text = 4;            // dart
  double sink_threshold = 35, entropy_weight = 1; // vflowopt
  int cell = 12;                                  // vflowopt recycling cell (patches per side)
  std::vector<int> llm_layers = {8, 16};          // vflowopt LLM stages
  std::vector<double> llm_ratios = {1.0, 0.6};
  std::string path = "$.pruning";                 // JSON path named in errors
  // Set by resolve: keep is every image token. That is the identity (no stage runs) for the
  // methods whose keep-all would still merge (visionzip), recycle (vflowopt) or cannot keep every
  // row (dart), and for fastervlm / divprune; fastv and pdrop still rank and drop nothing, which is
  // exactly the unpruned result too.
  bool keep_all = false;

  // Reads {"method": ..., "keep" | "ratio", method parameters}; strict (unknown keys are errors).
  static PruningConfig parse(JsonReader& r);
  // keep from ratio / defaults for N image tokens, and every range checked against the model:
  // ConfigError naming the spec field.
  void resolve(int64_t n_image, int n_llm_layers, int64_t grid);
  bool enabled() const { return method != PruneMethod::None; }
  bool before_llm() const;  // has a stage before the LLM
  bool in_llm() const;      // has a stage inside the LLM
  Json to_json() const;
};

struct PruningStage {
  std::string where;     // "vision" (before the LLM) or "llm"
  int layer = -1;        // LLM layer the stage prunes before (-1 for "vision")
  int64_t image_tokens;  // image tokens after the stage
};

struct PruningReport {
  std::string method;
  int64_t image_tokens_before = 0;
  std::vector<PruningStage> stages;
  std::vector<int64_t> kept_patches;  // patches (0..N-1) whose own token survives every stage, ascending
  std::vector<float> importance;      // per patch: the first stage's ranking signal (empty when none)
  size_t kv_bytes = 0;                // KV-cache bytes the prompt occupies after prefill
  double prefill_flops = 0;           // decoder FLOPs of the prefill over the rows each layer ran
  Json to_json() const;
};

// The image tokens the LLM receives, with where each came from.
struct VisualTokens {
  Tensor features;                 // [n, hidden] projected features (model dtype/device)
  std::vector<int64_t> patch;      // per row: its patch index (0..N-1), -1 for [CLS] / merged-only rows
  std::vector<float> row_importance;  // vflowopt: per row, the importance its LLM stages rank by
  PruningReport report;            // method, image_tokens_before, the vision stage, importance
};

// All N projected features of one image as the LLM's image tokens (no stage before the LLM).
VisualTokens unpruned_visual_tokens(const PruningConfig& cfg, const Tensor& features /* [N, hidden] */);

// One image's [CLS]-attention rows [1, H, T] (ClipVisionTower::cls_attention, FeatureTaps) summed
// over heads in head order: [T]. The score of the pre-LLM methods and of PAINT's token classes.
std::vector<float> sum_over_heads(const Tensor& cls_attention);

// ConfigError naming cfg's method field when its pre-LLM stage needs one ViT layer's [CLS]
// attention and enc cannot give it (a list of feature layers, or a strategy that keeps [CLS]).
void require_cls_attention(const PruningConfig& cfg, const LlavaImageEncoder& enc);

// Vision tower + projector with the pre-LLM stage of `cfg` (none: all N features). `crop_pixels` is
// the preprocessed image as U8 [S, S, 3] on any device (clip_preprocess_to's crop_pixels; vflowopt's
// patch entropy reads it; the other methods ignore it). The pixel batch must be 1.
VisualTokens encode_visual_tokens(const PruningConfig& cfg, const LlavaImageEncoder& enc, const Tensor& pixel_values,
                                  const Tensor& crop_pixels);

// The in-LLM stages for one prefill step of a (right-padded) batch. spans[b] = {first row, count}
// of sequence b's image tokens in its prompt (count 0: nothing to prune); row_importance[b]: the
// vflowopt importance of each of those rows (empty otherwise).
class LlavaTokenPruner : public TokenPruner {
 public:
  LlavaTokenPruner(const PruningConfig& cfg, const LlamaModel& lm, std::vector<std::pair<int64_t, int64_t>> spans,
                   std::vector<std::vector<float>> row_importance = {});
  Needs needs(int layer) const override;
  std::optional<PruneDecision> on_layer(const PruneContext& ctx) override;

  // After the forward: per sequence, the stages and the kept image rows (indices into the span).
  const std::vector<PruningStage>& stages(size_t b) const { return stages_[b]; }
  const std::vector<int64_t>& kept_rows(size_t b) const { return kept_[b]; }
  // Rows each layer ran for sequence b (n_layers entries), for the FLOP count.
  std::vector<int64_t> rows_per_layer(size_t b, int64_t prompt_rows, int n_layers) const;
  // Per sequence: the first stage's per-row scores (over the span; empty when none).
  const std::vector<float>& scores(size_t b) const { return scores_[b]; }

 private:
  // Image rows (index into ctx rows) of sequence b and their span index.
  void image_rows(const PruneContext& ctx, size_t b, std::vector<int64_t>& rows, std::vector<int64_t>& span_idx) const;
  PruneDecision keep_image(const PruneContext& ctx, const std::vector<std::vector<int64_t>>& keep_span_idx, int layer);

  PruningConfig cfg_;
  const LlamaModel& lm_;
  std::vector<std::pair<int64_t, int64_t>> spans_;
  std::vector<std::vector<float>> row_imp_;
  std::vector<std::vector<PruningStage>> stages_;
  std::vector<std::vector<int64_t>> kept_;
  std::vector<std::vector<float>> scores_;
  std::vector<std::vector<float>> stash_;  // per sequence, per current row: the layer-before signal
};

// Decoder prefill FLOPs (2 per multiply-add) when layer l runs rows[l] rows, causal attention over
// the rows of that layer, and the lm_head on the last row only.
double llama_prefill_flops(const LlamaModel& lm, const std::vector<int64_t>& rows);

// --save-kept-map: the crop with dropped patches darkened and kept ones outlined, beside the
// importance heatmap (when there is one). IoError on failure.
void save_kept_map(const Image& crop, int64_t patch_size, const PruningReport& report, const std::string& path);

}  // namespace mmattn
