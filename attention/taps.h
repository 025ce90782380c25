#pragma once
// Attention taps: the full probability rows of a few chosen query rows (FastV/PDrop's last
// instruction token, the ViT [CLS] row for VisionZip/FasterVLM, PAINT, VAR's diagnostics), computed
// without materialising the N x N matrix. The rows are the final attention weights of attention():
// same mask, modulation, post weights and renormalisation, so they sum (per row) to what the fused
// pass used and their per-class sums equal its class_mass.
//
//   q_rows [B, R, Hq, D]: the chosen query rows, e.g. q.slice(1, Lq - 1, Lq).
//   rows: the index of each chosen row in the full query sequence of length lq_total (for the
//     causal mask, q_lens and first_modulated_row); at most kMaxTapRows (64) per call. They are
//     passed by value to the kernel: no host-to-device copy, no synchronisation.
//   lse (optional) F32 [B, Hq, R], any strides (e.g. fused.lse.slice(2, Lq - 1, Lq)): the fused
//     pass's LSE of those rows; with it (and no renormalisation) the GPU writes the probabilities
//     in one pass over the keys.
// Returns F32 [B, Hq, R, Lk]. The other options (causal, scale, k_lens, q_lens, mod) as in attention().
#include <vector>

#include "attention/attention.h"
#include "attention/taps_params.h"

namespace mmattn {

struct TapRequest {
  std::vector<int64_t> rows;
  int64_t lq_total = 0;
  Tensor lse;
};

Tensor attention_probs(const Tensor& q_rows, const Tensor& k, const TapRequest& req, const AttentionOptions& opt = {});

// attention(q, k, v, opt) and the taps of query rows `rows` (indices into q's Lq rows, at most
// kMaxTapRows) in one call: *probs = attention_probs(q at those rows, k, {rows, Lq}, opt). On CUDA,
// a call without key classes or class mass (and distinct rows) gets them from the Hopper prefill
// kernel itself: the blocks that own those rows store their raw scores as they go and normalise
// them with the row's final max and sum (no second pass over the keys); otherwise the taps run on
// the side stream beside the attention kernel (filling the multiprocessors its last wave leaves
// idle), or after it when another kernel served the call. Same values as the two calls in
// sequence, to rounding.
AttentionResult attention_tapped(const Tensor& q, const Tensor& k, const Tensor& v, const std::vector<int64_t>& rows,
                                 Tensor* probs, const AttentionOptions& opt = {});

// probs [B, Hq, R, Lk] -> mean over heads [B, R, Lk] (FastV's ranking signal) and, for FasterVLM /
// VisionZip, the sum over heads is head_mean * Hq.
Tensor head_mean(const Tensor& probs);
// probs [B, Hq, R, Lk], key_class U8 [B, Lk] -> F32 [B, Hq, R, C]: attention mass per key class.
Tensor class_mass(const Tensor& probs, const Tensor& key_class, int num_classes);

}  // namespace mmattn
