// The CUDA flash prefill kernel against the CPU reference attention() on f32 copies of the same
// rounded inputs: awkward sizes, every head dim, GQA/MQA, causal (Lq == Lk, Lq < Lk, Lq > Lk),
// k_lens/q_lens, strided and misaligned views, LSE, modulation and class mass, bf16 and f16.
// The prefill kernel is forced for every shape (also Lq <= 4, which the dispatcher would send to
// the decode kernel); both the Hopper fast path (when the build has it) and the general path run,
// with and without modulation (class mass is the general path's: modulated calls on the fast path
// run without it).
#include <algorithm>
#include <cmath>

#include "attention/attention.h"
#include "attention/attention_kernels.h"
#include "attention/attention_params.h"
#include "attention_cuda_util.h"

using namespace mmattn;
using namespace mmattn::test;

namespace {

// Forces a kernel for the scope of a test.



HeadModulation to_gpu(const HeadModulation& m) {
  HeadModulation g = m;
  g.key_class = gpu(m.key_class);
  g.logit_abs_gain = gpu(m.logit_abs_gain);
  g.logit_bias = gpu(m.logit_bias);
  g.post_weight = gpu(m.post_weight);
  g.head_gain = gpu(m.head_gain);
  return g;
}

// Runs CPU (f32) and CUDA (dt) on the same rounded values and compares out, LSE and class mass.
// q/k/v: f32 CPU tensors already rounded to dt; gq/gk/gv: the device tensors (any strides).
// want_lse = false asks for no LSE (the fast path then folds renormalised post weights into the
// logits).
void expect_match(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& gq, const Tensor& gk,
                  const Tensor& gv, DType dt, AttentionOptions opt, const std::string& what, bool want_mass = true,
                  bool want_lse = true) {
  opt.return_lse = want_lse;
  opt.return_class_mass = want_mass && opt.mod && opt.mod->key_class.defined();
  AttentionResult c = attention(q, k, v, opt);
  AttentionOptions gopt = opt;
  gopt.k_lens = gpu(opt.k_lens);
  gopt.q_lens = gpu(opt.q_lens);
  HeadModulation gm;
  if (opt.mod) {
    gm = to_gpu(*opt.mod);
    gopt.mod = &gm;
  }
  AttentionResult g = attention(gq, gk, gv, gopt);
  ASSERT_EQ(g.out.dtype(), dt) << what;
  EXPECT_LT(rel_err(g.out, c.out), out_tol(dt)) << what;
  ASSERT_EQ(g.lse.defined(), want_lse) << what;
  if (want_lse) {
    const auto gl = g.lse.to_floats(), cl = c.lse.to_floats();
    ASSERT_EQ(gl.size(), cl.size()) << what;
    int bad = 0;
    for (size_t i = 0; i < cl.size() && bad < 5; ++i) {
      const bool ok = std::isinf(cl[i]) ? (std::isinf(gl[i]) && gl[i] < 0) : std::fabs(gl[i] - cl[i]) < 1e-2f;
      if (!ok) ++bad;
      EXPECT_TRUE(ok) << what << " lse[" << i << "] gpu " << gl[i] << " cpu " << cl[i];
    }
  }
  if (opt.return_class_mass) {
    const auto gc = g.class_mass.to_floats(), cc = c.class_mass.to_floats();
    ASSERT_EQ(gc.size(), cc.size()) << what;
    double worst = 0;
    for (size_t i = 0; i < cc.size(); ++i)
      worst = std::isfinite(gc[i]) ? std::max(worst, double(std::fabs(gc[i] - cc[i]))) : INFINITY;
    EXPECT_LT(worst, 5e-3) << what << " class_mass";
  }
}

void expect_match(const Tensor& q, const Tensor& k, const Tensor& v, DType dt, const AttentionOptions& opt,
                  const std::string& what, bool want_mass = true, bool want_lse = true) {
  expect_match(q, k, v, q.to(Device::cuda(), dt), k.to(Device::cuda(), dt), v.to(Device::cuda(), dt), dt, opt,
               what, want_mass, want_lse);
}

// Modulated calls on both prefill paths: 1 (auto: the Hopper fast path when the build has it,
// which needs no class mass) and 3 (the general path, with class mass).
void expect_match_both_paths(const Tensor& q, const Tensor& k, const Tensor& v, DType dt, const AttentionOptions& opt,
                             const std::string& what, bool want_lse = true) {
  for (int which : {1, 3}) {
    set_attention_kernel_override(which);
    expect_match(q, k, v, dt, opt, what + (which == 3 ? " general" : " fast"), which == 3, want_lse);
  }
  set_attention_kernel_override(0);
}

struct Shape6 {
  int64_t b, lq, lk, hq, hkv;
  bool causal;
};

class AttentionCuda : public ::testing::TestWithParam<DType> {};

}  // namespace

