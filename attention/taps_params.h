#pragma once
#include "attention/attention_params.h"

namespace mmattn {

// attn: q = the R chosen rows ([B, R, Hq, D], attn.lq = R); lse optional [B, Hq, R].
// rows[r]: index of chosen row r in the full query sequence of length lq_total.
struct TapParams {
  AttentionParams attn;
  const int64_t* rows = nullptr;  // [R], on the device of the kernel
  int64_t lq_total = 0;
  const float* lse = nullptr;     // [B, Hq, R] or null (then computed)
  float* probs = nullptr;         // [B, Hq, R, Lk]
};
void attention_probs_cpu(const TapParams& p);
void attention_probs_cuda(const TapParams& p, StreamHandle s);

}  // namespace mmattn
