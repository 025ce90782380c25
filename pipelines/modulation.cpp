#include "pipelines/modulation.h"

#include <cmath>
#include <algorithm>
#include <numeric>
#include <random>

#include "attention/kv_cache.h"
#include "core/io.h"
#include "core/ops/concat.h"
#include "core/ops/elementwise.h"
#include "core/ops/reduce.h"
#include "vision/image.h"
#include "pipelines/ranking.h"

namespace mmattn {

namespace {

struct Name {
  ModMethod m;
  const char* name;
};
constexpr Name kNames[] = {{ModMethod::PAI, "pai"},
                           {ModMethod::PAINT, "paint"},
                           {ModMethod::ADHH, "adhh"},
                           {ModMethod::VCD, "vcd"},
                           {ModMethod::DAMRO, "damro"},
                           {ModMethod::VAR, "var"},
                           {ModMethod::RITUAL, "ritual"},
                           {ModMethod::VHR, "vhr"}};

constexpr int kClasses = 4;

// AD-HH's hallucination heads of liuhaotian/llava-v1.5-7b (TianyunYoung/Hallucination-Attribution,
// the first 20 of its attribution_result.json), 0-based (layer, head).
const std::vector<std::pair<int, int>> kAdhhHeads = {
    {16, 29}, {26, 9},  {13, 31}, {15, 10}, {20, 12}, {30, 9},  {19, 18}, {17, 0},  {18, 9},  {26, 28},
    {19, 27}, {18, 26}, {15, 25}, {14, 16}, {31, 26}, {15, 24}, {31, 3},  {22, 20}, {27, 29}, {17, 28}};

[[noreturn]] void bad(const ModulationConfig& c, const std::string& field, const std::string& msg) {
  MMATTN_THROW(ConfigError, c.path, ".", field, " ", msg);
}

// The non-empty list of integers >= 0 at `key` (what: one entry, for the errors), or `fallback`
// when the key is absent.
std::vector<int> read_index_list(JsonReader& r, const std::string& key, const char* what, std::vector<int> fallback) {
  if (!r.has(key)) return fallback;
  const Json& d = r.json()[key];
  if (!d.is_array() || d.empty()) r.fail_key(key, std::string("must be a non-empty list of integers >= 0 (each a ") + what + ")");
  std::vector<int> out;
  for (size_t i = 0; i < d.size(); ++i) {
    if (!d[i].is_number_integer() || d[i].get<int>() < 0)
      r.fail_key(key + "[" + std::to_string(i) + "]", std::string("must be a ") + what + " >= 0, got " + d[i].dump());
    out.push_back(d[i].get<int>());
  }
  r.ignore(key);
  return out;
}

// Per-head output gains [B, n_heads] in dt on dev: `gain` for the heads listed for sequence b
// (null: none), 1 elsewhere; undefined when no sequence lists a head.
Tensor head_gain_tensor(const std::vector<const std::vector<int>*>& heads, int n_heads, double gain, DType dt,
                        Device dev) {
  std::vector<float> g(heads.size() * size_t(n_heads), 1.f);
  bool any = false;
  for (size_t b = 0; b < heads.size(); ++b)
    if (heads[b])
      for (int h : *heads[b]) g[b * size_t(n_heads) + size_t(h)] = float(gain), any = true;
  return any ? Tensor::from_floats(g, {int64_t(heads.size()), int64_t(n_heads)}, dt).to(dev) : Tensor();
}

}  // namespace

const char* mod_method_name(ModMethod m) {
  for (const auto& n : kNames)
    if (n.m == m) return n.name;
  return "?";
}

ModulationConfig ModulationConfig::parse(JsonReader& r) {
  ModulationConfig c;
  c.path = r.path();
  const std::string m = r.get<std::string>("method");
  bool found = false;
  for (const auto& n : kNames)
    if (m == n.name) c.method = n.m, found = true;
  if (!found) r.fail_key("method", "is '" + m + "'; expected pai, paint, adhh, vcd, damro, var, ritual or vhr");
  if (c.method == ModMethod::VHR) {
    c.gain = r.get<double>("gain", c.gain);
    if (!(c.gain >= 0) || !std::isfinite(c.gain)) r.fail_key("gain", "must be >= 0");
    c.layers = read_index_list(r, "layers", "layer index", {});
    c.filter = r.get<bool>("filter", c.filter);
    r.finish();
    return c;
  }
  if (c.method == ModMethod::ADHH) {
    c.heads = kAdhhHeads;
    if (r.has("heads")) {
      c.heads.clear();
      const Json& h = r.json()["heads"];
      if (!h.is_array()) r.fail_key("heads", "must be a list of [layer, head] pairs");
      for (size_t i = 0; i < h.size(); ++i) {
        if (!h[i].is_array() || h[i].size() != 2 || !h[i][0].is_number_integer() || !h[i][1].is_number_integer())
          r.fail_key("heads[" + std::to_string(i) + "]", "must be [layer, head], got " + h[i].dump());
        c.heads.push_back({h[i][0].get<int>(), h[i][1].get<int>()});
      }
      r.ignore("heads");
    }
    c.threshold = r.get<double>("threshold", c.threshold);
    if (!(c.threshold >= 0 && c.threshold <= 1)) r.fail_key("threshold", "must be in [0, 1]");
    r.finish();
    return c;
  }
  if (c.method == ModMethod::VAR) {
    c.sink_dims = read_index_list(r, "sink_dims", "hidden dim", c.sink_dims);
    c.tau = r.get<double>("tau", c.tau);
    if (!(c.tau > 0) || !std::isfinite(c.tau)) r.fail_key("tau", "must be > 0");
    for (auto [key, v] : {std::pair<const char*, double*>{"p", &c.p}, {"rho", &c.rho}, {"summ", &c.summ}}) {
      *v = r.get<double>(key, *v);
      if (!(*v >= 0 && *v <= 1)) r.fail_key(key, "must be in [0, 1]");
    }
    c.start_layer = r.get<int>("start_layer", c.start_layer);
    c.end_layer = r.get<int>("end_layer", c.end_layer);
    r.finish();
    return c;
  }
  if (c.method == ModMethod::RITUAL) {
    c.alpha_pos = r.get<double>("alpha_pos", c.alpha_pos);
    if (!(c.alpha_pos >= 0) || !std::isfinite(c.alpha_pos)) r.fail_key("alpha_pos", "must be >= 0");
    const std::string t = r.get<std::string>("transform", std::string("random"));
    ImageTransformKind k;
    if (t != "random" && !parse_image_transform(t, &k))
      r.fail_key("transform",
                 "is '" + t + "'; expected random, hflip, vflip, rotate, color_jitter, blur or resized_crop");
    if (t != "random") c.transform = k;
    if (r.has("seed")) c.seed = r.get<uint64_t>("seed");
    else r.ignore("seed");
  } else if (c.method == ModMethod::PAI || c.method == ModMethod::PAINT) {
    if (c.method == ModMethod::PAI) {
      c.alpha = r.get<double>("alpha", c.alpha);
      if (!(c.alpha >= 0) || !std::isfinite(c.alpha)) r.fail_key("alpha", "must be >= 0");
    } else {
      c.alpha_local = r.get<double>("alpha_local", c.alpha_local);
      c.alpha_summary = r.get<double>("alpha_summary", c.alpha_summary);
      c.local_ratio = r.get<double>("local_ratio", c.local_ratio);
      if (!(c.alpha_local >= 0) || !(c.alpha_summary >= 0)) r.fail_key("alpha_local", "and alpha_summary must be >= 0");
      if (!(c.local_ratio > 0 && c.local_ratio <= 1)) r.fail_key("local_ratio", "must be in (0, 1]");
    }
    c.start_layer = r.get<int>("start_layer", c.start_layer);
    c.end_layer = r.get<int>("end_layer", c.end_layer);
    c.cfg = r.get<double>("cfg", c.cfg);
    if (!(c.cfg >= 1) || !std::isfinite(c.cfg)) r.fail_key("cfg", "must be >= 1 (1 = no guidance)");
  } else {
    c.cd_alpha = r.get<double>("cd_alpha", c.method == ModMethod::DAMRO ? 2.0 : 1.0);
    if (!(c.cd_alpha >= 0)) r.fail_key("cd_alpha", "must be >= 0");
    if (c.method == ModMethod::VCD) {
      c.noise_step = r.get<int>("noise_step", c.noise_step);
      if (c.noise_step < 0 || c.noise_step > 999) r.fail_key("noise_step", "must be in [0, 999]");
    } else {
      c.topk = r.get<int>("topk", c.topk);
      if (c.topk < 1) r.fail_key("topk", "must be >= 1");
    }
  }
  if (c.contrastive()) {
    c.beta = r.get<double>("beta", c.beta);
    if (!(c.beta >= 0 && c.beta <= 1)) r.fail_key("beta", "must be in [0, 1]");
  }
  r.finish();
  return c;
}

void ModulationConfig::resolve(int n_layers, int n_heads) {
  if (method == ModMethod::ADHH) {
    for (size_t i = 0; i < heads.size(); ++i)
      if (heads[i].first < 0 || heads[i].first >= n_layers || heads[i].second < 0 ||
          (n_heads > 0 && heads[i].second >= n_heads))
        bad(*this, "heads[" + std::to_string(i) + "]",
            str_cat("is [", heads[i].first, ", ", heads[i].second, "]; the model has ", n_layers, " layers",
                    n_heads > 0 ? str_cat(" of ", n_heads, " heads") : std::string()));
    return;
  }
  if (method == ModMethod::VHR) {
    if (layers.empty()) {  // LLaVA-1.5-7B's: layer 1 and the last 14
      if (n_layers > 1) layers.push_back(1);
      for (int l = std::max(2, n_layers - 14); l < n_layers; ++l) layers.push_back(l);
    }
    for (size_t i = 0; i < layers.size(); ++i)
      if (layers[i] < 0 || layers[i] >= n_layers)
        bad(*this, "layers[" + std::to_string(i) + "]",
            "is " + std::to_string(layers[i]) + "; the model has " + std::to_string(n_layers) + " layers");
    return;
  }
  if (method != ModMethod::PAI && method != ModMethod::PAINT && method != ModMethod::VAR) return;
  if (end_layer < 0) end_layer = n_layers;
  if (start_layer < 0 || start_layer >= n_layers)
    bad(*this, "start_layer", "is " + std::to_string(start_layer) + "; it must be in [0, " + std::to_string(n_layers) + ")");
  if (end_layer <= start_layer || end_layer > n_layers)
    bad(*this, "end_layer", "is " + std::to_string(end_layer) + "; it must be in (start_layer, " +
                                std::to_string(n_layers) + "]");
}

Json ModulationConfig::to_json() const {
  Json j{{"method", mod_method_name(method)}};
  if (method == ModMethod::PAI || method == ModMethod::PAINT) {
    if (method == ModMethod::PAI) j["alpha"] = alpha;
    else j["alpha_local"] = alpha_local, j["alpha_summary"] = alpha_summary, j["local_ratio"] = local_ratio;
    j["start_layer"] = start_layer, j["end_layer"] = end_layer, j["cfg"] = cfg;
  } else if (method == ModMethod::ADHH) {
    Json h = Json::array();
    for (const auto& [l, hh] : heads) h.push_back({l, hh});
    j["heads"] = h, j["threshold"] = threshold;
  } else if (method == ModMethod::VAR) {
    j["sink_dims"] = sink_dims, j["tau"] = tau, j["p"] = p, j["rho"] = rho, j["summ"] = summ;
    j["start_layer"] = start_layer, j["end_layer"] = end_layer;
  } else if (method == ModMethod::RITUAL) {
    j["alpha_pos"] = alpha_pos, j["transform"] = transform ? image_transform_name(*transform) : "random";
    if (seed) j["seed"] = *seed;
  } else if (method == ModMethod::VHR) {
    j["gain"] = gain, j["filter"] = filter;
    if (!layers.empty()) j["layers"] = layers;  // empty before resolve: the model's default
  } else if (method == ModMethod::VCD) {
    j["cd_alpha"] = cd_alpha, j["noise_step"] = noise_step;
  } else {
    j["cd_alpha"] = cd_alpha, j["topk"] = topk;
  }
  if (contrastive()) j["beta"] = beta;
  return j;
}

ModulationSet ModulationSet::parse(JsonReader& r, const std::string& key) {
  ModulationSet s;
  if (!r.has(key)) {
    r.ignore(key);
    return s;
  }
  for (JsonReader& e : r.array(key)) s.items.push_back(ModulationConfig::parse(e));
  if (s.items.size() > 1) {
    int n = 0;
    for (const auto& c : s.items) n += c.contrastive() ? 1 : 0;
    if (n > 1) r.fail_key(key, "holds " + std::to_string(n) + " contrastive methods; at most one can decode a request");
  }
  return s;
}

void ModulationSet::resolve(int n_layers, int n_heads) {
  for (auto& c : items) c.resolve(n_layers, n_heads);
  if (find(ModMethod::ADHH) && find(ModMethod::PAINT))
    MMATTN_THROW(ConfigError, find(ModMethod::ADHH)->path, ": adhh with paint is not supported (key classes)");
  // VAR's classes (image sinks, text sinks) take the attention core's other two, and its extra
  // passes modulate every row, where PAI / PAINT boost only the last
  if (const ModulationConfig* v = find(ModMethod::VAR))
    for (const auto& c : items)
      if (c.method == ModMethod::PAI || c.method == ModMethod::PAINT || c.method == ModMethod::ADHH)
        MMATTN_THROW(ConfigError, v->path, ": var with ", mod_method_name(c.method),
                     " is not supported (key classes; per-row passes)");
  // VHR's gains apply to every row (one-step batched prefill), where PAI / PAINT / AD-HH edit each
  // forward's last row (two-step prefill); a contrastive branch would need its own selection
  if (const ModulationConfig* v = find(ModMethod::VHR))
    for (const auto& c : items)
      if (c.method == ModMethod::PAI || c.method == ModMethod::PAINT || c.method == ModMethod::ADHH || c.contrastive())
        MMATTN_THROW(ConfigError, v->path, ": vhr with ", mod_method_name(c.method),
                     c.contrastive() ? " (a contrastive method)" : " (last-row edits vs per-row gains)",
                     " is not supported");
}

bool ModulationSet::attention() const {
  for (const auto& c : items)
    if ((c.method == ModMethod::PAI && c.alpha != 0) || c.method == ModMethod::PAINT || c.method == ModMethod::ADHH ||
        c.method == ModMethod::VAR || c.method == ModMethod::VHR)
      return true;
  return false;
}

const ModulationConfig* ModulationSet::find(ModMethod m) const {
  for (const auto& c : items)
    if (c.method == m) return &c;
  return nullptr;
}

const ModulationConfig* ModulationSet::contrastive() const {
  for (const auto& c : items)
    if (c.contrastive()) return &c;
  return nullptr;
}

Json ModulationSet::to_json() const {
  Json a = Json::array();
  for (const auto& c : items) a.push_back(c.to_json());
  return a;
}

// --- LlavaModulator ----------------------------------------------------------------------------

LlavaModulator::LlavaModulator(const ModulationSet& set, const LlamaModel& lm,
                               std::vector<std::pair<int64_t, int64_t>> spans)
    : spans_(std::move(spans)) {
  const int L = lm.num_layers();
  const int64_t H = lm.num_heads();
  abs_gain_.resize(size_t(L));
  mods_.resize(size_t(L));
  classes_.resize(size_t(L));
  class_lens_.resize(size_t(L));
  stale_.assign(size_t(L), true);
  // Key classes: 0 text before the image, 1 image (PAINT: other image tokens), and either 2 / 3
  // PAINT's local / summary tokens (the text after the image is then class 0) or 2 the text after
  // the image (AD-HH's "text").
  const bool paint = set.find(ModMethod::PAINT) != nullptr;
  post_text_class_ = paint ? 0 : 2;
  std::vector<std::vector<float>> gain(static_cast<size_t>(L));
  for (const auto& c : set.items) {
    if (c.method != ModMethod::PAI && c.method != ModMethod::PAINT) continue;
    const float img = c.method == ModMethod::PAI ? float(c.alpha) : 0.f;
    const float add[kClasses] = {0.f, img, paint ? float(c.method == ModMethod::PAI ? c.alpha : c.alpha_local) : 0.f,
                                 paint ? float(c.method == ModMethod::PAI ? c.alpha : c.alpha_summary) : 0.f};
    for (int l = c.start_layer; l < c.end_layer; ++l) {
      auto& g = gain[size_t(l)];
      if (g.empty()) g.assign(size_t(H * kClasses), 0.f);
      for (int64_t h = 0; h < H; ++h)
        for (int k = 0; k < kClasses; ++k) g[size_t(h * kClasses + k)] += add[k];
    }
  }
  for (int l = 0; l < L; ++l)
    if (!gain[size_t(l)].empty())
      abs_gain_[size_t(l)] = Tensor::from_vector(gain[size_t(l)], {H, int64_t(kClasses)}).to(lm.device());
  // AD-HH: per layer, the eligible heads; the alternative zeroes their post-image text weights
  alt_mods_.resize(size_t(L));
  cond_.resize(size_t(L));
  adhh_weight_.resize(size_t(L));
  for (const auto& c : set.items) {
    if (c.method != ModMethod::ADHH) continue;
    for (const auto& [l, h] : c.heads) {
      Conditional& cd = cond_[size_t(l)];
      if (cd.heads.empty()) cd.heads.assign(size_t(H), 0);
      cd.heads[size_t(h)] = 1;
      cd.klass = post_text_class_;
      cd.threshold = float(c.threshold);
    }
  }
  for (int l = 0; l < L; ++l) {
    const Conditional& cd = cond_[size_t(l)];
    if (cd.heads.empty()) continue;
    std::vector<float> w(size_t(H * kClasses), 1.f);
    for (int64_t h = 0; h < H; ++h)
      if (cd.heads[size_t(h)]) w[size_t(h * kClasses + cd.klass)] = 0.f;
    adhh_weight_[size_t(l)] = Tensor::from_vector(w, {H, int64_t(kClasses)}).to(lm.device());
  }
  // VAR: classes 0 text, 1 image, 2 image sink, 3 text sink (never with PAINT / AD-HH: resolve())
  if (const ModulationConfig* v = set.find(ModMethod::VAR)) {
    var_on_ = true;
    var_ = *v;
    post_text_class_ = 0;
    for (size_t i = 0; i < var_.sink_dims.size(); ++i)
      if (var_.sink_dims[i] >= lm.hidden_size())
        MMATTN_THROW(ConfigError, var_.path, ".sink_dims[", i, "] is ", var_.sink_dims[i], "; the model's hidden size is ",
                     lm.hidden_size());
    sinks_.assign(size_t(L), {});
    std::vector<float> wi(size_t(H * kClasses), 0.f), ws(size_t(H * kClasses), 0.f);
    for (int64_t h = 0; h < H; ++h) {
      wi[size_t(h * kClasses + 1)] = 1.f;
      ws[size_t(h * kClasses + 2)] = ws[size_t(h * kClasses + 3)] = 1.f;
    }
    var_w_image_ = Tensor::from_vector(wi, {H, int64_t(kClasses)}).to(lm.device());
    var_w_sinks_ = Tensor::from_vector(ws, {H, int64_t(kClasses)}).to(lm.device());
  }
  // head map: image keys are class 1, with PAINT's local / summary (2, 3) or VAR's image sinks (2)
  n_layers_ = L, n_heads_ = int(H);
  dtype_ = lm.dtype(), device_ = lm.device();
  vhr_on_ = set.find(ModMethod::VHR) != nullptr;
  image_class_bits_ = paint ? 0b1110 : var_on_ ? 0b0110 : 0b0010;
  if (const ModulationConfig* a = set.find(ModMethod::ADHH)) adhh_path_ = a->path.empty() ? "adhh" : a->path;
}

const Tensor& LlavaModulator::key_class(const KVCache& cache, int layer) {
  std::vector<int64_t> lens(size_t(cache.batch()));
  for (int64_t b = 0; b < cache.batch(); ++b) lens[size_t(b)] = cache.visible_length(b, layer);
  Tensor& t = classes_[size_t(layer)];
  auto& seen = class_lens_[size_t(layer)];
  // New slots of a decode step are text (class 0, already zero); rebuild when a prefill added
  // image rows (a sequence grew by more than one row), a slot was refilled, or on first use.
  bool rebuild = !t.defined() || stale_[size_t(layer)] || seen.size() != lens.size();
  for (size_t b = 0; !rebuild && b < lens.size(); ++b) rebuild = lens[b] < seen[b] || lens[b] > seen[b] + 1;
  if (rebuild) {
    const int64_t B = cache.batch(), cap = cache.capacity();
    std::vector<uint8_t> cls(size_t(B * cap), 0);
    for (int64_t b = 0; b < B; ++b) {
      const std::vector<int32_t> p = cache.visible_positions(b, layer);
      const auto [s0, cnt] = b < int64_t(spans_.size()) ? spans_[size_t(b)] : std::pair<int64_t, int64_t>{0, 0};
      const std::vector<uint8_t>* ic = b < int64_t(image_classes_.size()) ? &image_classes_[size_t(b)] : nullptr;
      for (size_t j = 0; j < p.size(); ++j)
        if (p[j] >= s0 && p[j] < s0 + cnt)
          cls[size_t(b * cap) + j] = ic && !ic->empty() ? (*ic)[size_t(p[j] - s0)] : uint8_t(1);
        else if (p[j] >= s0 + cnt)
          cls[size_t(b * cap) + j] = post_text_class_;
      if (var_on_ && b < int64_t(sinks_[size_t(layer)].size())) {  // sinks: 2 in the image, 3 in the text
        const std::vector<int32_t>& sk = sinks_[size_t(layer)][size_t(b)];
        for (size_t j = 0; j < p.size(); ++j)
          if (std::binary_search(sk.begin(), sk.end(), p[j])) cls[size_t(b * cap) + j] = p[j] >= s0 && p[j] < s0 + cnt ? 2 : 3;
      }
    }
    t = Tensor::from_vector(cls, {B, cap}).to(cache.device());
    stale_[size_t(layer)] = false;
  }
  seen = lens;
  return t;
}

void LlavaModulator::set_span(int64_t b, std::pair<int64_t, int64_t> span) {
  if (int64_t(spans_.size()) <= b) spans_.resize(size_t(b + 1), {0, 0});
  spans_[size_t(b)] = span;
  if (int64_t(vhr_heads_.size()) > b && !vhr_heads_[size_t(b)].empty()) {
    vhr_heads_[size_t(b)].clear();
    head_gains_.clear();
  }
  for (auto& layer : sinks_)
    if (int64_t(layer.size()) > b) layer[size_t(b)].clear();
  set_image_classes(b, {});
}

void LlavaModulator::set_image_classes(int64_t b, std::vector<uint8_t> classes) {
  if (int64_t(image_classes_.size()) <= b) image_classes_.resize(size_t(b + 1));
  image_classes_[size_t(b)] = std::move(classes);
  stale_.assign(stale_.size(), true);
}

namespace {
// numpy.percentile's default (linear interpolation between the closest ranks).
double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q * double(v.size() - 1);
  const size_t lo = size_t(std::floor(pos));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (pos - double(lo)) * (v[hi] - v[lo]);
}
}  // namespace

