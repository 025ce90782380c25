#pragma once
// An independent attention formulation for tests: materialises S = scale * Q K^T per (b, h) with
// the core matmul op, applies masks/modulation, softmax via the core op, then P V. Used to check
// the streaming CPU reference (and through it the CUDA kernels).
#include <cmath>

#include "attention/attention.h"
#include "core/ops/linear.h"
#include "core/ops/softmax.h"
#include "test_util.h"

namespace mmattn::test {

struct NaiveResult {
  Tensor out;   // [B, Lq, Hq, D]
  Tensor probs; // [B, Hq, Lq, Lk] final weights (after post weights / renormalisation)
  Tensor lse;   // [B, Hq, Lq]
};

inline Tensor i32(const std::vector<int32_t>& v) { return Tensor::from_vector(v, {int64_t(v.size())}); }
inline Tensor gpu(const Tensor& t) { return t.defined() ? t.to(Device::cuda()) : t; }
// Tolerance of CUDA outputs against the f32 CPU reference on the same rounded inputs.
inline double out_tol(DType dt) { return dt == DType::F16 ? 3e-3 : 1e-2; }

inline NaiveResult naive_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt) {
  const int64_t B = q.size(0), Lq = q.size(1), Hq = q.size(2), D = q.size(3), Lk = k.size(1), Hkv = k.size(2);
  const float scale = opt.scale > 0 ? opt.scale : 1.f / std::sqrt(float(D));
  const HeadModulation* m = opt.mod;
  auto vals = [](const Tensor& t) { return t.defined() ? t.to_floats() : std::vector<float>(); };
  const auto kl = vals(opt.k_lens), ql = vals(opt.q_lens);
  const auto kc = m ? vals(m->key_class) : std::vector<float>();
  const auto ag = m ? vals(m->logit_abs_gain) : std::vector<float>();
  const auto bi = m ? vals(m->logit_bias) : std::vector<float>();
  const auto pw = m ? vals(m->post_weight) : std::vector<float>();
  const auto hg = m ? vals(m->head_gain) : std::vector<float>();
  const int64_t C = m ? m->num_classes : 0;
  NaiveResult r;
  r.out = Tensor::zeros({B, Lq, Hq, D}, DType::F32);
  r.probs = Tensor::zeros({B, Hq, Lq, Lk}, DType::F32);
  r.lse = Tensor::full({B, Hq, Lq}, -INFINITY, DType::F32);
  float* out = r.out.data<float>();
  float* pr = r.probs.data<float>();
  float* lse = r.lse.data<float>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h) {
      const int64_t hk = h / (Hq / Hkv);
      Tensor qh = q.select(0, b).select(1, h).contiguous();   // [Lq, D]
      Tensor kh = k.select(0, b).select(1, hk).contiguous();  // [Lk, D]
      Tensor vh = v.select(0, b).select(1, hk).contiguous();  // [Lk, D]
      auto s = matmul(qh, kh, /*transpose_b=*/true).to_floats();  // [Lq, Lk]
      const int64_t klen = kl.empty() ? Lk : int64_t(kl[b]);
      const int64_t qlen = ql.empty() ? Lq : int64_t(ql[b]);
      std::vector<float> p(size_t(Lq * Lk), 0.f);
      for (int64_t i = 0; i < Lq; ++i) {
        const bool mod = m && i >= m->first_modulated_row;
        std::vector<bool> vis(Lk);
        bool any = false;
        for (int64_t j = 0; j < Lk; ++j) {
          vis[j] = i < qlen && j < klen && (!opt.causal || j <= i + klen - qlen);
          any = any || vis[j];
        }
        if (!any) continue;
        std::vector<float> z(Lk, -INFINITY);
        for (int64_t j = 0; j < Lk; ++j) {
          if (!vis[j]) continue;
          float x = s[i * Lk + j] * scale;
          if (mod && !kc.empty()) {
            const int64_t c = int64_t(kc[b * Lk + j]);
            if (!ag.empty()) x += ag[h * C + c] * std::fabs(x);
            if (!bi.empty()) x += bi[h * C + c];
          }
          z[j] = x;
        }
        Tensor zt = Tensor::from_floats(z, {Lk});
        auto sm = softmax(zt).to_floats();
        double mx = -INFINITY, sum = 0;
        for (float x : z) mx = std::max(mx, double(x));
        for (float x : z) if (x > -INFINITY) sum += std::exp(double(x) - mx);
        lse[(b * Hq + h) * Lq + i] = float(mx + std::log(sum));
        double norm = 1.0;
        if (mod && !pw.empty()) {
          double lw = 0;
          for (int64_t j = 0; j < Lk; ++j) {
            sm[j] *= pw[h * C + int64_t(kc[b * Lk + j])];
            lw += sm[j];
          }
          if (m->renormalize) norm = lw;
        }
        for (int64_t j = 0; j < Lk; ++j) p[i * Lk + j] = norm > 0 ? float(sm[j] / norm) : 0.f;
      }
      Tensor pt = Tensor::from_floats(p, {Lq, Lk});
      auto o = matmul(pt, vh).to_floats();  // [Lq, D]
      const float g = hg.empty() ? 1.f : hg[h];
      for (int64_t i = 0; i < Lq; ++i) {
        for (int64_t d = 0; d < D; ++d) out[((b * Lq + i) * Hq + h) * D + d] = g * o[i * D + d];
        for (int64_t j = 0; j < Lk; ++j) pr[((b * Hq + h) * Lq + i) * Lk + j] = p[i * Lk + j];
      }
    }
  return r;
}

}  // namespace mmattn::test
