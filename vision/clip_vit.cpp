#include "vision/clip_vit.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <mutex>

#include "attention/attention.h"
#include "attention/taps.h"
#include "core/cuda_graph.h"
#include "core/ops/concat.h"
#include "core/ops/elementwise.h"
#include "core/ops/linear.h"
#include "core/ops/norm.h"
#include "core/ops/softmax.h"

namespace mmattn {

namespace {

constexpr const char* kVisionPrefixes[] = {"vision_tower.vision_model.", "vision_tower.",
                                           "model.vision_tower.vision_model.", "model.vision_tower.",
                                           "vision_model."};
constexpr const char* kProjectorPrefixes[] = {"multi_modal_projector.", "model.multi_modal_projector."};

// Patch vectors of k values padded to a multiple of 8 (16-byte bf16/f16 rows).
int64_t padded_patch_width(int64_t k) { return (k + 7) / 8 * 8; }

// The smallest head dim the attention core supports that holds d (d itself when none does: the
// core then reports it).
int64_t padded_head_dim(int64_t d) {
  for (int64_t s : {64, 72, 80, 96, 128})
    if (d <= s) return s;
  return d;
}

// [B, L, H, d] -> [B, L, H, dp] with zeros in the extra columns (self when d == dp).
Tensor pad_head_dim(const Tensor& t, int64_t dp) {
  if (t.size(3) == dp) return t;
  Tensor z = Tensor::zeros({t.size(0), t.size(1), t.size(2), dp}, t.dtype(), t.device());
  z.slice(3, 0, t.size(3)).copy_from(t);
  return z;
}

}  // namespace

LlavaPrefixes detect_llava_prefixes(const Checkpoint& ckpt) {
  LlavaPrefixes p;
  std::string tried_v, tried_p;
  for (const char* c : kVisionPrefixes) {
    if (ckpt.has(std::string(c) + "embeddings.patch_embedding.weight")) {
      p.vision_tower = c;
      break;
    }
    tried_v += std::string(tried_v.empty() ? "'" : ", '") + c + "embeddings.patch_embedding.weight'";
  }
  MMATTN_CHECK(!p.vision_tower.empty(), WeightError, "no CLIP vision tower in ", ckpt.path(), ": none of ", tried_v,
               " is present");
  for (const char* c : kProjectorPrefixes) {
    if (ckpt.has(std::string(c) + "linear_1.weight")) {
      p.projector = c;
      break;
    }
    tried_p += std::string(tried_p.empty() ? "'" : ", '") + c + "linear_1.weight'";
  }
  MMATTN_CHECK(!p.projector.empty(), WeightError, "no LLaVA projector in ", ckpt.path(), ": none of ", tried_p,
               " is present");
  return p;
}

ClipVisionTower ClipVisionTower::load(const Checkpoint& ckpt, const std::string& prefix, const ClipVisionConfig& cfg,
                                      Device device, DType dtype, int64_t num_layers) {
  MMATTN_CHECK(!(device.is_cpu() && dtype != DType::F32), UnsupportedError,
               "ClipVisionTower: the CPU path computes in F32, not ", dtype_name(dtype));
  const int64_t D = cfg.hidden_size, I = cfg.intermediate_size, P = cfg.patch_size, C = cfg.num_channels;
  MMATTN_CHECK(D > 0 && cfg.num_attention_heads > 0 && D % cfg.num_attention_heads == 0, ConfigError,
               "ClipVisionTower: hidden_size ", D, " is not a multiple of num_attention_heads ",
               cfg.num_attention_heads);
  MMATTN_CHECK(P > 0 && cfg.image_size > 0 && cfg.image_size % P == 0, ConfigError, "ClipVisionTower: patch_size ", P,
               " does not divide image_size ", cfg.image_size);
  const int64_t L = cfg.num_hidden_layers;
  if (num_layers < 0) num_layers = L;
  MMATTN_CHECK(num_layers <= L, ConfigError, "ClipVisionTower: asked to load ", num_layers, " layers of ", L);

  ClipVisionTower t;
  t.graphs_ = std::make_shared<Graphs>();
  t.cfg_ = cfg;
  t.prefix_ = prefix;
  t.device_ = device;
  t.dtype_ = dtype;
  t.act_ = parse_activation(cfg.hidden_act, "vision_config.hidden_act");
  auto ld = [&](const std::string& name, const Shape& shape) { return ckpt.load(prefix + name, shape, device, dtype); };
  {
    // The patch embedding as a GEMM over patch vectors of K = C P P values (embed()), its weight
    // [D, K] padded with zero columns to a multiple of 8 (16-byte rows for the tensor-core GEMMs).
    const int64_t K = C * P * P, Kp = padded_patch_width(K);
    t.patch_w_ = Tensor::zeros({D, Kp}, dtype, device);
    t.patch_w_.slice(1, 0, K).copy_from(ld("embeddings.patch_embedding.weight", {D, C, P, P}).view({D, K}));
  }
  t.class_emb_ = ld("embeddings.class_embedding", {D});
  t.pos_emb_ = ld("embeddings.position_embedding.weight", {cfg.num_patches() + 1, D});
  t.pre_ln_w_ = ld("pre_layrnorm.weight", {D});
  t.pre_ln_b_ = ld("pre_layrnorm.bias", {D});
  for (int64_t i = 0; i < num_layers; ++i) {
    const std::string l = "encoder.layers." + std::to_string(i) + ".";
    ClipEncoderLayerWeights w;
    w.ln1_w = ld(l + "layer_norm1.weight", {D});
    w.ln1_b = ld(l + "layer_norm1.bias", {D});
    w.ln2_w = ld(l + "layer_norm2.weight", {D});
    w.ln2_b = ld(l + "layer_norm2.bias", {D});
    w.qkv_w = concat({ld(l + "self_attn.q_proj.weight", {D, D}), ld(l + "self_attn.k_proj.weight", {D, D}),
                      ld(l + "self_attn.v_proj.weight", {D, D})},
                     0);  // [3D, D]
    w.qkv_b = concat({ld(l + "self_attn.q_proj.bias", {D}), ld(l + "self_attn.k_proj.bias", {D}),
                      ld(l + "self_attn.v_proj.bias", {D})},
                     0);  // [3D]
    w.out_w = ld(l + "self_attn.out_proj.weight", {D, D});
    w.out_b = ld(l + "self_attn.out_proj.bias", {D});
    w.fc1_w = ld(l + "mlp.fc1.weight", {I, D});
    w.fc1_b = ld(l + "mlp.fc1.bias", {I});
    w.fc2_w = ld(l + "mlp.fc2.weight", {D, I});
    w.fc2_b = ld(l + "mlp.fc2.bias", {D});
    t.layers_.push_back(std::move(w));
  }
  if (num_layers == L) {
    t.post_ln_w_ = ld("post_layernorm.weight", {D});
    t.post_ln_b_ = ld("post_layernorm.bias", {D});
  }
  return t;
}

int64_t ClipVisionTower::layers_for_feature_layer(const ClipVisionConfig& cfg, int64_t feature_layer) {
  const int64_t n = cfg.num_hidden_layers + 1;  // entries of hidden_states
  const int64_t i = feature_layer < 0 ? feature_layer + n : feature_layer;
  MMATTN_CHECK(i >= 0 && i < n, ConfigError, "vision_feature_layer ", feature_layer, " is out of range for ",
               cfg.num_hidden_layers, " vision layers (hidden states -", n, "..", n - 1, ")");
  return i;
}

const ClipEncoderLayerWeights& ClipVisionTower::layer(int64_t i) const {
  MMATTN_CHECK(i >= 0 && i < num_loaded_layers(), ShapeError, "ClipVisionTower: layer ", i, " is not loaded (",
               num_loaded_layers(), " of ", cfg_.num_hidden_layers, " loaded)");
  return layers_[size_t(i)];
}

Tensor ClipVisionTower::to_input(const Tensor& pixel_values) const {
  check_defined(pixel_values, "ClipVisionTower", "pixel_values");
  MMATTN_CHECK(pixel_values.dim() == 4 && pixel_values.size(1) == cfg_.num_channels &&
                   pixel_values.size(2) == cfg_.image_size && pixel_values.size(3) == cfg_.image_size,
               ShapeError, "ClipVisionTower: pixel_values must be [B, ", cfg_.num_channels, ", ", cfg_.image_size, ", ",
               cfg_.image_size, "], got ", pixel_values.desc());
  return pixel_values.to(device_, dtype_);
}

Tensor ClipVisionTower::embed(const Tensor& pixel_values) const {
  const Tensor px = to_input(pixel_values);
  const int64_t B = px.size(0), D = cfg_.hidden_size, N = cfg_.num_patches();
  const int64_t p = cfg_.patch_size, C = cfg_.num_channels, g = cfg_.image_size / p, K = C * p * p;
  const int64_t Kp = padded_patch_width(K);
  // The patch embedding (a conv2d with kernel = stride = p, no padding, no bias) as one GEMM over
  // the non-overlapping patches: [B, C, g, p, g, p] -> [B, g, g, C, p, p] = [B, N, C p p] (rows
  // padded with zeros to Kp, as the weight) times weight [D, Kp]^T -> [B, N, D], in token order.
  Tensor cols = Kp == K ? Tensor::empty({B, N, Kp}, dtype_, device_) : Tensor::zeros({B, N, Kp}, dtype_, device_);
  cols.as_strided({B, g, g, C, p, p}, {N * Kp, g * Kp, Kp, p * p, p, 1}, 0)
      .copy_from(px.contiguous().view({B, C, g, p, g, p}).permute({0, 2, 4, 1, 3, 5}));
  const Tensor patches = linear(cols, patch_w_);
  Tensor emb = Tensor::empty({B, N + 1, D}, dtype_, device_);
  for (int64_t b = 0; b < B; ++b) emb.select(0, b).slice(0, 0, 1).copy_from(class_emb_.view({1, D}));
  emb.slice(1, 1, N + 1).copy_from(patches);
  add_(emb, pos_emb_);  // [N + 1, D] broadcast over B
  return layer_norm(emb, pre_ln_w_, pre_ln_b_, float(cfg_.layer_norm_eps));
}

void ClipVisionTower::qkv(int64_t i, const Tensor& x, Tensor& q, Tensor& k, Tensor& v) const {
  const ClipEncoderLayerWeights& w = layer(i);
  const int64_t B = x.size(0), L = x.size(1), H = cfg_.num_attention_heads, hd = cfg_.head_dim();
  const Tensor h = layer_norm(x, w.ln1_w, w.ln1_b, float(cfg_.layer_norm_eps));
  const Tensor qkv = linear(h, w.qkv_w, w.qkv_b).view({B, L, 3, H, hd});  // [B, L, 3D] -> [B, L, 3, H, hd]
  q = qkv.select(2, 0);  // [B, L, H, hd], strided
  k = qkv.select(2, 1);
  v = qkv.select(2, 2);
}

Tensor ClipVisionTower::layer_forward(int64_t i, const Tensor& x) const {
  Tensor q, k, v;
  qkv(i, x, q, k, v);
  return layer_forward(i, x, q, k, v);
}

Tensor ClipVisionTower::layer_forward(int64_t i, const Tensor& x, const Tensor& q, const Tensor& k,
                                      const Tensor& v) const {
  const ClipEncoderLayerWeights& w = layer(i);
  const int64_t B = x.size(0), L = x.size(1), D = cfg_.hidden_size, hd = cfg_.head_dim();
  const int64_t dp = padded_head_dim(hd);
  AttentionOptions opt;
  opt.scale = float(1.0 / std::sqrt(double(hd)));
  Tensor o = attention(pad_head_dim(q, dp), pad_head_dim(k, dp), pad_head_dim(v, dp), opt).out;  // [B, L, H, dp]
  if (dp != hd) o = o.slice(3, 0, hd).contiguous();
  Tensor y = linear_residual(x, o.view({B, L, D}), w.out_w, w.out_b);  // x + out(o), one rounding
  const Tensor h = layer_norm(y, w.ln2_w, w.ln2_b, float(cfg_.layer_norm_eps));
  linear_add_(y, apply_activation(linear(h, w.fc1_w, w.fc1_b), act_), w.fc2_w, w.fc2_b);
  return y;
}

struct ClipVisionTower::Graphs {
  struct Entry {
    std::vector<int64_t> key;  // input shape, then what the pass computes
    Tensor input;              // the graph reads its pixel values here
    std::unique_ptr<CapturedGraph> graph;
  };
  std::mutex mu;
  std::deque<Entry> entries;  // oldest first
};

bool ClipVisionTower::graphable(const Tensor& pixel_values) const {
  return graphs_ && device_.is_cuda() && cuda_graphs_enabled() && pixel_values.device() == device_ &&
         pixel_values.dtype() == dtype_ && !stream_capturing();
}

std::vector<Tensor> ClipVisionTower::graphed(const Tensor& pixel_values, const std::vector<int64_t>& what,
                                             const std::function<std::vector<Tensor>(const Tensor&)>& fn) const {
  Graphs& g = *graphs_;
  std::lock_guard<std::mutex> lock(g.mu);
  std::vector<int64_t> key = pixel_values.shape();
  key.insert(key.end(), what.begin(), what.end());
  auto it = std::find_if(g.entries.begin(), g.entries.end(), [&](const Graphs::Entry& e) { return e.key == key; });
  if (it == g.entries.end()) {
    Graphs::Entry e{key, Tensor::empty(pixel_values.shape(), dtype_, device_), nullptr};
    e.input.copy_from(pixel_values);
    const Tensor in = e.input;
    e.graph = std::make_unique<CapturedGraph>([&fn, in] { return fn(in); });
    if (g.entries.size() == kMaxGraphs) g.entries.pop_front();
    g.entries.push_back(std::move(e));
    it = std::prev(g.entries.end());
  } else {
    it->input.copy_from(pixel_values);
  }
  std::vector<Tensor> copies;  // the next replay overwrites the graph's outputs
  for (const Tensor& t : it->graph->replay()) copies.push_back(t.defined() ? t.clone() : t);
  return copies;
}

ClipVisionOutput ClipVisionTower::forward(const Tensor& pixel_values, int64_t num_layers,
                                          bool keep_hidden_states) const {
  if (num_layers < 0) num_layers = num_loaded_layers();
  MMATTN_CHECK(num_layers <= num_loaded_layers(), ShapeError, "ClipVisionTower: ", num_layers,
               " layers asked for, ", num_loaded_layers(), " loaded");
  check_defined(pixel_values, "ClipVisionTower::forward", "pixel_values");
  if (!graphable(pixel_values)) return forward_eager(pixel_values, num_layers, keep_hidden_states);
  std::vector<Tensor> outs =
      graphed(pixel_values, {0, num_layers, keep_hidden_states}, [&](const Tensor& in) {
        ClipVisionOutput o = forward_eager(in, num_layers, keep_hidden_states);
        return keep_hidden_states ? o.hidden_states : std::vector<Tensor>{o.last};
      });
  ClipVisionOutput out;
  out.last = outs.back();
  if (keep_hidden_states) out.hidden_states = std::move(outs);
  return out;
}

ClipVisionOutput ClipVisionTower::forward_eager(const Tensor& pixel_values, int64_t num_layers,
                                                bool keep_hidden_states) const {
  ClipVisionOutput out;
  Tensor x = embed(pixel_values);
  if (keep_hidden_states) out.hidden_states.push_back(x);
  for (int64_t i = 0; i < num_layers; ++i) {
    x = layer_forward(i, x);  // a new tensor each layer: kept hidden states stay valid
    if (keep_hidden_states) out.hidden_states.push_back(x);
  }
  out.last = x;
  return out;
}

Tensor ClipVisionTower::features(const Tensor& pixel_values, int64_t feature_layer, bool drop_cls,
                                 ClipVisionOutput* kept) const {
  ClipVisionOutput o = forward(pixel_values, layers_for_feature_layer(cfg_, feature_layer), kept != nullptr);
  const Tensor h = drop_cls ? o.last.slice(1, 1, o.last.size(1)).contiguous() : o.last;  // LLaVA "default"
  if (kept) *kept = std::move(o);
  return h;  // [B, N, D]
}

Tensor ClipVisionTower::features(const Tensor& pixel_values, const std::vector<int64_t>& feature_layers,
                                 bool drop_cls, ClipVisionOutput* kept) const {
  MMATTN_CHECK(!feature_layers.empty(), ConfigError, "ClipVisionTower: empty list of feature layers");
  std::vector<int64_t> idx;
  int64_t need = 0;
  for (int64_t f : feature_layers) {
    idx.push_back(layers_for_feature_layer(cfg_, f));
    need = std::max(need, idx.back());
  }
  ClipVisionOutput o = forward(pixel_values, need, /*keep_hidden_states=*/true);
  std::vector<Tensor> parts;
  for (int64_t i : idx) {
    const Tensor& h = o.hidden_states[size_t(i)];
    parts.push_back(drop_cls ? h.slice(1, 1, h.size(1)) : h);
  }
  if (kept) *kept = std::move(o);
  return concat(parts, -1);  // torch.cat(hs_pool, dim=-1)
}

Tensor ClipVisionTower::cls_attention(const Tensor& pixel_values, int64_t layer) const {
  const int64_t Ln = cfg_.num_hidden_layers;
  const int64_t li = layer < 0 ? layer + Ln : layer;
  MMATTN_CHECK(li >= 0 && li < Ln, ShapeError, "ClipVisionTower::cls_attention: layer ", layer,
               " is out of range for ", Ln, " layers");
  return cls_attention_at(forward(pixel_values, li).last, li);  // the input of layer li
}

Tensor ClipVisionTower::cls_attention_at(const Tensor& x, int64_t li) const {
  MMATTN_CHECK(li >= 0 && li < num_loaded_layers(), ShapeError, "ClipVisionTower::cls_attention_at: layer ", li,
               " is out of range for ", num_loaded_layers(), " loaded layers");
  check_defined(x, "ClipVisionTower::cls_attention_at", "x");
  Tensor q, k, v;
  qkv(li, x, q, k, v);
  const int64_t hd = cfg_.head_dim(), dp = padded_head_dim(hd);
  AttentionOptions opt;
  opt.scale = float(1.0 / std::sqrt(double(hd)));
  TapRequest req;
  req.rows = {0};
  req.lq_total = x.size(1);
  const Tensor probs = attention_probs(pad_head_dim(q.slice(1, 0, 1), dp), pad_head_dim(k, dp), req, opt);
  return probs.select(2, 0).contiguous();  // [B, H, 1, L] -> [B, H, L]
}

ClipVisionTower::FeatureTaps ClipVisionTower::feature_taps(const Tensor& pixel_values, int64_t feature_layer,
                                                          unsigned taps) const {
  const int64_t n_run = layers_for_feature_layer(cfg_, feature_layer);
  MMATTN_CHECK(n_run >= 1, ConfigError, "ClipVisionTower::feature_taps: feature layer ", feature_layer,
               " is the embedding output; no encoder layer produced it");
  if (taps == 0) {
    FeatureTaps t;
    t.features = forward(pixel_values, n_run).last;
    return t;
  }
  check_defined(pixel_values, "ClipVisionTower::feature_taps", "pixel_values");
  if (!graphable(pixel_values)) return feature_taps_eager(pixel_values, n_run, taps);
  const std::vector<Tensor> o = graphed(pixel_values, {1, n_run, taps}, [&](const Tensor& in) {
    FeatureTaps t = feature_taps_eager(in, n_run, taps);
    return std::vector<Tensor>{t.features, t.cls_attention, t.attention_mean, t.key_mean, t.cls_joint};
  });
  return {o[0], o[1], o[2], o[3], o[4]};
}

ClipVisionTower::FeatureTaps ClipVisionTower::feature_taps_eager(const Tensor& pixel_values, int64_t n_run,
                                                                unsigned taps) const {
  FeatureTaps t;
  const Tensor x = forward_eager(pixel_values, n_run - 1, false).last;  // input of the producing layer
  const int64_t li = n_run - 1, B = x.size(0), L = x.size(1), H = cfg_.num_attention_heads, hd = cfg_.head_dim();
  Tensor q, k, v;
  qkv(li, x, q, k, v);
  if (taps & (kTapClsAttention | kTapAttentionMatrix | kTapKeyMean)) {
    // [B, L, H, hd] -> F32 [B, H, L, hd] for the explicit (small: one layer) attention matrix
    const Tensor kh = k.to(DType::F32).permute({0, 2, 1, 3}).contiguous();
    const float scale = float(1.0 / std::sqrt(double(hd)));
    const Tensor head_avg = Tensor::full({B, 1, H}, 1.f / float(H), DType::F32, x.device());  // mean over heads
    if (taps & (kTapClsAttention | kTapAttentionMatrix)) {
      // (the [CLS] row alone needs only q's first row in f32)
      const Tensor qa = taps & kTapAttentionMatrix ? q : q.slice(1, 0, 1);
      const Tensor qh = qa.to(DType::F32).permute({0, 2, 1, 3}).contiguous();
      if (taps & kTapAttentionMatrix) {
        const Tensor probs = softmax(matmul(qh, kh, /*transpose_b=*/true), -1, scale);  // [B, H, L, L]
        t.cls_attention = probs.slice(2, 0, 1).reshape({B, H, L});
        t.attention_mean = matmul(head_avg, probs.view({B, H, L * L})).view({B, L, L});
      } else {
        const Tensor logits = matmul(qh, kh, /*transpose_b=*/true);  // [B, H, 1, L]
        t.cls_attention = softmax(logits, -1, scale).reshape({B, H, L});
      }
    }
    if (taps & kTapKeyMean) t.key_mean = matmul(head_avg, kh.view({B, H, L * hd})).view({B, L, hd});
  }
  if (taps & kTapClsJoint) {
    const int64_t D = H * hd;
    const Tensor qc = q.slice(1, 0, 1).to(DType::F32).contiguous().view({B, 1, D});  // [B, 1, D]
    const Tensor kf = k.to(DType::F32).contiguous().view({B, L, D});                 // [B, L, D]
    t.cls_joint = softmax(matmul(qc, kf, /*transpose_b=*/true), -1, float(1.0 / std::sqrt(double(D)))).view({B, L});
  }
  t.features = layer_forward(li, x, q, k, v);  // (q, k, v not computed twice)
  return t;
}

Tensor ClipVisionTower::pooled(const ClipVisionOutput& out) const {
  MMATTN_CHECK(post_ln_w_.defined() && out.last.defined(), ShapeError,
               "ClipVisionTower::pooled needs every layer loaded and run");
  return layer_norm(out.last.select(1, 0), post_ln_w_, post_ln_b_, float(cfg_.layer_norm_eps));
}

}  // namespace mmattn
