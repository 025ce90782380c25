#include "attention/taps.h"

#include <algorithm>
#include <cmath>

#include "attention/taps_params.h"
#include "core/ops/concat.h"
#include "core/ops/dispatch.h"

namespace mmattn {

Tensor attention_probs(const Tensor& q_rows, const Tensor& k, const TapRequest& req, const AttentionOptions& opt) {
  const char* op = "attention_probs";
  AttentionParams a = build_attention_params(q_rows, k, k, opt, req.lq_total);
  const int64_t R = a.lq;
  MMATTN_CHECK(int64_t(req.rows.size()) <= kMaxTapRows, ShapeError, op, ": 'rows' has ", req.rows.size(),
               " entries; at most kMaxTapRows = ", kMaxTapRows, " rows per call (split the request)");
  MMATTN_CHECK(int64_t(req.rows.size()) == R, ShapeError, op, ": ", req.rows.size(), " row indices in 'rows' for q_rows ",
               q_rows.shape_str(), " (R = ", R, ")");
  TapParams p;
  p.attn = a;
  p.lq_total = req.lq_total;
  for (size_t r = 0; r < req.rows.size(); ++r) {
    MMATTN_CHECK(req.rows[r] >= 0 && req.rows[r] < req.lq_total, ShapeError, op, ": rows[", r, "] = ", req.rows[r],
                 " outside [0, lq_total = ", req.lq_total, ")");
    p.rows[r] = req.rows[r];
  }
  if (req.lse.defined()) {
    MMATTN_CHECK(req.lse.dtype() == DType::F32 && req.lse.shape() == (Shape{a.batch, a.hq, R}), ShapeError, op,
                 ": 'lse' must be F32[", a.batch, ", ", a.hq, ", ", R, "], got ", req.lse.desc());
    check_same_device(q_rows, req.lse, op, "q_rows", "lse");
    // Any strides: e.g. fused.lse.slice(2, L - 1, L) straight from the attention() result.
    p.lse = req.lse.data<float>();
    p.lse_sb = req.lse.stride(0), p.lse_sh = req.lse.stride(1), p.lse_sr = req.lse.stride(2);
  }
  Tensor probs = Tensor::empty({a.batch, a.hq, R, a.lk}, DType::F32, q_rows.device());
  p.probs = probs.data<float>();
  if (q_rows.is_cuda()) {
    MMATTN_IF_CUDA(attention_probs_cuda(p, current_stream()));
  } else {
    attention_probs_cpu(p);
  }
  return probs;
}

AttentionResult attention_tapped(const Tensor& q, const Tensor& k, const Tensor& v, const std::vector<int64_t>& rows,
                                 Tensor* probs, const AttentionOptions& opt) {
  const char* op = "attention_tapped";
  MMATTN_CHECK(probs != nullptr, ShapeError, op, ": 'probs' is null");
  check_dim(q, 4, op, "q");
  MMATTN_CHECK(!rows.empty(), ShapeError, op, ": 'rows' is empty");
  check_dim(k, 4, op, "k");
  MMATTN_CHECK(int64_t(rows.size()) <= kMaxTapRows, ShapeError, op, ": 'rows' has ", rows.size(),
               " entries; at most kMaxTapRows = ", kMaxTapRows, " rows per call (split the request)");
  for (size_t r = 0; r < rows.size(); ++r)
    MMATTN_CHECK(rows[r] >= 0 && rows[r] < q.size(1), ShapeError, op, ": rows[", r, "] = ", rows[r],
                 " outside the ", q.size(1), " query rows of q ", q.shape_str());
  // q at the rows (a view for one row), only on the routes that compute the taps separately
  auto gather_q_rows = [&] {
    std::vector<Tensor> parts;
    for (int64_t i : rows) parts.push_back(q.slice(1, i, i + 1));
    return parts.size() == 1 ? parts[0] : concat(parts, 1);
  };
  const TapRequest req{rows, q.size(1), Tensor()};
  // In-kernel taps (attention_params.h: PrefillTaps) for calls without key classes or class mass
  // and distinct rows: the prefill kernel writes the rows' probabilities in its own pass. A call
  // that another kernel serves (decode-sized, unaligned views, non-Hopper) gets them after it.
  std::vector<int64_t> sorted = rows;
  std::sort(sorted.begin(), sorted.end());
  const bool distinct = std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end();
  const bool keyed = (opt.mod && opt.mod->key_class.defined()) || opt.return_class_mass;
  if (q.is_cuda() && distinct && !keyed) {
    const int64_t B = q.size(0), Hq = q.size(2), Lk = k.size(1), R = int64_t(rows.size());
    Tensor out = Tensor::empty({B, Hq, R, Lk}, DType::F32, q.device());
    PrefillTaps taps;
    taps.n = int(R);
    for (int64_t r = 0; r < R; ++r) taps.rows[r] = int32_t(rows[size_t(r)]);
    taps.probs = out.data<float>();
    AttentionResult res = attention_with_taps(q, k, v, opt, &taps);
    *probs = taps.written ? out : attention_probs(gather_q_rows(), k, req, opt);
    return res;
  }
  // built on the current stream before the fork below
  const Tensor q_rows = gather_q_rows();
  if (!q.is_cuda()) {
    AttentionResult r = attention(q, k, v, opt);
    *probs = attention_probs(q_rows, k, req, opt);
    return r;
  }
  // The attention kernel is launched first so that its blocks take the multiprocessors first; the
  // taps' blocks fill what its last wave leaves. The join comes before q_rows (read on the side
  // stream) can be freed (core/device.h: side_stream).
  const StreamHandle main = current_stream(), side = side_stream();
  stream_wait(side, main);
  AttentionResult r = attention(q, k, v, opt);
  try {
    const StreamGuard on_side(side);
    *probs = attention_probs(q_rows, k, req, opt);
  } catch (...) {
    stream_wait(main, side);
    throw;
  }
  stream_wait(main, side);
  return r;
}

void head_mean_cpu(const HeadMeanParams& p) {
  const float H = float(p.heads);
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t i = 0; i < p.row_len; ++i) {
      float acc = 0.f;
      for (int64_t h = 0; h < p.heads; ++h) acc += p.probs[(b * p.heads + h) * p.row_len + i] / H;
      p.out[b * p.row_len + i] = acc;
    }
}

