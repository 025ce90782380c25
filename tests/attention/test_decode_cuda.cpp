// The CUDA split-KV decode kernel (flash_decode_cuda) against the CPU reference attention() on
// f32 copies of the same rounded inputs: Lq 1/2/4, key lengths 1..33000 (one split to hundreds),
// every head dim, MHA/GQA/MQA, batches with different k_lens, bottom-right causal, padded rows,
// strided q and a KVCache's views (capacity > length), modulation (every feature), LSE, class mass;
// and KVCache on CUDA (append with padding, compact) against the same operations on the CPU.
#include <cmath>
#include <functional>

#include "attention/attention.h"
#include "attention/attention_kernels.h"
#include "attention/kv_cache.h"
#include "core/ops/rope.h"
#include "attention_cuda_util.h"

using namespace mmattn;
using namespace mmattn::test;

namespace {




// Fills a freed device block of `bytes` with NaN so that the next allocation of that size (the
// caching allocator hands it back on this stream) starts poisoned: an unwritten output shows.
void poison_next(size_t bytes) {
  Tensor t = Tensor::empty({int64_t((bytes + 3) / 4)}, DType::F32, Device::cuda());
  t.fill_(NAN);
}

// CPU (f32) vs CUDA (dt) on the same rounded values; compares out, LSE and class mass.
void expect_match(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& gq, const Tensor& gk,
                  const Tensor& gv, DType dt, AttentionOptions opt, const std::string& what,
                  const Tensor& gk_lens = Tensor()) {
  opt.return_lse = true;
  opt.return_class_mass = opt.mod && opt.mod->key_class.defined();
  AttentionResult c = attention(q, k, v, opt);
  AttentionOptions gopt = opt;
  gopt.k_lens = gk_lens.defined() ? gk_lens : gpu(opt.k_lens);
  gopt.q_lens = gpu(opt.q_lens);
  HeadModulation gm;
  if (opt.mod) {
    gm = *opt.mod;
    gm.key_class = gpu(gm.key_class);
    gm.logit_abs_gain = gpu(gm.logit_abs_gain);
    gm.logit_bias = gpu(gm.logit_bias);
    gm.post_weight = gpu(gm.post_weight);
    gm.head_gain = gpu(gm.head_gain);
    gopt.mod = &gm;
  }
  poison_next(c.out.numel() * dtype_size(dt));
  AttentionResult g = attention(gq, gk, gv, gopt);
  ASSERT_EQ(g.out.dtype(), dt) << what;
  const double e = rel_err(g.out, c.out);
  EXPECT_LT(e, out_tol(dt)) << what;
  // rows that see nothing must be exactly zero
  const auto go = g.out.to_floats(), co = c.out.to_floats();
  int bad = 0;
  for (size_t i = 0; i < co.size() && bad < 3; ++i)
    if (co[i] == 0.f && go[i] != 0.f) EXPECT_EQ(go[i], 0.f) << what << " out[" << i << "]", ++bad;
  const auto gl = g.lse.to_floats(), cl = c.lse.to_floats();
  ASSERT_EQ(gl.size(), cl.size()) << what;
  bad = 0;
  for (size_t i = 0; i < cl.size() && bad < 3; ++i) {
    const bool ok = std::isinf(cl[i]) ? (std::isinf(gl[i]) && gl[i] < 0)
                                      : std::fabs(gl[i] - cl[i]) < 1e-3f * (1.f + std::fabs(cl[i]));
    if (!ok) ++bad;
    EXPECT_TRUE(ok) << what << " lse[" << i << "] gpu " << gl[i] << " cpu " << cl[i];
  }
  if (opt.return_class_mass) {
    const auto gc = g.class_mass.to_floats(), cc = c.class_mass.to_floats();
    ASSERT_EQ(gc.size(), cc.size()) << what;
    double worst = 0;
    for (size_t i = 0; i < cc.size(); ++i)
      worst = std::isfinite(gc[i]) ? std::max(worst, double(std::fabs(gc[i] - cc[i]))) : INFINITY;
    EXPECT_LT(worst, 2e-3) << what << " class_mass";
  }
}

void expect_match(const Tensor& q, const Tensor& k, const Tensor& v, DType dt, const AttentionOptions& opt,
                  const std::string& what) {
  expect_match(q, k, v, q.to(Device::cuda(), dt), k.to(Device::cuda(), dt), v.to(Device::cuda(), dt), dt, opt,
               what);
}

class DecodeCuda : public ::testing::TestWithParam<DType> {};

}  // namespace

