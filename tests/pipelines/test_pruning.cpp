// Visual token pruning on the CPU (f32) against tools/golden/pruning.py on the tiny golden LLaVA:
// identical kept-token sets, logits of the last prompt row, 16 greedy tokens over the pruned
// per-layer caches; keep = all equals no pruning exactly; spec errors name the field.
#include <functional>

#include "core/io.h"
#include "core/json_reader.h"
#include "pruning_golden.h"

using namespace mmattn;
using namespace mmattn::test;

namespace {

const LlavaPipeline& pipe() {
  static LlavaPipeline p(golden_dir() + "/tiny_llava", Device::cpu(), DType::F32);
  return p;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

PruningConfig parse(const std::string& json) {
  const Json j = Json::parse(json);
  JsonReader r(j, "spec.json", "$.llava.pruning");
  return PruningConfig::parse(r);
}

}  // namespace

class PruningGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(PruningGolden, MatchesReference) {
  const std::string name = GetParam();
  const PruneGolden want = load_prune_golden(name);
  const PruneRun got = run_pruned(pipe(), prune_golden_configs().at(name));
  EXPECT_EQ(got.kept, want.kept) << name;
  if (!want.vit_kept.empty()) {
    std::vector<int64_t> v = got.vit_kept;
    std::sort(v.begin(), v.end());
    EXPECT_EQ(v, want.vit_kept) << name;
  }
  if (!want.stage_kept.empty()) EXPECT_EQ(got.stage_kept, want.stage_kept) << name;
  EXPECT_EQ(got.image_tokens, want.image_tokens) << name;
  EXPECT_LT(max_abs_diff(got.logits_last, want.logits_last), 2e-3) << name;
  EXPECT_EQ(got.greedy, want.greedy) << name;
}

INSTANTIATE_TEST_SUITE_P(AllMethods, PruningGolden,
                         ::testing::Values("fastv_k1_keep64", "fastv_k1_keep576", "pdrop_l1_keep64",
                                           "fastervlm_keep64", "visionzip_keep64", "visionzip_keep32",
                                           "dart_k1_keep64", "divprune_keep64", "vflowopt_keep64",
                                           "vflowopt_keep64_multisink"));

// keep = every image token (or ratio 1) is the unpruned result, bit for bit, for every method:
// FastV and PDrop rank and drop nothing; the others run no stage (PruningConfig::keep_all), since
// VisionZip would still merge, VFlowOpt recycle, and DART cannot keep every row.
TEST(Pruning, KeepAllEqualsNoPruningExactly) {
  PruningConfig none;
  const PruneRun base = run_pruned(pipe(), none, 4);
  for (PruneMethod m : {PruneMethod::FastV, PruneMethod::PDrop, PruneMethod::FasterVLM, PruneMethod::VisionZip,
                        PruneMethod::Dart, PruneMethod::DivPrune, PruneMethod::VFlowOpt}) {
    for (bool by_ratio : {false, true}) {
      PruningConfig c;
      c.method = m;
      if (by_ratio) c.ratio = 1.0;
      else c.keep = 576;
      c.layer = 1;
      c.layers = {1};
      c.llm_layers = {1};
      const PruneRun r = run_pruned(pipe(), c, 4);
      EXPECT_EQ(r.logits_last.to_floats(), base.logits_last.to_floats()) << prune_method_name(m) << by_ratio;
      EXPECT_EQ(r.greedy, base.greedy) << prune_method_name(m) << by_ratio;
    }
  }
  PruningConfig dart;
  dart.method = PruneMethod::Dart;
  dart.keep = 576;
  dart.layer = 1;
  dart.resolve(576, 2, 24);  // accepted (keep = all), no stage
  EXPECT_TRUE(dart.keep_all);
  EXPECT_FALSE(dart.in_llm());
  dart.keep = 575;  // one short of all: a real DART stage (4 pivots + 71 picks x 8 = 572 rows)
  dart.resolve(576, 2, 24);
  EXPECT_FALSE(dart.keep_all);
  EXPECT_TRUE(dart.in_llm());
}

TEST(Pruning, PipelineReportsStagesAndKvBytes) {
  LlavaRequest req;
  req.image = source_dir() + "/assets/images/extreme_ironing.jpg";
  req.prompt = "What is unusual about this image?";
  req.max_new_tokens = 3;
  req.min_new_tokens = 3;
  req.pruning.method = PruneMethod::FastV;
  req.pruning.layer = 1;
  req.pruning.keep = 64;
  req.kept_map_path = ::testing::TempDir() + "/kept_map.png";
  const LlavaResult r = pipe().run(req);
  const Json j = r.to_json()["pruning"];
  EXPECT_EQ(j["method"], "fastv");
  EXPECT_EQ(j["image_tokens_before"], 576);
  EXPECT_EQ(j["image_tokens_after"], 64);
  EXPECT_EQ(j["stages"][0]["layer"], 1);
  // layer 0 keeps all 595 prompt tokens, layer 1 the 595 - 512 kept ones (+ 2 decoded tokens each)
  const int64_t row_bytes = 2 * pipe().language_model().num_kv_heads() * pipe().language_model().attn_head_dim() * 4;
  EXPECT_EQ(j["kv_cache_bytes"].get<int64_t>(), (595 + 83) * row_bytes);
  const std::vector<int64_t> golden = load_prune_golden("fastv_k1_keep64").greedy;
  EXPECT_EQ(r.token_ids, std::vector<int64_t>(golden.begin(), golden.begin() + 3));
  const Image map = load_image(req.kept_map_path);
  EXPECT_EQ(map.width, 2 * 336 + 8);
  EXPECT_EQ(map.height, 336);
  EXPECT_LT(j["prefill_flops"].get<double>(), llama_prefill_flops(pipe().language_model(), {595, 595}));
}

TEST(Pruning, SpecErrorsNameTheField) {
  EXPECT_NE(error_of([] { parse(R"({"method": "fastv2"})"); }).find("$.llava.pruning.method"), std::string::npos);
  EXPECT_NE(error_of([] { parse(R"({"method": "fastv", "keep": 0})"); }).find("$.llava.pruning.keep"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse(R"({"method": "fastv", "ratio": 1.5})"); }).find("$.llava.pruning.ratio"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse(R"({"method": "fastv", "keep": 3, "ratio": 0.5})"); }).find("both"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse(R"({"method": "fastv", "dominant": 3})"); }).find("dominant"), std::string::npos);
  EXPECT_NE(error_of([] { parse(R"({"method": "vflowopt", "llm_layers": [4], "llm_ratios": []})"); })
                .find("$.llava.pruning.llm_ratios"),
            std::string::npos);
  // ranges against the model: keep past the image, layers past the depth
  EXPECT_NE(error_of([] {
              PruningConfig c = parse(R"({"method": "fastv", "keep": 600})");
              c.resolve(576, 32, 24);
            }).find("$.llava.pruning.keep is 600; the image has 576 tokens"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              PruningConfig c = parse(R"({"method": "pdrop", "layers": [8, 40]})");
              c.resolve(576, 32, 24);
            }).find("$.llava.pruning.layers[1] is 40; it must be in [1, 32)"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              PruningConfig c = parse(R"({"method": "dart", "layer": 0})");
              c.resolve(576, 32, 24);
            }).find("$.llava.pruning.layer is 0"),
            std::string::npos);
  // the pipeline checks them before any work
  LlavaRequest req;
  req.image = "/nonexistent.jpg";
  req.pruning = parse(R"({"method": "fastv", "layer": 2})");
  EXPECT_NE(error_of([&] { pipe().run(req); }).find("$.llava.pruning.layer is 2; it must be in [1, 2)"),
            std::string::npos);
}

