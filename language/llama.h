#pragma once
// The Llama decoder (transformers' LlamaForCausalLM), eager, with a KV cache.
//
// Per layer (pre-norm, as modeling_llama.py):
//   h = x + o_proj(attn(rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1)))   n1 = input_layernorm(x)
//   x = h + down_proj(silu(gate_proj(n2)) * up_proj(n2))                    n2 = post_attention_layernorm(h)
// then logits = lm_head(norm(x)). RMSNorm: f32 statistics, normalised value rounded to the model
// dtype before the weight multiply. RoPE: rotate_half with the original position ids kept by the
// KV cache (next_position(b) + i for the i-th new token). Attention: attention/attention.h,
// bottom-right causal over the cache views with k_lens = cache.lens_tensor() (GQA: Hq / Hkv).
//
// Weights are read by module path (principle 4): <decoder>embed_tokens.weight,
// <decoder>layers.N.{input_layernorm,post_attention_layernorm}.weight,
// <decoder>layers.N.self_attn.{q,k,v,o}_proj.{weight,bias?}, <decoder>layers.N.mlp.{gate,up,down}_proj.{weight,bias?},
// <decoder>norm.weight, <lm_head>weight (absent and unused when tie_word_embeddings).
// A missing or mis-shaped tensor is a WeightError naming it (and both shapes). q/k/v and gate/up
// are concatenated at load time into one GEMM each (same values as the separate projections).
//
// Head dims the attention core lacks (it takes 64, 72, 80, 96, 128; tiny test models use 16):
// q/k/v are zero-padded to the next supported size (zeros change neither q.k nor the used part of
// the output) and the scale stays 1/sqrt(head_dim). The KV cache then holds attn_head_dim().
//
// Devices: CPU in F32; CUDA in BF16 or F16 (f32 accumulation inside the ops).
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "attention/attention.h"
#include "attention/kv_cache.h"
#include "core/tensor.h"
#include "language/llama_rope.h"
#include "language/sampler.h"