TEST_P(DecodeCuda, SweepLengthsHeadDimsGroups) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  KernelOverride force(2);
  // (Hq, Hkv): MHA, GQA 2, GQA 4, GQA 8, MQA with 6 heads
  const std::vector<std::pair<int64_t, int64_t>> heads = {{4, 4}, {4, 2}, {8, 2}, {8, 1}, {6, 1}};
  const int64_t dims[] = {64, 72, 80, 96, 128};
  uint64_t seed = dt == DType::BF16 ? 1000 : 5000;
  int n = 0;
  for (int64_t lk : {1, 3, 17, 100, 1000, 4097, 33000})
    for (int64_t lq : {1, 2, 4})
      for (auto [hq, hkv] : heads) {
        const int64_t d = dims[n % 5];
        const bool causal = (n / 5) % 2 == 1;
        ++n;
        if (lk >= 33000 && (n % 3) != 0) continue;  // keep the CPU reference time reasonable
        const int64_t B = 2;
        Tensor q = round_to(rand_tensor({B, lq, hq, d}, seed++, -2.f, 2.f), dt);
        Tensor k = round_to(rand_tensor({B, lk, hkv, d}, seed++, -2.f, 2.f), dt);
        Tensor v = round_to(rand_tensor({B, lk, hkv, d}, seed++), dt);
        AttentionOptions opt;
        opt.causal = causal;
        // the second sequence is shorter (at least 1 key)
        opt.k_lens = i32({int32_t(lk), int32_t(std::max<int64_t>(1, lk * 3 / 5))});
        expect_match(q, k, v, dt, opt,
                     str_cat(dtype_name(dt), " lk", lk, " lq", lq, " hq", hq, " hkv", hkv, " d", d,
                             causal ? " causal" : ""));
      }
}

TEST_P(DecodeCuda, NoLensAndLargeBatch) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  KernelOverride force(2);
  uint64_t seed = 2000;
  for (auto [B, lq, lk, hq, hkv, d] : std::vector<std::array<int64_t, 6>>{
           {1, 1, 4096, 32, 32, 128}, {9, 1, 300, 8, 2, 64}, {5, 4, 77, 28, 4, 128}, {3, 3, 513, 12, 4, 80}}) {
    Tensor q = round_to(rand_tensor({B, lq, hq, d}, seed++, -2.f, 2.f), dt);
    Tensor k = round_to(rand_tensor({B, lk, hkv, d}, seed++, -2.f, 2.f), dt);
    Tensor v = round_to(rand_tensor({B, lk, hkv, d}, seed++), dt);
    for (bool causal : {false, true}) {
      AttentionOptions opt;
      opt.causal = causal;
      expect_match(q, k, v, dt, opt,
                   str_cat(dtype_name(dt), " b", B, " lq", lq, " lk", lk, " hq", hq, " hkv", hkv, " d", d,
                           causal ? " causal" : ""));
    }
  }
}

TEST_P(DecodeCuda, MisalignedViewsStillWork) {
  // rows only 2-byte aligned: flash_decode_cuda hands them to the prefill kernel
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  KernelOverride force(2);
  const int64_t B = 2, L = 300, H = 4, d = 64;
  Tensor wide = round_to(rand_tensor({B, L, H, 3 * d + 1}, 2500, -2.f, 2.f), dt);
  Tensor gwide = wide.to(Device::cuda(), dt);
  auto view = [&](const Tensor& t, int i, int64_t n) { return t.slice(3, 1 + i * d, 1 + (i + 1) * d).slice(1, 0, n); };
  AttentionOptions opt;
  opt.causal = true;
  expect_match(view(wide, 0, 1), view(wide, 1, L), view(wide, 2, L), view(gwide, 0, 1), view(gwide, 1, L),
               view(gwide, 2, L), dt, opt, str_cat(dtype_name(dt), " misaligned"));
}

