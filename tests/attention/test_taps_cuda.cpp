// GPU taps against the CPU taps on the same (rounded) inputs, with modulation and the saved LSE.
#include "attention/taps.h"
#include "attention_ref.h"
#include "core/ops/concat.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

TEST(TapsCuda, MatchCpu) {
  MMATTN_REQUIRE_GPU();
  const Device g = Device::cuda();
  for (DType dt : {DType::BF16, DType::F16})
    for (auto [B, R, Lk, Hq, Hkv, D] : std::vector<std::array<int64_t, 6>>{
             {1, 1, 1, 1, 1, 64}, {2, 3, 17, 4, 2, 128}, {1, 2, 1000, 8, 1, 80}, {3, 1, 5000, 4, 4, 72}}) {
      const int64_t C = 3, Lq = 50;
      Tensor q = round_to(rand_tensor({B, R, Hq, D}, 31, -2.f, 2.f), dt);
      Tensor k = round_to(rand_tensor({B, Lk, Hkv, D}, 32, -2.f, 2.f), dt);
      std::vector<uint8_t> cls(size_t(B * Lk));
      for (size_t j = 0; j < cls.size(); ++j) cls[j] = uint8_t((j / 3) % C);
      std::vector<int32_t> kl(static_cast<size_t>(B));
      for (int64_t b = 0; b < B; ++b) kl[b] = int32_t(std::max<int64_t>(1, Lk - 7 * b));
      HeadModulation m;
      m.key_class = Tensor::from_vector(cls, {B, Lk});
      m.num_classes = int(C);
      m.logit_abs_gain = rand_tensor({Hq, C}, 33, 0.f, 0.3f);
      m.logit_bias = rand_tensor({Hq, C}, 34);
      m.post_weight = rand_tensor({Hq, C}, 35, 0.f, 2.f);
      m.renormalize = true;
      HeadModulation gm = m;
      gm.key_class = m.key_class.to(g);
      gm.logit_abs_gain = m.logit_abs_gain.to(g);
      gm.logit_bias = m.logit_bias.to(g);
      gm.post_weight = m.post_weight.to(g);
      std::vector<int64_t> rows;
      for (int64_t r = 0; r < R; ++r) rows.push_back(Lq - 1 - r * 5);
      for (bool causal : {false, true}) {
        AttentionOptions cpu_opt, gpu_opt;
        cpu_opt.causal = gpu_opt.causal = causal;
        cpu_opt.mod = &m;
        gpu_opt.mod = &gm;
        cpu_opt.k_lens = Tensor::from_vector(kl, {B});
        gpu_opt.k_lens = cpu_opt.k_lens.to(g);
        Tensor want = attention_probs(q, k, TapRequest{rows, Lq, Tensor()}, cpu_opt);
        Tensor got = attention_probs(q.to(g, dt), k.to(g, dt), TapRequest{rows, Lq, Tensor()}, gpu_opt);
        EXPECT_LT(rel_err(got, want), 1e-4) << dtype_name(dt) << " Lk " << Lk << " causal " << causal;
      }
    }
}

namespace {

// Modulation tables on the CPU and their copies on the GPU.
struct TapMods {
  HeadModulation cpu, gpu;
};
TapMods tap_mods(int64_t B, int64_t Lk, int64_t Hq, int64_t C, uint64_t seed, int64_t first_row, bool renorm) {
  TapMods t;
  std::vector<uint8_t> cls(size_t(B * Lk));
  for (size_t j = 0; j < cls.size(); ++j) cls[j] = uint8_t((j * 7 / 5) % C);
  HeadModulation& m = t.cpu;
  m.key_class = Tensor::from_vector(cls, {B, Lk});
  m.num_classes = int(C);
  m.logit_abs_gain = rand_tensor({Hq, C}, seed, 0.f, 0.3f);
  m.logit_bias = rand_tensor({Hq, C}, seed + 1);
  m.post_weight = rand_tensor({Hq, C}, seed + 2, 0.1f, 2.f);
  m.renormalize = renorm;
  m.first_modulated_row = first_row;
  const Device g = Device::cuda();
  t.gpu = m;
  t.gpu.key_class = m.key_class.to(g);
  t.gpu.logit_abs_gain = m.logit_abs_gain.to(g);
  t.gpu.logit_bias = m.logit_bias.to(g);
  t.gpu.post_weight = m.post_weight.to(g);
  return t;
}

std::vector<int64_t> last_rows(int64_t lq, int64_t R) {
  std::vector<int64_t> rows;
  for (int64_t r = lq - R; r < lq; ++r) rows.push_back(r);
  return rows;
}

}  // namespace

