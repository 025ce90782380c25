#pragma once
// Plain parameters of the attention kernels (filled and validated by attention.cpp).
#include <cstdint>

#include "core/device.h"
#include "core/dtype.h"

#if defined(__CUDACC__)
#define MMATTN_PARAMS_HD __host__ __device__
#else
#define MMATTN_PARAMS_HD
#endif

namespace mmattn {

// In-kernel taps (attention_tapped): the probability rows of query rows rows[0..n) (the same rows
// in every sequence) written by the attention pass itself, into probs F32 [B, Hq, n, Lk]
// (contiguous), through the rows' logits kept in each block's shared memory (n rows of
// scratch_ld(Lk) floats). Only the Hopper prefill kernel serves them, for calls without key
// classes or class mass whose scratch fits beside its tiles (flash_prefill_sm90_taps_fit: one row
// up to ~16K keys at head dim 128); the launcher sets `written` when it did (else the caller
// computes the taps another way).
constexpr int kMaxPrefillTaps = 64;
struct PrefillTaps {
  int n = 0;
  int32_t rows[kMaxPrefillTaps] = {};
  float* probs = nullptr;
  bool written = false;
  // the scratch row stride (floats): Lk rounded up to whole key tiles of 128
  static int64_t scratch_ld(int64_t lk) { return (lk + 127) / 128 * 128; }
};

struct AttentionParams {
  const void* q = nullptr;  // [B, Lq, Hq, D] with strides below (elements), last dim dense
  const void* k = nullptr;  // [B, Lk, Hkv, D]
  const void* v = nullptr;  // [B, Lk, Hkv, D]
  void* out = nullptr;      // [B, Lq, Hq, D] with strides out_s* (elements), last dim dense
  int64_t q_sb = 0, q_sl = 0, q_sh = 0;
  int64_t k_sb = 0, k_sl = 0, k_sh = 0;
  int64_t v_sb = 0, v_sl = 0, v_sh = 0;
  int batch = 0, lq = 0, lk = 0, hq = 0, hkv = 0, d = 0;
  float scale = 1.f;
  bool causal = false;
  const int32_t* k_lens = nullptr;  // [B] or null (= lk)
  const int32_t* q_lens = nullptr;  // [B] or null (= lq)
  float* lse = nullptr;             // [B, Hq, Lq] or null, strides lse_sb, lse_sh (rows: stride 1)
  // Output strides (elements). 0 = unset: contiguous (resolve_output_strides). attention() sets
  // them; a call that writes the tail rows of a larger output (the split PAI route) keeps the
  // parent's strides with offset pointers. out_s* must be multiples of 8 (16-byte stores).
  int64_t out_sb = 0, out_sl = 0, out_sh = 0;
  int64_t lse_sb = 0, lse_sh = 0;
  // modulation (all null = off)
  const uint8_t* key_class = nullptr;  // [B, Lk], row stride key_class_sb
  int64_t key_class_sb = 0;
  int num_classes = 0;
  const float* logit_abs_gain = nullptr;  // [Hq, C]
  const float* logit_bias = nullptr;      // [Hq, C]
  const float* post_weight = nullptr;     // [Hq, C]
  bool renormalize = false;
  const float* head_gain = nullptr;       // [Hq]
  int64_t first_modulated_row = 0;
  float* class_mass = nullptr;            // [B, Hq, Lq, C] or null
  PrefillTaps* taps = nullptr;            // host memory, read by the prefill launcher only; or null
  DType dtype = DType::F32;

  bool has_logit_mod() const { return logit_abs_gain || logit_bias; }
  bool has_post_mod() const { return post_weight != nullptr; }
  bool has_modulation() const { return has_logit_mod() || has_post_mod() || head_gain || class_mass; }
  // Fills unset (0) output strides with the contiguous ones.
  void resolve_output_strides() {
    if (out_sh == 0) out_sh = d;
    if (out_sl == 0) out_sl = int64_t(hq) * d;
    if (out_sb == 0) out_sb = int64_t(lq) * hq * d;
    if (lse_sh == 0) lse_sh = lq;
    if (lse_sb == 0) lse_sb = int64_t(hq) * lq;
  }
  MMATTN_PARAMS_HD int64_t out_offset(int64_t b, int64_t i, int64_t h) const { return b * out_sb + i * out_sl + h * out_sh; }
  MMATTN_PARAMS_HD int64_t lse_offset(int64_t b, int64_t h, int64_t i) const { return b * lse_sb + h * lse_sh + i; }
};

// Validates q/k/v/options (errors name the argument) and fills everything but the outputs.
// lq_total: the full query length that q_lens and the causal offset refer to (q.size(1) for
// attention(); the whole sequence for taps, whose q holds only a few rows).
class Tensor;
struct AttentionOptions;
AttentionParams build_attention_params(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt,
                                       int64_t lq_total);

void attention_cpu(const AttentionParams& p);

// attention() that also hands `taps` (or null) to the kernel serving the call (taps.cpp's
// attention_tapped); taps->written says whether it wrote them.
struct AttentionResult;
AttentionResult attention_with_taps(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt,
                                    PrefillTaps* taps);

// The scaled, modulated logit of query row qi against key kj (CPU references; f32).
inline float attention_logit_cpu(const AttentionParams& p, const float* qi, const float* kj, int b, int h, int64_t j,
                                 bool modulate) {
  float s = 0.f;
  for (int d = 0; d < p.d; ++d) s += qi[d] * kj[d];
  s *= p.scale;
  if (modulate && p.key_class) {
    const int c = p.key_class[b * p.key_class_sb + j];
    if (p.logit_abs_gain) s += p.logit_abs_gain[h * p.num_classes + c] * (s < 0.f ? -s : s);
    if (p.logit_bias) s += p.logit_bias[h * p.num_classes + c];
  }
  return s;
}
void attention_cuda(const AttentionParams& p, StreamHandle s);

}  // namespace mmattn
