// CLIP vision tower + LLaVA projector in bf16 on CUDA against the transformers goldens (f32 from the
// bf16-rounded weights, tools/golden/llava.py) and against the f32 CPU path.
// Tolerance: rel err < 3e-2. bf16 keeps 8 mantissa bits (~4e-3 relative per rounding); the residual
// stream, every GEMM output, LayerNorm and activation are rounded to bf16 as PyTorch's bf16 model
// does, which compounds over the conv, 2 encoder layers and the projector. Measured on an H100
// (2026-11, sm_90a, cuDNN conv): vision_features 5.1e-3, image_features 6.1e-3, hidden states vs
// the f32 CPU path 3.3e-3..5.7e-3, [CLS] attention rows 1.9e-3..2.8e-3.
#include "core/checkpoint.h"
#include "core/cuda_graph.h"
#include "core/hf_config.h"
#include "core/ops/elementwise.h"
#include "core/safetensors.h"
#include "test_util.h"
#include "vision/clip_vit.h"
#include "vision/projector.h"

#include <tuple>

using namespace mmattn;
using namespace mmattn::test;

namespace {
constexpr double kBf16Tol = 3e-2;
std::string model_dir() { return golden_dir() + "/tiny_llava"; }
// The tiny golden model's vision tower on `dev` in `dt`.
ClipVisionTower load_tower(Device dev, DType dt) {
  const Checkpoint ckpt(model_dir());
  const ClipVisionConfig vc = read_model_config(model_dir()).llava().vision_config;
  return ClipVisionTower::load(ckpt, detect_llava_prefixes(ckpt).vision_tower, vc, dev, dt);
}
}  // namespace

TEST(ClipVitCuda, Bf16MatchesGolden) {
  MMATTN_REQUIRE_GPU();
  const Checkpoint ckpt(model_dir());
  const LlavaConfig cfg = read_model_config(model_dir()).llava();
  const SafeTensorsFile golden(golden_dir() + "/tiny_llava_golden.safetensors");
  const LlavaImageEncoder enc = LlavaImageEncoder::load(ckpt, cfg, Device::cuda(), DType::BF16);
  const Tensor px = golden.get("pixel_values");
  const Tensor vf = enc.vision_features(px);
  ASSERT_TRUE(vf.is_cuda());
  ASSERT_EQ(vf.dtype(), DType::BF16);
  const Tensor img = enc.projector().forward(vf);
  const double e_vf = rel_err(vf, golden.get("vision_features"));
  const double e_img = rel_err(img, golden.get("image_features"));
  std::printf("bf16 CUDA: vision_features rel err %.3g, image_features rel err %.3g\n", e_vf, e_img);
  EXPECT_LT(e_vf, kBf16Tol);
  EXPECT_LT(e_img, kBf16Tol);
}

TEST(ClipVitCuda, Bf16ClsAttentionAndHiddenStatesMatchCpu) {
  MMATTN_REQUIRE_GPU();
  const ClipVisionTower cpu = load_tower(Device::cpu(), DType::F32);
  const ClipVisionTower gpu = load_tower(Device::cuda(), DType::BF16);
  const ClipVisionConfig& vc = gpu.config();
  const SafeTensorsFile golden(golden_dir() + "/tiny_llava_golden.safetensors");
  const Tensor px = golden.get("pixel_values");
  const ClipVisionOutput oc = cpu.forward(px, -1, true), og = gpu.forward(px, -1, true);
  ASSERT_EQ(og.hidden_states.size(), oc.hidden_states.size());
  for (size_t i = 0; i < oc.hidden_states.size(); ++i) {
    const double e = rel_err(og.hidden_states[i], oc.hidden_states[i]);
    std::printf("hidden_states[%zu] bf16 vs f32 rel err %.3g\n", i, e);
    EXPECT_LT(e, kBf16Tol) << "hidden_states[" << i << "]";
  }
  for (int64_t layer : {int64_t(0), int64_t(-2), int64_t(-1)}) {
    const Tensor a = gpu.cls_attention(px, layer);
    EXPECT_EQ(a.dtype(), DType::F32);
    EXPECT_EQ(a.shape(), (Shape{1, vc.num_attention_heads, vc.num_patches() + 1}));
    const double e = rel_err(a, cpu.cls_attention(px, layer));
    std::printf("cls_attention(layer %ld) bf16 vs f32 rel err %.3g\n", long(layer), e);
    EXPECT_LT(e, kBf16Tol);
  }
}

