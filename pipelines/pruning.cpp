#include "pipelines/pruning.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "attention/taps.h"
#include "core/ops/concat.h"
#include "core/ops/diversity.h"
#include "core/ops/embedding.h"
#include "core/ops/linear.h"
#include "core/ops/norm.h"
#include "core/ops/reduce.h"
#include "core/ops/token_merge.h"
#include "pipelines/ranking.h"
#include "vision/clip_vit.h"
#include "vision/image.h"
#include "vision/patch_entropy.h"
#include "vision/projector.h"

namespace mmattn {

namespace {

struct MethodName {
  PruneMethod m;
  const char* name;
};
constexpr MethodName kMethods[] = {{PruneMethod::None, "none"},           {PruneMethod::FastV, "fastv"},
                                   {PruneMethod::PDrop, "pdrop"},         {PruneMethod::FasterVLM, "fastervlm"},
                                   {PruneMethod::VisionZip, "visionzip"}, {PruneMethod::Dart, "dart"},
                                   {PruneMethod::DivPrune, "divprune"},   {PruneMethod::VFlowOpt, "vflowopt"}};

// Python's round(): half to even.
int64_t round_half_even(double x) { return int64_t(std::nearbyint(x)); }

// Indices of the k largest scores (ties: lower index first), returned ascending.
std::vector<int64_t> top_k(const std::vector<float>& s, int64_t k) {
  std::vector<int64_t> idx = largest_k(s, k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

// Indices sorted by ascending score (ties: lower index first).
std::vector<int64_t> ascending(const std::vector<float>& s) {
  std::vector<int64_t> idx(s.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return s[size_t(a)] < s[size_t(b)]; });
  return idx;
}

[[noreturn]] void bad(const PruningConfig& c, const std::string& field, const std::string& msg) {
  MMATTN_THROW(ConfigError, c.path, ".", field, " ", msg);
}

// Output rows as weighted combinations of input rows (selection: one entry of weight 1; merging:
// several), applied on the input's device by weighted_rows.
struct RowMix {
  std::vector<int64_t> offsets{0}, index;
  std::vector<float> weight;
  void add(int64_t i, float w) { index.push_back(i), weight.push_back(w); }
  void end_row() { offsets.push_back(int64_t(index.size())); }
  void select(const std::vector<int64_t>& rows) {
    for (int64_t i : rows) add(i, 1.f), end_row();
  }
  Tensor apply(const Tensor& x) const { return weighted_rows(x, offsets, index, weight); }
};

// Rows `rows` of x [n, d] (a gather on x's device).
Tensor select_rows(const std::vector<int64_t>& rows, const Tensor& x) {
  return embedding(Tensor::from_vector<int64_t>(rows, {int64_t(rows.size())}), x);
}

// Cosine similarity of the rows of a [B, m, d] and b [B, k, d] (any device), per batch entry, on the
// host [B * m * k] (one product and three downloads for the batch).
std::vector<float> cosine(const Tensor& a, const Tensor& b) {
  const Tensor af = a.to(DType::F32), bf = b.to(DType::F32);
  const std::vector<float> g = matmul(af, bf, /*transpose_b=*/true).to_floats();
  const std::vector<float> na = vector_norm(af, 2).to_floats(), nb = vector_norm(bf, 2).to_floats();
  std::vector<float> c(g.size());
  const size_t B = size_t(a.size(0)), m = size_t(a.size(1)), k = size_t(b.size(1));
  for (size_t e = 0; e < B; ++e)
    for (size_t i = 0; i < m; ++i)
      for (size_t j = 0; j < k; ++j) {
        const size_t at = (e * m + i) * k + j;
        c[at] = g[at] / std::max(na[e * m + i] * nb[e * k + j], 1e-8f);
      }
  return c;
}

}  // namespace

const char* prune_method_name(PruneMethod m) {
  for (const auto& e : kMethods)
    if (e.m == m) return e.name;
  return "?";
}

// --- config ------------------------------------------------------------------------------------

PruningConfig PruningConfig::parse(JsonReader& r) {
  PruningConfig c;
  c.path = r.path();
  const std::string m = r.get<std::string>("method");
  bool found = false;
  for (const auto& e : kMethods)
    if (m == e.name) c.method = e.m, found = true;
  if (!found)
    r.fail_key("method", "is '" + m + "'; expected none, fastv, pdrop, fastervlm, visionzip, dart, divprune or vflowopt");
  if (r.has("keep") && r.has("ratio")) r.fail_key("ratio", "and keep are both given; use one");
  c.keep = r.get<int64_t>("keep", -1);
  if (r.has("keep") && c.keep < 1) r.fail_key("keep", "must be >= 1, got " + std::to_string(c.keep));
  c.ratio = r.get<double>("ratio", -1.0);
  if (r.has("ratio") && !(c.ratio > 0 && c.ratio <= 1)) r.fail_key("ratio", "must be in (0, 1], got " + str_cat(c.ratio));
  const bool fastv_like = c.method == PruneMethod::FastV || c.method == PruneMethod::Dart;
  c.layer = fastv_like ? r.get<int>("layer", 2) : c.layer;
  if (c.method == PruneMethod::PDrop) {
    c.layers = r.get<std::vector<int>>("layers", c.layers);
    c.lambda = r.get<double>("lambda", c.lambda);
    if (!(c.lambda > 0 && c.lambda < 1)) r.fail_key("lambda", "must be in (0, 1), got " + str_cat(c.lambda));
    if (r.has("keep") || r.has("ratio"))
      if (r.has("lambda")) r.fail_key("lambda", "and keep/ratio both set the schedule; use one");
  }
  if (c.method == PruneMethod::VisionZip) {
    c.dominant = r.get<int64_t>("dominant", -1);
    c.contextual = r.get<int64_t>("contextual", -1);
    if ((c.dominant >= 0 || c.contextual >= 0) && (r.has("keep") || r.has("ratio")))
      r.fail_key("dominant", "and contextual set the count themselves; drop keep/ratio");
    if ((c.dominant >= 0) != (c.contextual >= 0)) r.fail_key("contextual", "must be given together with dominant");
    if (c.dominant >= 0 && (c.dominant < 1 || c.contextual < 1))
      r.fail_key("dominant", "and contextual must be >= 1");
  }
  if (c.method == PruneMethod::Dart) {
    c.pivot_image = r.get<int>("pivot_image", 4);
    c.pivot_text = r.get<int>("pivot_text", 4);
    if (c.pivot_image < 1 || c.pivot_text < 0) r.fail_key("pivot_image", "must be >= 1 (and pivot_text >= 0)");
  }
  if (c.method == PruneMethod::VFlowOpt) {
    c.sink_threshold = r.get<double>("sink_threshold", c.sink_threshold);
    c.entropy_weight = r.get<double>("entropy_weight", c.entropy_weight);
    c.cell = r.get<int>("cell", c.cell);
    if (c.cell < 1) r.fail_key("cell", "must be >= 1, got " + std::to_string(c.cell));
    if (!(c.sink_threshold >= 0)) r.fail_key("sink_threshold", "must be >= 0");
    c.llm_layers = r.get<std::vector<int>>("llm_layers", c.llm_layers);
    c.llm_ratios = r.get<std::vector<double>>("llm_ratios", c.llm_ratios);
    if (c.llm_layers.size() != c.llm_ratios.size())
      r.fail_key("llm_ratios", "has " + std::to_string(c.llm_ratios.size()) + " entries for " +
                                   std::to_string(c.llm_layers.size()) + " llm_layers");
    for (size_t i = 0; i < c.llm_ratios.size(); ++i)
      if (!(c.llm_ratios[i] > 0 && c.llm_ratios[i] <= 1))
        r.fail_key("llm_ratios[" + std::to_string(i) + "]", "must be in (0, 1], got " + str_cat(c.llm_ratios[i]));
  }
  r.finish();
  return c;
}

bool PruningConfig::before_llm() const {
  if (keep_all) return false;
  return method == PruneMethod::FasterVLM || method == PruneMethod::VisionZip || method == PruneMethod::DivPrune ||
         method == PruneMethod::VFlowOpt;
}

bool PruningConfig::in_llm() const {
  if (keep_all) return false;
  return method == PruneMethod::FastV || method == PruneMethod::PDrop || method == PruneMethod::Dart ||
         (method == PruneMethod::VFlowOpt && !llm_layers.empty());
}

void PruningConfig::resolve(int64_t n, int n_layers, int64_t grid) {
  if (!enabled()) return;
  double def_ratio = 0.5;
  switch (method) {
    case PruneMethod::FastV: def_ratio = 0.5; break;
    case PruneMethod::FasterVLM: def_ratio = 0.25; break;
    case PruneMethod::DivPrune: def_ratio = 0.098; break;
    case PruneMethod::VFlowOpt: def_ratio = 0.25; break;
    default: break;
  }
  if (ratio > 0) keep = std::max<int64_t>(1, round_half_even(ratio * double(n)));
  if (keep < 0) {
    if (method == PruneMethod::Dart) keep = std::min<int64_t>(128, n);
    else if (method == PruneMethod::VisionZip) keep = dominant > 0 ? dominant + contextual : 64;
    else if (method != PruneMethod::PDrop) keep = std::max<int64_t>(1, round_half_even(def_ratio * double(n)));
  }
  if (keep > n) bad(*this, "keep", "is " + std::to_string(keep) + "; the image has " + std::to_string(n) + " tokens");
  keep_all = keep == n && method != PruneMethod::FastV && method != PruneMethod::PDrop;
  auto check_layer = [&](const std::string& field, int l) {
    if (l < 1 || l >= n_layers)
      bad(*this, field, "is " + std::to_string(l) + "; it must be in [1, " + std::to_string(n_layers) +
                            ") for this model's " + std::to_string(n_layers) + " decoder layers");
  };
  switch (method) {
    case PruneMethod::FastV: check_layer("layer", layer); break;
    case PruneMethod::Dart:
      check_layer("layer", layer);
      if (keep_all) break;
      if (keep / (pivot_image + pivot_text) < 1)
        bad(*this, "keep", "is " + std::to_string(keep) + "; DART needs at least one token per pivot (" +
                               std::to_string(pivot_image + pivot_text) + " pivots)");
      if (pivot_image + keep / (pivot_image + pivot_text) * (pivot_image + pivot_text) > n)
        bad(*this, "keep", "is " + std::to_string(keep) + "; too many for " + std::to_string(n) + " image tokens");
      break;
    case PruneMethod::PDrop:
      if (layers.empty()) bad(*this, "layers", "must not be empty");
      for (size_t i = 0; i < layers.size(); ++i) {
        check_layer("layers[" + std::to_string(i) + "]", layers[i]);
        if (i && layers[i] <= layers[i - 1]) bad(*this, "layers", "must be strictly increasing");
      }
      if (keep > 0) lambda = std::pow(double(keep) / double(n), 1.0 / double(layers.size()));
      break;
    case PruneMethod::VisionZip:
      if (keep_all) break;
      if (dominant < 0) {
        contextual = round_half_even(double(keep) * 10.0 / 64.0);
        dominant = keep - contextual;
      }
      if (dominant < 1 || contextual < 0 || dominant + contextual > n + 1)
        bad(*this, "keep", "gives dominant " + std::to_string(dominant) + " / contextual " + std::to_string(contextual) +
                               ", outside what " + std::to_string(n) + " image tokens allow");
      keep = dominant + contextual;
      break;
    case PruneMethod::VFlowOpt:
      for (size_t i = 0; i < llm_layers.size(); ++i) {
        check_layer("llm_layers[" + std::to_string(i) + "]", llm_layers[i]);
        if (i && llm_layers[i] <= llm_layers[i - 1]) bad(*this, "llm_layers", "must be strictly increasing");
      }
      if (grid * grid != n) bad(*this, "method", "vflowopt needs a square patch grid; the image has " + std::to_string(n) + " tokens");
      break;
    default: break;
  }
}

Json PruningConfig::to_json() const {
  Json j{{"method", prune_method_name(method)}};
  if (!enabled()) return j;
  j["keep"] = keep;
  switch (method) {
    case PruneMethod::FastV: j["layer"] = layer; break;
    case PruneMethod::PDrop: j["layers"] = layers, j["lambda"] = lambda; break;
    case PruneMethod::VisionZip: j["dominant"] = dominant, j["contextual"] = contextual; break;
    case PruneMethod::Dart:
      j["layer"] = layer, j["pivot_image"] = pivot_image, j["pivot_text"] = pivot_text;
      break;
    case PruneMethod::VFlowOpt:
      j["sink_threshold"] = sink_threshold, j["entropy_weight"] = entropy_weight, j["cell"] = cell;
      j["llm_layers"] = llm_layers, j["llm_ratios"] = llm_ratios;
      break;
    default: break;
  }
  return j;
}

Json PruningReport::to_json() const {
  Json st = Json::array();
  for (const auto& s : stages) st.push_back({{"where", s.where}, {"layer", s.layer}, {"image_tokens", s.image_tokens}});
  return Json{{"method", method},           {"image_tokens_before", image_tokens_before},
              {"stages", st},               {"image_tokens_after", stages.empty() ? image_tokens_before : stages.back().image_tokens},
              {"kv_cache_bytes", kv_bytes}, {"prefill_flops", prefill_flops}};
}

// --- before the LLM ----------------------------------------------------------------------------

VisualTokens unpruned_visual_tokens(const PruningConfig& cfg, const Tensor& features) {
  VisualTokens out;
  out.report.method = prune_method_name(cfg.method);
  out.features = features;
  const int64_t n = features.size(0);
  out.patch.resize(size_t(n));
  std::iota(out.patch.begin(), out.patch.end(), int64_t(0));
  out.report.image_tokens_before = n;
  return out;
}

std::vector<float> sum_over_heads(const Tensor& cls_attention) {
  check_defined(cls_attention, "sum_over_heads", "cls_attention");
  MMATTN_CHECK(cls_attention.dim() == 3 && cls_attention.size(0) == 1, ShapeError,
               "sum_over_heads: 'cls_attention' must be [1, H, T], got ", cls_attention.desc());
  const int64_t H = cls_attention.size(1), T = cls_attention.size(2);
  const std::vector<float> v = cls_attention.to_floats();
  std::vector<float> sum(size_t(T), 0.f);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t j = 0; j < T; ++j) sum[size_t(j)] += v[size_t(h * T + j)];
  return sum;
}

void require_cls_attention(const PruningConfig& cfg, const LlavaImageEncoder& enc) {
  MMATTN_CHECK(!cfg.before_llm() || (!enc.feature_layer_is_list() && enc.drops_cls()), ConfigError, cfg.path,
               ".method ", prune_method_name(cfg.method),
               " reads one ViT layer's [CLS] attention: it needs a single vision_feature_layer and the 'default' "
               "feature strategy");
}

VisualTokens encode_visual_tokens(const PruningConfig& cfg, const LlavaImageEncoder& enc, const Tensor& pixel_values,
                                  const Tensor& crop_pixels) {
  if (!cfg.before_llm()) return unpruned_visual_tokens(cfg, enc.encode(pixel_values).select(0, 0));
  VisualTokens out;
  out.report.method = prune_method_name(cfg.method);
  MMATTN_CHECK(pixel_values.size(0) == 1, ShapeError, "encode_visual_tokens: one image at a time, got ",
               pixel_values.desc());
  require_cls_attention(cfg, enc);
  const ClipVisionTower& tower = enc.tower();
  // the encoder taps each method reads (DivPrune: none, the features alone)
  const bool cls_row = cfg.method == PruneMethod::FasterVLM || cfg.method == PruneMethod::VisionZip;
  unsigned want = cls_row ? ClipVisionTower::kTapClsAttention : 0u;
  if (cfg.method == PruneMethod::VisionZip) want |= ClipVisionTower::kTapKeyMean;
  if (cfg.method == PruneMethod::VFlowOpt) want |= ClipVisionTower::kTapAttentionMatrix;
  // VFlowOpt's patch entropies (vision/patch_entropy.h) from the crop, on the pixels' device and
  // queued before the encoder (a few microseconds there); read back with the first list below.
  const int64_t patch = tower.config().patch_size, grid = tower.config().image_size / patch;  // patches per side
  Tensor entropy;
  if (cfg.method == PruneMethod::VFlowOpt && cfg.entropy_weight != 0) {
    MMATTN_CHECK(crop_pixels.defined() && crop_pixels.dim() == 3 && crop_pixels.size(0) == grid * patch &&
                     crop_pixels.size(1) == grid * patch,
                 ShapeError, "vflowopt: the crop is ",
                 crop_pixels.defined() ? crop_pixels.desc() : std::string("missing"), ", expected U8 [", grid * patch,
                 ", ", grid * patch, ", 3]");
    entropy = patch_gray_entropy(crop_pixels.to(pixel_values.device()), patch);
  }
  const ClipVisionTower::FeatureTaps taps = tower.feature_taps(pixel_values, enc.feature_layers()[0], want);
  const Tensor h = taps.features.select(0, 0);  // [1 + N, Dv]
  const int64_t n = h.size(0) - 1;
  out.report.image_tokens_before = n;

  std::vector<int64_t> kept;  // patches whose token survives
  switch (cfg.method) {
    case PruneMethod::FasterVLM: {
      // On the features' device, queued behind the encoder: the [CLS] row's head mean over the
      // patches (summed in head order, then divided), its top `keep`, those rows projected. The kept
      // list and the importances come back only after the projector is queued.
      const Tensor cls = taps.cls_attention.select(0, 0).slice(1, 1, n + 1);  // [H, N]
      const Tensor mean = column_sum(cls, float(cls.size(0)));                // [N]
      const Tensor idx = top_k_indices(mean, cfg.keep);                                     // ascending
      out.features = enc.projector().forward(embedding(idx, h.slice(0, 1, n + 1), /*check_ids=*/false));
      kept = host_indices(idx);
      out.report.importance = mean.to_floats();
      out.patch = kept;
      break;
    }
    case PruneMethod::VisionZip: {
      // On the features' device, queued behind the encoder: the dominant tokens ([CLS] and the
      // patches of the D - 1 largest head-summed [CLS] attentions), then the contextual merge of the
      // rest by their head-mean keys (core/ops/token_merge.h), the rows mixed and projected. The
      // lists come back only after the projector is queued.
      const Tensor cls_sum = column_sum(taps.cls_attention.select(0, 0).slice(1, 1, n + 1));  // [N]
      const Tensor dom = top_k_indices(cls_sum, cfg.dominant - 1);                           // ascending
      const MergePlan plan = visionzip_merge_plan(taps.key_mean.select(0, 0), dom, cfg.contextual);
      out.features = enc.projector().forward(weighted_rows(h, plan.rows));
      const int64_t D = cfg.dominant;
      for (int64_t t : host_indices(plan.heads)) out.patch.push_back(t - 1);  // [CLS] -> -1
      for (int64_t i = 1; i < D; ++i) kept.push_back(out.patch[size_t(i)]);
      out.report.importance = cls_sum.to_floats();
      break;
    }
    case PruneMethod::DivPrune: {
      const Tensor v = enc.projector().forward(h.slice(0, 1, n + 1));  // [N, hidden]
      // cosine distances from the Gram matrix in f32 (on the GPU from the bf16/f16 features on the
      // tensor cores: every product exact, sums in f32) and the f32 row norms; the selection, its
      // ascending order and the kept rows stay on the device (no host round trip before the
      // prefill), the kept list comes back after them
      const Tensor picks = sort_ascending(
          greedy_max_min_indices(matmul_f32(v, v, /*transpose_b=*/true), vector_norm(v, 2), cfg.keep));
      out.features = embedding(picks, v, /*check_ids=*/false);  // (a -1 gives a zero row; redone below)
      kept = host_indices(picks);
      if (!kept.empty() && kept.front() < 0) {  // the greedy stopped early (NaN distances): fewer rows
        kept.erase(kept.begin(), std::find_if(kept.begin(), kept.end(), [](int64_t i) { return i >= 0; }));
        out.features = select_rows(kept, v);
      }
      out.patch = kept;
      break;
    }
    case PruneMethod::VFlowOpt: {
      // The projector queued now (it needs only the features), so that it runs while the host
      // waits for the first download below.
      const Tensor v = enc.projector().forward(h.slice(0, 1, n + 1));  // [N, hidden]
      // A [N, N]: the head-mean attention among the patches (row i attends to column j), on the
      // device; only [N]-float column sums come back: over all rows (a product with ones) and over
      // the sink rows (weighted_rows with weight 1, in sink order).
      const Tensor A = taps.attention_mean.select(0, 0).slice(0, 1, n + 1).slice(1, 1, n + 1);
      const Tensor ones = Tensor::full({1, n}, 1.f, DType::F32, A.device());
      // recv's column sums and the patch entropies come back in one download
      const Tensor sums = matmul(ones, A.contiguous()).view({n});
      std::vector<float> recv = (entropy.defined() ? concat({sums, entropy}, 0) : sums).to_floats();
      const std::vector<float> H(recv.begin() + n, recv.end());
      recv.resize(size_t(n));
      double mean_recv = 0;
      for (float& r : recv) r /= float(n), mean_recv += r;
      mean_recv /= double(n);
      std::vector<int64_t> sinks;
      for (int64_t j = 0; j < n; ++j)
        if (recv[size_t(j)] > cfg.sink_threshold * mean_recv) sinks.push_back(j);
      if (sinks.empty()) sinks.push_back(int64_t(std::max_element(recv.begin(), recv.end()) - recv.begin()));
      RowMix sink_sum;  // one row: the sum of the sink rows
      for (int64_t g : sinks) sink_sum.add(g, 1.f);
      sink_sum.end_row();
      std::vector<float> imp = sink_sum.apply(A).to_floats();
      for (float& v : imp) v /= float(sinks.size());
      if (cfg.entropy_weight != 0) {
        const float m = *std::max_element(H.begin(), H.end());
        double z = 0;
        for (float e : H) z += std::exp(double(e - m));
        for (int64_t j = 0; j < n; ++j)
          imp[size_t(j)] += float(cfg.entropy_weight * std::exp(double(H[size_t(j)] - m)) / z);
      }
      const int64_t a = cfg.cell, extra = n / (a * a);
      const int64_t drop = std::min<int64_t>(n, (n - cfg.keep) + extra);
      const std::vector<int64_t> order = ascending(imp);
      std::vector<bool> dropped(size_t(n), false);
      for (int64_t i = 0; i < drop; ++i) dropped[size_t(order[size_t(i)])] = true;
      // groups of dropped tokens by cell; each recycled into its highest-importance member
      const int64_t cells_side = (grid + a - 1) / a;
      std::vector<std::vector<int64_t>> groups(size_t(cells_side * cells_side));
      for (int64_t j = 0; j < n; ++j)
        if (dropped[size_t(j)]) groups[size_t((j / grid) / a * cells_side + (j % grid) / a)].push_back(j);
      RowMix mix;  // per output row (index order): kept tokens selected, each group's head its group
      std::vector<int64_t> row_patch;
      std::vector<int64_t> best_of(size_t(n), -1);  // dropped token that heads a group -> its group
      for (size_t g = 0; g < groups.size(); ++g) {
        if (groups[g].empty()) continue;
        int64_t bm = groups[g][0];
        for (int64_t j : groups[g])
          if (imp[size_t(j)] > imp[size_t(bm)]) bm = j;
        best_of[size_t(bm)] = int64_t(g);
      }
      for (int64_t j = 0; j < n; ++j) {
        if (!dropped[size_t(j)]) {
          mix.add(j, 1.f), mix.end_row();
          row_patch.push_back(j);
          kept.push_back(j);
        } else if (best_of[size_t(j)] >= 0) {
          const auto& grp = groups[size_t(best_of[size_t(j)])];
          double z = 0;
          for (int64_t i : grp) z += imp[size_t(i)];
          for (int64_t i : grp) mix.add(i, z > 0 ? float(imp[size_t(i)] / z) : 1.f / float(grp.size()));
          mix.end_row();
          row_patch.push_back(j);
        }
      }
      out.features = mix.apply(v);
      out.patch = row_patch;
      for (int64_t j : row_patch) out.row_importance.push_back(imp[size_t(j)]);
      out.report.importance = imp;
      kept = row_patch;
      break;
    }
    default: MMATTN_THROW(Error, "encode_visual_tokens: unreachable method");
  }
  out.report.kept_patches = kept;
  out.report.stages.push_back({"vision", -1, out.features.size(0)});
  return out;
}

// --- inside the LLM ----------------------------------------------------------------------------

LlavaTokenPruner::LlavaTokenPruner(const PruningConfig& cfg, const LlamaModel& lm,
                                   std::vector<std::pair<int64_t, int64_t>> spans,
                                   std::vector<std::vector<float>> row_importance)
    : cfg_(cfg), lm_(lm), spans_(std::move(spans)), row_imp_(std::move(row_importance)) {
  const size_t B = spans_.size();
  stages_.resize(B);
  kept_.resize(B);
  scores_.resize(B);
  stash_.resize(B);
  row_imp_.resize(B);
  for (size_t b = 0; b < B; ++b) {
    kept_[b].resize(size_t(spans_[b].second));
    std::iota(kept_[b].begin(), kept_[b].end(), int64_t(0));
  }
}

TokenPruner::Needs LlavaTokenPruner::needs(int l) const {
  switch (cfg_.method) {
    case PruneMethod::FastV:
      if (l == cfg_.layer - 1) return {true, true};
      return {l == cfg_.layer, false};
    case PruneMethod::Dart: return {l == cfg_.layer - 1 || l == cfg_.layer, false};
    case PruneMethod::PDrop:
      return std::find(cfg_.layers.begin(), cfg_.layers.end(), l) != cfg_.layers.end() ? Needs{true, true} : Needs{};
    case PruneMethod::VFlowOpt:
      return {std::find(cfg_.llm_layers.begin(), cfg_.llm_layers.end(), l) != cfg_.llm_layers.end(), false};
    default: return {};
  }
}

void LlavaTokenPruner::image_rows(const PruneContext& ctx, size_t b, std::vector<int64_t>& rows,
                                  std::vector<int64_t>& span_idx) const {
  rows.clear(), span_idx.clear();
  const auto [s0, cnt] = spans_[b];
  const auto& org = ctx.origin[b];
  for (size_t i = 0; i < org.size(); ++i)
    if (org[i] >= s0 && org[i] < s0 + cnt) rows.push_back(int64_t(i)), span_idx.push_back(org[i] - s0);
}

// Keeps every non-image row and the image rows whose span index is in keep_span_idx[b].
PruneDecision LlavaTokenPruner::keep_image(const PruneContext& ctx, const std::vector<std::vector<int64_t>>& keep_idx,
                                           int layer) {
  PruneDecision d;
  const size_t B = ctx.origin.size();
  d.keep.resize(B);
  for (size_t b = 0; b < B; ++b) {
    const auto [s0, cnt] = spans_[b];
    const auto& org = ctx.origin[b];
    const auto& ks = keep_idx[b];
    for (size_t i = 0; i < org.size(); ++i) {
      const bool image = org[i] >= s0 && org[i] < s0 + cnt;
      if (!image || std::binary_search(ks.begin(), ks.end(), org[i] - s0)) d.keep[b].push_back(int64_t(i));
    }
    if (cnt > 0 && ctx.n_valid[b] > 0) {
      kept_[b] = ks;
      stages_[b].push_back({"llm", layer, int64_t(ks.size())});
    }
  }
  return d;
}

std::optional<PruneDecision> LlavaTokenPruner::on_layer(const PruneContext& ctx) {
  const size_t B = ctx.origin.size();
  const int l = ctx.layer;
  std::vector<int64_t> rows, sidx;
  // The head mean of last_probs over the image rows of sequence b (span-index order), from
  // mean = head_mean(last_probs) as floats [B, n] (reduced on the device: only B x n floats come back).
  auto image_scores = [&](const std::vector<float>& mean, size_t b) {
    image_rows(ctx, b, rows, sidx);
    const size_t n = size_t(ctx.last_probs.size(3));
    std::vector<float> s(rows.size());
    for (size_t i = 0; i < rows.size(); ++i) s[i] = mean[b * n + size_t(rows[i])];
    return s;
  };
  // The kept span indices from scores over the current image rows (top k).
  auto top_span = [&](const std::vector<float>& s, int64_t k) {
    std::vector<int64_t> keep;
    for (int64_t i : top_k(s, k)) keep.push_back(sidx[size_t(i)]);
    std::sort(keep.begin(), keep.end());
    return keep;
  };

  switch (cfg_.method) {
    case PruneMethod::FastV: {
      if (l == cfg_.layer - 1) {
        const std::vector<float> mean = head_mean(ctx.last_probs).to_floats();
        for (size_t b = 0; b < B; ++b) stash_[b] = image_scores(mean, b);
        return std::nullopt;
      }
      std::vector<std::vector<int64_t>> keep(B);
      for (size_t b = 0; b < B; ++b) {
        image_rows(ctx, b, rows, sidx);
        scores_[b] = stash_[b];
        keep[b] = top_span(stash_[b], cfg_.keep);
      }
      return keep_image(ctx, keep, l);
    }
    case PruneMethod::PDrop: {
      const std::vector<float> mean = head_mean(ctx.last_probs).to_floats();
      const size_t stage = size_t(std::find(cfg_.layers.begin(), cfg_.layers.end(), l) - cfg_.layers.begin());
      std::vector<std::vector<int64_t>> keep(B);
      for (size_t b = 0; b < B; ++b) {
        const std::vector<float> s = image_scores(mean, b);
        const int64_t n = spans_[b].second;
        int64_t k = int64_t(std::floor(double(n) * std::pow(cfg_.lambda, double(stage + 1)) + 1e-9));
        if (stage + 1 == cfg_.layers.size() && cfg_.keep > 0) k = std::min(cfg_.keep, n);
        if (stage == 0) scores_[b] = s;
        keep[b] = top_span(s, k);
      }
      PruneDecision d = keep_image(ctx, keep, l);
      d.renumber_positions = true;
      return d;
    }
    case PruneMethod::Dart: {
      if (l == cfg_.layer - 1) {
        const int64_t Bn = ctx.k.size(0), n = ctx.k.size(1);
        const std::vector<float> norms = vector_norm(ctx.k.contiguous().view({Bn, n, -1}), 1).to_floats();
        for (size_t b = 0; b < B; ++b)
          stash_[b].assign(norms.begin() + std::ptrdiff_t(b * size_t(n)), norms.begin() + std::ptrdiff_t((b + 1) * size_t(n)));
        return std::nullopt;
      }
      const Tensor X = rms_norm(ctx.x, lm_.final_norm(), lm_.rms_norm_eps());  // [B, n, hidden]
      const int64_t per = cfg_.keep / (cfg_.pivot_image + cfg_.pivot_text);
      std::vector<std::vector<int64_t>> keep(B);
      // The pivots of every sequence first (host), then the cosine of every row to its sequence's
      // pivots for the whole batch in one product: [B, n, P] (P the most pivots of a sequence).
      std::vector<std::vector<int64_t>> seq_rows(B), piv_img(B), pivots(B);
      size_t P = 1;
      for (size_t b = 0; b < B; ++b) {
        image_rows(ctx, b, rows, sidx);
        if (rows.empty()) continue;
        seq_rows[b] = rows;
        const auto& kn = stash_[b];
        std::vector<float> img_norm;
        for (int64_t r : rows) img_norm.push_back(kn[size_t(r)]);
        std::vector<int64_t> text_rows;  // rows after the image span
        const int64_t img_end = spans_[b].first + spans_[b].second;
        for (int64_t i = 0; i < ctx.n_valid[b]; ++i)
          if (ctx.origin[b][size_t(i)] >= img_end) text_rows.push_back(i);
        std::vector<float> txt_norm;
        for (int64_t r : text_rows) txt_norm.push_back(kn[size_t(r)]);
        piv_img[b] = top_k(img_norm, cfg_.pivot_image);  // positions in rows
        for (int64_t i : piv_img[b]) pivots[b].push_back(rows[size_t(i)]);  // current row indices
        for (int64_t i : top_k(txt_norm, cfg_.pivot_text)) pivots[b].push_back(text_rows[size_t(i)]);
        std::sort(pivots[b].begin(), pivots[b].end());
        P = std::max(P, pivots[b].size());
        scores_[b] = img_norm;
      }
      const int64_t n = X.size(1);
      const std::vector<float> cs = cosine(X, gather_rows(X, pivots, int64_t(P)));  // [B, n, P]
      for (size_t b = 0; b < B; ++b) {
        const std::vector<int64_t>& rws = seq_rows[b];
        if (rws.empty()) continue;
        const float* cb = cs.data() + b * size_t(n) * P;
        std::vector<int64_t> cand;  // current row indices of non-pivot image rows
        for (size_t i = 0; i < rws.size(); ++i)
          if (!std::binary_search(piv_img[b].begin(), piv_img[b].end(), int64_t(i))) cand.push_back(rws[i]);
        std::vector<int64_t> sel;
        for (int64_t i : piv_img[b]) sel.push_back(rws[size_t(i)]);
        for (size_t pi = 0; pi < pivots[b].size(); ++pi) {
          std::vector<float> neg;
          for (int64_t c : cand) neg.push_back(-cb[size_t(c) * P + pi]);
          std::vector<int64_t> pick = top_k(neg, per);  // positions in cand, ascending
          for (int64_t q : pick) sel.push_back(cand[size_t(q)]);
          for (auto it = pick.rbegin(); it != pick.rend(); ++it) cand.erase(cand.begin() + std::ptrdiff_t(*it));
        }
        for (int64_t r : sel) keep[b].push_back(ctx.origin[b][size_t(r)] - spans_[b].first);
        std::sort(keep[b].begin(), keep[b].end());
      }
      return keep_image(ctx, keep, l);
    }
    case PruneMethod::VFlowOpt: {
      const size_t stage = size_t(std::find(cfg_.llm_layers.begin(), cfg_.llm_layers.end(), l) - cfg_.llm_layers.begin());
      std::vector<std::vector<int64_t>> keep(B);
      for (size_t b = 0; b < B; ++b) {
        image_rows(ctx, b, rows, sidx);
        std::vector<float> s;
        for (int64_t i : sidx) s.push_back(row_imp_[b].empty() ? 0.f : row_imp_[b][size_t(i)]);
        const int64_t n = int64_t(s.size());
        const int64_t drop = round_half_even(double(n) * (1.0 - cfg_.llm_ratios[stage]));
        const std::vector<int64_t> order = ascending(s);
        std::vector<int64_t> k;
        for (int64_t i = drop; i < n; ++i) k.push_back(sidx[size_t(order[size_t(i)])]);
        std::sort(k.begin(), k.end());
        keep[b] = k;
      }
      return keep_image(ctx, keep, l);
    }
    default: return std::nullopt;
  }
}

std::vector<int64_t> LlavaTokenPruner::rows_per_layer(size_t b, int64_t prompt_rows, int n_layers) const {
  std::vector<int64_t> r(size_t(n_layers), prompt_rows);
  int64_t before = spans_[b].second;
  for (const auto& s : stages_[b]) {
    for (int l = s.layer; l < n_layers; ++l) r[size_t(l)] -= before - s.image_tokens;
    before = s.image_tokens;
  }
  return r;
}

double llama_prefill_flops(const LlamaModel& lm, const std::vector<int64_t>& rows) {
  const double H = double(lm.hidden_size()), D = double(lm.head_dim()), hq = double(lm.num_heads());
  const double hkv = double(lm.num_kv_heads());
  // per row: qkv + o projections, gate/up/down (intermediate size from the MLP weights' FLOP share)
  const double ffn = double(lm.intermediate_size());
  const double per_row = 2.0 * H * ((hq + 2 * hkv) * D + hq * D + 3 * ffn);
  double f = 0;
  for (int64_t n : rows) {
    const double nn = double(n);
    f += nn * per_row + 2.0 * 2.0 * hq * D * nn * (nn + 1) / 2.0;  // QK^T and PV over the causal half
  }
  return f + 2.0 * H * double(lm.vocab_size());  // lm_head on the last row
}

// --- kept map ----------------------------------------------------------------------------------

void save_kept_map(const Image& crop, int64_t patch, const PruningReport& report, const std::string& path) {
  const int w = crop.width, h = crop.height;
  const int64_t gx = w / patch, gy = h / patch, n = gx * gy;
  const bool heat = int64_t(report.importance.size()) == n;
  Image out(heat ? 2 * w + 8 : w, h);
  std::fill(out.rgb.begin(), out.rgb.end(), uint8_t(255));
  std::vector<bool> kept(size_t(n), false);
  for (int64_t p : report.kept_patches)
    if (p >= 0 && p < n) kept[size_t(p)] = true;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const int64_t p = std::min<int64_t>(y / patch, gy - 1) * gx + std::min<int64_t>(x / patch, gx - 1);
      const uint8_t* s = crop.px(x, y);
      uint8_t* d = out.px(x, y);
      const bool k = kept[size_t(p)];
      const bool edge = k && (x % patch == 0 || y % patch == 0 || x % patch == patch - 1 || y % patch == patch - 1);
      for (int c = 0; c < 3; ++c) d[c] = edge ? (c == 1 ? 255 : 40) : k ? s[c] : uint8_t(s[c] / 4);
    }
  if (heat) {
    const float lo = *std::min_element(report.importance.begin(), report.importance.end());
    const float hi = *std::max_element(report.importance.begin(), report.importance.end());
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        const int64_t p = std::min<int64_t>(y / patch, gy - 1) * gx + std::min<int64_t>(x / patch, gx - 1);
        heatmap_rgb(hi > lo ? (report.importance[size_t(p)] - lo) / (hi - lo) : 0.f, out.px(w + 8 + x, y));
      }
  }
  save_png(out, path);
}

}  // namespace mmattn