TEST_P(AttentionCuda, AwkwardSizesEveryHeadDim) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  const std::vector<Shape6> shapes = {
      {1, 1, 1, 1, 1, false},      {2, 3, 17, 4, 2, false},     {1, 17, 3, 4, 4, true},
      {2, 64, 64, 4, 1, true},     {1, 65, 127, 8, 2, false},   {1, 127, 65, 2, 2, true},
      {1, 200, 1000, 4, 1, true},  {1, 1000, 200, 2, 1, false}, {1, 127, 127, 4, 4, true},
      {3, 17, 200, 6, 3, false},   {1, 1, 1000, 8, 2, true},    {1, 3, 65, 8, 8, true},
  };
  uint64_t seed = 100;
  for (int64_t d : {64, 72, 80, 96, 128})
    for (const Shape6& s : shapes) {
      Tensor q = round_to(rand_tensor({s.b, s.lq, s.hq, d}, seed++, -2.f, 2.f), dt);
      Tensor k = round_to(rand_tensor({s.b, s.lk, s.hkv, d}, seed++, -2.f, 2.f), dt);
      Tensor v = round_to(rand_tensor({s.b, s.lk, s.hkv, d}, seed++), dt);
      AttentionOptions opt;
      opt.causal = s.causal;
      const std::string what = str_cat(dtype_name(dt), " d", d, " b", s.b, " lq", s.lq, " lk", s.lk, " hq", s.hq,
                                       " hkv", s.hkv, s.causal ? " causal" : "");
      // 1: the prefill kernel's fastest eligible path (Hopper builds: the wgmma kernel); 3: its
      // general path
      for (int which : {1, 3}) {
        KernelOverride force(which);
        expect_match(q, k, v, dt, opt, what + (which == 3 ? " general" : ""));
      }
    }
}

TEST_P(AttentionCuda, LargeTiles) {
  // several full key tiles with causal diagonals inside them, and one 1000 x 1000 case
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  uint64_t seed = 300;
  for (auto [d, lq, lk, causal] : std::vector<std::tuple<int64_t, int64_t, int64_t, bool>>{
           {128, 1000, 1000, true}, {128, 1000, 1000, false}, {64, 1000, 1000, true}, {96, 513, 1000, true}}) {
    Tensor q = round_to(rand_tensor({1, lq, 2, d}, seed++, -2.f, 2.f), dt);
    Tensor k = round_to(rand_tensor({1, lk, 1, d}, seed++, -2.f, 2.f), dt);
    Tensor v = round_to(rand_tensor({1, lk, 1, d}, seed++), dt);
    AttentionOptions opt;
    opt.causal = causal;
    for (int which : {1, 3}) {
      KernelOverride force(which);
      expect_match(q, k, v, dt, opt,
                   str_cat(dtype_name(dt), " d", d, " lq", lq, " lk", lk, causal ? " causal" : "", " path ", which));
    }
  }
}