// The tower's layers as a CUDA graph (the default for device pixel values in the tower's dtype)
// against the eager pass: the same kernels, so equal bit for bit; two images in alternation (each
// replay's outputs are copies: a later replay leaves an earlier result alone), with and without
// the kept hidden states, and feature_taps (graphed with its taps).
TEST(ClipVitCuda, GraphPassEqualsEagerPass) {
  MMATTN_REQUIRE_GPU();
  const ClipVisionTower gpu = load_tower(Device::cuda(), DType::BF16);
  const SafeTensorsFile golden(golden_dir() + "/tiny_llava_golden.safetensors");
  const Tensor px0 = golden.get("pixel_values").to(Device::cuda(), DType::BF16);
  const Tensor px1 = add(scale(px0, -0.7f), px0.transpose(2, 3).contiguous());  // a second image
  struct Pass {
    ClipVisionOutput kept, last;
    ClipVisionTower::FeatureTaps taps, cls_only;
  };
  auto run = [&](const Tensor& px) {
    Pass p;
    p.kept = gpu.forward(px, -1, true);
    p.last = gpu.forward(px, 1);
    p.taps = gpu.feature_taps(px, -1,
                              ClipVisionTower::kTapAttentionMatrix | ClipVisionTower::kTapKeyMean |
                                  ClipVisionTower::kTapClsJoint);
    p.cls_only = gpu.feature_taps(px, -2, ClipVisionTower::kTapClsAttention);
    return p;
  };
  ASSERT_TRUE(cuda_graphs_enabled());
  const Pass g0 = run(px0), g1 = run(px1);
  const Pass g0_again = run(px0);
  set_cuda_graphs_enabled(false);
  const Pass e0 = run(px0), e1 = run(px1);
  set_cuda_graphs_enabled(true);
  for (const auto& [g, e, name] : {std::tuple<const Pass&, const Pass&, const char*>{g0, e0, "image 0"},
                                   {g1, e1, "image 1"},
                                   {g0_again, e0, "image 0 again"}}) {
    ASSERT_EQ(g.kept.hidden_states.size(), e.kept.hidden_states.size()) << name;
    for (size_t i = 0; i < e.kept.hidden_states.size(); ++i)
      EXPECT_EQ(max_abs_diff(g.kept.hidden_states[i], e.kept.hidden_states[i]), 0.0) << name << " h" << i;
    EXPECT_EQ(max_abs_diff(g.kept.last, e.kept.last), 0.0) << name;
    EXPECT_TRUE(g.last.hidden_states.empty());
    EXPECT_EQ(max_abs_diff(g.last.last, e.last.last), 0.0) << name;
    for (const auto& [gt, et] : {std::pair<const ClipVisionTower::FeatureTaps&, const ClipVisionTower::FeatureTaps&>{
                                     g.taps, e.taps},
                                 {g.cls_only, e.cls_only}}) {
      EXPECT_EQ(max_abs_diff(gt.features, et.features), 0.0) << name;
      EXPECT_EQ(max_abs_diff(gt.cls_attention, et.cls_attention), 0.0) << name;
      EXPECT_EQ(gt.attention_mean.defined(), et.attention_mean.defined());
      if (et.attention_mean.defined()) EXPECT_EQ(max_abs_diff(gt.attention_mean, et.attention_mean), 0.0) << name;
      EXPECT_EQ(gt.key_mean.defined(), et.key_mean.defined());
      if (et.key_mean.defined()) EXPECT_EQ(max_abs_diff(gt.key_mean, et.key_mean), 0.0) << name;
      EXPECT_EQ(gt.cls_joint.defined(), et.cls_joint.defined());
      if (et.cls_joint.defined()) EXPECT_EQ(max_abs_diff(gt.cls_joint, et.cls_joint), 0.0) << name;
    }
  }
  EXPECT_GT(max_abs_diff(e0.last.last, e1.last.last), 0.0) << "the two images must differ";
}
