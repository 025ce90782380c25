#include "language/llama.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "attention/attention.h"
#include "attention/decode_fused.h"
#include "attention/head_select.h"
#include "attention/taps.h"
#include "core/checkpoint.h"
#include "core/hf_config.h"  // never together with core/ops/rope.h (see llama_rope.h)
#include "core/ops/activation.h"
#include "core/ops/concat.h"
#include "core/ops/elementwise.h"
#include "core/ops/embedding.h"
#include "core/ops/linear.h"
#include "core/ops/norm.h"

namespace mmattn {

namespace {

constexpr const char* kCls = "LlamaModel";

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

// The smallest head dim the attention core takes that is >= d (0 when none).
int64_t attention_head_dim(int64_t d) {
  for (int64_t s : {64, 72, 80, 96, 128})
    if (d <= s) return s;
  return 0;
}

// [B, n, H, D] -> [B, n, H, dp] with zeros in the extra columns.
Tensor pad_head_dim(const Tensor& x, int64_t dp) {
  Tensor y = Tensor::zeros({x.size(0), x.size(1), x.size(2), dp}, x.dtype(), x.device());
  y.slice(3, 0, x.size(3)).copy_from(x);
  return y;
}

}  // namespace

LlamaWeightNames llama_weight_names(const std::string& prefix) {
  if (prefix.empty()) return {"model.", "lm_head."};
  if (ends_with(prefix, "language_model.") && prefix.rfind("model.", 0) == 0) return {prefix, "lm_head."};
  return {prefix + "model.", prefix + "lm_head."};
}

LlamaWeightNames detect_llama_weight_names(const Checkpoint& ckpt) {
  std::string tried;
  for (const char* p : {"", "language_model.", "model.language_model."}) {
    LlamaWeightNames n = llama_weight_names(p);
    const std::string name = n.decoder + "embed_tokens.weight";
    if (ckpt.has(name)) return n;
    tried += (tried.empty() ? "'" : ", '") + name + "'";
  }
  MMATTN_THROW(WeightError, "no Llama decoder found in ", ckpt.path(), ": none of ", tried, " is present");
}

LlamaModel LlamaModel::load(const Checkpoint& ckpt, const std::string& prefix, const LlamaConfig& cfg, Device dev,
                            DType dtype) {
  return load(ckpt, llama_weight_names(prefix), cfg, dev, dtype);
}

LlamaModel LlamaModel::load(const Checkpoint& ckpt, const LlamaWeightNames& names, const LlamaConfig& cfg, Device dev,
                            DType dtype) {
  if (dev.is_cpu())
    MMATTN_CHECK(dtype == DType::F32, UnsupportedError, kCls, ": the CPU path runs in F32, asked for ",
                 dtype_name(dtype));
  else
    MMATTN_CHECK(dtype == DType::BF16 || dtype == DType::F16, UnsupportedError, kCls,
                 ": on CUDA the decoder runs in BF16 or F16, asked for ", dtype_name(dtype));
  MMATTN_CHECK(cfg.hidden_act == "silu" || cfg.hidden_act == "swish", UnsupportedError, kCls, ": hidden_act '",
               cfg.hidden_act, "' is not supported (silu)");
  MMATTN_CHECK(cfg.num_hidden_layers >= 1 && cfg.num_attention_heads >= 1 && cfg.num_key_value_heads >= 1 &&
                   cfg.num_attention_heads % cfg.num_key_value_heads == 0 && cfg.head_dim >= 2 &&
                   cfg.hidden_size >= 1 && cfg.intermediate_size >= 1 && cfg.vocab_size >= 1,
               ConfigError, kCls, ": inconsistent config (layers ", cfg.num_hidden_layers, ", heads ",
               cfg.num_attention_heads, ", kv heads ", cfg.num_key_value_heads, ", head_dim ", cfg.head_dim, ")");

  LlamaModel m;
  m.names_ = names;
  m.device_ = dev;
  m.dtype_ = dtype;
  m.hidden_ = cfg.hidden_size;
  m.vocab_ = cfg.vocab_size;
  m.hq_ = cfg.num_attention_heads;
  m.hkv_ = cfg.num_key_value_heads;
  m.d_ = cfg.head_dim;
  m.dp_ = attention_head_dim(cfg.head_dim);
  MMATTN_CHECK(m.dp_ > 0, UnsupportedError, kCls, ": head_dim ", cfg.head_dim,
               " exceeds the attention core's largest (128)");
  m.ffn_ = cfg.intermediate_size;
  m.eps_ = float(cfg.rms_norm_eps);
  m.eos_ = cfg.eos_token_ids;
  m.rope_.head_dim = cfg.head_dim;
  m.rope_.theta = cfg.rope_theta;
  m.rope_.max_position_embeddings = cfg.max_position_embeddings;
  if (cfg.rope_scaling) {
    m.rope_.scaling_type = cfg.rope_scaling->type;
    m.rope_.factor = cfg.rope_scaling->factor;
    m.rope_.low_freq_factor = cfg.rope_scaling->low_freq_factor;
    m.rope_.high_freq_factor = cfg.rope_scaling->high_freq_factor;
    m.rope_.original_max_position_embeddings = cfg.rope_scaling->original_max_position_embeddings;
  }
  validate_llama_rope(m.rope_, "LlamaConfig rope");

  const int64_t H = m.hidden_, D = m.d_, F = m.ffn_;
  auto get = [&](const std::string& name, const Shape& shape) { return ckpt.load(name, shape, dev, dtype); };
  // Loaded on the CPU first, concatenated there, then moved once.
  auto get_cat = [&](const std::vector<std::pair<std::string, Shape>>& parts) {
    std::vector<Tensor> ts;
    for (const auto& [name, shape] : parts) ts.push_back(ckpt.load(name, shape, Device::cpu(), dtype));
    return concat(ts, 0).to(dev);
  };
  const std::string& P = names.decoder;
  m.embed_ = get(P + "embed_tokens.weight", {m.vocab_, H});
  m.norm_ = get(P + "norm.weight", {H});
  m.lm_head_ = cfg.tie_word_embeddings ? m.embed_ : get(names.lm_head + "weight", {m.vocab_, H});
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    const std::string lp = P + "layers." + std::to_string(l) + ".";
    const std::string a = lp + "self_attn.", f = lp + "mlp.";
    Layer L;
    L.input_norm = get(lp + "input_layernorm.weight", {H});
    L.post_norm = get(lp + "post_attention_layernorm.weight", {H});
    L.qkv = get_cat({{a + "q_proj.weight", {m.hq_ * D, H}},
                     {a + "k_proj.weight", {m.hkv_ * D, H}},
                     {a + "v_proj.weight", {m.hkv_ * D, H}}});
    L.o = get(a + "o_proj.weight", {H, m.hq_ * D});
    if (cfg.attention_bias) {
      L.qkv_bias = get_cat({{a + "q_proj.bias", {m.hq_ * D}}, {a + "k_proj.bias", {m.hkv_ * D}},
                            {a + "v_proj.bias", {m.hkv_ * D}}});
      L.o_bias = get(a + "o_proj.bias", {H});
    }
    L.gate_up = get_cat({{f + "gate_proj.weight", {F, H}}, {f + "up_proj.weight", {F, H}}});
    L.down = get(f + "down_proj.weight", {H, F});
    if (cfg.mlp_bias) {
      L.gate_up_bias = get_cat({{f + "gate_proj.bias", {F}}, {f + "up_proj.bias", {F}}});
      L.down_bias = get(f + "down_proj.bias", {H});
    }
    m.layers_.push_back(std::move(L));
  }
  return m;
}