Tensor head_mean(const Tensor& probs) {
  check_dim(probs, 4, "head_mean", "probs");
  check_dtype(probs, DType::F32, "head_mean", "probs");
  const Tensor c = probs.contiguous();
  const int64_t B = c.size(0), H = c.size(1), R = c.size(2), L = c.size(3);
  Tensor out = Tensor::empty({B, R, L}, DType::F32, c.device());
  if (out.numel() == 0) return out;
  const HeadMeanParams p{c.data<float>(), out.data<float>(), B, H, R * L};
  if (c.is_cuda()) {
    MMATTN_IF_CUDA(head_mean_cuda(p, current_stream()));
  } else {
    head_mean_cpu(p);
  }
  return out;
}

Tensor class_mass(const Tensor& probs, const Tensor& key_class, int num_classes) {
  check_dim(probs, 4, "class_mass", "probs");
  check_dtype(probs, DType::F32, "class_mass", "probs");
  check_dtype(key_class, DType::U8, "class_mass", "key_class");
  const int64_t B = probs.size(0), H = probs.size(1), R = probs.size(2), L = probs.size(3);
  MMATTN_CHECK(key_class.shape() == (Shape{B, L}), ShapeError, "class_mass: 'key_class' must be U8[", B, ", ", L,
               "], got ", key_class.desc());
  MMATTN_CHECK(num_classes >= 1 && num_classes <= kMaxKeyClasses, ShapeError, "class_mass: num_classes ",
               num_classes);
  Tensor p = probs.to(Device::cpu()).contiguous();
  Tensor kc = key_class.to(Device::cpu()).contiguous();
  Tensor out = Tensor::zeros({B, H, R, int64_t(num_classes)}, DType::F32);
  const float* pp = p.data<float>();
  const uint8_t* c = kc.data<uint8_t>();
  float* o = out.data<float>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t r = 0; r < R; ++r)
        for (int64_t j = 0; j < L; ++j) {
          MMATTN_CHECK(c[b * L + j] < num_classes, ShapeError, "class_mass: key_class[", b, ", ", j, "] = ",
                       int(c[b * L + j]), " >= ", num_classes);
          o[((b * H + h) * R + r) * num_classes + c[b * L + j]] += pp[((b * H + h) * R + r) * L + j];
        }
  return out.to(probs.device());
}

// CPU reference: per (b, h, r) the logits, then exp(z - lse) with the post weights, normalised.
void attention_probs_cpu(const TapParams& tp) {
  const AttentionParams& p = tp.attn;
  const float* q = static_cast<const float*>(p.q);
  const float* k = static_cast<const float*>(p.k);
  const int group = p.hq / p.hkv;
  const int C = p.num_classes;
  for (int b = 0; b < p.batch; ++b) {
    const int klen = p.k_lens ? p.k_lens[b] : p.lk;
    const int64_t qlen = p.q_lens ? p.q_lens[b] : tp.lq_total;
    for (int h = 0; h < p.hq; ++h)
      for (int r = 0; r < p.lq; ++r) {
        const int64_t i = tp.rows[r];
        float* out = tp.probs + ((int64_t(b) * p.hq + h) * p.lq + r) * p.lk;
        int64_t jend = i < qlen ? klen : 0;
        if (p.causal && i < qlen) jend = std::min<int64_t>(jend, std::max<int64_t>(0, i + (klen - qlen) + 1));
        const bool modulate = i >= p.first_modulated_row;
        const float* qi = q + b * p.q_sb + int64_t(r) * p.q_sl + int64_t(h) * p.q_sh;
        float m = -INFINITY;
        for (int64_t j = 0; j < p.lk; ++j) {
          if (j >= jend) {
            out[j] = -INFINITY;
            continue;
          }
          const float* kj = k + b * p.k_sb + j * p.k_sl + int64_t(h / group) * p.k_sh;
          const float s = attention_logit_cpu(p, qi, kj, b, h, j, modulate);
          out[j] = s;
          m = std::max(m, s);
        }
        float lse;
        if (tp.lse) {
          lse = tp.row_lse(b, h, r);
        } else {
          float l = 0.f;
          for (int64_t j = 0; j < jend; ++j) l += std::exp(out[j] - m);
          lse = jend > 0 ? m + std::log(l) : -INFINITY;
        }
        float norm = 0.f;
        for (int64_t j = 0; j < p.lk; ++j) {
          float w = j < jend ? std::exp(out[j] - lse) : 0.f;
          if (j < jend && modulate && p.post_weight && p.key_class)
            w *= p.post_weight[h * C + p.key_class[b * p.key_class_sb + j]];
          out[j] = w;
          norm += w;
        }
        if (modulate && p.post_weight && p.renormalize && norm > 0.f)
          for (int64_t j = 0; j < jend; ++j) out[j] /= norm;
      }
  }
}

}  // namespace mmattn
