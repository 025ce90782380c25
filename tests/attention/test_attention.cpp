// The CPU attention reference against hand-worked values and an independent materialised
// formulation (matmul + softmax ops), over GQA, causal, padding, strides and modulation.
#include "attention/attention.h"
#include "attention_ref.h"

using namespace mmattn;
using namespace mmattn::test;

namespace {


struct Case {
  int64_t b, lq, lk, hq, hkv, d;
  bool causal;
  std::vector<int32_t> k_lens, q_lens;
};

void expect_matches_naive(const Tensor& q, const Tensor& k, const Tensor& v, AttentionOptions opt,
                          const std::string& what) {
  opt.return_lse = true;
  opt.return_class_mass = opt.mod && opt.mod->key_class.defined();
  AttentionResult r = attention(q, k, v, opt);
  NaiveResult n = naive_attention(q, k, v, opt);
  EXPECT_LT(rel_err(r.out, n.out), 1e-5) << what;
  // LSE: compare finite entries; -inf where the row sees nothing
  auto a = r.lse.to_floats(), b = n.lse.to_floats();
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isinf(b[i])) EXPECT_TRUE(std::isinf(a[i]) && a[i] < 0) << what << " lse " << i;
    else EXPECT_NEAR(a[i], b[i], 1e-4 * (1 + std::fabs(b[i]))) << what << " lse " << i;
  }
  if (opt.return_class_mass) {
    // class mass = probs summed by class
    const int64_t B = q.size(0), Hq = q.size(2), Lq = q.size(1), Lk = k.size(1), C = opt.mod->num_classes;
    auto pr = n.probs.to_floats();
    auto kc = opt.mod->key_class.to_floats();
    std::vector<float> want(size_t(B * Hq * Lq * C), 0.f);
    for (int64_t bb = 0; bb < B; ++bb)
      for (int64_t h = 0; h < Hq; ++h)
        for (int64_t i = 0; i < Lq; ++i)
          for (int64_t j = 0; j < Lk; ++j)
            want[((bb * Hq + h) * Lq + i) * C + int64_t(kc[bb * Lk + j])] += pr[((bb * Hq + h) * Lq + i) * Lk + j];
    EXPECT_LT(rel_err(r.class_mass, Tensor::from_floats(want, {B, Hq, Lq, C})), 1e-5) << what;
  }
}

}  // namespace

TEST(Attention, HandWorkedTwoKeys) {
  const int64_t D = 64;
  std::vector<float> q(D, 0.f), k(2 * D, 0.f), v(2 * D);
  q[0] = 8.f;  // z0 = 8 * 1 / sqrt(64) = 1, z1 = 0
  k[0] = 1.f;
  for (int64_t d = 0; d < D; ++d) v[d] = 1.f, v[D + d] = 2.f;
  AttentionOptions opt;
  opt.return_lse = true;
  AttentionResult r = attention(Tensor::from_floats(q, {1, 1, 1, D}), Tensor::from_floats(k, {1, 2, 1, D}),
                                Tensor::from_floats(v, {1, 2, 1, D}), opt);
  const double p0 = std::exp(1.0) / (std::exp(1.0) + 1.0);
  EXPECT_NEAR(r.out.to_floats()[5], p0 * 1 + (1 - p0) * 2, 1e-6);
  EXPECT_NEAR(r.lse.item(), std::log(std::exp(1.0) + 1.0), 1e-6);
}