std::vector<uint8_t> paint_classes(const ModulationConfig& c, const std::vector<float>& top_attn,
                                   const std::vector<float>& bottom) {
  MMATTN_CHECK(top_attn.size() == bottom.size() && top_attn.size() >= 2, ShapeError, "paint_classes: ",
               top_attn.size(), " and ", bottom.size(), " attention values");
  const int64_t N = int64_t(top_attn.size()) - 1;
  std::vector<double> top(top_attn.begin() + 1, top_attn.end()), bot(bottom.begin() + 1, bottom.end());
  const double q1 = percentile(bot, 0.25), q3 = percentile(bot, 0.75), hi = q3 + 1.5 * (q3 - q1);
  int64_t outliers = 0;
  for (double v : bot) outliers += v > hi ? 1 : 0;
  const int64_t n_sum = int64_t(double(N) * (double(outliers) / double(N)));  // as int(N * mean(mask))
  std::vector<uint8_t> cls(size_t(N), 1);
  for (int64_t i : largest_k(top, int64_t(double(N) * c.local_ratio))) cls[size_t(i)] = 2;
  for (int64_t i : largest_k(bot, n_sum)) cls[size_t(i)] = 3;  // summary wins over local
  return cls;
}

const HeadModulation* LlavaModulator::modulation(int layer, const KVCache& cache, int64_t n_rows) {
  if (!abs_gain_[size_t(layer)].defined() && cond_[size_t(layer)].heads.empty() && !replaces_attention(layer))
    return nullptr;
  HeadModulation& m = mods_[size_t(layer)];
  m.key_class = key_class(cache, layer);  // also AD-HH's class mass
  m.num_classes = kClasses;
  m.logit_abs_gain = abs_gain_[size_t(layer)];
  m.first_modulated_row = n_rows - 1;  // PAI: the last query row only (prefill), the new token (decode)
  return &m;
}