TEST_P(DecodeCuda, PaddingAndRowsThatSeeNothing) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  KernelOverride force(2);
  struct Case {
    int64_t lq, lk, d;
    bool causal;
    std::vector<int32_t> k_lens, q_lens;
  };
  const std::vector<Case> cases = {
      {1, 200, 64, false, {200, 7, 0}, {}},           // a sequence with no keys
      {4, 65, 128, true, {65, 40, 3}, {4, 2, 1}},     // padded rows and keys, bottom-right causal
      {4, 3, 72, true, {3, 2, 1}, {4, 4, 2}},         // Lq > klen: early rows see nothing
      {2, 1000, 96, true, {1000, 999, 0}, {2, 0, 1}},  // a sequence with no query rows
      {3, 5000, 80, false, {5000, 17, 4999}, {1, 3, 2}},
  };
  uint64_t seed = 3000;
  for (const Case& c : cases) {
    const int64_t B = 3;
    Tensor q = round_to(rand_tensor({B, c.lq, 4, c.d}, seed++, -2.f, 2.f), dt);
    Tensor k = round_to(rand_tensor({B, c.lk, 2, c.d}, seed++, -2.f, 2.f), dt);
    Tensor v = round_to(rand_tensor({B, c.lk, 2, c.d}, seed++), dt);
    AttentionOptions opt;
    opt.causal = c.causal;
    opt.k_lens = i32(c.k_lens);
    if (!c.q_lens.empty()) opt.q_lens = i32(c.q_lens);
    expect_match(q, k, v, dt, opt,
                 str_cat(dtype_name(dt), " d", c.d, " lq", c.lq, " lk", c.lk, c.causal ? " causal" : "", " padded"));
  }
}

TEST_P(DecodeCuda, ModulationEveryFeature) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  KernelOverride force(2);
  uint64_t seed = 4000;
  for (auto [Lq, Lk, D, C, Hq, Hkv] : std::vector<std::array<int64_t, 6>>{
           {1, 29, 64, 3, 4, 2}, {4, 1000, 128, 4, 8, 2}, {2, 4097, 72, 2, 8, 8}, {1, 3000, 96, 3, 6, 1},
           {4, 17, 80, 1, 4, 4}}) {
    const int64_t B = 2;
    Tensor q = round_to(rand_tensor({B, Lq, Hq, D}, seed++, -2.f, 2.f), dt);
    Tensor k = round_to(rand_tensor({B, Lk, Hkv, D}, seed++, -2.f, 2.f), dt);
    Tensor v = round_to(rand_tensor({B, Lk, Hkv, D}, seed++), dt);
    std::vector<uint8_t> cls(size_t(B * Lk));
    for (size_t j = 0; j < cls.size(); ++j) cls[j] = uint8_t((j * 7 + j / 5) % C);
    HeadModulation m = random_modulation(cls, B, Lk, Hq, C, seed);
    const std::string shape = str_cat(dtype_name(dt), " lq", Lq, " lk", Lk, " d", D, " C", C, " hq", Hq, " hkv", Hkv);
    for (bool renorm : {false, true})
      for (int64_t first : {int64_t(0), Lq - 1})
        for (bool causal : {false, true}) {
          m.renormalize = renorm;
          m.first_modulated_row = first;
          AttentionOptions opt;
          opt.causal = causal;
          opt.mod = &m;
          opt.k_lens = i32({int32_t(Lk), int32_t(std::max<int64_t>(1, Lk * 2 / 3))});
          expect_match(q, k, v, dt, opt, str_cat(shape, " renorm ", renorm, " first ", first, " causal ", causal));
        }
    auto alone = [&](auto set, const char* name) {
      HeadModulation z;
      z.key_class = m.key_class;
      z.num_classes = int(C);
      set(z);
      AttentionOptions opt;
      opt.mod = &z;
      opt.causal = true;
      expect_match(q, k, v, dt, opt, str_cat(shape, " only ", name));
    };
    alone([&](HeadModulation& z) { z.logit_abs_gain = m.logit_abs_gain; }, "abs gain");
    alone([&](HeadModulation& z) { z.logit_bias = m.logit_bias; }, "bias");
    alone([&](HeadModulation& z) { z.post_weight = m.post_weight; }, "post weight");
    alone([&](HeadModulation& z) { z.post_weight = m.post_weight, z.renormalize = true; }, "post weight renorm");
    alone([&](HeadModulation& z) { z.head_gain = m.head_gain; }, "head gain");
    alone([](HeadModulation&) {}, "class mass");
    alone([&](HeadModulation& z) {
      z.post_weight = Tensor::full({Hq, C}, 1.f, DType::F32);
      z.post_weight.data<float>()[1 * C + 0] = 0.f;  // AD-HH: head 1, class 0 zeroed
    }, "AD-HH zeroing");
    alone([&](HeadModulation& z) {
      z.post_weight = Tensor::full({Hq, C}, 0.f, DType::F32);  // every weight 0 with renorm: out 0
      z.renormalize = true;
    }, "all weights zero");
    HeadModulation hg;
    hg.head_gain = m.head_gain;
    AttentionOptions opt;
    opt.mod = &hg;
    expect_match(q, k, v, dt, opt, shape + " head gain, no classes");
  }
}

