#pragma once
#include "attention/attention_params.h"

namespace mmattn {

// Most rows one attention_probs call takes: the row indices travel by value in TapParams (kernel
// parameter memory), so no host-to-device copy or synchronisation is needed.
constexpr int kMaxTapRows = kMaxPrefillTaps;

// attn: q = the R chosen rows ([B, R, Hq, D], attn.lq = R, R <= kMaxTapRows); lse optional [B, Hq, R].
// rows[r]: index of chosen row r in the full query sequence of length lq_total.
struct TapParams {
  AttentionParams attn;
  int64_t rows[kMaxTapRows] = {};  // [R], by value
  int64_t lq_total = 0;
  const float* lse = nullptr;      // [B, Hq, R] with the strides below (elements), or null (then computed)
  int64_t lse_sb = 0, lse_sh = 0, lse_sr = 0;
  float* probs = nullptr;          // [B, Hq, R, Lk] contiguous

  float row_lse(int64_t b, int64_t h, int64_t r) const { return lse[b * lse_sb + h * lse_sh + r * lse_sr]; }
};
void attention_probs_cpu(const TapParams& p);
void attention_probs_cuda(const TapParams& p, StreamHandle s);

// head_mean: out[b, i] = sum over h in order of probs[b, h, i] / H (each term divided, then added,
// in f32 round-to-nearest: the CPU and CUDA results are identical). probs [B, H, RL] contiguous.
struct HeadMeanParams {
  const float* probs = nullptr;
  float* out = nullptr;  // [B, RL]
  int64_t batch = 0, heads = 0, row_len = 0;
};
void head_mean_cpu(const HeadMeanParams& p);
void head_mean_cuda(const HeadMeanParams& p, StreamHandle s);

}  // namespace mmattn
