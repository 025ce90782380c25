// The modulation methods on the GPU (bf16) against their references (f32): PAI, AD-HH, VAR, VHR,
// PAINT and the contrastive methods. PAI: logits of the last prompt row within 5% relative L2 of
// the reference's (bf16 end to end), and closer to the modulated reference than to the unmodulated
// one when the boost is large (alpha 3).
#include <algorithm>
#include <cmath>

#include "pruning_golden.h"

using namespace mmattn;
using namespace mmattn::test;

namespace {

ModulationSet pai(double alpha, int start, int end) {
  ModulationConfig c;
  c.alpha = alpha;
  c.start_layer = start;
  c.end_layer = end;
  ModulationSet s;
  s.items.push_back(c);
  return s;
}

// The last prompt row's logits with `c` alone (image token classes for PAINT) within 5% relative
// L2 of the golden's `<key>.logits_last` (bf16 end to end).
void expect_logits_near_golden(const LlavaPipeline& pipe, const Checkpoint& g, const ModulationConfig& c,
                               const std::string& key, const std::vector<uint8_t>& classes = {}) {
  ModulationSet s;
  s.items.push_back(c);
  const PruneRun got = run_pruned(pipe, PruningConfig{}, 4, s, classes);
  const double e = rel_l2(got.logits_last, g.load(key + ".logits_last", Device::cpu(), DType::F32));
  std::printf("%s logits rel L2 %.4f\n", key.c_str(), e);
  EXPECT_LT(e, 0.05) << key;
}

}  // namespace

TEST(ModulationCuda, PaiMatchesReferenceWithinBf16) {
  MMATTN_REQUIRE_GPU();
  static LlavaPipeline pipe(golden_dir() + "/tiny_llava", Device::cuda(), DType::BF16);
  Checkpoint g(golden_dir() + "/tiny_llava_modulation.safetensors");
  const Tensor base = g.load("pai_a0_l0.logits_last", Device::cpu(), DType::F32);
  const struct {
    const char* name;
    double alpha;
    int start, end;
  } cases[] = {{"pai_a02_l0", 0.2, 0, 2}, {"pai_a05_l1", 0.5, 1, 2}, {"pai_a3_l0", 3.0, 0, 2}};
  for (const auto& c : cases) {
    const Tensor want = g.load(std::string(c.name) + ".logits_last", Device::cpu(), DType::F32);
    const PruneRun got = run_pruned(pipe, PruningConfig{}, 4, pai(c.alpha, c.start, c.end));
    const double e = rel_l2(got.logits_last, want);
    std::printf("%-12s logits rel L2 %.4f (vs unmodulated reference %.4f)\n", c.name, e, rel_l2(got.logits_last, base));
    EXPECT_LT(e, 0.05) << c.name;
    if (c.alpha >= 3) EXPECT_LT(e, rel_l2(got.logits_last, base)) << c.name;
  }
}

TEST(ModulationCuda, AdhhMatchesReferenceWithinBf16) {
  MMATTN_REQUIRE_GPU();
  static LlavaPipeline pipe(golden_dir() + "/tiny_llava", Device::cuda(), DType::BF16);
  Checkpoint g(golden_dir() + "/tiny_llava_modulation.safetensors");
  ModulationConfig c;
  c.method = ModMethod::ADHH;
  c.heads = {{0, 1}, {1, 0}, {1, 3}};
  c.threshold = 0.022;
  expect_logits_near_golden(pipe, g, c, "adhh");
}

// VAR on the GPU against the engine's CPU f32 run (itself matched to tools/golden/var.py), in a
// setting where the effect stands far above bf16 noise: tau 1 makes ~200 of 576 image tokens sinks
// and p = 0 moves all of their weight (12.7% relative change of the logits on the CPU). Sink sets
// may differ by the tokens whose r lies within bf16 rounding of tau: their sizes within 5%; logits
// within 5% and closer to VAR's than to the plain model's.
TEST(ModulationCuda, VarMatchesCpuWithinBf16) {
  MMATTN_REQUIRE_GPU();
  static LlavaPipeline gpu(golden_dir() + "/tiny_llava", Device::cuda(), DType::BF16);
  static LlavaPipeline cpu(golden_dir() + "/tiny_llava", Device::cpu(), DType::F32);
  ModulationSet s = strong_var();
  const PruneRun want = run_pruned(cpu, PruningConfig{}, 4, s), plain = run_pruned(cpu, PruningConfig{}, 4);
  const PruneRun got = run_pruned(gpu, PruningConfig{}, 4, s);
  for (size_t l = 0; l < want.sinks.size(); ++l) {
    const double nw = double(want.sinks[l].size()), ng = double(got.sinks[l].size());
    std::printf("var layer %zu: %g sinks on the CPU, %g on the GPU\n", l, nw, ng);
    EXPECT_GT(nw, 100);
    EXPECT_LT(std::fabs(ng - nw), 0.05 * nw);
  }
  const double e = rel_l2(got.logits_last, want.logits_last), e0 = rel_l2(got.logits_last, plain.logits_last);
  std::printf("var p=0: logits rel L2 %.4f vs the CPU run (%.4f vs the plain model; CPU effect %.4f)\n", e, e0,
              rel_l2(want.logits_last, plain.logits_last));
  EXPECT_LT(e, 0.05);
  EXPECT_LT(e, e0);
}