const AttentionModulator::Conditional* LlavaModulator::conditional(int layer, const KVCache& cache, int64_t n_rows) {
  Conditional& cd = cond_[size_t(layer)];
  if (cd.heads.empty()) return nullptr;
  HeadModulation& alt = alt_mods_[size_t(layer)];
  alt = *modulation(layer, cache, n_rows);
  alt.first_modulated_row = 0;  // the alternative runs on each sequence's last row alone
  alt.post_weight = adhh_weight_[size_t(layer)];
  alt.renormalize = false;
  cd.alt = &alt;
  return &cd;
}

// VAR --------------------------------------------------------------------------------------------

void LlavaModulator::layer_input(int layer, const Tensor& x, const std::vector<std::vector<int32_t>>& positions) {
  if (!var_on_ || layer < var_.start_layer || layer >= var_.end_layer) return;
  bool prefill = false;
  for (const auto& p : positions) prefill = prefill || p.size() > 1;
  if (!prefill) return;  // the sets are frozen after the prefill
  // r = |x_d| / sqrt(mean(x^2) + 1e-6) at the sink dims, in f32
  const int64_t B = x.size(0), n = x.size(1), H = x.size(2);
  const std::vector<float> norm = vector_norm(x, 2).to_floats();  // [B, n]
  std::vector<std::vector<float>> cols;
  for (int d : var_.sink_dims) cols.push_back(x.select(2, d).contiguous().to_floats());
  auto& layer_sinks = sinks_[size_t(layer)];
  if (int64_t(layer_sinks.size()) < B) layer_sinks.resize(size_t(B));
  for (int64_t b = 0; b < B; ++b) {
    const auto& pos = positions[size_t(b)];
    if (pos.size() <= 1) continue;  // a decode row (or a free slot) of a mixed step
    std::vector<int32_t> s;
    for (size_t i = 0; i < pos.size(); ++i) {
      const size_t at = size_t(b * n) + i;
      const double inv = 1.0 / std::sqrt(double(norm[at]) * norm[at] / double(H) + 1e-6);
      double r = 0;
      for (const auto& c : cols) r = std::max(r, std::fabs(double(c[at])) * inv);
      if (r > var_.tau) s.push_back(pos[i]);
    }
    std::sort(s.begin(), s.end());
    layer_sinks[size_t(b)] = std::move(s);
  }
  stale_[size_t(layer)] = true;
}