TEST_P(AttentionCuda, PaddingAndRowsThatSeeNothing) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  KernelOverride force(1);
  struct Case {
    int64_t lq, lk, d;
    bool causal;
    std::vector<int32_t> k_lens, q_lens;
  };
  const std::vector<Case> cases = {
      {17, 200, 64, false, {200, 7, 0}, {}},        // a sequence with no keys
      {65, 65, 128, true, {65, 40, 3}, {65, 40, 1}},  // padded rows and keys, bottom-right causal
      {127, 127, 72, true, {100, 127, 0}, {120, 5, 127}},
      {200, 64, 96, true, {}, {}},                  // Lq > Lk: the first 136 rows see nothing
      {64, 3, 80, true, {3, 2, 1}, {64, 64, 2}},
      {3, 1000, 128, true, {1000, 999, 65}, {3, 1, 2}},
      {1000, 200, 128, false, {200, 129, 128}, {1000, 999, 1}},
      {130, 300, 128, true, {300, 130, 129}, {130, 1, 128}},
  };
  uint64_t seed = 500;
  for (const Case& c : cases) {
    const int64_t B = 3;
    Tensor q = round_to(rand_tensor({B, c.lq, 4, c.d}, seed++, -2.f, 2.f), dt);
    Tensor k = round_to(rand_tensor({B, c.lk, 2, c.d}, seed++, -2.f, 2.f), dt);
    Tensor v = round_to(rand_tensor({B, c.lk, 2, c.d}, seed++), dt);
    AttentionOptions opt;
    opt.causal = c.causal;
    if (!c.k_lens.empty()) opt.k_lens = i32(c.k_lens);
    if (!c.q_lens.empty()) opt.q_lens = i32(c.q_lens);
    expect_match(q, k, v, dt, opt,
                 str_cat(dtype_name(dt), " d", c.d, " lq", c.lq, " lk", c.lk, c.causal ? " causal" : "", " padded"));
  }
}

TEST_P(AttentionCuda, StridedAndMisalignedViews) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  KernelOverride force(1);
  uint64_t seed = 700;
  for (int64_t d : {64, 72, 80, 96, 128})
    for (auto [B, L, H] : std::vector<std::array<int64_t, 3>>{{2, 65, 4}, {1, 200, 2}, {1, 3, 8}}) {
      const std::string what = str_cat(dtype_name(dt), " d", d, " b", B, " l", L, " h", H);
      // a fused projection qkv [B, L, 3, H, D]: q/k/v are 16-byte aligned strided views
      Tensor qkv = round_to(rand_tensor({B, L, 3, H, d}, seed++, -2.f, 2.f), dt);
      Tensor gqkv = qkv.to(Device::cuda(), dt);
      AttentionOptions opt;
      opt.causal = true;
      expect_match(qkv.select(2, 0), qkv.select(2, 1), qkv.select(2, 2), gqkv.select(2, 0), gqkv.select(2, 1),
                   gqkv.select(2, 2), dt, opt, what + " fused qkv");
      // rows only 2-byte aligned: odd row strides and an odd element offset
      Tensor wide = round_to(rand_tensor({B, L, H, 3 * d + 1}, seed++, -2.f, 2.f), dt);
      Tensor gwide = wide.to(Device::cuda(), dt);
      auto view = [&](const Tensor& t, int i) { return t.slice(3, 1 + i * d, 1 + (i + 1) * d); };
      opt.causal = false;
      expect_match(view(wide, 0), view(wide, 1), view(wide, 2), view(gwide, 0), view(gwide, 1), view(gwide, 2), dt,
                   opt, what + " misaligned");
      // GQA with a transposed-head layout: q [B, H, L, D] viewed as [B, L, H, D]
      Tensor qt = round_to(rand_tensor({B, 2 * H, L, d}, seed++, -2.f, 2.f), dt);
      Tensor kv = round_to(rand_tensor({B, L, 2, H, d}, seed++, -2.f, 2.f), dt);
      Tensor gqt = qt.to(Device::cuda(), dt), gkv = kv.to(Device::cuda(), dt);
      opt.causal = true;
      expect_match(qt.transpose(1, 2), kv.select(2, 0), kv.select(2, 1), gqt.transpose(1, 2), gkv.select(2, 0),
                   gkv.select(2, 1), dt, opt, what + " transposed q, gqa");
    }
}

