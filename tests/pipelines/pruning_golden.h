#pragma once
// Runs a pruning configuration of tests/golden/tiny_llava_pruning.safetensors (made by
// tools/golden/pruning.py from docs/pruning.md) through the engine: ViT + projector with the
// pre-LLM stage, the prompt, one prefill with the in-LLM stages, 16 greedy tokens (EOS masked as
// the golden). Shared by the CPU and GPU tests.
#include <cmath>
#include <map>

#include "core/checkpoint.h"
#include "core/json_reader.h"
#include "language/chat.h"
#include "language/llama.h"
#include "language/llava.h"
#include "language/tokenizer.h"
#include "pipelines/llava.h"
#include "pipelines/modulation.h"
#include "pipelines/pruning.h"
#include "test_util.h"
#include "vision/clip_preprocess.h"
#include "vision/image.h"
#include "vision/projector.h"

namespace mmattn::test {

struct PruneRun {
  std::vector<int64_t> kept;      // kept patches after every stage (golden "kept")
  std::vector<int64_t> vit_kept;  // patches of the rows the vision stage produced (vflowopt)
  std::vector<int64_t> stage_kept;
  int64_t image_tokens = 0;
  Tensor logits_last;             // F32 [V] on the CPU
  std::vector<int64_t> greedy;
  std::vector<std::vector<int32_t>> sinks;  // VAR: each layer's sink positions
};

struct PruneGolden {
  std::vector<int64_t> kept, vit_kept, stage_kept, greedy;
  int64_t image_tokens = 0;
  Tensor logits_last;
  Tensor scores;  // the ranking signal (see the golden's meta)
};

// ||a - b|| / ||b|| over all elements (bf16 runs against f32 references).
inline double rel_l2(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = a.to_floats(), y = b.to_floats();
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) num += (x[i] - y[i]) * double(x[i] - y[i]), den += double(y[i]) * y[i];
  return std::sqrt(num / std::max(den, 1e-30));
}

inline std::vector<int64_t> ints_of(const Tensor& t) {
  const Tensor c = t.to(DType::I64);
  const int64_t* p = c.data<int64_t>();
  return {p, p + c.numel()};
}

inline PruneGolden load_prune_golden(const std::string& name) {
  static Checkpoint g(golden_dir() + "/tiny_llava_pruning.safetensors");
  PruneGolden r;
  r.kept = ints_of(g.load(name + ".kept", Device::cpu(), DType::I64));
  if (g.has(name + ".vit_kept")) r.vit_kept = ints_of(g.load(name + ".vit_kept", Device::cpu(), DType::I64));
  if (g.has(name + ".stage_kept")) r.stage_kept = ints_of(g.load(name + ".stage_kept", Device::cpu(), DType::I64));
  r.greedy = ints_of(g.load(name + ".greedy", Device::cpu(), DType::I64));
  r.image_tokens = ints_of(g.load(name + ".image_tokens", Device::cpu(), DType::I64))[0];
  r.logits_last = g.load(name + ".logits_last", Device::cpu(), DType::F32);
  r.scores = g.load(name + ".scores", Device::cpu(), DType::F32);
  return r;
}

// The golden configurations (tools/golden/pruning.py) as engine configs.
inline std::map<std::string, PruningConfig> prune_golden_configs() {
  std::map<std::string, PruningConfig> m;
  auto add = [&](const std::string& name, PruneMethod meth, int64_t keep, auto&& tweak) {
    PruningConfig c;
    c.method = meth;
    c.keep = keep;
    tweak(c);
    m[name] = c;
  };
  auto none = [](PruningConfig&) {};
  add("fastv_k1_keep64", PruneMethod::FastV, 64, [](PruningConfig& c) { c.layer = 1; });
  add("fastv_k1_keep576", PruneMethod::FastV, 576, [](PruningConfig& c) { c.layer = 1; });
  add("pdrop_l1_keep64", PruneMethod::PDrop, 64, [](PruningConfig& c) { c.layers = {1}; });
  add("fastervlm_keep64", PruneMethod::FasterVLM, 64, none);
  add("visionzip_keep64", PruneMethod::VisionZip, 64, [](PruningConfig& c) { c.dominant = -1; });
  add("visionzip_keep32", PruneMethod::VisionZip, 32, [](PruningConfig& c) { c.dominant = -1; });
  add("dart_k1_keep64", PruneMethod::Dart, 64, [](PruningConfig& c) { c.layer = 1; });
  add("divprune_keep64", PruneMethod::DivPrune, 64, none);
  auto vflow = [](double t) {
    return [t](PruningConfig& c) {
      c.sink_threshold = t;
      c.llm_layers = {1};
      c.llm_ratios = {0.5};
    };
  };
  add("vflowopt_keep64", PruneMethod::VFlowOpt, 64, vflow(35.0));
  add("vflowopt_keep64_multisink", PruneMethod::VFlowOpt, 64, vflow(1.47));
  return m;
}