// Head map --------------------------------------------------------------------------------------------

void LlavaModulator::record_image_mass(int64_t b) {
  MMATTN_CHECK(adhh_path_.empty(), ConfigError, adhh_path_,
               ": save_head_map with adhh is not supported (its layers take their own attention path)");
  if (int64_t(mass_pending_.size()) <= b) mass_pending_.resize(size_t(b + 1));
  if (int64_t(mass_.size()) <= b) mass_.resize(size_t(b + 1));
  mass_pending_[size_t(b)].assign(size_t(n_layers_), true);
  mass_[size_t(b)].assign(size_t(n_layers_ * n_heads_), -1.f);
}

std::vector<float> LlavaModulator::image_mass(int64_t b) const {
  if (b >= int64_t(mass_.size()) || mass_[size_t(b)].empty()) return {};
  for (bool p : mass_pending_[size_t(b)])
    if (p) return {};
  return mass_[size_t(b)];
}

// class_mass [B, H, n, C]: the pending sequences with rows in this step take their last row's.
void LlavaModulator::record_mass(int layer, const Tensor& class_mass, const std::vector<std::vector<int32_t>>& positions) {
  std::vector<float> m;
  for (size_t b = 0; b < mass_pending_.size() && b < positions.size(); ++b) {
    if (!mass_pending_[b][size_t(layer)] || positions[b].empty()) continue;
    const int64_t H = class_mass.size(1), n = class_mass.size(2), row = int64_t(positions[b].size()) - 1;
    if (m.empty()) m = class_mass.to_floats();
    for (int64_t h = 0; h < H; ++h) {
      const float* c = &m[size_t(((int64_t(b) * H + h) * n + row) * kClasses)];
      double sum = 0;
      for (int k = 0; k < kClasses; ++k)
        if (image_class_bits_ >> k & 1) sum += c[k];
      mass_[b][size_t(layer * n_heads_ + h)] = float(sum);
    }
    mass_pending_[b][size_t(layer)] = false;
  }
}