TEST_P(AttentionCuda, ModulationEveryFeature) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  KernelOverride force(1);
  uint64_t seed = 900;
  for (auto [Lq, Lk, D, C] : std::vector<std::array<int64_t, 4>>{{7, 29, 64, 3},
                                                                  {65, 200, 128, 4},
                                                                  {130, 130, 72, 2},
                                                                  {1, 1000, 96, 3},
                                                                  {200, 17, 80, 1},
                                                                  {300, 700, 128, 3}}) {
    const int64_t B = 2, Hq = 4, Hkv = 2;
    Tensor q = round_to(rand_tensor({B, Lq, Hq, D}, seed++, -2.f, 2.f), dt);
    Tensor k = round_to(rand_tensor({B, Lk, Hkv, D}, seed++, -2.f, 2.f), dt);
    Tensor v = round_to(rand_tensor({B, Lk, Hkv, D}, seed++), dt);
    std::vector<uint8_t> cls(size_t(B * Lk));
    for (size_t j = 0; j < cls.size(); ++j) cls[j] = uint8_t((j * 7 + j / 5) % C);
    HeadModulation m = random_modulation(cls, B, Lk, Hq, C, seed);
    const std::string shape = str_cat(dtype_name(dt), " lq", Lq, " lk", Lk, " d", D, " C", C);
    for (bool renorm : {false, true})
      for (int64_t first : {int64_t(0), Lq - 1, Lq / 2})
        for (bool causal : {false, true}) {
          m.renormalize = renorm;
          m.first_modulated_row = first;
          AttentionOptions opt;
          opt.causal = causal;
          opt.mod = &m;
          opt.k_lens = i32({int32_t(Lk), int32_t(std::max<int64_t>(1, Lk * 2 / 3))});
          const std::string what = str_cat(shape, " renorm ", renorm, " first ", first, " causal ", causal);
          expect_match_both_paths(q, k, v, dt, opt, what);
          if (renorm) expect_match_both_paths(q, k, v, dt, opt, what + " no lse", false);
        }
    // each feature alone
    auto alone = [&](auto set, const char* name) {
      HeadModulation z;
      z.key_class = m.key_class;
      z.num_classes = int(C);
      set(z);
      AttentionOptions opt;
      opt.mod = &z;
      opt.causal = true;
      expect_match_both_paths(q, k, v, dt, opt, str_cat(shape, " only ", name));
      set_attention_kernel_override(1);  // class mass requested: the auto path falls back to general
      expect_match(q, k, v, dt, opt, str_cat(shape, " only ", name, " + class mass"));
    };
    alone([&](HeadModulation& z) { z.logit_abs_gain = m.logit_abs_gain; }, "abs gain");
    alone([&](HeadModulation& z) { z.logit_bias = m.logit_bias; }, "bias");
    alone([&](HeadModulation& z) { z.post_weight = m.post_weight; }, "post weight");
    alone([&](HeadModulation& z) { z.post_weight = m.post_weight, z.renormalize = true; }, "post weight renorm");
    // renormalised without LSE: the fast path folds log2 w into the logits; a zero weight drops a
    // class (log2 0 = -inf), a negative one keeps the weights out of the logits
    for (float w0 : {0.f, -0.25f}) {
      HeadModulation z;
      z.key_class = m.key_class;
      z.num_classes = int(C);
      z.logit_abs_gain = m.logit_abs_gain;
      z.post_weight = Tensor::full({Hq, C}, 1.5f, DType::F32);
      z.post_weight.data<float>()[1 * C + 0] = w0;
      z.renormalize = true;
      AttentionOptions opt;
      opt.mod = &z;
      opt.causal = true;
      expect_match_both_paths(q, k, v, dt, opt, str_cat(shape, " renorm, class 0 weight ", w0, ", no lse"), false);
    }
    alone([&](HeadModulation& z) { z.head_gain = m.head_gain; }, "head gain");
    alone([](HeadModulation&) {}, "class mass");
    // AD-HH zeroing of one class (head 1, class 0) without renormalisation
    alone([&](HeadModulation& z) {
      z.post_weight = Tensor::full({Hq, C}, 1.f, DType::F32);
      z.post_weight.data<float>()[1 * C + 0] = 0.f;
    }, "AD-HH zeroing");
    // head gain alone without key classes (MOD kernel without classes)
    HeadModulation hg;
    hg.head_gain = m.head_gain;
    AttentionOptions opt;
    opt.mod = &hg;
    expect_match_both_paths(q, k, v, dt, opt, shape + " head gain, no classes");
    set_attention_kernel_override(1);
  }
}