// q rows sliced from a fused qkv (strided), the LSE given as a strided slice of the fused pass's
// LSE or not given, renormalisation on and off, rows both modulated and not, R up to kMaxTapRows.
TEST(TapsCuda, LseRenormStridedRows) {
  MMATTN_REQUIRE_GPU();
  const Device g = Device::cuda();
  const DType dt = DType::BF16;
  const int64_t B = 2, Lq = 70, Lk = 300, Hq = 4, Hkv = 2, D = 128, C = 3;
  Tensor qkv = round_to(rand_tensor({B, Lq, Hq + 2 * Hkv, D}, 41, -2.f, 2.f), dt);
  Tensor k = round_to(rand_tensor({B, Lk, Hkv, D}, 42, -2.f, 2.f), dt);
  Tensor v = rand_tensor({B, Lk, Hkv, D}, 43);
  Tensor q = qkv.slice(2, 0, Hq);
  Tensor gq = qkv.to(g, dt).slice(2, 0, Hq), gk = k.to(g, dt);
  const std::vector<int32_t> kl = {int32_t(Lk), int32_t(Lk - 37)};
  for (bool renorm : {false, true})
    for (bool causal : {false, true}) {
      TapMods m = tap_mods(B, Lk, Hq, C, 44, Lq - 3, renorm);
      AttentionOptions cpu_opt, gpu_opt;
      cpu_opt.causal = gpu_opt.causal = causal;
      cpu_opt.mod = &m.cpu;
      gpu_opt.mod = &m.gpu;
      cpu_opt.k_lens = Tensor::from_vector(kl, {B});
      gpu_opt.k_lens = cpu_opt.k_lens.to(g);
      AttentionOptions lse_opt = cpu_opt;
      lse_opt.return_lse = true;
      const Tensor lse = attention(q, k, v, lse_opt).lse;  // [B, Hq, Lq], CPU
      const Tensor glse = lse.to(g);
      for (int64_t R : {int64_t(1), int64_t(5), int64_t(kMaxTapRows)}) {
        const auto rows = last_rows(Lq, R);
        Tensor q_rows = q.slice(1, Lq - R, Lq);
        Tensor want = attention_probs(q_rows, k, TapRequest{rows, Lq, Tensor()}, cpu_opt);
        Tensor want_lse = attention_probs(q_rows, k, TapRequest{rows, Lq, lse.slice(2, Lq - R, Lq)}, cpu_opt);
        EXPECT_LT(rel_err(want_lse, want), 1e-5) << "CPU, strided lse, R " << R;
        for (bool with_lse : {false, true}) {
          TapRequest req{rows, Lq, with_lse ? glse.slice(2, Lq - R, Lq) : Tensor()};
          Tensor got = attention_probs(gq.slice(1, Lq - R, Lq), gk, req, gpu_opt);
          EXPECT_EQ(got.shape(), (Shape{B, Hq, R, Lk}));
          EXPECT_LT(rel_err(got, want), 1e-4)
              << "R " << R << " lse " << with_lse << " renorm " << renorm << " causal " << causal;
        }
      }
    }
}