Tensor AttentionModulator::attend(int layer, const Tensor& q, const Tensor& k, const Tensor& v,
                                  const AttentionOptions& opt, const std::vector<std::vector<int32_t>>& positions) {
  (void)layer;
  (void)positions;
  return attention(q, k, v, opt).out;
}

Tensor LlamaModel::embed(const Tensor& ids, bool check_ids) const {
  check_defined(ids, "LlamaModel::embed", "ids");
  return embedding(ids, embed_, check_ids);
}

KVCache LlamaModel::make_cache(int64_t batch, int64_t max_len) const {
  return KVCache(num_layers(), batch, max_len, hkv_, dp_, dtype_, device_);
}

// The rows of the step being run: padding, original positions and step-input indices per sequence.
struct LlamaModel::StepRows {
  int64_t n = 0;                                // rows of the step's tensors (the longest sequence)
  std::vector<int> n_valid;                     // per sequence
  bool padded = false;                          // some sequence has fewer than n rows
  Tensor q_lens;                                // I32 [B] on the model's device when padded
  std::vector<std::vector<int32_t>> positions;  // per sequence: n_valid[b] position ids
  std::vector<std::vector<int64_t>> origin;     // per sequence: n_valid[b] step-input indices
  std::vector<int32_t> base;                    // per sequence: the layer's next position the
                                                // positions start at (until a pruning decision)
  bool pruned = false;                          // a pruning decision fixed the positions
  LlamaRopeCache rope;                          // tables shared by the layers while positions agree