// PAI during prefill: modulation of the last row only (and of a row in the middle of a warpgroup),
// several key tiles, causal, with padding; rows below first_modulated_row must stay plain.
TEST_P(AttentionCuda, ModulationLastRowsLongSequence) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  uint64_t seed = 1100;
  const int64_t B = 2, L = 640, Hq = 4, Hkv = 2, D = 128, C = 3;
  Tensor q = round_to(rand_tensor({B, L, Hq, D}, seed++, -2.f, 2.f), dt);
  Tensor k = round_to(rand_tensor({B, L, Hkv, D}, seed++, -2.f, 2.f), dt);
  Tensor v = round_to(rand_tensor({B, L, Hkv, D}, seed++), dt);
  std::vector<uint8_t> cls(size_t(B * L));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < L; ++j) cls[size_t(b * L + j)] = uint8_t(j < 35 ? 0 : j < 611 - 50 * b ? 1 : 2);
  HeadModulation m;
  m.key_class = Tensor::from_vector(cls, {B, L});
  m.num_classes = int(C);
  m.logit_abs_gain = rand_tensor({Hq, C}, seed++, -0.5f, 0.5f);
  m.logit_bias = rand_tensor({Hq, C}, seed++, -1.f, 1.f);
  m.post_weight = rand_tensor({Hq, C}, seed++, 0.f, 2.f);
  m.head_gain = rand_tensor({Hq}, seed++, 0.5f, 2.f);
  for (int64_t first : {L - 1, int64_t(300), int64_t(577)})
    for (bool renorm : {false, true})
      for (bool padded : {false, true}) {
        m.first_modulated_row = first;
        m.renormalize = renorm;
        AttentionOptions opt;
        opt.causal = true;
        opt.mod = &m;
        if (padded) opt.k_lens = i32({int32_t(L), int32_t(L - 77)}), opt.q_lens = i32({int32_t(L), int32_t(L - 77)});
        const std::string what =
            str_cat(dtype_name(dt), " L", L, " first ", first, " renorm ", renorm, " padded ", padded);
        expect_match_both_paths(q, k, v, dt, opt, what);
        if (renorm) expect_match_both_paths(q, k, v, dt, opt, what + " no lse", false);
      }
}