// A pre-LLM method needs one ViT layer's [CLS] attention; a checkpoint whose feature strategy keeps
// [CLS] ("full") cannot give it: the request fails before any image is read, naming the spec field,
// and in a batch only that request is reported.
TEST(Pruning, ClsAttentionMethodsNeedTheDefaultFeatureStrategy) {
  const std::string dir = ::testing::TempDir() + "/pruning_full_strategy";
  const std::string tiny = golden_dir() + "/tiny_llava";
  for (const char* f : {"tokenizer.model", "model.safetensors.index.json", "model-00001-of-00003.safetensors",
                        "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"})
    write_file_atomic(dir + "/" + f, read_text_file(tiny + "/" + f));
  Json cfg = read_json_file(tiny + "/config.json");
  cfg["vision_feature_select_strategy"] = "full";
  write_file_atomic(dir + "/config.json", cfg.dump(1));
  const LlavaPipeline full(dir, Device::cpu(), DType::F32);
  LlavaRequest bad;
  bad.image = "/nonexistent.jpg";  // never read: the plan fails first
  bad.prompt = "Describe it.";
  bad.max_new_tokens = 2;
  bad.pruning = parse(R"({"method": "fastervlm", "keep": 64})");
  const std::string e = error_of([&] { full.run(bad); });
  EXPECT_NE(e.find("$.llava.pruning.method fastervlm reads one ViT layer's [CLS] attention"), std::string::npos) << e;
  LlavaRequest ok = bad;
  ok.image = source_dir() + "/assets/images/extreme_ironing.jpg";
  ok.pruning = parse(R"({"method": "fastv", "layer": 1, "keep": 64})");  // in-LLM: fine here
  const auto items = full.run_batch({bad, ok}, 2);
  ASSERT_EQ(items.size(), 2u);
  EXPECT_FALSE(items[0].ok);
  EXPECT_NE(items[0].error.find("'default' feature strategy"), std::string::npos) << items[0].error;
  EXPECT_TRUE(items[1].ok) << items[1].error;
}

// In-LLM pruning in a batch (prompts of different lengths, one padded prefill, the stage's work
// batched across sequences: DART's pivot cosines are one product for the batch): each request
// keeps the same tokens and generates the same ids as when run alone.
TEST(Pruning, InLlmMethodsInBatchesEqualSingleRuns) {
  for (const char* spec : {R"({"method": "dart", "keep": 32, "layer": 1})", R"({"method": "fastv", "keep": 48, "layer": 1})"}) {
    SCOPED_TRACE(spec);
    std::vector<LlavaRequest> reqs = three_requests(6);
    for (LlavaRequest& r : reqs) r.pruning = parse(spec);
    const auto items = pipe().run_batch(reqs, 3);
    ASSERT_EQ(items.size(), 3u);
    for (size_t i = 0; i < items.size(); ++i) {
      ASSERT_TRUE(items[i].ok) << items[i].error;
      const LlavaResult alone = pipe().run(reqs[i]);
      EXPECT_EQ(items[i].result.pruning.kept_patches, alone.pruning.kept_patches) << i;
      EXPECT_EQ(items[i].result.token_ids, alone.token_ids) << i;
    }
  }
}