  // Positions base + 0, 1, ... starting at layer l's own next position (they differ between
  // layers only after PDrop's renumbering).
  void sync_positions(const KVCache& cache, int l) {
    if (pruned) return;
    for (size_t b = 0; b < positions.size(); ++b) {
      const int32_t p0 = cache.layer_next_position(l, int64_t(b));
      if (b < base.size() && base[b] == p0) continue;
      base.resize(positions.size(), -1);
      base[b] = p0;
      for (size_t i = 0; i < positions[b].size(); ++i) positions[b][i] = p0 + int32_t(i);
    }
  }

  void set_valid(std::vector<int> nv, int64_t rows, Device dev) {
    n = rows;
    n_valid = std::move(nv);
    padded = false;
    for (int v : n_valid) padded = padded || v < n;
    q_lens = padded ? Tensor::from_vector<int32_t>(std::vector<int32_t>(n_valid.begin(), n_valid.end()),
                                                   {int64_t(n_valid.size())})
                          .to(dev)
                    : Tensor();
  }
  // RoPE positions of all n rows (padding rows continue their sequence; they are never read).
  std::vector<std::vector<int64_t>> rope_positions() const {
    std::vector<std::vector<int64_t>> r(positions.size());
    for (size_t b = 0; b < positions.size(); ++b) {
      r[b].assign(positions[b].begin(), positions[b].end());
      int64_t p = r[b].empty() ? 0 : r[b].back() + 1;
      while (int64_t(r[b].size()) < n) r[b].push_back(p++);
    }
    return r;
  }
};