// The split PAI route (forced: override 4): last 1-3 rows modulated -> plain prefill + the
// modulated decode kernel over the tail rows, written through the output strides. Variants 0-2
// (no k_lens, or no causal mask) run the two at once (prefill over the first rows and the keys they
// see, decode on the side stream); variant 3 with k_lens (b = 2) in sequence (prefill over every
// row, the decode overwriting the tail).
TEST_P(AttentionCuda, SplitTailRouteMatchesReference) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  KernelOverride force(4);  // the route whenever eligible (auto would keep short calls fused)
  uint64_t seed = 1300;
  const int64_t D = 128, C = 3;
  struct Case {
    int64_t b, l, hq, hkv;
  };
  // {1, 1200, 8, 1}: 24 tail rows in 2 row groups with 9+ splits: the decode kernel's separate
  // combine launch; the others its fused combine
  for (const Case& c : std::vector<Case>{{1, 65, 4, 4}, {2, 200, 8, 2}, {1, 640, 4, 1}, {2, 400, 8, 8},
                                          {1, 1200, 8, 1}, {2, 129, 2, 2}})
    for (int64_t back : {int64_t(1), int64_t(3)}) {
      const int64_t B = c.b, L = c.l, first = L - back;
      Tensor q = round_to(rand_tensor({B, L, c.hq, D}, seed++, -2.f, 2.f), dt);
      Tensor k = round_to(rand_tensor({B, L, c.hkv, D}, seed++, -2.f, 2.f), dt);
      Tensor v = round_to(rand_tensor({B, L, c.hkv, D}, seed++), dt);
      Tensor gq = q.to(Device::cuda(), dt), gk = k.to(Device::cuda(), dt), gv = v.to(Device::cuda(), dt);
      std::vector<uint8_t> cls(size_t(B * L));
      for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < L; ++j) cls[size_t(b * L + j)] = uint8_t(j < 5 ? 0 : j < L - 7 - 3 * b ? 1 : 2);
      HeadModulation m;
      m.key_class = Tensor::from_vector(cls, {B, L});
      m.num_classes = int(C);
      m.logit_abs_gain = rand_tensor({c.hq, C}, seed++, -0.5f, 0.5f);
      m.first_modulated_row = first;
      for (int variant = 0; variant < 4; ++variant) {
        // 0: PAI (abs gain only); 1: + bias, post weight renorm, head gain; 2: + head gain, no causal;
        // 3: abs gain with k_lens
        HeadModulation mv = m;
        AttentionOptions opt;
        opt.causal = variant != 2;
        if (variant == 1) {
          mv.logit_bias = rand_tensor({c.hq, C}, seed++, -1.f, 1.f);
          mv.post_weight = rand_tensor({c.hq, C}, seed++, 0.f, 2.f);
          mv.renormalize = true;
        }
        if (variant == 1 || variant == 2) mv.head_gain = rand_tensor({c.hq}, seed++, 0.5f, 2.f);
        if (variant == 3 && B == 2) opt.k_lens = i32({int32_t(L), int32_t(L - 2)});
        opt.mod = &mv;
        if (L >= 1000 && variant >= 2) continue;  // CPU reference time
        AttentionOptions copt = opt;
        copt.return_lse = true;
        const AttentionResult cr = attention(q, k, v, copt);
        for (bool want_lse : {true, false}) {
          const std::string what = str_cat(dtype_name(dt), " b", B, " l", L, " hq", c.hq, " hkv", c.hkv, " first L-",
                                           back, " variant ", variant, " lse ", want_lse);
          opt.return_lse = want_lse;
          HeadModulation gm = to_gpu(mv);
          AttentionOptions gopt = opt;
          gopt.mod = &gm;
          gopt.k_lens = gpu(opt.k_lens);
          // the route is taken
          ASSERT_EQ(attention_split_tail_rows(build_attention_params(gq, gk, gv, gopt, L)), int(back)) << what;
          AttentionResult gr = attention(gq, gk, gv, gopt);
          ASSERT_EQ(gr.lse.defined(), want_lse) << what;
          EXPECT_LT(rel_err(gr.out, cr.out), out_tol(dt)) << what;
          // the tail rows alone (a wrong tail would hide in the whole-tensor error)
          EXPECT_LT(rel_err(gr.out.slice(1, first, L).contiguous(), cr.out.slice(1, first, L).contiguous()),
                    out_tol(dt))
              << what << " tail rows";
          if (want_lse) {
            const auto gl = gr.lse.to_floats(), cl = cr.lse.to_floats();
            ASSERT_EQ(gl.size(), cl.size()) << what;
            int bad = 0;
            for (size_t i = 0; i < cl.size() && bad < 5; ++i) {
              const bool ok =
                  std::isinf(cl[i]) ? (std::isinf(gl[i]) && gl[i] < 0) : std::fabs(gl[i] - cl[i]) < 1e-2f;
              if (!ok) ++bad;
              EXPECT_TRUE(ok) << what << " lse[" << i << "] gpu " << gl[i] << " cpu " << cl[i];
            }
          }
        }
      }
    }
  // not taken: class mass, q_lens, or too many tail rows; first >= L: plain prefill only (0)
  {
    const int64_t B = 1, L = 300, H = 8;
    Tensor gq = rand_tensor({B, L, H, 64}, seed++).to(Device::cuda(), dt);
    Tensor gk = rand_tensor({B, L, 2, 64}, seed++).to(Device::cuda(), dt);
    HeadModulation m;
    m.key_class = Tensor::full({B, L}, 0.f, DType::U8, Device::cuda());
    m.num_classes = 1;
    m.logit_abs_gain = Tensor::full({H, 1}, 0.3f, DType::F32, Device::cuda());
    AttentionOptions opt;
    opt.mod = &m;
    m.first_modulated_row = L - 8;  // 8 rows x group 4 = 32 rows, but Lq - first > 4
    EXPECT_EQ(attention_split_tail_rows(build_attention_params(gq, gk, gk, opt, L)), -1);
    m.first_modulated_row = L;
    EXPECT_EQ(attention_split_tail_rows(build_attention_params(gq, gk, gk, opt, L)), 0);
    m.first_modulated_row = L - 2;
    EXPECT_EQ(attention_split_tail_rows(build_attention_params(gq, gk, gk, opt, L)), 2);
    // auto: the split whose two parts overlap (no causal mask here, or causal without k_lens) is
    // taken; the sequential one (causal with k_lens) only where the cost model says it pays, and
    // 300 keys are too few
    set_attention_kernel_override(0);
    EXPECT_EQ(attention_split_tail_rows(build_attention_params(gq, gk, gk, opt, L)), 2);
    opt.causal = true;
    EXPECT_EQ(attention_split_tail_rows(build_attention_params(gq, gk, gk, opt, L)), 2);
    opt.k_lens = Tensor::full({B}, float(L), DType::I32, Device::cuda());
    EXPECT_EQ(attention_split_tail_rows(build_attention_params(gq, gk, gk, opt, L)), -1);
    opt.k_lens = Tensor();
    opt.causal = false;
    set_attention_kernel_override(4);
    opt.q_lens = Tensor::full({B}, float(L), DType::I32, Device::cuda());
    EXPECT_EQ(attention_split_tail_rows(build_attention_params(gq, gk, gk, opt, L)), -1);
  }
}