// Key classes in runs, as a LLaVA prompt has them (text, a long image run, sink tokens, text):
// tiles of one class take the kernel's per-tile path, tiles across a run's edge (and across the
// sequence's length) the per-score path; every class id 0-3 gets whole tiles.
TEST_P(DecodeCuda, ModulationClassRuns) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  KernelOverride force(2);
  uint64_t seed = 5000;
  for (auto [Lq, Lk, D, Hq, Hkv] : std::vector<std::array<int64_t, 5>>{
           {1, 700, 128, 8, 8}, {2, 4097, 64, 8, 2}, {1, 1000, 96, 6, 3}}) {
    const int64_t B = 2, C = 4;
    Tensor q = round_to(rand_tensor({B, Lq, Hq, D}, seed++, -2.f, 2.f), dt);
    Tensor k = round_to(rand_tensor({B, Lk, Hkv, D}, seed++, -2.f, 2.f), dt);
    Tensor v = round_to(rand_tensor({B, Lk, Hkv, D}, seed++), dt);
    std::vector<uint8_t> cls(size_t(B * Lk));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < Lk; ++j) {
        const int64_t x = b ? Lk - 1 - j : j;  // the second sequence's runs reversed
        cls[size_t(b * Lk + j)] = uint8_t(x < 35 ? 0 : x < 35 + 576 ? 1 : x < 35 + 576 + 2 ? 2 : x < Lk - 100 ? 3 : 0);
      }
    HeadModulation m = random_modulation(cls, B, Lk, Hq, C, seed);
    const std::string shape = str_cat(dtype_name(dt), " lq", Lq, " lk", Lk, " d", D, " hq", Hq, " hkv", Hkv);
    for (bool renorm : {false, true})
      for (bool causal : {false, true}) {
        m.renormalize = renorm;
        AttentionOptions opt;
        opt.causal = causal;
        opt.mod = &m;
        opt.k_lens = i32({int32_t(Lk), int32_t(Lk - 37)});  // the second ends inside a tile
        expect_match(q, k, v, dt, opt, str_cat(shape, " class runs, renorm ", renorm, " causal ", causal));
      }
  }
}