// Rows that are not 16-byte aligned (q and k sliced from [.., D + 1] rows: the scalar path) and
// aligned ones, every head dim, with and without the LSE, f16 and bf16.
TEST(TapsCuda, MisalignedRowsEveryHeadDim) {
  MMATTN_REQUIRE_GPU();
  const Device g = Device::cuda();
  const int64_t B = 2, R = 3, Lk = 200, Hq = 4, Hkv = 2, C = 2;
  const std::vector<int64_t> rows = {0, 1, 2};  // the whole query: attention() gives their LSE
  for (DType dt : {DType::BF16, DType::F16})
    for (int64_t D : {64, 72, 80, 96, 128})
      for (bool misaligned : {false, true}) {
        const int64_t pad = misaligned ? 1 : 0;
        Tensor qw = round_to(rand_tensor({B, R, Hq, D + pad}, 51 + D, -2.f, 2.f), dt);
        Tensor kw = round_to(rand_tensor({B, Lk, Hkv, D + pad}, 52 + D, -2.f, 2.f), dt);
        Tensor q = qw.slice(3, pad, D + pad), k = kw.slice(3, pad, D + pad);
        Tensor v = rand_tensor({B, Lk, Hkv, D}, 53);
        Tensor gq = qw.to(g, dt).slice(3, pad, D + pad), gk = kw.to(g, dt).slice(3, pad, D + pad);
        TapMods m = tap_mods(B, Lk, Hq, C, 54, 1, false);
        AttentionOptions cpu_opt, gpu_opt;
        cpu_opt.causal = gpu_opt.causal = true;
        cpu_opt.mod = &m.cpu;
        gpu_opt.mod = &m.gpu;
        AttentionOptions lse_opt = cpu_opt;
        lse_opt.return_lse = true;
        const Tensor lse = attention(q, k, v, lse_opt).lse;
        Tensor want = attention_probs(q, k, TapRequest{rows, R, Tensor()}, cpu_opt);
        for (bool with_lse : {false, true}) {
          Tensor got = attention_probs(gq, gk, TapRequest{rows, R, with_lse ? lse.to(g) : Tensor()}, gpu_opt);
          EXPECT_LT(rel_err(got, want), 1e-4)
              << dtype_name(dt) << " D " << D << " misaligned " << misaligned << " lse " << with_lse;
        }
      }
}

// 64K keys and one row (FastV on a long context), causal, with and without modulation and LSE.
TEST(TapsCuda, LongKeysOneRow) {
  MMATTN_REQUIRE_GPU();
  const Device g = Device::cuda();
  const DType dt = DType::BF16;
  const int64_t B = 1, Lk = 65536, Hq = 4, Hkv = 1, D = 128, C = 3;
  Tensor q = round_to(rand_tensor({B, 1, Hq, D}, 61, -2.f, 2.f), dt);
  Tensor k = round_to(rand_tensor({B, Lk, Hkv, D}, 62, -2.f, 2.f), dt);
  Tensor v = rand_tensor({B, Lk, Hkv, D}, 63);
  Tensor gq = q.to(g, dt), gk = k.to(g, dt);
  const std::vector<int64_t> rows = {0};
  for (bool with_mod : {false, true}) {
    TapMods m = tap_mods(B, Lk, Hq, C, 64, 0, true);
    AttentionOptions cpu_opt, gpu_opt;
    cpu_opt.causal = gpu_opt.causal = true;
    cpu_opt.mod = with_mod ? &m.cpu : nullptr;
    gpu_opt.mod = with_mod ? &m.gpu : nullptr;
    cpu_opt.k_lens = Tensor::from_vector(std::vector<int32_t>{int32_t(Lk - 100)}, {B});
    gpu_opt.k_lens = cpu_opt.k_lens.to(g);
    AttentionOptions lse_opt = cpu_opt;
    lse_opt.return_lse = true;
    const Tensor lse = attention(q, k, v, lse_opt).lse;
    Tensor want = attention_probs(q, k, TapRequest{rows, 1, Tensor()}, cpu_opt);
    for (bool with_lse : {false, true}) {
      Tensor got = attention_probs(gq, gk, TapRequest{rows, 1, with_lse ? lse.to(g) : Tensor()}, gpu_opt);
      EXPECT_LT(rel_err(got, want), 1e-4) << "mod " << with_mod << " lse " << with_lse;
      if (!with_mod) {  // a softmax row: sums to 1, masked keys 0
        const auto pr = got.to_floats();
        for (int64_t h = 0; h < Hq; ++h) {
          double sum = 0;
          for (int64_t j = 0; j < Lk; ++j) sum += pr[size_t(h * Lk + j)];
          EXPECT_NEAR(sum, 1.0, 1e-3) << "head " << h;
          EXPECT_EQ(pr[size_t(h * Lk + Lk - 1)], 0.f);
        }
      }
    }
  }
}