std::vector<int32_t> LlavaModulator::sinks(int layer, int64_t b) const {
  if (!var_on_ || layer < 0 || layer >= int(sinks_.size()) || b >= int64_t(sinks_[size_t(layer)].size())) return {};
  return sinks_[size_t(layer)][size_t(b)];
}

namespace {
// Whether sequence b has a sink inside its image span in this layer's set.
bool has_visual_sink(const std::vector<int32_t>& sinks, std::pair<int64_t, int64_t> span) {
  auto it = std::lower_bound(sinks.begin(), sinks.end(), int32_t(span.first));
  return it != sinks.end() && *it < span.first + span.second;
}
}  // namespace

bool LlavaModulator::replaces_attention(int layer) const {
  if (var_replaces(layer)) return true;
  for (const auto& p : mass_pending_)
    if (p[size_t(layer)]) return true;
  return false;
}

bool LlavaModulator::var_replaces(int layer) const {
  if (!var_on_ || layer < var_.start_layer || layer >= var_.end_layer) return false;
  const auto& ls = sinks_[size_t(layer)];
  for (size_t b = 0; b < ls.size() && b < spans_.size(); ++b)
    if (has_visual_sink(ls[b], spans_[b])) return true;
  return false;
}

// One pass with the class mass decides, per (sequence, head, row after the image), whether the
// head is image-centric; the redistributed output is then out + c_img O_img + (p - 1) O_sinks,
// with O_img / O_sinks the parts of the output from the non-sink image keys / the sink keys (two
// passes with 0/1 post weights, no renormalisation) and c_img = (1 - p) M_sinks / M_img.
Tensor LlavaModulator::attend(int layer, const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt,
                              const std::vector<std::vector<int32_t>>& positions) {
  MMATTN_CHECK(opt.mod && opt.mod->key_class.defined(), Error, "LlavaModulator::attend: layer ", layer,
               " has no key classes");
  AttentionOptions first = opt;
  first.return_class_mass = true;
  AttentionResult r = attention(q, k, v, first);
  record_mass(layer, r.class_mass, positions);
  if (!var_replaces(layer)) return r.out;
  const int64_t B = q.size(0), n = q.size(1), H = q.size(2);
  const std::vector<float> mass = r.class_mass.to_floats();  // [B, H, n, C]
  std::vector<float> c_img(size_t(B * n * H), 0.f), c_sink(size_t(B * n * H), 0.f);
  const float p = float(var_.p);
  bool any = false;
  const auto& layer_sinks = sinks_[size_t(layer)];
  for (int64_t b = 0; b < B && b < int64_t(spans_.size()) && b < int64_t(layer_sinks.size()); ++b) {
    const auto span = spans_[size_t(b)];
    if (!has_visual_sink(layer_sinks[size_t(b)], span)) continue;
    const auto& pos = positions[size_t(b)];
    for (size_t i = 0; i < pos.size(); ++i) {
      if (pos[i] < span.first + span.second) continue;  // only the text after the image, and decode rows
      for (int64_t h = 0; h < H; ++h) {
        const float* m = &mass[size_t(((b * H + h) * n + int64_t(i)) * kClasses)];
        const double img = double(m[1]) + m[2], portion = m[2] / (img + double(span.second) * 1e-6);
        if (!(portion <= var_.rho && img >= var_.summ && m[1] > 0)) continue;
        const size_t at = size_t((b * n + int64_t(i)) * H + h);
        c_img[at] = float((1 - var_.p) * (double(m[2]) + m[3]) / m[1]);
        c_sink[at] = p - 1.f;
        any = true;
      }
    }
  }
  if (!any) return r.out;
  HeadModulation part = *opt.mod;
  part.renormalize = false;
  part.first_modulated_row = 0;
  AttentionOptions o = opt;
  o.return_lse = o.return_class_mass = false;
  o.mod = &part;
  Tensor out = r.out;
  for (const auto& [w, c] : {std::pair<const Tensor*, const std::vector<float>*>{&var_w_image_, &c_img},
                             {&var_w_sinks_, &c_sink}}) {
    part.post_weight = *w;
    const Tensor coef = Tensor::from_vector(*c, {B, n, H, 1}).to(out.device()).to(out.dtype());
    add_(out, mul(attention(q, k, v, o).out, coef));
  }
  return out;
}