// Every kernel writes out and LSE through their strides: a call into the middle of larger buffers
// must give exactly what the contiguous call gives, and leave the rest untouched.
TEST_P(AttentionCuda, OutputStridesEveryKernel) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  uint64_t seed = 1500;
  for (int which : {1, 3, 2})
    for (auto [B, L, Hq, Hkv, D] : std::vector<std::array<int64_t, 5>>{{2, 200, 4, 2, 128}, {1, 3, 8, 2, 64},
                                                                        {2, 70, 2, 1, 80}}) {
      KernelOverride force(which);
      Tensor gq = rand_tensor({B, L, Hq, D}, seed++, -2.f, 2.f).to(Device::cuda(), dt);
      Tensor gk = rand_tensor({B, L, Hkv, D}, seed++, -2.f, 2.f).to(Device::cuda(), dt);
      Tensor gv = rand_tensor({B, L, Hkv, D}, seed++).to(Device::cuda(), dt);
      AttentionOptions opt;
      opt.causal = true;
      opt.return_lse = true;
      AttentionResult ref = attention(gq, gk, gv, opt);
      // out inside [B, L, 2, Hq, D] (index 1 of dim 2), LSE inside [B, Hq, 2 L] (the second half)
      Tensor obuf = Tensor::full({B, L, 2, Hq, D}, 7.f, dt, Device::cuda());
      Tensor lbuf = Tensor::full({B, Hq, 2 * L}, 7.f, DType::F32, Device::cuda());
      Tensor ov = obuf.select(2, 1), lv = lbuf.slice(2, L, 2 * L);
      AttentionParams p = build_attention_params(gq, gk, gv, opt, L);
      p.out = ov.data_ptr();
      p.out_sb = ov.stride(0), p.out_sl = ov.stride(1), p.out_sh = ov.stride(2);
      p.lse = lv.data<float>();
      p.lse_sb = lv.stride(0), p.lse_sh = lv.stride(1);
      attention_cuda(p, current_stream());
      const std::string what = str_cat(dtype_name(dt), " kernel ", which, " b", B, " l", L, " d", D);
      EXPECT_EQ(rel_err(ov.contiguous().to(DType::F32), ref.out.to(DType::F32)), 0.0) << what;
      EXPECT_EQ(rel_err(lv.contiguous(), ref.lse), 0.0) << what;
      const auto untouched = obuf.select(2, 0).contiguous().to_floats();
      const auto lfirst = lbuf.slice(2, 0, L).contiguous().to_floats();
      EXPECT_TRUE(std::all_of(untouched.begin(), untouched.end(), [](float x) { return x == 7.f; })) << what;
      EXPECT_TRUE(std::all_of(lfirst.begin(), lfirst.end(), [](float x) { return x == 7.f; })) << what;
    }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, AttentionCuda, ::testing::Values(DType::BF16, DType::F16),
                         [](const auto& i) { return std::string(dtype_name(i.param)); });