TEST_P(DecodeCuda, StridedQueryAndKVCacheViews) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  uint64_t seed = 6000;
  for (int64_t d : {64, 72, 80, 96, 128}) {
    const int64_t B = 3, Hq = 8, Hkv = 2, cap = 1500, n = 4;
    const std::vector<int> prompt = {1200, 37, 700};
    // fill a device cache and a CPU cache (f32 of the same rounded values) with padded prompts
    KVCache gc(1, B, cap, Hkv, d, dt, Device::cuda());
    KVCache cc(1, B, cap, Hkv, d, DType::F32);
    Tensor k0 = round_to(rand_tensor({B, 1200, Hkv, d}, seed++, -2.f, 2.f), dt);
    Tensor v0 = round_to(rand_tensor({B, 1200, Hkv, d}, seed++), dt);
    gc.append(0, k0.to(Device::cuda(), dt), v0.to(Device::cuda(), dt), prompt);
    cc.append(0, k0, v0, prompt);
    gc.advance();
    cc.advance();
    // a chunk of n new tokens from a fused projection [B, n, Hq + 2 Hkv, D] (strided q, k, v)
    Tensor qkv = round_to(rand_tensor({B, n, Hq + 2 * Hkv, d}, seed++, -2.f, 2.f), dt);
    Tensor gqkv = qkv.to(Device::cuda(), dt);
    auto part = [&](const Tensor& t, int64_t a, int64_t b) { return t.slice(2, a, b); };
    const std::vector<int> nv = {4, 1, 3};
    gc.append(0, part(gqkv, Hq, Hq + Hkv), part(gqkv, Hq + Hkv, Hq + 2 * Hkv), nv);
    cc.append(0, part(qkv, Hq, Hq + Hkv), part(qkv, Hq + Hkv, Hq + 2 * Hkv), nv);
    AttentionOptions opt;
    opt.causal = true;
    opt.k_lens = cc.lens_tensor(0);
    opt.q_lens = i32({4, 1, 3});
    expect_match(part(qkv, 0, Hq), cc.k(0), cc.v(0), part(gqkv, 0, Hq), gc.k(0), gc.v(0), dt, opt,
                 str_cat(dtype_name(dt), " d", d, " kv cache views + fused q"), gc.lens_tensor(0));
    gc.advance();
    cc.advance();
    EXPECT_EQ(gc.lengths(), (std::vector<int64_t>{1204, 38, 703}));
  }
}

// KVCache::append_rope on CUDA: bit for bit what apply_rope_ on q and k, then append, give (one
// rotation code), with q, k, v as slices of one fused projection, a padded sequence (n_valid), and
// a second step at later positions; the F32 cache also against the CPU cache's append_rope.
TEST_P(DecodeCuda, AppendWithFusedRope) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  uint64_t seed = 9000;
  for (int64_t d : {64, 72, 128})
    for (int64_t n : {1, 3, 17}) {
      const int64_t B = 2, Hq = 6, Hkv = 2, cap = 48;
      KVCache fused(1, B, cap, Hkv, d, dt, Device::cuda()), plain(1, B, cap, Hkv, d, dt, Device::cuda());
      KVCache host(1, B, cap, Hkv, d, DType::F32);
      for (int step = 0; step < 2; ++step) {
        std::vector<int64_t> pos(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) pos[size_t(i)] = 5 + 20 * step + i;
        const RopeTable t = rope_table_llama(pos, d, 10000.0, RopeScaling{});
        const auto [cos, sin] = t.on(Device::cuda());
        const Tensor base = round_to(rand_tensor({B, n, Hq + 2 * Hkv, d}, seed++, -2.f, 2.f), dt);
        Tensor a = base.to(Device::cuda(), dt), b = base.to(Device::cuda(), dt), c = base.clone();
        auto part = [&](const Tensor& x, int64_t lo, int64_t hi) { return x.slice(2, lo, hi); };
        Tensor qa = part(a, 0, Hq), qb = part(b, 0, Hq), kb = part(b, Hq, Hq + Hkv), qc = part(c, 0, Hq);
        const std::vector<int> nv = {int(n), int(n - 1)};  // sequence 1 has a padding row
        fused.append_rope(0, qa, part(a, Hq, Hq + Hkv), part(a, Hq + Hkv, Hq + 2 * Hkv), cos, sin, nv);
        apply_rope_(qb, t, RopeStyle::HalfSplit);
        apply_rope_(kb, t, RopeStyle::HalfSplit);
        plain.append(0, kb, part(b, Hq + Hkv, Hq + 2 * Hkv), nv);
        host.append_rope(0, qc, part(c, Hq, Hq + Hkv), part(c, Hq + Hkv, Hq + 2 * Hkv), t.cos, t.sin, nv);
        const std::string what = str_cat(dtype_name(dt), " d ", d, " n ", n, " step ", step);
        EXPECT_EQ(max_abs_diff(qa, qb), 0.0) << what;
        if (dt == DType::F32) EXPECT_LE(max_abs_diff(qa, qc), 1e-6) << what;
        fused.advance(), plain.advance(), host.advance();
      }
      EXPECT_EQ(fused.lengths(), plain.lengths());
      EXPECT_EQ(max_abs_diff(fused.k(0), plain.k(0)), 0.0) << dtype_name(dt) << " d " << d << " n " << n;
      EXPECT_EQ(max_abs_diff(fused.v(0), plain.v(0)), 0.0);
      if (dt == DType::F32) {
        EXPECT_LE(max_abs_diff(fused.k(0), host.k(0)), 1e-6);
        EXPECT_EQ(max_abs_diff(fused.v(0), host.v(0)), 0.0);
      }
    }
}