// VHR on the GPU (bf16) against tools/golden/vhr.py (f32), through the pipeline (the text-only
// branch stepped inside the request's own prefill). The selection must be the golden's and
// vhr_select of the run's own VHD / TA. Layer 0's closest call is thin: head 1's VHD is 0.25% above
// the outlier filter's bound (the median between heads 2 and 3: 0.56%), and the bf16 VHDs measured
// up to 0.3% off before the filter existed; the bf16 run makes the same call on the H100 (passed at
// 9de2e35), but a kernel change that moves VHD by a few tenths of a percent may flip it: then check
// the printed VHD / TA against the golden before suspecting the rule; each head's VHD and TA within 3% relative; the first two tokens are the
// reference's (the second differs from the plain model's); a padded batch selects as single runs do.
TEST(ModulationCuda, VhrMatchesReferenceWithinBf16) {
  MMATTN_REQUIRE_GPU();
  static LlavaPipeline pipe(golden_dir() + "/tiny_llava", Device::cuda(), DType::BF16);
  Checkpoint g(golden_dir() + "/tiny_llava_vhr.safetensors");
  const LlavaRequest r = vhr_golden_request(pipe);
  const LlavaResult res = pipe.run(r);
  expect_vhr_selection(res, g, 0.03);
  const std::vector<int64_t> greedy = ints_of(g.load("vhr.greedy", Device::cpu(), DType::I64));
  ASSERT_FALSE(res.token_ids.empty());
  size_t match = 0;
  while (match < greedy.size() && match < res.token_ids.size() && res.token_ids[match] == greedy[match]) ++match;
  std::printf("vhr bf16 greedy: first %zu of %zu tokens match the reference\n", match, greedy.size());
  EXPECT_GE(match, 2u);
  LlavaRequest plain = r;
  plain.modulation = {};
  const LlavaResult plain_res = pipe.run(plain);
  ASSERT_GE(plain_res.token_ids.size(), 2u);
  EXPECT_NE(plain_res.token_ids[1], greedy[1]);  // the selection changed the second token (the first agrees)
  LlavaRequest r2 = r;
  r2.prompt = "Describe the image.";
  const LlavaResult res2 = pipe.run(r2);
  const std::vector<LlavaBatchItem> b = pipe.run_batch({r, r2}, 2);
  ASSERT_EQ(b.size(), 2u);
  for (size_t i = 0; i < b.size(); ++i) {
    ASSERT_TRUE(b[i].ok) << b[i].error;
    EXPECT_EQ(b[i].result.vhr_heads, (i == 0 ? res : res2).vhr_heads) << i;
  }
}

namespace {

// The request of the contrastive goldens (tools/golden/modulation.py): 16 tokens, EOS masked.
LlavaRequest golden_request(const ModulationConfig& c) {
  LlavaRequest r;
  r.image = source_dir() + "/assets/images/extreme_ironing.jpg";
  r.prompt = "What is unusual about this image?";
  r.max_new_tokens = r.min_new_tokens = 16;
  r.modulation.items.push_back(c);
  return r;
}

}  // namespace