namespace mmattn {

class Checkpoint;
struct LlamaConfig;  // core/hf_config.h (not included here: see llama_rope.h for why)

// Where the decoder's tensors live in a checkpoint.
struct LlamaWeightNames {
  std::string decoder;  // prefix of embed_tokens / layers / norm, e.g. "model."
  std::string lm_head;  // prefix of lm_head.weight's module, e.g. "lm_head."
};
// prefix "" -> {"model.", "lm_head."} (LlamaForCausalLM); "language_model." -> {"language_model.model.",
// "language_model.lm_head."} (llava-hf / transformers 4); "model.language_model." -> {"model.language_model.",
// "lm_head."} (LlavaForConditionalGeneration as transformers 5 names it in memory). Any other prefix P
// ending in "language_model." and starting with "model." is read like the last; else {P + "model.", P + "lm_head."}.
LlamaWeightNames llama_weight_names(const std::string& prefix);
// The first layout above whose embed_tokens.weight the checkpoint holds; WeightError listing the
// names tried when none.
LlamaWeightNames detect_llama_weight_names(const Checkpoint& ckpt);

// --- in-layer token pruning (FastV, PDrop, DART, VFlowOpt) -------------------------------------
//
// A TokenPruner may drop rows of a forward step (a prompt prefill) between layers: the dropped
// tokens vanish from the hidden states and from the KV cache of that layer and every later one;
// earlier layers keep them. The survivors keep their original position ids (RoPE), so the next
// token's position is still max(position) + 1. Pruning needs the whole prompt in one step into an
// empty cache (a prefix in the cache or chunked prefill is a ConfigError).
//
// At layer l, after q/k/v of all current rows are computed (RoPE applied), the pruner is called
// when needs(l) asks for it; its decision applies from layer l's attention on.

// What the pruner sees at layer l.
struct PruneContext {
  int layer = 0;
  Tensor x;                // [B, n, hidden] the residual stream entering layer l (model dtype/device)
  Tensor q, k, v;          // [B, n, H, head_dim] layer l's queries / keys (after RoPE) / values
  Tensor last_probs;       // F32 [B, Hq, 1, n] when needs(l).probs: layer l's attention of each
                           // sequence's last valid row over the current rows (padding columns 0)
  std::vector<int> n_valid;                       // per sequence: valid rows (the rest is padding)
  std::vector<std::vector<int64_t>> origin;       // per sequence: step-input index of each valid row
  std::vector<std::vector<int32_t>> positions;    // per sequence: position id of each valid row
};

struct PruneDecision {
  // Per sequence: the current rows kept for layer l on, strictly increasing, each < n_valid[b];
  // the last valid row (the query that continues the sequence) must be kept.
  std::vector<std::vector<int64_t>> keep;
  // Optional: the residual rows to continue with instead of x's kept rows ([B, max keep, hidden],
  // model dtype/device), e.g. kept tokens that absorbed pruned ones (recycling). Layer l's q/k/v
  // are then recomputed from them.
  Tensor x;
  // Renumber the kept rows' positions contiguously from the step's first position (PDrop); later
  // tokens then continue from each layer's own max position + 1.
  bool renumber_positions = false;
};

class TokenPruner {
 public:
  struct Needs {
    bool call = false;   // call on_layer at this layer
    bool probs = false;  // with last_probs
  };
  virtual ~TokenPruner() = default;
  virtual Needs needs(int layer) const = 0;
  // Returns a decision to prune here, or nothing to keep every row.
  virtual std::optional<PruneDecision> on_layer(const PruneContext& ctx) = 0;
};

// --- attention modulation (PAI, PAINT, AD-HH, VHR, VAR) ------------------------------------------
//
// A modulator hands each layer's attention a HeadModulation (attention/attention.h: key classes
// over the cache slots, per-(head, class) logit gains / biases / post-softmax weights, per-head
// output gains) and may read the per-head outputs of each sequence's last row before o_proj.
class AttentionModulator {
 public:
  virtual ~AttentionModulator() = default;
  // Layer l's modulation for this step (nullptr: none). `cache` already holds the step's rows
  // (its key_class must be [B, cache capacity]); n_rows: query rows of the step.
  virtual const HeadModulation* modulation(int layer, const KVCache& cache, int64_t n_rows) = 0;
  // AD-HH: after layer l's attention (run with modulation() and class mass), the heads in `heads`
  // whose last-row mass on key class `klass` is >= threshold take the last row's output of the
  // attention with `alt` instead (decided on the device; no synchronisation).
  struct Conditional {
    const HeadModulation* alt = nullptr;  // applied to each sequence's last row (first_modulated_row 0)
    int klass = 0;
    float threshold = 0;
    std::vector<uint8_t> heads;  // [Hq], 1 = eligible
  };
  virtual const Conditional* conditional(int layer, const KVCache& cache, int64_t n_rows) {
    (void)layer;
    (void)cache;
    (void)n_rows;
    return nullptr;
  }
  virtual bool wants_head_outputs(int layer) const {
    (void)layer;
    return false;
  }
  // F32 [B, Hq, head_dim]: each sequence's last valid row's attention output per head (before o_proj).
  virtual void head_outputs(int layer, const Tensor& out) {
    (void)layer;
    (void)out;
  }
  // Per-head output gains of layer l (VHR), applied to every row's attention output before o_proj
  // (after head_outputs): [batch, Hq] in the model's dtype and device, or nullptr for none.
  virtual const Tensor* head_gains(int layer, int64_t batch) {
    (void)layer;
    (void)batch;
    return nullptr;
  }
  // Whether the modulation edits only each forward's last query row (PAI, AD-HH): a batch of
  // prompts of different lengths then prefills in two steps, so that each prompt's last row is a
  // forward's last row. VAR edits every row after the image: one step.
  virtual bool last_row_only() const { return true; }
  // Before layer l runs: the residual stream entering it (x [B, n, hidden]) and the original
  // positions of each sequence's valid rows (VAR's sink detection).
  virtual void layer_input(int layer, const Tensor& x, const std::vector<std::vector<int32_t>>& positions) {
    (void)layer;
    (void)x;
    (void)positions;
  }
  // Whether layer l's attention output comes from attend() instead of one attention() call (VAR's
  // redistribution composes several). attend() gets q [B, n, Hq, D], the layer's cache k / v,
  // the options the layer would use (modulation() already applied) and the rows' positions, and
  // returns out [B, n, Hq, D] as attention() would.
  virtual bool replaces_attention(int layer) const {
    (void)layer;
    return false;
  }
  virtual Tensor attend(int layer, const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt,
                        const std::vector<std::vector<int32_t>>& positions);
};

struct LlamaForwardOptions {
  // Valid rows of each sequence of a right-padded batch (values in [0, n]); empty = n for all.
  // Padding rows are neither written to the cache nor attended to; their logits are meaningless.
  std::vector<int> n_valid;
  // Logits of each sequence's last valid row only: [B, 1, V] (skips the lm_head GEMM elsewhere).
  bool last_only = false;
  // In-layer pruning of this step (see TokenPruner); with it, rows of the logits (without
  // last_only) are the surviving rows, in order.
  TokenPruner* pruner = nullptr;
  AttentionModulator* modulator = nullptr;
};

class LlamaModel {
 public:
  struct StepRows;  // the rows of the step being run (llama.cpp)
  static LlamaModel load(const Checkpoint& ckpt, const std::string& prefix, const LlamaConfig& cfg,
                         Device dev = Device::cpu(), DType dtype = DType::F32);
  static LlamaModel load(const Checkpoint& ckpt, const LlamaWeightNames& names, const LlamaConfig& cfg,
                         Device dev = Device::cpu(), DType dtype = DType::F32);

