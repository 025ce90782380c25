#include "attention/attention.h"

#include <cmath>

#include "attention/attention_params.h"
#include "core/ops/dispatch.h"

namespace mmattn {

namespace {

constexpr const char* kOp = "attention";

bool supported_head_dim(int64_t d) { return d == 64 || d == 72 || d == 80 || d == 96 || d == 128; }

void check_mod_table(const Tensor& t, const char* name, const Shape& want, const Tensor& q) {
  if (!t.defined()) return;
  MMATTN_CHECK(t.dtype() == DType::F32 && t.shape() == want, ShapeError, kOp, ": modulation '", name, "' must be F32",
               shape_str(want), ", got ", t.desc());
  check_same_device(q, t, kOp, "q", name);
  check_contiguous(t, kOp, name);
}

void check_lens(const Tensor& t, const char* name, int64_t b, int64_t max_len, const Tensor& q) {
  if (!t.defined()) return;
  MMATTN_CHECK(t.dtype() == DType::I32 && t.dim() == 1 && t.size(0) == b, ShapeError, kOp, ": '", name,
               "' must be I32[", b, "], got ", t.desc());
  check_same_device(q, t, kOp, "q", name);
  check_contiguous(t, kOp, name);
  if (!t.is_cuda()) {  // device lengths are trusted (checking them would need a sync)
    const int32_t* p = t.data<int32_t>();
    for (int64_t i = 0; i < b; ++i)
      MMATTN_CHECK(p[i] >= 0 && p[i] <= max_len, ShapeError, kOp, ": ", name, "[", i, "] = ", p[i],
                   " is outside [0, ", max_len, "]");
  }
}

}  // namespace

AttentionParams build_attention_params(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt,
                                       int64_t lq_total) {
  check_dim(q, 4, kOp, "q");
  check_dim(k, 4, kOp, "k");
  check_dim(v, 4, kOp, "v");
  check_float(q, kOp, "q");
  MMATTN_CHECK(k.dtype() == q.dtype() && v.dtype() == q.dtype(), ShapeError, kOp, ": q, k, v dtypes differ: q ",
               q.desc(), ", k ", k.desc(), ", v ", v.desc());
  check_same_device(q, k, kOp, "q", "k");
  check_same_device(q, v, kOp, "q", "v");
  check_cpu_f32(q, kOp, "q");
  MMATTN_CHECK(!q.is_cuda() || q.dtype() != DType::F32, ShapeError, kOp,
               ": the CUDA kernels take bf16/f16 (f32 accumulation); q is ", q.desc());
  const int64_t B = q.size(0), Lq = q.size(1), Hq = q.size(2), D = q.size(3);
  const int64_t Lk = k.size(1), Hkv = k.size(2);
  MMATTN_CHECK(k.shape() == v.shape(), ShapeError, kOp, ": k ", k.shape_str(), " and v ", v.shape_str(),
               " must have the same shape");
  MMATTN_CHECK(k.size(0) == B && k.size(3) == D, ShapeError, kOp, ": q ", q.shape_str(), " [B, Lq, Hq, D] and k ",
               k.shape_str(), " [B, Lk, Hkv, D] disagree on B or D");
  MMATTN_CHECK(supported_head_dim(D), UnsupportedError, kOp, ": head_dim ", D,
               " is not supported (64, 72, 80, 96, 128)");
  MMATTN_CHECK(Hkv >= 1 && Hq % Hkv == 0, ShapeError, kOp, ": ", Hq, " query heads are not a multiple of ", Hkv,
               " key/value heads");
  MMATTN_CHECK(B >= 1 && Lq >= 1 && Lk >= 1, ShapeError, kOp, ": empty sequence: q ", q.shape_str(), ", k ",
               k.shape_str());
  for (const Tensor* t : {&q, &k, &v})
    MMATTN_CHECK(t->stride(3) == 1, ShapeError, kOp, ": the head dim of ", t->desc(), " must be dense (stride 1)");
  check_lens(opt.k_lens, "k_lens", B, Lk, q);
  check_lens(opt.q_lens, "q_lens", B, lq_total, q);

  AttentionParams p;
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.q_sb = q.stride(0), p.q_sl = q.stride(1), p.q_sh = q.stride(2);
  p.k_sb = k.stride(0), p.k_sl = k.stride(1), p.k_sh = k.stride(2);
  p.v_sb = v.stride(0), p.v_sl = v.stride(1), p.v_sh = v.stride(2);
  p.batch = int(B), p.lq = int(Lq), p.lk = int(Lk), p.hq = int(Hq), p.hkv = int(Hkv), p.d = int(D);
  p.scale = opt.scale > 0.f ? opt.scale : 1.f / std::sqrt(float(D));
  p.causal = opt.causal;
  p.k_lens = opt.k_lens.defined() ? opt.k_lens.data<int32_t>() : nullptr;
  p.q_lens = opt.q_lens.defined() ? opt.q_lens.data<int32_t>() : nullptr;
  p.dtype = q.dtype();

  if (const HeadModulation* m = opt.mod) {
    const bool any_class = m->logit_abs_gain.defined() || m->logit_bias.defined() || m->post_weight.defined() ||
                           opt.return_class_mass;
    if (any_class) {
      MMATTN_CHECK(m->key_class.defined(), ShapeError, kOp,
                   ": modulation by class (or class mass) needs 'key_class' U8[B, Lk]");
      MMATTN_CHECK(m->num_classes >= 1 && m->num_classes <= kMaxKeyClasses, ShapeError, kOp, ": num_classes ",
                   m->num_classes, " must be in [1, ", kMaxKeyClasses, "]");
    }
    const int64_t C = m->num_classes;
    if (m->key_class.defined()) {
      MMATTN_CHECK(m->key_class.dtype() == DType::U8 && m->key_class.dim() == 2 && m->key_class.size(0) == B &&
                       m->key_class.size(1) == Lk && m->key_class.stride(1) == 1,
                   ShapeError, kOp, ": 'key_class' must be U8[", B, ", ", Lk, "] with dense rows, got ",
                   m->key_class.desc());
      check_same_device(q, m->key_class, kOp, "q", "key_class");
      if (!m->key_class.is_cuda()) {
        const uint8_t* kc = m->key_class.data<uint8_t>();
        for (int64_t b = 0; b < B; ++b)
          for (int64_t j = 0; j < Lk; ++j)
            MMATTN_CHECK(kc[b * m->key_class.stride(0) + j] < C, ShapeError, kOp, ": key_class[", b, ", ", j,
                         "] = ", int(kc[b * m->key_class.stride(0) + j]), " >= num_classes ", C);
      }
      p.key_class = m->key_class.data<uint8_t>();
      p.key_class_sb = m->key_class.stride(0);
      p.num_classes = int(C);
    }
    check_mod_table(m->logit_abs_gain, "logit_abs_gain", {Hq, C}, q);
    check_mod_table(m->logit_bias, "logit_bias", {Hq, C}, q);
    check_mod_table(m->post_weight, "post_weight", {Hq, C}, q);
    check_mod_table(m->head_gain, "head_gain", {Hq}, q);
    MMATTN_CHECK(m->first_modulated_row >= 0, ShapeError, kOp, ": first_modulated_row must be >= 0");
    p.logit_abs_gain = m->logit_abs_gain.defined() ? m->logit_abs_gain.data<float>() : nullptr;
    p.logit_bias = m->logit_bias.defined() ? m->logit_bias.data<float>() : nullptr;
    p.post_weight = m->post_weight.defined() ? m->post_weight.data<float>() : nullptr;
    p.renormalize = m->renormalize;
    p.head_gain = m->head_gain.defined() ? m->head_gain.data<float>() : nullptr;
    p.first_modulated_row = m->first_modulated_row;
  }
  p.resolve_output_strides();
  return p;
}

AttentionResult attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt) {
  return attention_with_taps(q, k, v, opt, nullptr);
}

AttentionResult attention_with_taps(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opt,
                                    PrefillTaps* taps) {
  AttentionParams p = build_attention_params(q, k, v, opt, q.dim() == 4 ? q.size(1) : 0);
  p.taps = taps;
  const int64_t B = p.batch, Lq = p.lq, Hq = p.hq, D = p.d;
  AttentionResult r;
  r.out = Tensor::empty({B, Lq, Hq, D}, q.dtype(), q.device());
  p.out = r.out.data_ptr();
  if (opt.return_lse) {
    r.lse = Tensor::empty({B, Hq, Lq}, DType::F32, q.device());
    p.lse = r.lse.data<float>();
  }
  if (opt.return_class_mass) {
    MMATTN_CHECK(opt.mod && opt.mod->key_class.defined(), ShapeError, kOp,
                 ": return_class_mass needs mod->key_class");
    r.class_mass = Tensor::empty({B, Hq, Lq, int64_t(p.num_classes)}, DType::F32, q.device());
    p.class_mass = r.class_mass.data<float>();
  }
  if (q.is_cuda()) {
    MMATTN_IF_CUDA(attention_cuda(p, current_stream()));
  } else {
    attention_cpu(p);
  }
  return r;
}

}  // namespace mmattn