TEST(Attention, MatchesMaterialisedFormulation) {
  const std::vector<Case> cases = {
      {1, 1, 1, 1, 1, 64, false, {}, {}},        {1, 3, 17, 4, 2, 64, false, {}, {}},
      {2, 17, 17, 4, 1, 128, true, {}, {}},      {2, 5, 33, 6, 3, 80, true, {}, {}},
      {3, 17, 40, 4, 4, 72, false, {40, 7, 1}, {}}, {2, 9, 9, 2, 2, 96, true, {9, 4}, {9, 3}},
      {1, 100, 100, 2, 1, 64, true, {}, {}},     {2, 1, 300, 8, 2, 128, true, {300, 123}, {}},
  };
  uint64_t seed = 1;
  for (const Case& c : cases) {
    Tensor q = rand_tensor({c.b, c.lq, c.hq, c.d}, seed++, -2.f, 2.f);
    Tensor k = rand_tensor({c.b, c.lk, c.hkv, c.d}, seed++, -2.f, 2.f);
    Tensor v = rand_tensor({c.b, c.lk, c.hkv, c.d}, seed++);
    AttentionOptions opt;
    opt.causal = c.causal;
    if (!c.k_lens.empty()) opt.k_lens = i32(c.k_lens);
    if (!c.q_lens.empty()) opt.q_lens = i32(c.q_lens);
    expect_matches_naive(q, k, v, opt, str_cat("case b", c.b, " lq", c.lq, " lk", c.lk, " hq", c.hq, " hkv", c.hkv,
                                               " d", c.d, c.causal ? " causal" : ""));
  }
}

TEST(Attention, StridedInputsFromAFusedProjection) {
  // qkv [B, L, 3, H, D] as a fused projection would produce; q/k/v are strided views.
  Tensor qkv = rand_tensor({2, 11, 3, 4, 64}, 9);
  Tensor q = qkv.select(2, 0), k = qkv.select(2, 1), v = qkv.select(2, 2);
  AttentionOptions opt;
  opt.causal = true;
  AttentionResult a = attention(q, k, v, opt);
  AttentionResult b = attention(q.contiguous(), k.contiguous(), v.contiguous(), opt);
  EXPECT_EQ(max_abs_diff(a.out, b.out), 0.0);
}

TEST(Attention, ModulationMatchesMaterialisedFormulation) {
  const int64_t B = 2, Lq = 7, Lk = 29, Hq = 4, Hkv = 2, D = 64, C = 3;
  Tensor q = rand_tensor({B, Lq, Hq, D}, 11, -2.f, 2.f);
  Tensor k = rand_tensor({B, Lk, Hkv, D}, 12, -2.f, 2.f);
  Tensor v = rand_tensor({B, Lk, Hkv, D}, 13);
  std::vector<uint8_t> cls(size_t(B * Lk));
  for (size_t j = 0; j < cls.size(); ++j) cls[j] = uint8_t((j * 7 + j / 5) % C);
  HeadModulation m;
  m.key_class = Tensor::from_vector(cls, {B, Lk});
  m.num_classes = int(C);
  m.logit_abs_gain = rand_tensor({Hq, C}, 14, 0.f, 0.5f);
  m.logit_bias = rand_tensor({Hq, C}, 15);
  m.post_weight = rand_tensor({Hq, C}, 16, 0.f, 2.f);
  m.head_gain = rand_tensor({Hq}, 17, 0.5f, 2.f);
  for (bool renorm : {false, true})
    for (int64_t first : {int64_t(0), Lq - 1})
      for (bool causal : {false, true}) {
        m.renormalize = renorm;
        m.first_modulated_row = first;
        AttentionOptions opt;
        opt.causal = causal;
        opt.mod = &m;
        opt.k_lens = i32({29, 20});
        expect_matches_naive(q, k, v, opt, str_cat("renorm ", renorm, " first ", first, " causal ", causal));
      }
  // each feature alone, and AD-HH-style zeroing of one class without renormalisation
  HeadModulation z;
  z.key_class = m.key_class;
  z.num_classes = int(C);
  z.post_weight = Tensor::full({Hq, C}, 1.f, DType::F32);
  z.post_weight.data<float>()[1 * C + 0] = 0.f;  // head 1, class 0 zeroed
  AttentionOptions opt;
  opt.mod = &z;
  expect_matches_naive(q, k, v, opt, "AD-HH zeroing");
  // neutral modulation equals none
  HeadModulation neutral;
  neutral.key_class = m.key_class;
  neutral.num_classes = int(C);
  neutral.logit_abs_gain = Tensor::zeros({Hq, C}, DType::F32);
  neutral.post_weight = Tensor::full({Hq, C}, 1.f, DType::F32);
  neutral.renormalize = true;
  neutral.head_gain = Tensor::full({Hq}, 1.f, DType::F32);
  opt.mod = &neutral;
  EXPECT_LT(rel_err(attention(q, k, v, opt).out, attention(q, k, v).out), 1e-6);
}