// mod: attention modulation applied in every forward (docs/modulation.md), or none.
// VAR in a setting whose effect stands far above bf16 noise on the tiny model: sink dims 3 and 17,
// tau 1 (~200 of 576 image tokens are sinks), p = 0 (all of their weight moved), from layer 0.
inline ModulationSet strong_var() {
  ModulationConfig c;
  c.method = ModMethod::VAR;
  c.sink_dims = {3, 17};
  c.tau = 1.0, c.p = 0, c.rho = 0.5, c.summ = 0.2;
  c.start_layer = 0;
  ModulationSet s;
  s.items.push_back(c);
  return s;
}

inline PruneRun run_pruned(const LlavaPipeline& pipe, PruningConfig cfg, int64_t new_tokens = 16,
                           ModulationSet mod = {}, std::vector<uint8_t> image_classes = {}) {
  const LlamaModel& lm = pipe.language_model();
  const auto& vc = pipe.config().vision_config;
  cfg.resolve(vc.num_patches(), lm.num_layers(), vc.image_size / vc.patch_size);
  const Image crop = clip_resize_crop(load_image(source_dir() + "/assets/images/extreme_ironing.jpg"),
                                      pipe.preprocess_config());
  const Tensor px = clip_normalize(crop, pipe.preprocess_config()).unsqueeze(0).to(pipe.device(), pipe.dtype());
  VisualTokens vt = encode_visual_tokens(cfg, pipe.image_encoder(), px, crop.to_tensor());
  const int64_t n = vt.features.size(0);
  const int64_t img = pipe.config().image_token_index;
  const std::vector<int64_t> ids =
      pipe.tokenizer().encode(llava_prompt("What is unusual about this image?", true), true);
  const std::vector<int64_t> ex = expand_image_tokens(ids, img, n, 1);
  const int64_t start = int64_t(std::find(ids.begin(), ids.end(), img) - ids.begin());
  const Tensor embeds =
      llava_input_embeds(lm, Tensor::from_vector<int64_t>(ex, {1, int64_t(ex.size())}), vt.features.unsqueeze(0), img);
  KVCache cache = lm.make_cache(1, int64_t(ex.size()) + new_tokens);
  LlavaTokenPruner pruner(cfg, lm, {{start, n}}, {vt.row_importance});
  mod.resolve(lm.num_layers());
  LlavaModulator modulator(mod, lm, {{start, n}});
  modulator.set_image_classes(0, image_classes);
  LlamaForwardOptions o;
  o.last_only = true;
  o.pruner = cfg.in_llm() ? &pruner : nullptr;
  o.modulator = mod.attention() ? &modulator : nullptr;
  Tensor logits = lm.forward(embeds, cache, o);
  o.pruner = nullptr;
  PruneRun r;
  for (int l = 0; l < lm.num_layers(); ++l) r.sinks.push_back(modulator.sinks(l, 0));
  r.image_tokens = n;
  r.logits_last = logits.to(Device::cpu()).reshape({-1});
  r.vit_kept = vt.patch;
  for (const auto& s : vt.report.stages) r.stage_kept.push_back(s.image_tokens);
  if (cfg.in_llm()) {
    for (const auto& s : pruner.stages(0)) r.stage_kept.push_back(s.image_tokens);
    for (int64_t row : pruner.kept_rows(0)) r.kept.push_back(vt.patch[size_t(row)]);
    std::sort(r.kept.begin(), r.kept.end());
  } else {
    r.kept = vt.report.kept_patches;
  }
  for (int64_t i = 0; i < new_tokens; ++i) {
    const std::vector<float> row = logits.to_floats();
    const int64_t tok = int64_t(std::max_element(row.begin(), row.end()) - row.begin());
    r.greedy.push_back(tok);
    if (i + 1 < new_tokens) logits = lm.forward(lm.embed(Tensor::from_vector<int64_t>({tok}, {1, 1})), cache, o);
  }
  return r;
}