// --- contrastive decoding --------------------------------------------------------------------------

namespace {
std::vector<double> log_softmax(const std::vector<float>& x) {
  double m = -INFINITY;
  for (float v : x) m = std::max(m, double(v));
  double z = 0;
  for (float v : x) z += std::exp(double(v) - m);
  const double lz = m + std::log(z);
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = double(x[i]) - lz;
  return y;
}
}  // namespace

std::vector<float> contrastive_scores(const ModulationConfig& c, const std::vector<float>& l_img,
                                      const std::vector<float>& l_neg) {
  MMATTN_CHECK(l_img.size() == l_neg.size() && !l_img.empty(), ShapeError, "contrastive_scores: ", l_img.size(),
               " and ", l_neg.size(), " logits");
  const size_t V = l_img.size();
  std::vector<float> out(V);
  std::vector<double> ref(V);  // the image branch's scores the plausibility cut-off applies to
  if (c.method == ModMethod::VCD || c.method == ModMethod::DAMRO) {
    for (size_t i = 0; i < V; ++i) {
      out[i] = float((1 + c.cd_alpha) * double(l_img[i]) - c.cd_alpha * double(l_neg[i]));
      ref[i] = l_img[i];
    }
  } else if (c.method == ModMethod::RITUAL) {
    for (size_t i = 0; i < V; ++i) {
      out[i] = float(double(l_img[i]) + c.alpha_pos * double(l_neg[i]));
      ref[i] = l_img[i];
    }
  } else {
    ref = log_softmax(l_img);
    const std::vector<double> u = log_softmax(l_neg);
    for (size_t i = 0; i < V; ++i) out[i] = float(c.cfg * (ref[i] - u[i]) + u[i]);
  }
  double mx = -INFINITY;
  for (double v : ref) mx = std::max(mx, v);
  const double cutoff = std::log(c.beta) + mx;
  for (size_t i = 0; i < V; ++i)
    if (ref[i] < cutoff) out[i] = -INFINITY;
  return out;
}

// --- VCD noise -----------------------------------------------------------------------------------