// head_mean on the GPU equals the CPU's bit for bit (the same f32 operations in the same order),
// on awkward sizes, and equals the mean over heads.
TEST(TapsCuda, HeadMeanMatchesCpuExactly) {
  MMATTN_REQUIRE_GPU();
  for (auto [B, H, R, L] : std::vector<std::array<int64_t, 4>>{{1, 1, 1, 1}, {2, 32, 1, 641}, {3, 7, 2, 1000}}) {
    const Tensor p = rand_tensor({B, H, R, L}, 81, 0.f, 1.f);
    const Tensor cpu = head_mean(p), gpu = head_mean(p.to(Device::cuda()));
    ASSERT_EQ(gpu.shape(), (Shape{B, R, L}));
    EXPECT_EQ(max_abs_diff(cpu, gpu.to(Device::cpu())), 0.0) << B << " " << H << " " << R << " " << L;
    const std::vector<float> pv = p.to_floats(), mv = cpu.to_floats();
    for (int64_t i = 0; i < B * R * L; i += 97) {
      const int64_t b = i / (R * L), j = i % (R * L);
      double want = 0;
      for (int64_t h = 0; h < H; ++h) want += pv[size_t((b * H + h) * R * L + j)];
      EXPECT_NEAR(mv[size_t(i)], want / double(H), 1e-6);
    }
  }
}

TEST(TapsCuda, TooManyRowsIsAnError) {
  MMATTN_REQUIRE_GPU();
  const Device g = Device::cuda();
  const int64_t R = kMaxTapRows + 1;
  Tensor q = rand_tensor({1, R, 2, 64}, 71).to(g, DType::BF16), k = rand_tensor({1, 100, 2, 64}, 72).to(g, DType::BF16);
  try {
    attention_probs(q, k, TapRequest{last_rows(100, R), 100, Tensor()});
    ADD_FAILURE() << "no error for " << R << " rows";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("'rows'"), std::string::npos) << e.what();
  }
}

// attention_tapped with the taps written by the prefill kernel itself (no key classes): the
// probabilities and the attention output against the CPU on awkward sizes: rows at warpgroup and
// block edges (both rows of a thread), causal and not, GQA, padded sequences (rows past q_lens are
// 0), every head dim class, both dtypes, a long row (its logits in shared memory); a decode-sized
// call (served by another kernel) and rows whose logits do not fit in shared memory fall back.
TEST(TapsCuda, InKernelTapsMatchCpu) {
  MMATTN_REQUIRE_GPU();
  const Device g = Device::cuda();
  struct Case {
    int64_t B, Lq, Lk, Hq, Hkv, D;
    bool causal;
    std::vector<int64_t> rows;
  };
  const std::vector<Case> cases = {
      {1, 640, 640, 8, 8, 128, true, {639}},
      {2, 300, 300, 4, 2, 128, true, {0, 8, 63, 64, 71, 127, 128, 200, 299}},
      {2, 130, 1000, 8, 2, 64, false, {1, 129, 64, 15}},
      {1, 257, 513, 2, 1, 80, true, {256, 255, 120}},
      {2, 3, 77, 4, 4, 128, true, {2, 0}},  // decode-sized: another kernel, taps after it
      {1, 200, 9000, 2, 1, 128, true, {199}},  // one row's logits over 71 key tiles in shared memory
      // six rows over 4K keys: 96 KB of logits do not fit beside the tiles, taps after the kernel
      {1, 200, 4000, 2, 2, 128, false, {0, 1, 70, 128, 190, 199}},
  };
  for (DType dt : {DType::BF16, DType::F16})
    for (const Case& c : cases)
      for (bool padded : {false, true}) {
        Tensor q = round_to(rand_tensor({c.B, c.Lq, c.Hq, c.D}, 91, -2.f, 2.f), dt);
        Tensor k = round_to(rand_tensor({c.B, c.Lk, c.Hkv, c.D}, 92, -2.f, 2.f), dt);
        Tensor v = round_to(rand_tensor({c.B, c.Lk, c.Hkv, c.D}, 93), dt);
        AttentionOptions opt;
        opt.causal = c.causal;
        if (padded && c.B > 1) {
          opt.q_lens = Tensor::from_vector<int32_t>({int32_t(c.Lq), int32_t(c.Lq / 2 + 1)}, {2});
          opt.k_lens = Tensor::from_vector<int32_t>({int32_t(c.Lk), int32_t(c.Lk * 2 / 3 + 1)}, {2});
        }
        std::vector<Tensor> parts;
        for (int64_t i : c.rows) parts.push_back(q.slice(1, i, i + 1).contiguous());
        const Tensor want_probs = attention_probs(concat(parts, 1), k, TapRequest{c.rows, c.Lq, Tensor()}, opt);
        const AttentionResult want = attention(q, k, v, opt);
        AttentionOptions gopt = opt;
        if (opt.q_lens.defined()) gopt.q_lens = opt.q_lens.to(g), gopt.k_lens = opt.k_lens.to(g);
        Tensor probs;
        const AttentionResult got = attention_tapped(q.to(g, dt), k.to(g, dt), v.to(g, dt), c.rows, &probs, gopt);
        const std::string what = str_cat(dtype_name(dt), " lq ", c.Lq, " lk ", c.Lk, " d ", c.D, " causal ", c.causal,
                                         " padded ", padded, " rows ", c.rows.size());
        ASSERT_EQ(probs.shape(), want_probs.shape()) << what;
        EXPECT_LT(rel_err(probs, want_probs), 1e-4) << what;
        EXPECT_LT(rel_err(got.out, want.out), out_tol(dt)) << what;
      }
}

