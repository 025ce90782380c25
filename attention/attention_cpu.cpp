// The CPU reference of attention: one query row at a time, f32, the definitions in attention.h
// written out plainly. This is the oracle the CUDA kernels are tested against.
#include <algorithm>
#include <cmath>
#include <vector>

#include "attention/attention_params.h"

namespace mmattn {

void attention_cpu(const AttentionParams& p_in) {
  AttentionParams p = p_in;
  p.resolve_output_strides();
  const float* q = static_cast<const float*>(p.q);
  const float* k = static_cast<const float*>(p.k);
  const float* v = static_cast<const float*>(p.v);
  float* out = static_cast<float*>(p.out);
  const int group = p.hq / p.hkv;
  const int C = p.num_classes;
  std::vector<float> z(size_t(std::max(p.lk, 1)));
  std::vector<float> w(size_t(std::max(p.lk, 1)));
  for (int b = 0; b < p.batch; ++b) {
    const int klen = p.k_lens ? p.k_lens[b] : p.lk;
    const int qlen = p.q_lens ? p.q_lens[b] : p.lq;
    for (int h = 0; h < p.hq; ++h) {
      const int hk = h / group;
      for (int i = 0; i < p.lq; ++i) {
        float* o = out + p.out_offset(b, i, h);
        const int64_t row = (int64_t(b) * p.hq + h) * p.lq + i;
        // visible keys: [0, jend)
        int jend = i < qlen ? klen : 0;
        if (p.causal && i < qlen) jend = std::min(jend, std::max(0, i + (klen - qlen) + 1));
        const bool modulate = i >= p.first_modulated_row;
        const float* qi = q + b * p.q_sb + int64_t(i) * p.q_sl + int64_t(h) * p.q_sh;
        float m = -INFINITY;
        for (int j = 0; j < jend; ++j) {
          const float* kj = k + b * p.k_sb + int64_t(j) * p.k_sl + int64_t(hk) * p.k_sh;
          const float s = attention_logit_cpu(p, qi, kj, b, h, j, modulate);
          z[j] = s;
          m = std::max(m, s);
        }
        float l = 0.f;
        for (int j = 0; j < jend; ++j) {
          w[j] = std::exp(z[j] - m);
          l += w[j];
        }
        if (p.lse) p.lse[p.lse_offset(b, h, i)] = jend > 0 ? m + std::log(l) : -INFINITY;
        // post-softmax weights
        float norm = l;
        if (modulate && p.post_weight && p.key_class) {
          float lw = 0.f;
          for (int j = 0; j < jend; ++j) {
            w[j] *= p.post_weight[h * C + p.key_class[b * p.key_class_sb + j]];
            lw += w[j];
          }
          if (p.renormalize) norm = lw;
        }
        const float inv = (jend > 0 && norm > 0.f) ? 1.f / norm : 0.f;
        const float gain = p.head_gain ? p.head_gain[h] : 1.f;
        for (int d = 0; d < p.d; ++d) o[d] = 0.f;
        for (int j = 0; j < jend; ++j) {
          const float* vj = v + b * p.v_sb + int64_t(j) * p.v_sl + int64_t(hk) * p.v_sh;
          const float a = w[j] * inv;
          for (int d = 0; d < p.d; ++d) o[d] += a * vj[d];
        }
        for (int d = 0; d < p.d; ++d) o[d] *= gain;
        if (p.class_mass) {
          float* cm = p.class_mass + row * C;
          for (int c = 0; c < C; ++c) cm[c] = 0.f;
          for (int j = 0; j < jend; ++j) cm[p.key_class[b * p.key_class_sb + j]] += w[j] * inv;
        }
      }
    }
  }
}

}  // namespace mmattn