Tensor vcd_noised_pixels(const Tensor& pixels, int t, uint64_t seed) {
  MMATTN_CHECK(t >= 0 && t < 1000, ConfigError, "vcd: noise step ", t, " is outside [0, 1000)");
  // VCD's schedule (vcd_add_noise.py): betas = sigmoid(linspace(-6, 6, 1000)) * (5e-3 - 1e-5) + 1e-5
  double abar = 1.0;
  for (int i = 0; i <= t; ++i) {
    const double x = -6.0 + 12.0 * double(i) / 999.0;
    const double beta = 1.0 / (1.0 + std::exp(-x)) * (0.5e-2 - 1e-5) + 1e-5;
    abar *= 1.0 - beta;
  }
  const float a = float(std::sqrt(abar)), s = float(std::sqrt(1.0 - abar));
  Tensor x = pixels.to(Device::cpu(), DType::F32).contiguous();
  std::vector<float> v = x.to_floats();
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.f, 1.f);
  for (float& f : v) f = a * f + s * n(rng);
  return Tensor::from_vector(v, x.shape());
}

// --- head map --------------------------------------------------------------------------------------

std::string head_map_json_path(const std::string& png_path) {
  const std::string ext = ".png";
  const bool png = png_path.size() > ext.size() && png_path.compare(png_path.size() - ext.size(), ext.size(), ext) == 0;
  return (png ? png_path.substr(0, png_path.size() - ext.size()) : png_path) + ".json";
}

void save_head_map(const std::vector<float>& mass, int layers, int heads, const std::string& path, bool vhd) {
  MMATTN_CHECK(layers > 0 && heads > 0 && mass.size() == size_t(layers) * size_t(heads), ShapeError,
               "save_head_map: ", mass.size(), " values for ", layers, " layers x ", heads, " heads");
  constexpr int kCell = 8;
  const float lo = *std::min_element(mass.begin(), mass.end()), hi = *std::max_element(mass.begin(), mass.end());
  Image img(heads * kCell, layers * kCell);
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x)
      heatmap_rgb(hi > lo ? (mass[size_t((y / kCell) * heads + x / kCell)] - lo) / (hi - lo) : 0.f, img.px(x, y));
  Json rows = Json::array();
  for (int l = 0; l < layers; ++l)
    rows.push_back(std::vector<float>(mass.begin() + std::ptrdiff_t(l) * heads,
                                      mass.begin() + std::ptrdiff_t(l + 1) * heads));
  const Json j{{"what", vhd ? "VHR's vision-aware head divergence of the last prompt row, per layer and head (0 "
                             "outside its layers)"
                           : "attention mass of the last prompt row on the image tokens, per layer and head (prefill)"},
               {"layers", layers},
               {"heads", heads},
               {vhd ? "vhd" : "image_mass", rows},
               {"min", lo},
               {"max", hi},
               {"png", path},
               {"png_layout", "rows = layers (0 at the top), columns = heads, 8 x 8 pixels a cell; dark blue = min, "
                              "yellow = max"}};
  save_png(img, path);
  write_file_atomic(head_map_json_path(path), j.dump(1) + "\n");
}

// --- RITUAL ----------------------------------------------------------------------------------------

ImageTransform ritual_transform(const ModulationConfig& c, int width, int height, int out_w, int out_h,
                                uint64_t request_seed) {
  return draw_image_transform(c.transform, width, height, out_w, out_h, c.seed ? *c.seed : request_seed);
}


// The text-only branch's hooks: its head outputs complete a VHR layer's selection, whose gains it
// then applies as the image branch does.
class VhrSelector::TextHooks : public AttentionModulator {
 public:
  explicit TextHooks(VhrSelector& s) : s_(s) {}
  const HeadModulation* modulation(int, const KVCache&, int64_t) override { return nullptr; }
  bool wants_head_outputs(int layer) const override { return s_.on_[size_t(layer)]; }
  void head_outputs(int layer, const Tensor& out) override { s_.select(layer, out); }
  const Tensor* head_gains(int layer, int64_t) override {
    return s_.gains_[size_t(layer)].defined() ? &s_.gains_[size_t(layer)] : nullptr;
  }
  bool last_row_only() const override { return false; }

 private:
  VhrSelector& s_;
};

VhrSelector::VhrSelector(const ModulationConfig& c, const LlamaModel& lm, AttentionModulator* inner,
                         const Tensor& text_embeds, std::vector<int> text_valid)
    : inner_(inner),
      gain_(c.gain),
      filter_(c.filter),
      text_valid_(std::move(text_valid)),
      n_heads_(int(lm.num_heads())),
      dtype_(lm.dtype()),
      device_(lm.device()),
      hooks_(std::make_unique<TextHooks>(*this)),
      text_cache_(lm.make_cache(text_embeds.size(0), text_embeds.size(1))) {
  const size_t L = size_t(lm.num_layers()), B = size_t(text_embeds.size(0));
  MMATTN_CHECK(text_valid_.size() == B, ShapeError, "vhr: ", text_valid_.size(), " text lengths for a batch of ", B);
  on_.assign(L, false);
  for (int l : c.layers) on_[size_t(l)] = true;
  heads_.assign(B, std::vector<std::vector<int>>(L));
  vhd_.assign(B, std::vector<std::vector<float>>(L));
  ta_ = vhd_;
  gains_.resize(L);
  LlamaForwardOptions o;
  o.n_valid = text_valid_;
  o.last_only = true;
  o.modulator = hooks_.get();
  text_ = std::make_unique<LlamaModel::Stepper>(lm, text_embeds, text_cache_, o);
}

VhrSelector::~VhrSelector() = default;

const HeadModulation* VhrSelector::modulation(int layer, const KVCache& cache, int64_t n_rows) {
  return inner_ ? inner_->modulation(layer, cache, n_rows) : nullptr;
}
const AttentionModulator::Conditional* VhrSelector::conditional(int layer, const KVCache& cache, int64_t n_rows) {
  return inner_ ? inner_->conditional(layer, cache, n_rows) : nullptr;
}
void VhrSelector::layer_input(int layer, const Tensor& x, const std::vector<std::vector<int32_t>>& positions) {
  if (inner_) inner_->layer_input(layer, x, positions);
}
bool VhrSelector::replaces_attention(int layer) const { return inner_ && inner_->replaces_attention(layer); }
Tensor VhrSelector::attend(int layer, const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt,
                           const std::vector<std::vector<int32_t>>& positions) {
  return inner_ ? inner_->attend(layer, q, k, v, opt, positions) : AttentionModulator::attend(layer, q, k, v, opt, positions);
}