// attention_tapped: the attention kernel on the current stream and the taps on the side stream at
// once give exactly the values of the two calls in sequence (the same kernels), for one row (a
// view of q) and several (gathered), with modulation; without key classes the prefill kernel
// writes the taps (the same output and LSE as attention(), probabilities to rounding); the current
// stream is joined (a result read right after the call is complete); a bad row is an error naming
// 'rows'.
TEST(TapsCuda, TappedAttentionMatchesSequentialCalls) {
  MMATTN_REQUIRE_GPU();
  const Device g = Device::cuda();
  const int64_t B = 2, L = 640, Hq = 8, Hkv = 2, D = 128, C = 2;
  Tensor q = rand_tensor({B, L, Hq, D}, 81, -2.f, 2.f).to(g, DType::BF16);
  Tensor k = rand_tensor({B, L, Hkv, D}, 82, -2.f, 2.f).to(g, DType::BF16);
  Tensor v = rand_tensor({B, L, Hkv, D}, 83).to(g, DType::BF16);
  std::vector<uint8_t> cls(size_t(B * L));
  for (size_t j = 0; j < cls.size(); ++j) cls[j] = uint8_t(j % L < 35 ? 0 : 1);
  HeadModulation m;
  m.key_class = Tensor::from_vector(cls, {B, L}).to(g);
  m.num_classes = int(C);
  m.logit_abs_gain = rand_tensor({Hq, C}, 84, 0.f, 0.3f).to(g);
  for (const std::vector<int64_t>& rows : std::vector<std::vector<int64_t>>{{L - 1}, {0, 17, L - 1}})
    for (bool modulated : {false, true}) {
      AttentionOptions opt;
      opt.causal = true;
      opt.return_lse = true;
      if (modulated) opt.mod = &m;
      Tensor probs;
      const AttentionResult r = attention_tapped(q, k, v, rows, &probs, opt);
      const AttentionResult want = attention(q, k, v, opt);
      std::vector<Tensor> parts;
      for (int64_t i : rows) parts.push_back(q.slice(1, i, i + 1).contiguous());
      const Tensor q_rows = parts.size() == 1 ? parts[0] : concat(parts, 1);
      const Tensor want_probs = attention_probs(q_rows, k, TapRequest{rows, L, Tensor()}, opt);
      const std::string what = str_cat(rows.size(), " rows, modulated ", modulated);
      ASSERT_EQ(probs.shape(), (Shape{B, Hq, int64_t(rows.size()), L})) << what;
      EXPECT_EQ(r.out.to_floats(), want.out.to_floats()) << what;
      EXPECT_EQ(r.lse.to_floats(), want.lse.to_floats()) << what;
      if (modulated) EXPECT_EQ(probs.to_floats(), want_probs.to_floats()) << what;
      else EXPECT_LT(rel_err(probs, want_probs), 1e-4) << what;
    }
  Tensor probs;
  try {
    attention_tapped(q, k, v, {L}, &probs);
    ADD_FAILURE() << "no error for a row past Lq";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("rows[0]"), std::string::npos) << e.what();
  }
}
