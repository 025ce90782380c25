// Attention-head modulation on the CPU (f32) against tools/golden/modulation.py on the tiny golden
// LLaVA: PAI's last-row image-key logit boost in the chosen layers, every forward (prefill and
// decode): logits of the last prompt row and 16 greedy tokens; spec errors name the field.
#include <functional>

#include "core/json_reader.h"
#include "pruning_golden.h"

using namespace mmattn;
using namespace mmattn::test;

namespace {

const LlavaPipeline& pipe() {
  static LlavaPipeline p(golden_dir() + "/tiny_llava", Device::cpu(), DType::F32);
  return p;
}

ModulationSet pai(double alpha, int start, int end) {
  ModulationConfig c;
  c.method = ModMethod::PAI;
  c.alpha = alpha;
  c.start_layer = start;
  c.end_layer = end;
  ModulationSet s;
  s.items.push_back(c);
  return s;
}

struct Golden {
  Tensor logits;
  std::vector<int64_t> greedy;
};

Golden golden(const std::string& name) {
  static Checkpoint g(golden_dir() + "/tiny_llava_modulation.safetensors");
  return {g.load(name + ".logits_last", Device::cpu(), DType::F32),
          ints_of(g.load(name + ".greedy", Device::cpu(), DType::I64))};
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST(Modulation, PaiMatchesReference) {
  const struct {
    const char* name;
    double alpha;
    int start, end;
  } cases[] = {{"pai_a02_l0", 0.2, 0, 2}, {"pai_a05_l1", 0.5, 1, 2}, {"pai_a3_l0", 3.0, 0, 2}, {"pai_a0_l0", 0.0, 0, 2}};
  for (const auto& c : cases) {
    const Golden want = golden(c.name);
    const PruneRun got = run_pruned(pipe(), PruningConfig{}, 16, pai(c.alpha, c.start, c.end));
    EXPECT_LT(max_abs_diff(got.logits_last, want.logits), 2e-3) << c.name;
    EXPECT_EQ(got.greedy, want.greedy) << c.name;
  }
  // the boost is really applied (the reference's logits move by up to 0.59 at alpha 3)
  EXPECT_GT(max_abs_diff(golden("pai_a3_l0").logits, golden("pai_a0_l0").logits), 0.1);
}

TEST(Modulation, PaiComposesWithPruningAndBatches) {
  // FastV keep 64 + PAI: runs, and differs from FastV alone
  PruningConfig fv;
  fv.method = PruneMethod::FastV;
  fv.layer = 1;
  fv.keep = 64;
  const PruneRun a = run_pruned(pipe(), fv, 4), b = run_pruned(pipe(), fv, 4, pai(3.0, 0, 2));
  EXPECT_GT(max_abs_diff(a.logits_last, b.logits_last), 1e-3);
  // run_batch with PAI gives run()'s tokens (different prompt lengths: two-step prefill)
  LlavaRequest r1, r2;
  r1.image = r2.image = source_dir() + "/assets/images/extreme_ironing.jpg";
  r1.prompt = "What is unusual about this image?";
  r2.prompt = "Describe it.";
  for (LlavaRequest* r : {&r1, &r2}) {
    r->max_new_tokens = r->min_new_tokens = 6;
    r->modulation = pai(3.0, 0, 2);
  }
  const auto items = pipe().run_batch({r1, r2}, 2);
  ASSERT_TRUE(items[0].ok && items[1].ok);
  EXPECT_EQ(items[0].result.token_ids, pipe().run(r1).token_ids);
  EXPECT_EQ(items[1].result.token_ids, pipe().run(r2).token_ids);
  const std::vector<int64_t> want = golden("pai_a3_l0").greedy;
  EXPECT_EQ(pipe().run(r1).token_ids, std::vector<int64_t>(want.begin(), want.begin() + 6));
}

TEST(Modulation, SpecErrorsNameTheField) {
  auto parse = [](const std::string& json) {
    const Json j = Json::parse(json);
    JsonReader r(j, "spec.json", "$.llava");
    ModulationSet s = ModulationSet::parse(r, "modulation");
    s.resolve(32);
    return s;
  };
  EXPECT_NE(error_of([&] { parse(R"({"modulation": [{"method": "opera"}]})"); }).find("$.llava.modulation[0].method"),
            std::string::npos);
  EXPECT_NE(error_of([&] { parse(R"({"modulation": [{"method": "pai", "alpha": -1}]})"); })
                .find("$.llava.modulation[0].alpha"),
            std::string::npos);
  EXPECT_NE(error_of([&] { parse(R"({"modulation": [{"method": "pai", "start_layer": 40}]})"); })
                .find("$.llava.modulation[0].start_layer is 40"),
            std::string::npos);
  EXPECT_NE(error_of([&] { parse(R"({"modulation": [{"method": "pai", "bogus": 1}]})"); }).find("bogus"),
            std::string::npos);
  const ModulationSet ok = parse(R"({"modulation": [{"method": "pai"}]})");
  EXPECT_EQ(ok.items[0].start_layer, 2);
  EXPECT_EQ(ok.items[0].end_layer, 32);
  EXPECT_DOUBLE_EQ(ok.items[0].alpha, 0.2);
}
