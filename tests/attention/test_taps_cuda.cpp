// GPU taps against the CPU taps on the same (rounded) inputs, with modulation and the saved LSE.
#include "attention/taps.h"
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