Tensor LlamaModel::layer_forward(int l, Tensor x, KVCache& cache, StepRows& rows, TokenPruner* pruner,
                                 AttentionModulator* modulator) const {
  const Layer& L = layers_[size_t(l)];
  const TokenPruner::Needs needs = pruner ? pruner->needs(l) : TokenPruner::Needs{};
  rows.sync_positions(cache, l);
  if (modulator) modulator->layer_input(l, x, rows.positions);
  Tensor qkv, q, k, v;
  auto split = [&] {
    q = qkv.slice(2, 0, hq_);                     // [B, n, Hq, D] strided
    k = qkv.slice(2, hq_, hq_ + hkv_);            // [B, n, Hkv, D]
    v = qkv.slice(2, hq_ + hkv_, hq_ + 2 * hkv_);  // [B, n, Hkv, D]
  };
  // On CUDA, unless the pruner reads this layer's q/k, RoPE runs inside the KV append (one launch).
  Tensor rope_cos, rope_sin;
  const bool fused_rope = device_.is_cuda() && !needs.call && dp_ == d_ &&
                          rows.rope.shared_table(rows.rope_positions(), rope_, device_, &rope_cos, &rope_sin);
  // One sequence (a decode step, or a prefill) whose q/k/v projection takes RoPE in its epilogue and
  // writes k and v straight into the cache (linear_qkv_rope: no separate append; the same values).
  const bool into_cache = fused_rope && x.size(0) == 1 && !rows.padded && linear_qkv_rope_fusable(x, L.qkv, d_);
  // norm -> fused q/k/v projection -> RoPE (unless fused into the append), for the current rows of x
  auto project = [&] {
    const int64_t B = x.size(0), n = x.size(1);
    if (into_cache) {
      q = Tensor::empty({B, n, hq_, d_}, dtype_, device_);
      Tensor q2 = q.view({n, hq_ * d_}), k2 = cache.next_rows_k(l, n), v2 = cache.next_rows_v(l, n);
      rms_norm_linear_qkv_rope(x, L.input_norm, eps_, L.qkv, L.qkv_bias, rope_cos, rope_sin, hq_, hkv_, q2, k2, v2);
      k = k2.view({B, n, hkv_, d_}), v = v2.view({B, n, hkv_, d_});
      return;
    }
    qkv = rms_norm_linear(x, L.input_norm, eps_, L.qkv, L.qkv_bias).view({B, n, hq_ + 2 * hkv_, d_});
    split();
    if (!fused_rope) rows.rope.apply_(q, k, rows.rope_positions(), rope_);
  };
  auto padded = [&](const Tensor& t) { return dp_ != d_ ? pad_head_dim(t, dp_) : t; };
  const float scale = float(1.0 / std::sqrt(double(d_)));
  // the output projection and the MLP on the attention's output att [B, n, Hq * D] (residual adds
  // fused into the products; at decode sizes the gated activation comes out of the gate/up product's
  // kernel, and down reads it plain)
  auto finish = [&](const Tensor& att) {
    linear_add_(x, att, L.o, L.o_bias);
    linear_add_(x, rms_norm_linear_swiglu(x, L.post_norm, eps_, L.gate_up, L.gate_up_bias), L.down, L.down_bias);
    return x;
  };
  // A decode token with nothing between its projection and its attention (no pruner reading q / k,
  // no modulation): the norm, the q/k/v product, RoPE, the cache rows and the attention in one kernel.
  const int64_t len = cache.layer_length(l, 0);  // (where this step's rows go)
  if (into_cache && x.size(1) == 1 && !needs.call && !modulator &&
      decode_attention_fusable(x, L.qkv, hq_, hkv_, d_, len)) {
    const Tensor att = rms_norm_qkv_rope_attention(x, L.input_norm, eps_, L.qkv, L.qkv_bias, rope_cos, rope_sin, hq_,
                                                   hkv_, cache.k(l), cache.v(l), len, scale);
    cache.append_written(l, 1, rows.positions);
    return finish(att);
  }
  project();

  if (needs.call) {
    const int64_t B = x.size(0), n = x.size(1);
    PruneContext ctx;
    ctx.layer = l;
    ctx.x = x, ctx.q = q, ctx.k = k, ctx.v = v;
    ctx.n_valid = rows.n_valid;
    ctx.origin = rows.origin;
    ctx.positions = rows.positions;
    if (needs.probs) {
      // each sequence's last valid query row over the current keys (bottom-right causal: all valid keys)
      std::vector<std::vector<int64_t>> last(static_cast<size_t>(B));
      for (int64_t b = 0; b < B; ++b) last[size_t(b)] = {std::max(rows.n_valid[size_t(b)] - 1, 0)};
      Tensor q_last = padded(gather_rows(q, last, 1));  // [B, 1, Hq, dp]
      TapRequest req;
      req.rows = {n - 1};
      req.lq_total = n;
      AttentionOptions ao;
      ao.causal = true;
      ao.scale = scale;
      ao.k_lens = Tensor::from_vector<int32_t>(std::vector<int32_t>(rows.n_valid.begin(), rows.n_valid.end()), {B})
                      .to(device_);
      ctx.last_probs = attention_probs(q_last, padded(k), req, ao);  // [B, Hq, 1, n]
    }
    std::optional<PruneDecision> d = pruner->on_layer(ctx);
    if (d) {
      MMATTN_CHECK(int64_t(d->keep.size()) == B, ShapeError, kCls, ": layer ", l, " pruning decision has ",
                   d->keep.size(), " sequences for a batch of ", B);
      std::vector<int> nv(static_cast<size_t>(B));
      int64_t n_new = 1;
      rows.pruned = true;
      std::vector<std::vector<int64_t>> delta(static_cast<size_t>(B));  // new - old position per kept row
      for (int64_t b = 0; b < B; ++b) {
        const auto& keep = d->keep[size_t(b)];
        const int valid = rows.n_valid[size_t(b)];
        for (size_t i = 0; i < keep.size(); ++i)
          MMATTN_CHECK(keep[i] >= 0 && keep[i] < valid && (i == 0 || keep[i] > keep[i - 1]), ShapeError, kCls,
                       ": layer ", l, " pruning keeps row ", keep[i], " of sequence ", b,
                       " (rows must be strictly increasing and < ", valid, ")");
        MMATTN_CHECK(valid == 0 || (!keep.empty() && keep.back() == valid - 1), ShapeError, kCls, ": layer ", l,
                     " pruning drops the last row of sequence ", b, " (the query that continues it)");
        nv[size_t(b)] = int(keep.size());
        n_new = std::max<int64_t>(n_new, int64_t(keep.size()));
        std::vector<int32_t> pos;
        std::vector<int64_t> org;
        const auto& old = rows.positions[size_t(b)];
        const int32_t first = old.empty() ? 0 : *std::min_element(old.begin(), old.end());
        auto& dl = delta[size_t(b)];
        for (int64_t i : keep) {
          pos.push_back(d->renumber_positions ? first + int32_t(pos.size()) : old[size_t(i)]);
          dl.push_back(int64_t(pos.back()) - old[size_t(i)]);
          org.push_back(rows.origin[size_t(b)][size_t(i)]);
        }
        rows.positions[size_t(b)] = std::move(pos);
        rows.origin[size_t(b)] = std::move(org);
      }
      if (d->x.defined()) {
        MMATTN_CHECK(d->x.dim() == 3 && d->x.size(0) == B && d->x.size(1) == n_new && d->x.size(2) == hidden_ &&
                         d->x.dtype() == dtype_ && d->x.device() == device_,
                     ShapeError, kCls, ": layer ", l, " pruning gives replacement rows ", d->x.desc(), ", expected [",
                     B, ", ", n_new, ", ", hidden_, "] ", dtype_name(dtype_), " on ", device_.str());
        x = d->x.contiguous();
        rows.set_valid(nv, n_new, device_);
        project();
      } else {
        // Same rows: gather them and their q/k/v (row-wise functions of x); renumbered positions
        // rotate the gathered q/k by the position change (RoPE rotations compose). A decision that
        // keeps every row of every sequence (and moves no position) changes nothing: no copies.
        bool every_row = n_new == n;
        for (int64_t b = 0; b < B && every_row; ++b)
          every_row = int64_t(d->keep[size_t(b)].size()) == n && rows.n_valid[size_t(b)] == n;
        if (!every_row) {
          x = gather_rows(x, d->keep, n_new);
          qkv = gather_rows(qkv, d->keep, n_new);
          split();
        }
        rows.set_valid(nv, n_new, device_);
        // (without renumbering every change is zero)
        const bool moved = std::any_of(delta.begin(), delta.end(), [](const std::vector<int64_t>& dl) {
          return std::any_of(dl.begin(), dl.end(), [](int64_t v) { return v != 0; });
        });
        if (moved) {
          for (auto& dl : delta) dl.resize(size_t(n_new), 0);
          LlamaRopeCache().apply_(q, k, delta, rope_);
        }
      }
    }
  }

  const int64_t B = x.size(0), n = x.size(1);
  q = padded(q), k = padded(k), v = padded(v);
  if (into_cache)
    cache.append_written(l, n, rows.positions);
  else if (fused_rope)
    cache.append_rope(l, q, k, v, rope_cos, rope_sin, rows.padded ? rows.n_valid : std::vector<int>{}, rows.positions);
  else
    cache.append(l, k, v, rows.padded ? rows.n_valid : std::vector<int>{}, rows.positions);
  AttentionOptions ao;
  ao.causal = true;
  ao.scale = scale;
  ao.k_lens = cache.lens_tensor(l);
  ao.q_lens = rows.q_lens;
  ao.mod = modulator ? modulator->modulation(l, cache, n) : nullptr;
  const AttentionModulator::Conditional* cond = modulator ? modulator->conditional(l, cache, n) : nullptr;
  Tensor att;
  if (!cond) {
    att = modulator && modulator->replaces_attention(l)
              ? modulator->attend(l, q, cache.k(l), cache.v(l), ao, rows.positions)
              : attention(q, cache.k(l), cache.v(l), ao).out;  // [B, n, Hq, dp]
  } else {
    ao.return_class_mass = true;
    AttentionResult r = attention(q, cache.k(l), cache.v(l), ao);
    att = r.out;
    std::vector<std::vector<int64_t>> last(static_cast<size_t>(B));
    std::vector<int32_t> last_row(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) {
      last_row[size_t(b)] = std::max(rows.n_valid[size_t(b)] - 1, 0);
      last[size_t(b)] = {last_row[size_t(b)]};
    }
    AttentionOptions a2 = ao;
    a2.return_class_mass = false;
    a2.q_lens = Tensor();
    a2.mod = cond->alt;
    const Tensor alt = attention(gather_rows(q, last, 1), cache.k(l), cache.v(l), a2).out;  // [B, 1, Hq, dp]
    select_heads_by_mass_(att, alt, r.class_mass, cond->klass, cond->threshold, cond->heads, last_row);
  }
  if (dp_ != d_) att = att.slice(3, 0, d_);
  if (modulator && modulator->wants_head_outputs(l)) {
    std::vector<std::vector<int64_t>> last(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) last[size_t(b)] = {std::max(rows.n_valid[size_t(b)] - 1, 0)};
    modulator->head_outputs(l, gather_rows(att.contiguous(), last, 1).view({B, hq_, d_}).to(DType::F32));
  }
  if (modulator)
    if (const Tensor* g = modulator->head_gains(l, B)) {
      MMATTN_CHECK(g->dim() == 2 && g->size(0) == B && g->size(1) == hq_ && g->dtype() == dtype_, ShapeError, kCls,
                   ": layer ", l, " head gains must be [", B, ", ", hq_, "] ", dtype_name(dtype_), ", got ", g->desc());
      att = mul(att, g->view({B, 1, hq_, 1}));  // [B, n, Hq, D]
    }
  return finish(att.reshape({B, n, hq_ * d_}));
}

