#pragma once
// The attention core: fused attention (prefill and decode) with optional row log-sum-exp, key
// classes with per-(head, class) modulation, per-head output gains, and per-class attention mass.
// No N x N matrix is ever materialised; probability rows for a few queries come from the taps
// (attention/taps.h) using the saved LSE.
//
// Layout (PyTorch dims, strided; the last dim must be dense):
//   q [B, Lq, Hq, D], k/v [B, Lk, Hkv, D], out [B, Lq, Hq, D] (new, contiguous, dtype of q).
//   Hq % Hkv == 0 (GQA/MQA: query head h reads kv head h / (Hq / Hkv)).
//   D in {64, 72, 80, 96, 128}; dtypes bf16/f16 on CUDA (f32 accumulation), f32 on CPU.
// Masking:
//   k_lens I32 [B] (optional): keys j >= k_lens[b] are padding (per-sequence key length).
//   q_lens I32 [B] (optional): query rows i >= q_lens[b] are padding; their output is 0, LSE -inf.
//   causal: bottom-right aligned (FlashAttention's convention): query i of sequence b sees keys
//     j <= i + (klen_b - qlen_b). Equals SDPA's is_causal when Lq == Lk and nothing is padded;
//     with a KV cache (Lq new tokens after Lk - Lq cached ones) it is the right mask for prefill
//     chunks and decode. A row that sees no key gets output 0 and LSE -inf.
// Scores: z = scale * q.k (scale default 1/sqrt(D)), then the modulation below, then softmax.
#include <cstdint>

#include "core/tensor.h"

namespace mmattn {

constexpr int kMaxKeyClasses = 4;

// Key classes and head modulation (FastV/PDrop taps, PAI, PAINT, VAR, AD-HH, VHR). Every tensor is
// optional (undefined = off) and lives on the device of q. "Off" costs nothing: the kernels are
// instantiated with and without modulation.
struct HeadModulation {
  Tensor key_class;        // U8 [B, Lk]: class of each key, < num_classes (e.g. 0 text, 1 image, 2 sink)
  int num_classes = 0;     // 1..kMaxKeyClasses when key_class is set
  // Pre-softmax, for keys of class c in head h (applied in this order):
  Tensor logit_abs_gain;   // F32 [Hq, C]: PAI  z <- z + a[h,c] * |z|
  Tensor logit_bias;       // F32 [Hq, C]:      z <- z + b[h,c]
  // Post-softmax: p_j <- p_j * w[h, c(j)]; renormalize divides by sum_j w p_j instead of sum_j p_j.
  // (AD-HH zeroing: w = 0 without renormalisation.)
  Tensor post_weight;      // F32 [Hq, C]
  bool renormalize = false;
  // Output gain per query head, applied to that head's output (VHR).
  Tensor head_gain;        // F32 [Hq]
  // Only query rows i >= first_modulated_row get the logit/post modulation (e.g. Lq - 1: the
  // last token only, as PAI does during prefill). Gains and mass apply to every row.
  int64_t first_modulated_row = 0;
};

struct AttentionOptions {
  bool causal = false;
  float scale = 0.f;        // 0 -> 1/sqrt(D)
  Tensor k_lens;            // I32 [B] (optional)
  Tensor q_lens;            // I32 [B] (optional)
  const HeadModulation* mod = nullptr;
  bool return_lse = false;  // fills AttentionResult::lse
  bool return_class_mass = false;  // fills AttentionResult::class_mass (needs mod->key_class)
};

struct AttentionResult {
  Tensor out;         // [B, Lq, Hq, D], dtype of q
  Tensor lse;         // F32 [B, Hq, Lq]: log sum_j exp(z_j) of the modulated logits (before post weights)
  Tensor class_mass;  // F32 [B, Hq, Lq, C]: sum over keys of class c of the final attention weights
};

// Validates, then runs the CPU reference or the CUDA kernels (split-KV decode when Lq is small
// and the keys are long, else the flash prefill kernel).
AttentionResult attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt = {});

}  // namespace mmattn