TEST(Attention, RowsThatSeeNothing) {
  Tensor q = rand_tensor({1, 3, 2, 64}, 1), k = rand_tensor({1, 4, 2, 64}, 2), v = rand_tensor({1, 4, 2, 64}, 3);
  AttentionOptions opt;
  opt.k_lens = i32({0});
  opt.return_lse = true;
  AttentionResult r = attention(q, k, v, opt);
  for (float x : r.out.to_floats()) EXPECT_EQ(x, 0.f);
  for (float x : r.lse.to_floats()) EXPECT_TRUE(std::isinf(x) && x < 0);
  opt.k_lens = Tensor();
  opt.q_lens = i32({1});
  r = attention(q, k, v, opt);
  auto o = r.out.to_floats();
  for (size_t i = 2 * 64; i < o.size(); ++i) EXPECT_EQ(o[i], 0.f);  // rows 1, 2 padded
}

TEST(Attention, BadInputNamesTheArgument) {
  Tensor q = rand_tensor({1, 3, 4, 64}, 1), k = rand_tensor({1, 5, 2, 64}, 2), v = rand_tensor({1, 5, 2, 64}, 3);
  auto msg = [](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(msg([&] { attention(q, k, rand_tensor({1, 6, 2, 64}, 4)); }).find("same shape"), std::string::npos);
  EXPECT_NE(msg([&] { attention(q, rand_tensor({1, 5, 3, 64}, 4), rand_tensor({1, 5, 3, 64}, 4)); })
                .find("not a multiple of 3"),
            std::string::npos);
  EXPECT_NE(msg([&] { attention(rand_tensor({1, 3, 4, 100}, 1), rand_tensor({1, 5, 2, 100}, 1),
                                rand_tensor({1, 5, 2, 100}, 1)); })
                .find("head_dim 100"),
            std::string::npos);
  EXPECT_NE(msg([&] { attention(rand_tensor({1, 0, 4, 64}, 1), k, v); }).find("empty sequence"), std::string::npos);
  EXPECT_NE(msg([&] { attention(q.to(DType::BF16), k, v); }).find("dtypes differ"), std::string::npos);
  EXPECT_NE(msg([&] { attention(q, k, v.to(DType::I32)); }).find("dtypes differ"), std::string::npos);
  AttentionOptions o;
  o.k_lens = i32({9});
  EXPECT_NE(msg([&] { attention(q, k, v, o); }).find("k_lens[0] = 9"), std::string::npos);
  HeadModulation m;
  m.key_class = Tensor::from_vector(std::vector<uint8_t>{0, 1, 2, 0, 1}, {1, 5});
  m.num_classes = 2;
  m.logit_bias = Tensor::zeros({4, 2}, DType::F32);
  o = {};
  o.mod = &m;
  EXPECT_NE(msg([&] { attention(q, k, v, o); }).find("key_class[0, 2] = 2"), std::string::npos);
  m.key_class = Tensor::from_vector(std::vector<uint8_t>{0, 1, 1, 0, 1}, {1, 5});
  m.logit_bias = Tensor::zeros({3, 2}, DType::F32);
  EXPECT_NE(msg([&] { attention(q, k, v, o); }).find("'logit_bias' must be F32[4, 2]"), std::string::npos);
}