LlamaModel::Stepper::Stepper(const LlamaModel& m, const Tensor& embeds, KVCache& cache, const LlamaForwardOptions& opt)
    : m_(m), cache_(cache), opt_(opt), rows_(std::make_unique<StepRows>()) {
  check_defined(embeds, "LlamaModel::forward", "embeds");
  const int64_t hidden_ = m.hidden_, hkv_ = m.hkv_, dp_ = m.dp_;
  const DType dtype_ = m.dtype_;
  const Device device_ = m.device_;
  MMATTN_CHECK(embeds.dim() == 3 && embeds.size(2) == hidden_ && embeds.size(1) >= 1, ShapeError, kCls,
               "::forward: embeds must be [B, n >= 1, ", hidden_, "], got ", embeds.desc());
  const int64_t B = embeds.size(0), n = embeds.size(1);
  MMATTN_CHECK(cache.layers() == m.num_layers() && cache.batch() == B && cache.kv_heads() == hkv_ &&
                   cache.head_dim() == dp_ && cache.dtype() == dtype_ && cache.device() == device_,
               ShapeError, kCls, "::forward: the KV cache (", cache.layers(), " layers, batch ", cache.batch(), ", ",
               cache.kv_heads(), " kv heads, head dim ", cache.head_dim(), ", ", dtype_name(cache.dtype()), ", ",
               cache.device().str(), ") does not fit the model and input (", m.num_layers(), ", ", B, ", ", hkv_, ", ",
               dp_, ", ", dtype_name(dtype_), ", ", device_.str(), "): use make_cache()");
  MMATTN_CHECK(!cache.step_open(), Error, kCls, "::forward: the KV cache has an open step");
  std::vector<int> nv = opt.n_valid;
  MMATTN_CHECK(nv.empty() || int64_t(nv.size()) == B, ShapeError, kCls, "::forward: n_valid has ", nv.size(),
               " entries for a batch of ", B);
  if (nv.empty()) nv.assign(size_t(B), int(n));
  for (int64_t b = 0; b < B; ++b) {
    const int v = nv[size_t(b)];
    MMATTN_CHECK(v >= 0 && v <= n, ShapeError, kCls, "::forward: n_valid[", b, "] = ", v, " is outside [0, ", n, "]");
    MMATTN_CHECK(cache.length(b) + v <= cache.capacity(), ShapeError, kCls, "::forward: sequence ", b, " holds ",
                 cache.length(b), " tokens; ", v, " more exceed the cache capacity ", cache.capacity());
    MMATTN_CHECK(!opt.pruner || cache.length(b) == 0 || v == 0, ConfigError, kCls,
                 "::forward: token pruning needs the whole prompt in one step, but sequence ", b, " already holds ",
                 cache.length(b), " cached tokens (no prefix cache or chunked prefill with pruning)");
  }

  // The residual stream, owned here (add_ writes into it).
  x_ = Tensor::empty({B, n, hidden_}, dtype_, device_);
  x_.copy_from(embeds);
  StepRows& rows = *rows_;
  rows.set_valid(nv, n, device_);
  rows.positions.resize(size_t(B));
  rows.origin.resize(size_t(B));
  for (int64_t b = 0; b < B; ++b) {
    rows.positions[size_t(b)].assign(size_t(nv[size_t(b)]), 0);
    for (int i = 0; i < nv[size_t(b)]; ++i) rows.origin[size_t(b)].push_back(i);
  }
}

