// Taps: probability rows recomputed for chosen queries equal the materialised formulation's rows,
// with and without the saved LSE, with modulation; class mass and head mean agree with the fused pass.
#include "attention/taps.h"
#include "attention_ref.h"
#include "core/ops/concat.h"

using namespace mmattn;
using namespace mmattn::test;

namespace {
Tensor rows_of(const Tensor& probs, const std::vector<int64_t>& rows) {
  std::vector<Tensor> parts;
  for (int64_t r : rows) parts.push_back(probs.slice(2, r, r + 1));
  // [B, Hq, R, Lk]
  const int64_t B = probs.size(0), H = probs.size(1), L = probs.size(3), R = int64_t(rows.size());
  Tensor out = Tensor::empty({B, H, R, L}, DType::F32);
  for (int64_t r = 0; r < R; ++r) out.slice(2, r, r + 1).copy_from(parts[r]);
  return out;
}
}  // namespace

TEST(Taps, RowsMatchMaterialisedProbabilities) {
  const int64_t B = 2, Lq = 13, Lk = 40, Hq = 4, Hkv = 2, D = 64, C = 3;
  Tensor q = rand_tensor({B, Lq, Hq, D}, 21, -2.f, 2.f);
  Tensor k = rand_tensor({B, Lk, Hkv, D}, 22, -2.f, 2.f);
  Tensor v = rand_tensor({B, Lk, Hkv, D}, 23);
  std::vector<uint8_t> cls(size_t(B * Lk));
  for (size_t j = 0; j < cls.size(); ++j) cls[j] = uint8_t(j % C);
  HeadModulation m;
  m.key_class = Tensor::from_vector(cls, {B, Lk});
  m.num_classes = int(C);
  m.logit_abs_gain = rand_tensor({Hq, C}, 24, 0.f, 0.3f);
  m.post_weight = rand_tensor({Hq, C}, 25, 0.f, 2.f);
  m.first_modulated_row = 5;
  const std::vector<int64_t> rows = {0, 5, Lq - 1};
  for (bool with_mod : {false, true})
    for (bool renorm : {false, true})
      for (bool causal : {false, true}) {
        m.renormalize = renorm;
        AttentionOptions opt;
        opt.causal = causal;
        opt.mod = with_mod ? &m : nullptr;
        opt.k_lens = Tensor::from_vector(std::vector<int32_t>{40, 31}, {2});
        opt.return_lse = true;
        opt.return_class_mass = with_mod;
        NaiveResult n = naive_attention(q, k, v, opt);
        AttentionResult fused = attention(q, k, v, opt);
        Tensor q_rows = Tensor::empty({B, int64_t(rows.size()), Hq, D}, DType::F32);
        for (size_t r = 0; r < rows.size(); ++r)
          q_rows.slice(1, int64_t(r), int64_t(r) + 1).copy_from(q.slice(1, rows[r], rows[r] + 1));
        TapRequest req{rows, Lq, Tensor()};
        Tensor want = rows_of(n.probs, rows);
        EXPECT_LT(rel_err(attention_probs(q_rows, k, req, opt), want), 1e-5) << with_mod << renorm << causal;
        req.lse = rows_of(fused.lse.unsqueeze(-1), rows).squeeze(-1).contiguous();
        Tensor p = attention_probs(q_rows, k, req, opt);
        EXPECT_LT(rel_err(p, want), 1e-5) << "with lse";
        if (with_mod) {
          Tensor cm = class_mass(p, m.key_class, int(C));
          EXPECT_LT(rel_err(cm, rows_of(fused.class_mass.permute({0, 1, 2, 3}), rows)), 1e-5);
        }
        // The LSE straight from the fused result (a strided slice) for the last row.
        Tensor last = attention_probs(q.slice(1, Lq - 1, Lq), k, TapRequest{{Lq - 1}, Lq, fused.lse.slice(2, Lq - 1, Lq)},
                                      opt);
        EXPECT_LT(rel_err(last, rows_of(n.probs, {Lq - 1})), 1e-5) << "strided lse";
        Tensor hm = head_mean(p);
        EXPECT_EQ(hm.shape(), (Shape{B, int64_t(rows.size()), Lk}));
      }
}

TEST(Taps, BadRowsAreErrors) {
  Tensor q = rand_tensor({1, 1, 2, 64}, 1), k = rand_tensor({1, 5, 2, 64}, 2);
  EXPECT_THROW(attention_probs(q, k, TapRequest{{7}, 5, Tensor()}), ShapeError);
  EXPECT_THROW(attention_probs(q, k, TapRequest{{0, 1}, 5, Tensor()}), ShapeError);
  EXPECT_THROW(attention_probs(q, k, TapRequest{{0}, 5, Tensor::zeros({1, 2}, DType::F32)}), ShapeError);
  // At most kMaxTapRows rows per call; the error names 'rows'.
  const int64_t R = kMaxTapRows + 1;
  Tensor qr = rand_tensor({1, R, 2, 64}, 3);
  std::vector<int64_t> rows;
  for (int64_t r = 0; r < R; ++r) rows.push_back(r);
  try {
    attention_probs(qr, k, TapRequest{rows, R, Tensor()});
    ADD_FAILURE() << "no error for " << R << " rows";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("'rows'"), std::string::npos) << e.what();
  }
  // kMaxTapRows rows are fine.
  rows.pop_back();
  Tensor p = attention_probs(qr.slice(1, 0, R - 1), k, TapRequest{rows, R, Tensor()});
  EXPECT_EQ(p.shape(), (Shape{1, 2, R - 1, 5}));
}

// attention_tapped on the CPU: the attention result and the taps of the chosen rows, equal to the
// two calls; rows outside q and a null output are errors.
TEST(Taps, TappedAttentionMatchesSeparateCalls) {
  const int64_t B = 2, L = 37, Hq = 4, Hkv = 2, D = 64;
  Tensor q = rand_tensor({B, L, Hq, D}, 11), k = rand_tensor({B, L, Hkv, D}, 12), v = rand_tensor({B, L, Hkv, D}, 13);
  AttentionOptions opt;
  opt.causal = true;
  const std::vector<int64_t> rows = {3, L - 1};
  Tensor probs;
  const AttentionResult r = attention_tapped(q, k, v, rows, &probs, opt);
  EXPECT_EQ(r.out.to_floats(), attention(q, k, v, opt).out.to_floats());
  const Tensor want = attention_probs(concat({q.slice(1, 3, 4), q.slice(1, L - 1, L)}, 1), k, TapRequest{rows, L, Tensor()}, opt);
  EXPECT_EQ(probs.to_floats(), want.to_floats());
  // row 3 of a causal call sees keys 0..3 only
  const std::vector<float> p = probs.to_floats();
  for (int64_t j = 4; j < L; ++j) EXPECT_EQ(p[size_t(j)], 0.f) << "key " << j;
  EXPECT_THROW(attention_tapped(q, k, v, {L}, &probs, opt), ShapeError);
  EXPECT_THROW(attention_tapped(q, k, v, {}, &probs, opt), ShapeError);
  EXPECT_THROW(attention_tapped(q, k, v, rows, nullptr, opt), ShapeError);
}