// More new rows (B n) than one grid dimension holds (65535): both append kernels walk the rest.
TEST_P(DecodeCuda, AppendMoreRowsThanOneGridDimension) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  const int64_t B = 2, n = 33000, Hkv = 1, d = 8;
  const std::vector<int> nv = {33000, 32999};
  const Tensor k = round_to(rand_tensor({B, n, Hkv, d}, 11), dt), v = round_to(rand_tensor({B, n, Hkv, d}, 12), dt);
  KVCache gc(1, B, n, Hkv, d, dt, Device::cuda()), cc(1, B, n, Hkv, d, DType::F32);
  gc.append(0, k.to(Device::cuda(), dt), v.to(Device::cuda(), dt), nv);
  cc.append(0, k, v, nv);
  EXPECT_EQ(max_abs_diff(gc.k(0), cc.k(0)), 0.0);
  EXPECT_EQ(max_abs_diff(gc.v(0), cc.v(0)), 0.0);
  // the fused RoPE path: against apply_rope_ + append on the device
  std::vector<int64_t> pos(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) pos[size_t(i)] = i;
  const RopeTable t = rope_table_llama(pos, d, 10000.0, RopeScaling{});
  const auto [cos, sin] = t.on(Device::cuda());
  KVCache fused(1, B, n, Hkv, d, dt, Device::cuda()), plain(1, B, n, Hkv, d, dt, Device::cuda());
  Tensor qa = k.to(Device::cuda(), dt), qb = k.to(Device::cuda(), dt), kb = k.to(Device::cuda(), dt);
  fused.append_rope(0, qa, k.to(Device::cuda(), dt), v.to(Device::cuda(), dt), cos, sin, nv);
  apply_rope_(qb, t, RopeStyle::HalfSplit);
  apply_rope_(kb, t, RopeStyle::HalfSplit);
  plain.append(0, kb, v.to(Device::cuda(), dt), nv);
  EXPECT_EQ(max_abs_diff(qa, qb), 0.0);
  EXPECT_EQ(max_abs_diff(fused.k(0), plain.k(0)), 0.0);
  EXPECT_EQ(max_abs_diff(fused.v(0), plain.v(0)), 0.0);
}