LlamaModel::Stepper::~Stepper() = default;

void LlamaModel::Stepper::layer(int l) {
  MMATTN_CHECK(l == next_ && l < m_.num_layers(), Error, kCls, "::Stepper: layer ", l, " out of order (next is ",
               next_, " of ", m_.num_layers(), ")");
  x_ = m_.layer_forward(l, x_, cache_, *rows_, opt_.pruner, opt_.modulator);
  ++next_;
}

Tensor LlamaModel::Stepper::finish() {
  while (next_ < m_.num_layers()) layer(next_);
  cache_.advance();
  const StepRows& rows = *rows_;
  const int64_t B = x_.size(0), nr = x_.size(1);
  Tensor x = x_;
  if (opt_.last_only) {
    if (!rows.padded) {
      x = x.slice(1, nr - 1, nr).contiguous();  // [B, 1, hidden] (dense: the fused norm + head takes it)
    } else {
      std::vector<std::vector<int64_t>> last(static_cast<size_t>(B));
      for (int64_t b = 0; b < B; ++b) last[size_t(b)] = {std::max(rows.n_valid[size_t(b)] - 1, 0)};
      x = gather_rows(x, last, 1);  // [B, 1, hidden]
    }
  }
  return rms_norm_linear(x, m_.norm_, m_.eps_, m_.lm_head_).to(DType::F32);  // [B, n or 1, V]
}