bool VhrSelector::wants_head_outputs(int layer) const {
  return on_[size_t(layer)] || (inner_ && inner_->wants_head_outputs(layer));
}

void VhrSelector::head_outputs(int layer, const Tensor& out) {
  if (on_[size_t(layer)]) image_out_ = out;
  if (inner_ && inner_->wants_head_outputs(layer)) inner_->head_outputs(layer, out);
}

const Tensor* VhrSelector::head_gains(int layer, int64_t batch) {
  MMATTN_CHECK(batch == int64_t(text_valid_.size()), ShapeError, "vhr: the image branch has ", batch,
               " sequences, the text branch ", text_valid_.size());
  text_->layer(layer);  // the text branch's layer l: its head outputs select the layer's heads
  return gains_[size_t(layer)].defined() ? &gains_[size_t(layer)] : nullptr;
}

void VhrSelector::select(int layer, const Tensor& text_out) {
  const int64_t B = int64_t(text_valid_.size()), H = n_heads_;
  MMATTN_CHECK(image_out_.defined() && image_out_.dim() == 3 && image_out_.size(0) == B && image_out_.size(1) == H &&
                   text_out.dim() == 3 && text_out.size(0) == B && text_out.size(1) == H,
               ShapeError, "vhr: layer ", layer, " head outputs must be [", B, ", ", H, ", D], got ",
               image_out_.defined() ? image_out_.desc() : std::string("none"), " and ", text_out.desc());
  const int64_t D = text_out.size(2);
  // both branches' rows in one download (one synchronisation per VHR layer)
  const std::vector<float> both = concat({image_out_, text_out}, 0).to_floats();
  const float* oi = both.data();
  const float* ot = both.data() + B * H * D;
  image_out_ = Tensor();
  std::vector<const std::vector<int>*> chosen;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int>& heads = heads_[size_t(b)][size_t(layer)];
    if (text_valid_[size_t(b)] > 0) {
      std::vector<float>& vhd = vhd_[size_t(b)][size_t(layer)];
      vhd.assign(size_t(H), 0.f);
      std::vector<float>& ta = ta_[size_t(b)][size_t(layer)];
      ta.assign(size_t(H), 0.f);
      for (int64_t h = 0; h < H; ++h) {
        double s = 0, e = 0;
        for (int64_t d = 0; d < D; ++d) {
          const size_t i = size_t((b * H + h) * D + d);
          const double diff = double(oi[i]) - double(ot[i]);
          s += diff * diff;
          e += double(ot[i]) * double(ot[i]);
        }
        vhd[size_t(h)] = float(std::sqrt(s));
        ta[size_t(h)] = float(e);
      }
      heads = vhr_select(vhd, ta, filter_);
    }
    chosen.push_back(&heads);
  }
  gains_[size_t(layer)] = head_gain_tensor(chosen, int(H), gain_, dtype_, device_);
}

std::vector<int> vhr_select(const std::vector<float>& vhd, const std::vector<float>& ta, bool filter) {
  const size_t H = vhd.size();
  MMATTN_CHECK(ta.size() == H && H > 0, ShapeError, "vhr_select: ", H, " VHD values and ", ta.size(), " TA values");
  for (size_t h = 0; h < H; ++h)
    if (!std::isfinite(vhd[h]) || !std::isfinite(ta[h])) return {};  // as torch: comparisons with NaN fail
  // mean + standard deviation (unbiased; a single head has none: nothing is an outlier)
  auto above_mean_sd = [H](const std::vector<float>& v) {
    double mean = 0, ss = 0;
    for (float x : v) mean += x;
    mean /= double(H);
    for (float x : v) ss += (x - mean) * (x - mean);
    const double bound = H > 1 ? mean + std::sqrt(ss / double(H - 1)) : INFINITY;
    std::vector<bool> out(H);
    for (size_t h = 0; h < H; ++h) out[h] = double(v[h]) > bound;
    return out;
  };
  std::vector<float> score = vhd;
  if (filter) {
    const std::vector<bool> hi_vhd = above_mean_sd(vhd), hi_ta = above_mean_sd(ta);
    for (size_t h = 0; h < H; ++h)
      if (hi_vhd[h] && hi_ta[h]) score[h] = 0.f;
  }
  std::vector<float> sorted = score;
  std::sort(sorted.begin(), sorted.end());
  const float median = sorted[(H - 1) / 2];  // torch.median: the lower middle
  std::vector<int> heads;
  for (size_t h = 0; h < H; ++h)
    if (score[h] > median) heads.push_back(int(h));
  return heads;
}

void LlavaModulator::set_head_gains(int64_t b, const std::vector<std::vector<int>>& heads, double gain) {
  if (int64_t(vhr_heads_.size()) <= b) vhr_heads_.resize(size_t(b + 1));
  vhr_heads_[size_t(b)] = heads;
  vhr_gain_ = gain;
  head_gains_.clear();  // rebuilt at the next call
}

const Tensor* LlavaModulator::head_gains(int layer, int64_t batch) {
  if (vhr_heads_.empty()) return nullptr;
  if (head_gains_.empty() || head_gains_batch_ != batch) {  // per layer [batch, Hq], ones for other heads
    head_gains_.assign(size_t(n_layers_), Tensor());
    head_gains_batch_ = batch;
    for (int l = 0; l < n_layers_; ++l) {
      std::vector<const std::vector<int>*> heads(size_t(batch), nullptr);
      for (int64_t b = 0; b < batch && b < int64_t(vhr_heads_.size()); ++b)
        if (size_t(l) < vhr_heads_[size_t(b)].size()) heads[size_t(b)] = &vhr_heads_[size_t(b)][size_t(l)];
      head_gains_[size_t(l)] = head_gain_tensor(heads, n_heads_, vhr_gain_, dtype_, device_);
    }
  }
  return head_gains_[size_t(layer)].defined() ? &head_gains_[size_t(layer)] : nullptr;
}

}  // namespace mmattn