// VHR's golden request (tools/golden/vhr.py): the extreme-ironing image, VHR in layers 0 and 1 of
// the tiny model, 16 tokens.
inline LlavaRequest vhr_golden_request(const LlavaPipeline& pipe) {
  const Json j = Json::parse(R"({"method": "vhr", "layers": [0, 1]})");
  JsonReader rd(j, "spec.json", "$.modulation[0]");
  ModulationSet s;
  s.items.push_back(ModulationConfig::parse(rd));
  s.resolve(pipe.language_model().num_layers(), int(pipe.language_model().num_heads()));
  LlavaRequest r;
  r.image = source_dir() + "/assets/images/extreme_ironing.jpg";
  r.prompt = "What is unusual about this image?";
  r.max_new_tokens = r.min_new_tokens = 16;
  r.modulation = s;
  return r;
}

// Each VHR layer's heads equal to the golden's and to vhr_select of the run's own VHD / TA, and
// its VHD and TA within rel_tol (relative) per head.
inline void expect_vhr_selection(const LlavaResult& res, const Checkpoint& g, double rel_tol) {
  ASSERT_EQ(res.vhr_heads.size(), 2u);
  ASSERT_EQ(res.vhr_ta.size(), 2u);
  for (int l = 0; l < 2; ++l) {
    SCOPED_TRACE(l);
    const std::string sl = std::to_string(l);
    std::vector<int64_t> heads(res.vhr_heads[size_t(l)].begin(), res.vhr_heads[size_t(l)].end());
    EXPECT_EQ(heads, ints_of(g.load("vhr.heads_l" + sl, Device::cpu(), DType::I64)));
    EXPECT_EQ(res.vhr_heads[size_t(l)], vhr_select(res.vhr_vhd[size_t(l)], res.vhr_ta[size_t(l)], true));
    const std::vector<float> want = g.load("vhr.vhd_l" + sl, Device::cpu(), DType::F32).to_floats();
    const std::vector<float> want_ta = g.load("vhr.ta_l" + sl, Device::cpu(), DType::F32).to_floats();
    ASSERT_EQ(res.vhr_vhd[size_t(l)].size(), want.size());
    ASSERT_EQ(res.vhr_ta[size_t(l)].size(), want.size());
    for (size_t h = 0; h < want.size(); ++h) {
      std::printf("vhr layer %d head %zu: VHD %.5f (reference %.5f), TA %.5f (reference %.5f)\n", l, h,
                  res.vhr_vhd[size_t(l)][h], want[h], res.vhr_ta[size_t(l)][h], want_ta[h]);
      EXPECT_NEAR(res.vhr_vhd[size_t(l)][h], want[h], rel_tol * want[h]);
      EXPECT_NEAR(res.vhr_ta[size_t(l)][h], want_ta[h], rel_tol * want_ta[h]);
    }
  }
}

// Three requests of different images and prompt lengths (a padded batch), `tokens` tokens each.
inline std::vector<LlavaRequest> three_requests(int64_t tokens) {
  std::vector<LlavaRequest> r(3);
  r[0].image = r[2].image = source_dir() + "/assets/images/extreme_ironing.jpg";
  r[1].image = source_dir() + "/assets/images/chelsea.png";
  r[0].prompt = "What is unusual about this image?";
  r[1].prompt = "Describe it.";
  r[2].prompt = "Is there a man ironing clothes on the back of a taxi in the picture?";
  for (LlavaRequest& q : r) q.max_new_tokens = q.min_new_tokens = tokens;
  return r;
}

// PAINT on the golden image (tools/golden/modulation.py): boosts in decoder layers 0-1, the token
// classes from the pipeline's ViT [CLS] attention (layers 0 and 1 of the tiny tower), and the
// local (class 2) and summary (class 3) patch lists.
struct PaintGolden {
  ModulationConfig config;
  std::vector<uint8_t> classes;
  std::vector<int64_t> local, summary;
};
inline PaintGolden paint_golden(const LlavaPipeline& pipe) {
  PaintGolden p;
  p.config.method = ModMethod::PAINT;
  p.config.start_layer = 0;
  p.config.end_layer = 2;
  const Image crop = clip_resize_crop(load_image(source_dir() + "/assets/images/extreme_ironing.jpg"),
                                      pipe.preprocess_config());
  const Tensor px = clip_normalize(crop, pipe.preprocess_config()).unsqueeze(0).to(pipe.device(), pipe.dtype());
  const ClipVisionTower& tower = pipe.image_encoder().tower();
  p.classes = paint_classes(p.config, sum_over_heads(tower.cls_attention(px, 0)),
                            sum_over_heads(tower.cls_attention(px, 1)));
  for (size_t i = 0; i < p.classes.size(); ++i) {
    if (p.classes[i] == 2) p.local.push_back(int64_t(i));
    if (p.classes[i] == 3) p.summary.push_back(int64_t(i));
  }
  return p;
}

}  // namespace mmattn::test