Tensor LlamaModel::forward(const Tensor& embeds, KVCache& cache, const LlamaForwardOptions& opt) const {
  return Stepper(*this, embeds, cache, opt).finish();
}

GenerationResult generate(const LlamaModel& model, const Tensor& prompt_embeds, const std::vector<int64_t>& prompt_ids,
                          KVCache& cache, const GenerationOptions& opt) {
  check_defined(prompt_embeds, "generate", "prompt_embeds");
  MMATTN_CHECK(prompt_embeds.dim() == 3 && prompt_embeds.size(0) == 1 && prompt_embeds.size(1) >= 1, ShapeError,
               "generate: prompt_embeds must be [1, L >= 1, hidden], got ", prompt_embeds.desc());
  MMATTN_CHECK(cache.batch() == 1, ShapeError, "generate: batch 1 only; the cache holds ", cache.batch(),
               " sequences");
  MMATTN_CHECK(opt.max_new_tokens >= 0 && opt.min_new_tokens >= 0 && opt.prefill_chunk >= 0, ConfigError,
               "generate: max_new_tokens (", opt.max_new_tokens, "), min_new_tokens (", opt.min_new_tokens,
               ") and prefill_chunk (", opt.prefill_chunk, ") must be >= 0");
  const int64_t L = prompt_embeds.size(1);
  const int64_t need = cache.length(0) + L + std::max<int64_t>(opt.max_new_tokens - 1, 0);
  MMATTN_CHECK(need <= cache.capacity(), ShapeError, "generate: ", cache.length(0), " cached + ", L, " prompt + ",
               opt.max_new_tokens, " new tokens need a cache of ", need, ", it holds ", cache.capacity());
  Sampler sampler(opt.sampling);
  GenerationResult r;
  LlamaForwardOptions last;
  last.last_only = true;
  const int64_t chunk = opt.prefill_chunk > 0 ? opt.prefill_chunk : L;
  Tensor logits;
  for (int64_t s = 0; s < L; s += chunk)
    logits = model.forward(prompt_embeds.slice(1, s, std::min(L, s + chunk)), cache, last);  // [1, 1, V]
  r.prefill_logits = logits;
  std::vector<int64_t> history = prompt_ids;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < opt.max_new_tokens; ++i) {
    std::vector<float> row = logits.to_floats();
    if (i < opt.min_new_tokens)
      for (int64_t e : opt.eos_token_ids)
        if (e >= 0 && e < int64_t(row.size())) row[size_t(e)] = neg_inf;
    const int64_t tok = sampler.next(std::move(row), history);
    r.tokens.push_back(tok);
    history.push_back(tok);
    if (std::find(opt.eos_token_ids.begin(), opt.eos_token_ids.end(), tok) != opt.eos_token_ids.end()) {
      r.stopped_at_eos = true;
      break;
    }
    if (i + 1 == opt.max_new_tokens) break;  // the last token needs no forward pass
    const Tensor ids = Tensor::from_vector<int64_t>({tok}, {1, 1});
    logits = model.forward(model.embed(ids), cache, last);
  }
  return r;
}

}  // namespace mmattn