TEST_P(DecodeCuda, KVCacheCompactOnTheGpu) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  const int L = 3;
  const int64_t B = 2, cap = 600, Hq = 8, Hkv = 4, D = 128;
  KVCache gc(L, B, cap, Hkv, D, dt, Device::cuda());
  KVCache cc(L, B, cap, Hkv, D, DType::F32);
  uint64_t seed = 7000;
  std::vector<Tensor> ks, vs;
  for (int l = 0; l < L; ++l) {
    ks.push_back(round_to(rand_tensor({B, 500, Hkv, D}, seed++, -2.f, 2.f), dt));
    vs.push_back(round_to(rand_tensor({B, 500, Hkv, D}, seed++), dt));
    gc.append(l, ks.back().to(Device::cuda(), dt), vs.back().to(Device::cuda(), dt), {500, 321});
    cc.append(l, ks.back(), vs.back(), {500, 321});
  }
  gc.advance();
  cc.advance();
  // prune: keep the first 35 tokens, every third image token, and the last 50 (FastV-like)
  std::vector<int64_t> keep;
  for (int64_t j = 0; j < 500; ++j)
    if (j < 35 || j >= 450 || j % 3 == 0) keep.push_back(j);
  gc.compact(0, keep);
  cc.compact(0, keep);
  std::vector<int64_t> keep1 = {0, 1, 5, 320};
  gc.compact(1, keep1);
  cc.compact(1, keep1);
  EXPECT_EQ(gc.lengths(), cc.lengths());
  EXPECT_EQ(gc.positions(0), cc.positions(0));
  EXPECT_EQ(gc.next_position(0), 500);
  // the device cache holds exactly the CPU cache's rows
  for (int l = 0; l < L; ++l)
    for (int64_t b = 0; b < B; ++b) {
      const int64_t len = gc.length(b);
      EXPECT_EQ(max_abs_diff(gc.k(l).select(0, b).slice(0, 0, len), cc.k(l).select(0, b).slice(0, 0, len)), 0.0);
      EXPECT_EQ(max_abs_diff(gc.v(l).select(0, b).slice(0, 0, len), cc.v(l).select(0, b).slice(0, 0, len)), 0.0);
    }
  // a decode step over the pruned cache equals attention over the explicitly pruned tokens
  Tensor q = round_to(rand_tensor({B, 1, Hq, D}, seed++, -2.f, 2.f), dt);
  Tensor kn = round_to(rand_tensor({B, 1, Hkv, D}, seed++, -2.f, 2.f), dt);
  Tensor vn = round_to(rand_tensor({B, 1, Hkv, D}, seed++), dt);
  for (int l = 0; l < L; ++l) gc.append(l, kn.to(Device::cuda(), dt), vn.to(Device::cuda(), dt));
  AttentionOptions gopt;
  gopt.causal = true;
  gopt.k_lens = gc.lens_tensor(1);
  gopt.return_lse = true;
  AttentionResult g = attention(q.to(Device::cuda(), dt), gc.k(1), gc.v(1), gopt);
  gc.advance();
  for (int64_t b = 0; b < B; ++b) {
    const std::vector<int64_t>& kp = b == 0 ? keep : keep1;
    const int64_t n = int64_t(kp.size());
    Tensor kr = Tensor::empty({1, n + 1, Hkv, D}, DType::F32), vr = Tensor::empty({1, n + 1, Hkv, D}, DType::F32);
    for (int64_t i = 0; i < n; ++i) {
      kr.select(1, i).copy_from(ks[1].select(0, b).select(0, kp[size_t(i)]).unsqueeze(0));
      vr.select(1, i).copy_from(vs[1].select(0, b).select(0, kp[size_t(i)]).unsqueeze(0));
    }
    kr.select(1, n).copy_from(kn.select(0, b));
    vr.select(1, n).copy_from(vn.select(0, b));
    AttentionOptions o;
    o.return_lse = true;
    AttentionResult want = attention(q.slice(0, b, b + 1), kr, vr, o);
    EXPECT_LT(rel_err(g.out.slice(0, b, b + 1), want.out), out_tol(dt)) << "sequence " << b;
    const auto gl = g.lse.slice(0, b, b + 1).to_floats(), wl = want.lse.to_floats();
    for (size_t i = 0; i < wl.size(); ++i) EXPECT_NEAR(gl[i], wl[i], 1e-3 * (1 + std::fabs(wl[i])));
  }
  EXPECT_EQ(gc.positions(0).back(), 500);  // the new token's position follows the max kept one
}

TEST_P(DecodeCuda, DispatcherPicksDecodeAndLongerQueriesStillWork) {
  // The decode kernel handles any Lq (row groups of 16); the dispatcher only sends Lq <= 4 to it.
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  uint64_t seed = 8000;
  for (auto [lq, hq, hkv, which] : std::vector<std::array<int64_t, 4>>{{1, 32, 8, 0}, {8, 8, 2, 2}, {5, 12, 2, 2}}) {
    KernelOverride force{int(which)};
    const int64_t B = 2, lk = 777, d = 128;
    Tensor q = round_to(rand_tensor({B, lq, hq, d}, seed++, -2.f, 2.f), dt);
    Tensor k = round_to(rand_tensor({B, lk, hkv, d}, seed++, -2.f, 2.f), dt);
    Tensor v = round_to(rand_tensor({B, lk, hkv, d}, seed++), dt);
    AttentionOptions opt;
    opt.causal = true;
    opt.k_lens = i32({777, 500});
    expect_match(q, k, v, dt, opt, str_cat(dtype_name(dt), " lq", lq, " hq", hq, " hkv", hkv, " override ", which));
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, DecodeCuda, ::testing::Values(DType::BF16, DType::F16),
                         [](const auto& i) { return std::string(dtype_name(i.param)); });