// PAINT on the GPU: the token classes from the bf16 ViT's [CLS] attention against the reference's
// (the early-layer top 25% may trade the boundary tokens under bf16: >= 90% overlap; the
// penultimate-layer outliers stand far apart: equal), and the boosted decoder's last-row logits
// within 5% relative L2 of the reference's (bf16 end to end, as PAI's).
TEST(ModulationCuda, PaintMatchesReferenceWithinBf16) {
  MMATTN_REQUIRE_GPU();
  static LlavaPipeline pipe(golden_dir() + "/tiny_llava", Device::cuda(), DType::BF16);
  Checkpoint g(golden_dir() + "/tiny_llava_modulation.safetensors");
  const PaintGolden pg = paint_golden(pipe);
  const ModulationConfig& c = pg.config;
  const std::vector<uint8_t>& cls = pg.classes;
  const std::vector<int64_t>&local = pg.local, &summary = pg.summary;
  const std::vector<int64_t> want_local = ints_of(g.load("paint.local", Device::cpu(), DType::I64));
  size_t common = 0;
  for (int64_t i : local) common += std::binary_search(want_local.begin(), want_local.end(), i);
  std::printf("paint: %zu local tokens (reference %zu, %zu in common), summary %zu\n", local.size(), want_local.size(),
              common, summary.size());
  EXPECT_GE(double(common), 0.9 * double(want_local.size()));
  EXPECT_EQ(summary, ints_of(g.load("paint.summary", Device::cpu(), DType::I64)));
  expect_logits_near_golden(pipe, g, c, "paint", cls);
}

// Contrastive decoding on the GPU (the two branches as one bf16 batch). The references' first-step
// margins are small (PAI + cfg: 0.057 between its two best scores, VCD 0.14, RITUAL 0.22; DAMRO
// 1.2), below what bf16 moves on this model, so the first token must be one the reference itself
// scores within 0.3 of its best (and plausible: a finite score); DAMRO's must be the reference's,
// which the plain model's first token is not (it scores 2.9 below DAMRO's best; in the other
// references it lies inside the band, so only DAMRO shows the branch's effect at this tolerance).
TEST(ModulationCuda, ContrastiveFirstTokensWithinBf16) {
  MMATTN_REQUIRE_GPU();
  static LlavaPipeline pipe(golden_dir() + "/tiny_llava", Device::cuda(), DType::BF16);
  Checkpoint g(golden_dir() + "/tiny_llava_modulation.safetensors");
  const int64_t plain_first = ints_of(g.load("pai_a0_l0.greedy", Device::cpu(), DType::I64))[0];
  ModulationConfig pai_cfg;
  pai_cfg.alpha = 0.2;
  pai_cfg.start_layer = 0;
  pai_cfg.end_layer = 2;
  pai_cfg.cfg = 1.1;
  ModulationConfig vcd;
  vcd.method = ModMethod::VCD;
  ModulationConfig damro;
  damro.method = ModMethod::DAMRO;
  damro.cd_alpha = 2.0;
  ModulationConfig ritual;
  ritual.method = ModMethod::RITUAL;
  ritual.transform = ImageTransformKind::HFlip;
  const struct {
    const char* name;
    ModulationConfig c;
    bool exact;
  } cases[] = {{"pai_cfg", pai_cfg, false}, {"vcd", vcd, false}, {"damro", damro, true}, {"ritual_hflip", ritual, false}};
  for (const auto& k : cases) {
    SCOPED_TRACE(k.name);
    LlavaRequest r = golden_request(k.c);
    if (k.c.method == ModMethod::VCD) r.branch_pixels = g.load("vcd.pixels", Device::cpu(), DType::F32);
    const std::vector<float> scores = g.load(std::string(k.name) + ".scores", Device::cpu(), DType::F32).to_floats();
    const std::vector<int64_t> want = ints_of(g.load(std::string(k.name) + ".greedy", Device::cpu(), DType::I64));
    const float best = *std::max_element(scores.begin(), scores.end());
    const LlavaResult res = pipe.run(r);
    ASSERT_FALSE(res.token_ids.empty());
    const int64_t first = res.token_ids[0];
    size_t match = 0;
    while (match < want.size() && match < res.token_ids.size() && res.token_ids[match] == want[match]) ++match;
    std::printf("%-13s first token %lld (reference %lld), reference score %.4f of best %.4f; %zu of %zu tokens match\n",
                k.name, (long long)first, (long long)want[0], scores[size_t(first)], best, match, want.size());
    EXPECT_TRUE(std::isfinite(scores[size_t(first)]));
    EXPECT_GE(scores[size_t(first)], best - 0.3f);
    if (k.exact) {
      EXPECT_EQ(first, want[0]);
      EXPECT_LT(scores[size_t(plain_first)], best - 0.3f);  // the plain answer is out of the band
    }
  }
}