  // ids [...] I32/I64 (CPU or the model's device) -> [..., hidden] in the model's dtype and device.
  // check_ids = false: device ids known to be in range (e.g. argmax over this model's logits) are
  // not read back (embedding(): no host synchronisation).
  Tensor embed(const Tensor& ids, bool check_ids = true) const;
  // embeds [B, n, hidden] (any dtype/device: copied to the model's) -> logits F32 [B, n, V]
  // ([B, 1, V] with last_only), on the model's device. Appends the n_valid new tokens to `cache`
  // (one step: append per layer, then advance). The cache must come from make_cache() (or match it).
  Tensor forward(const Tensor& embeds, KVCache& cache, const LlamaForwardOptions& opt = {}) const;
  KVCache make_cache(int64_t batch, int64_t max_len) const;
  // forward(), one layer at a time: for callers that interleave two forwards layer by layer (VHR's
  // text-only branch runs inside the image branch's hooks). layer(l) in order 0, 1, ...; finish()
  // runs the layers left, closes the cache step and returns the logits as forward() does. A
  // Stepper dropped before finish() leaves the cache step open (reset or discard that cache).
  class Stepper {
   public:
    Stepper(const LlamaModel& m, const Tensor& embeds, KVCache& cache, const LlamaForwardOptions& opt);
    ~Stepper();
    void layer(int l);
    Tensor finish();

   private:
    const LlamaModel& m_;
    KVCache& cache_;
    LlamaForwardOptions opt_;
    std::unique_ptr<StepRows> rows_;
    Tensor x_;
    int next_ = 0;
  };

  int num_layers() const { return int(layers_.size()); }
  int64_t hidden_size() const { return hidden_; }
  int64_t vocab_size() const { return vocab_; }
  int64_t num_heads() const { return hq_; }
  int64_t num_kv_heads() const { return hkv_; }
  int64_t head_dim() const { return d_; }
  int64_t intermediate_size() const { return ffn_; }
  int64_t attn_head_dim() const { return dp_; }  // head dim of the cache / attention (>= head_dim)
  Device device() const { return device_; }
  DType dtype() const { return dtype_; }
  const LlamaWeightNames& names() const { return names_; }
  const std::vector<int64_t>& eos_token_ids() const { return eos_; }
  const Tensor& embed_tokens() const { return embed_; }
  const Tensor& final_norm() const { return norm_; }  // model.norm.weight [hidden]
  float rms_norm_eps() const { return eps_; }
  const LlamaRope& rope() const { return rope_; }
  // Emulates a transformers model that was cast with model.to(torch.bfloat16): RoPE frequencies
  // rounded through bf16 (see LlamaRope::bf16_inv_freq). Off by default (from_pretrained keeps f32).
  void set_rope_bf16_inv_freq(bool on) { rope_.bf16_inv_freq = on; }

 private:
  struct Layer {
    Tensor input_norm, post_norm;  // [hidden]
    Tensor qkv, qkv_bias;          // [(Hq + 2 Hkv) D, hidden], bias [(Hq + 2 Hkv) D] or undefined
    Tensor o, o_bias;              // [hidden, Hq D]
    Tensor gate_up, gate_up_bias;  // [2 F, hidden] (gate rows first)
    Tensor down, down_bias;        // [hidden, F]
  };
  // One decoder layer; returns the residual stream (x itself, or a new tensor when rows were pruned).
  Tensor layer_forward(int l, Tensor x, KVCache& cache, StepRows& rows, TokenPruner* pruner,
                       AttentionModulator* modulator) const;

  LlamaWeightNames names_;
  std::vector<Layer> layers_;
  Tensor embed_, norm_, lm_head_;
  int64_t hidden_ = 0, vocab_ = 0, hq_ = 0, hkv_ = 0, d_ = 0, dp_ = 0, ffn_ = 0;
  float eps_ = 1e-6f;
  LlamaRope rope_;
  std::vector<int64_t> eos_;
  Device device_;
  DType dtype_ = DType::F32;
};

// --- generation (B = 1) ------------------------------------------------------------------------

struct GenerationOptions {
  int64_t max_new_tokens = 32;
  // EOS is masked (logit -inf) until this many tokens exist, as transformers' MinNewTokensLengthLogitsProcessor.
  int64_t min_new_tokens = 0;
  std::vector<int64_t> eos_token_ids;  // generation stops after producing one (it is kept in the output)
  SamplingConfig sampling;              // greedy by default
  int64_t prefill_chunk = 0;            // > 0: prefill the prompt in chunks of this many tokens
};

struct GenerationResult {
  std::vector<int64_t> tokens;  // generated ids (the EOS that stopped it included)
  bool stopped_at_eos = false;
  Tensor prefill_logits;        // F32 [1, 1, V]: logits of the last prompt position
};

// Prefills prompt_embeds [1, L, hidden] into `cache` (which may already hold a prefix: the prompt
// continues it), then decodes token by token. prompt_ids: the prompt's ids (history for the
// repetition penalty; may be empty). The cache needs room for L + max_new_tokens - 1 more tokens.
GenerationResult generate(const LlamaModel& model, const Tensor& prompt_embeds, const std::vector<int64_t>& prompt_ids,
                          KVCache& cache, const GenerationOptions& opt);

}  // namespace mmattn
