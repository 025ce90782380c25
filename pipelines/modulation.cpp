#include "pipelines/modulation.h"

#include <cmath>
#include <random>

#include "attention/kv_cache.h"

namespace mmattn {

namespace {

struct Name {
  ModMethod m;
  const char* name;
};
constexpr Name kNames[] = {{ModMethod::PAI, "pai"}, {ModMethod::VCD, "vcd"}, {ModMethod::DAMRO, "damro"}};

[[noreturn]] void bad(const ModulationConfig& c, const std::string& field, const std::string& msg) {
  MMATTN_THROW(ConfigError, c.path, ".", field, " ", msg);
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
  if (!found) r.fail_key("method", "is '" + m + "'; expected pai, vcd or damro");
  if (c.method == ModMethod::PAI) {
    c.alpha = r.get<double>("alpha", c.alpha);
    if (!(c.alpha >= 0) || !std::isfinite(c.alpha)) r.fail_key("alpha", "must be >= 0");
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

void ModulationConfig::resolve(int n_layers) {
  if (method != ModMethod::PAI) return;
  if (end_layer < 0) end_layer = n_layers;
  if (start_layer < 0 || start_layer >= n_layers)
    bad(*this, "start_layer", "is " + std::to_string(start_layer) + "; it must be in [0, " + std::to_string(n_layers) + ")");
  if (end_layer <= start_layer || end_layer > n_layers)
    bad(*this, "end_layer", "is " + std::to_string(end_layer) + "; it must be in (start_layer, " +
                                std::to_string(n_layers) + "]");
}

Json ModulationConfig::to_json() const {
  Json j{{"method", mod_method_name(method)}};
  if (method == ModMethod::PAI) {
    j["alpha"] = alpha, j["start_layer"] = start_layer, j["end_layer"] = end_layer, j["cfg"] = cfg;
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

void ModulationSet::resolve(int n_layers) {
  for (auto& c : items) c.resolve(n_layers);
}

bool ModulationSet::attention() const {
  for (const auto& c : items)
    if (c.method == ModMethod::PAI && c.alpha != 0) return true;
  return false;
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
  std::vector<std::vector<float>> gain(static_cast<size_t>(L));
  for (const auto& c : set.items) {
    if (c.method != ModMethod::PAI || c.alpha == 0) continue;
    for (int l = c.start_layer; l < c.end_layer; ++l) {
      auto& g = gain[size_t(l)];
      if (g.empty()) g.assign(size_t(H * 2), 0.f);
      for (int64_t h = 0; h < H; ++h) g[size_t(h * 2 + 1)] += float(c.alpha);  // class 1 = image keys
    }
  }
  for (int l = 0; l < L; ++l)
    if (!gain[size_t(l)].empty()) abs_gain_[size_t(l)] = Tensor::from_vector(gain[size_t(l)], {H, 2}).to(lm.device());
}

const Tensor& LlavaModulator::key_class(const KVCache& cache, int layer) {
  std::vector<std::vector<int32_t>> pos(static_cast<size_t>(cache.batch()));
  std::vector<int64_t> lens(size_t(cache.batch()));
  for (int64_t b = 0; b < cache.batch(); ++b) {
    pos[size_t(b)] = cache.visible_positions(b, layer);
    lens[size_t(b)] = int64_t(pos[size_t(b)].size());
  }
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
      const auto [s0, cnt] = b < int64_t(spans_.size()) ? spans_[size_t(b)] : std::pair<int64_t, int64_t>{0, 0};
      const std::vector<int32_t>& p = pos[size_t(b)];
      for (size_t j = 0; j < p.size(); ++j)
        if (p[j] >= s0 && p[j] < s0 + cnt) cls[size_t(b * cap) + j] = 1;
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
  stale_.assign(stale_.size(), true);
}

const HeadModulation* LlavaModulator::modulation(int layer, const KVCache& cache, int64_t n_rows) {
  if (!abs_gain_[size_t(layer)].defined()) return nullptr;
  HeadModulation& m = mods_[size_t(layer)];
  m.key_class = key_class(cache, layer);
  m.num_classes = 2;
  m.logit_abs_gain = abs_gain_[size_t(layer)];
  m.first_modulated_row = n_rows - 1;  // PAI: the last query row only (prefill), the new token (decode)
  return &m;
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
  if (c.method != ModMethod::PAI) {  // vcd, damro
    for (size_t i = 0; i < V; ++i) {
      out[i] = float((1 + c.cd_alpha) * double(l_img[i]) - c.cd_alpha * double(l_neg[i]));
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

}  // namespace mmattn
