// CLIP vision tower + LLaVA projector: parity with transformers 5.17 (tests/golden/tiny_llava,
// goldens from tools/golden/llava.py computed in f32 from the bf16-rounded weights), both weight
// naming schemes, missing / mis-shaped tensors, the [CLS] attention tap, and the end-to-end path
// from a JPEG through CLIP preprocessing.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "core/checkpoint.h"
#include "core/hf_config.h"
#include "core/ops/linear.h"
#include "core/ops/norm.h"
#include "core/safetensors.h"
#include "test_util.h"
#include "vision/clip_preprocess.h"
#include "vision/clip_vit.h"
#include "vision/image.h"
#include "vision/projector.h"

using namespace mmattn;
using namespace mmattn::test;
namespace fs = std::filesystem;

namespace {

std::string model_dir() { return golden_dir() + "/tiny_llava"; }
const SafeTensorsFile& golden() {
  static const SafeTensorsFile g(golden_dir() + "/tiny_llava_golden.safetensors");
  return g;
}
const LlavaConfig& llava_cfg() {
  static const ModelConfig mc = read_model_config(model_dir());
  return mc.llava();
}

struct TempDir {
  fs::path path;
  TempDir() {
    std::string t = (fs::temp_directory_path() / "mmattn_vit_XXXXXX").string();
    if (!::mkdtemp(t.data())) throw std::runtime_error("mkdtemp failed");
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// Writes the vision tower and projector tensors of the golden checkpoint to dir/model.safetensors
// with `rename` applied to each name (return "" to drop a tensor), plus a copy of config.json.
template <class F>
void write_renamed(const fs::path& dir, F rename) {
  const Checkpoint src(model_dir());
  std::vector<std::pair<std::string, Tensor>> out;
  for (const std::string& n : src.names()) {
    if (n.rfind("vision_tower.", 0) != 0 && n.rfind("multi_modal_projector.", 0) != 0) continue;
    std::string m = rename(n);
    if (!m.empty()) out.emplace_back(m, src.get(n));
  }
  save_safetensors((dir / "model.safetensors").string(), out);
  fs::copy_file(fs::path(model_dir()) / "config.json", dir / "config.json");
}

std::string replace_prefix(const std::string& n, const std::string& from, const std::string& to) {
  return n.rfind(from, 0) == 0 ? to + n.substr(from.size()) : n;
}

}  // namespace

TEST(ClipVit, DetectsPrefixesOfGoldenCheckpoint) {
  const Checkpoint ckpt(model_dir());
  const LlavaPrefixes p = detect_llava_prefixes(ckpt);
  EXPECT_EQ(p.vision_tower, "vision_tower.");  // transformers 5.17's save_pretrained
  EXPECT_EQ(p.projector, "multi_modal_projector.");
}

TEST(ClipVit, MatchesTransformersGoldenF32) {
  const Checkpoint ckpt(model_dir());
  const LlavaConfig& cfg = llava_cfg();
  const LlavaImageEncoder enc = LlavaImageEncoder::load(ckpt, cfg, Device::cpu(), DType::F32);
  // vision_feature_layer -2 of 3 layers: only 2 layers are loaded and run.
  EXPECT_EQ(enc.tower().num_loaded_layers(), 2);
  const Tensor px = golden().get("pixel_values");
  const Tensor vf = enc.vision_features(px);
  const Tensor want_vf = golden().get("vision_features");
  ASSERT_EQ(vf.shape(), want_vf.shape());
  const double e_vf = rel_err(vf, want_vf);
  const Tensor img = enc.projector().forward(vf);
  const Tensor want_img = golden().get("image_features");
  ASSERT_EQ(img.shape(), want_img.shape());
  const double e_img = rel_err(img, want_img);
  std::printf("f32 CPU: vision_features rel err %.3g, image_features rel err %.3g\n", e_vf, e_img);
  EXPECT_LT(e_vf, 1e-4);
  EXPECT_LT(e_img, 1e-4);
  EXPECT_LT(rel_err(enc.encode(px), want_img), 1e-4);
}

TEST(ClipVit, HiddenStatesAndLayerLists) {
  const Checkpoint ckpt(model_dir());
  const ClipVisionConfig& vc = llava_cfg().vision_config;
  const ClipVisionTower t =
      ClipVisionTower::load(ckpt, detect_llava_prefixes(ckpt).vision_tower, vc, Device::cpu(), DType::F32);
  EXPECT_EQ(t.num_loaded_layers(), 3);
  const Tensor px = golden().get("pixel_values");
  const ClipVisionOutput o = t.forward(px, -1, true);
  ASSERT_EQ(o.hidden_states.size(), 4u);  // h_0 (after pre_layrnorm) .. h_3
  EXPECT_EQ(o.last.shape(), (Shape{1, 577, 64}));
  const Tensor want = golden().get("vision_features");
  EXPECT_LT(rel_err(o.hidden_states[2].slice(1, 1, 577), want), 1e-4);
  EXPECT_EQ(max_abs_diff(t.features(px, 2, false), o.hidden_states[2]), 0.0);
  EXPECT_EQ(max_abs_diff(t.features(px, 0, false), o.hidden_states[0]), 0.0);  // no layer runs
  const Tensor cat = t.features(px, std::vector<int64_t>{-2, -1}, true);
  ASSERT_EQ(cat.shape(), (Shape{1, 576, 128}));
  EXPECT_EQ(max_abs_diff(cat.slice(2, 0, 64), want), max_abs_diff(o.hidden_states[2].slice(1, 1, 577), want));
  EXPECT_EQ(max_abs_diff(cat.slice(2, 64, 128), o.hidden_states[3].slice(1, 1, 577)), 0.0);
  EXPECT_EQ(t.pooled(o).shape(), (Shape{1, 64}));
  EXPECT_THROW(t.features(px, -5, true), ConfigError);
  EXPECT_THROW(t.features(px, 4, true), ConfigError);
  EXPECT_THROW(t.features(Tensor::zeros({1, 3, 224, 224}, DType::F32), -2, true), ShapeError);
  EXPECT_THROW(ClipVisionTower::load(ckpt, "vision_tower.", vc, Device::cpu(), DType::BF16), UnsupportedError);
}

TEST(ClipVit, BothNamingSchemesGiveIdenticalResults) {
  const Checkpoint ckpt(model_dir());
  const LlavaConfig& cfg = llava_cfg();
  const Tensor px = golden().get("pixel_values");
  const Tensor ref = LlavaImageEncoder::load(ckpt, cfg, Device::cpu(), DType::F32).encode(px);
  struct Scheme {
    std::string vision, projector;
  };
  for (const Scheme& s : {Scheme{"model.vision_tower.", "model.multi_modal_projector."},
                          Scheme{"vision_tower.vision_model.", "multi_modal_projector."},
                          Scheme{"model.vision_tower.vision_model.", "model.multi_modal_projector."}}) {
    SCOPED_TRACE(s.vision);
    TempDir dir;
    write_renamed(dir.path, [&](const std::string& n) {
      return replace_prefix(replace_prefix(n, "vision_tower.", s.vision), "multi_modal_projector.", s.projector);
    });
    const Checkpoint c2(dir.path.string());
    EXPECT_TRUE(c2.has(s.vision + "pre_layrnorm.weight"));
    const LlavaPrefixes p = detect_llava_prefixes(c2);
    EXPECT_EQ(p.vision_tower, s.vision);
    EXPECT_EQ(p.projector, s.projector);
    const LlavaConfig cfg2 = read_model_config(dir.path.string()).llava();
    const Tensor got = LlavaImageEncoder::load(c2, cfg2, Device::cpu(), DType::F32).encode(px);
    EXPECT_EQ(max_abs_diff(got, ref), 0.0);
  }
}

TEST(ClipVit, MissingOrMisshapedTensorIsWeightErrorNamingIt) {
  const LlavaConfig& cfg = llava_cfg();
  {
    TempDir dir;
    const std::string gone = "vision_tower.encoder.layers.1.mlp.fc2.bias";
    write_renamed(dir.path, [&](const std::string& n) { return n == gone ? std::string() : n; });
    const Checkpoint c(dir.path.string());
    try {
      LlavaImageEncoder::load(c, cfg, Device::cpu(), DType::F32);
      FAIL() << "expected WeightError";
    } catch (const WeightError& e) {
      EXPECT_NE(std::string(e.what()).find("'" + gone + "'"), std::string::npos) << e.what();
    }
  }
  {
    // Layer 2 and post_layernorm are not needed for vision_feature_layer -2: their absence is fine
    // for the LLaVA encoder, but an error for a full tower.
    TempDir dir;
    write_renamed(dir.path, [&](const std::string& n) {
      return n.find("layers.2.") != std::string::npos || n.find("post_layernorm") != std::string::npos ? std::string()
                                                                                                       : n;
    });
    const Checkpoint c(dir.path.string());
    const Tensor img = LlavaImageEncoder::load(c, cfg, Device::cpu(), DType::F32).encode(golden().get("pixel_values"));
    EXPECT_LT(rel_err(img, golden().get("image_features")), 1e-4);
    try {
      ClipVisionTower::load(c, "vision_tower.", cfg.vision_config, Device::cpu(), DType::F32);
      FAIL() << "expected WeightError";
    } catch (const WeightError& e) {
      EXPECT_NE(std::string(e.what()).find("vision_tower.encoder.layers.2."), std::string::npos) << e.what();
    }
  }
  {
    TempDir dir;
    const std::string bad = "vision_tower.embeddings.position_embedding.weight";
    const Checkpoint src(model_dir());
    std::vector<std::pair<std::string, Tensor>> out;
    for (const std::string& n : src.names())
      out.emplace_back(n, n == bad ? src.get(n).slice(0, 0, 576) : src.get(n));
    save_safetensors((dir.path / "model.safetensors").string(), out);
    const Checkpoint c(dir.path.string());
    try {
      LlavaImageEncoder::load(c, cfg, Device::cpu(), DType::F32);
      FAIL() << "expected WeightError";
    } catch (const WeightError& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find(bad), std::string::npos) << m;
      EXPECT_NE(m.find("[577, 64]"), std::string::npos) << m;
      EXPECT_NE(m.find("[576, 64]"), std::string::npos) << m;
    }
  }
  {
    TempDir dir;
    write_renamed(dir.path, [&](const std::string& n) {
      return n.rfind("multi_modal_projector.", 0) == 0 ? std::string() : n;
    });
    const Checkpoint c(dir.path.string());
    try {
      detect_llava_prefixes(c);
      FAIL() << "expected WeightError";
    } catch (const WeightError& e) {
      EXPECT_NE(std::string(e.what()).find("multi_modal_projector.linear_1.weight"), std::string::npos) << e.what();
    }
  }
}

TEST(ClipVit, ClsAttentionMatchesNaiveSoftmax) {
  const Checkpoint ckpt(model_dir());
  const ClipVisionConfig& vc = llava_cfg().vision_config;
  const ClipVisionTower t = ClipVisionTower::load(ckpt, "vision_tower.", vc, Device::cpu(), DType::F32);
  const Tensor px = golden().get("pixel_values");
  const ClipVisionOutput o = t.forward(px, -1, true);
  const int64_t H = vc.num_attention_heads, hd = vc.head_dim(), D = vc.hidden_size, L = 577;
  for (int64_t layer : {int64_t(0), int64_t(-2), int64_t(2)}) {
    SCOPED_TRACE(layer);
    const int64_t li = layer < 0 ? layer + vc.num_hidden_layers : layer;
    const Tensor got = t.cls_attention(px, layer);
    ASSERT_EQ(got.shape(), (Shape{1, H, L}));
    // Naive: softmax_j(q_0 . k_j / sqrt(hd)) from the layer's input h_li.
    const ClipEncoderLayerWeights& w = t.layer(li);
    const Tensor h = layer_norm(o.hidden_states[size_t(li)], w.ln1_w, w.ln1_b, float(vc.layer_norm_eps));
    const auto qkv = linear(h, w.qkv_w, w.qkv_b).to_floats();  // [1, L, 3D]
    std::vector<double> want(size_t(H * L));
    for (int64_t hh = 0; hh < H; ++hh) {
      std::vector<double> z(static_cast<size_t>(L));
      double mx = -1e300, sum = 0;
      for (int64_t j = 0; j < L; ++j) {
        double s = 0;
        for (int64_t d = 0; d < hd; ++d) s += double(qkv[size_t(hh * hd + d)]) * qkv[size_t(j * 3 * D + D + hh * hd + d)];
        z[size_t(j)] = s / std::sqrt(double(hd));
        mx = std::max(mx, z[size_t(j)]);
      }
      for (auto& v : z) sum += (v = std::exp(v - mx));
      for (int64_t j = 0; j < L; ++j) want[size_t(hh * L + j)] = z[size_t(j)] / sum;
    }
    EXPECT_LT(rel_err_vs(got, want), 1e-5);
    // from the hidden states of one pass: the same values, exactly (PAINT's single-pass path)
    EXPECT_EQ(t.cls_attention_at(o.hidden_states[size_t(li)], li).to_floats(), got.to_floats());
    const auto g = got.to_floats();
    for (int64_t hh = 0; hh < H; ++hh) {
      double s = 0;
      for (int64_t j = 0; j < L; ++j) s += g[size_t(hh * L + j)];
      EXPECT_NEAR(s, 1.0, 1e-5);
    }
  }
  EXPECT_THROW(t.cls_attention(px, 3), ShapeError);
  EXPECT_THROW(t.cls_attention_at(o.hidden_states[0], 3), ShapeError);
  EXPECT_THROW(t.cls_attention_at(Tensor(), 0), ShapeError);
}

TEST(ClipVit, EndToEndFromJpeg) {
  const Checkpoint ckpt(model_dir());
  const LlavaImageEncoder enc = LlavaImageEncoder::load(ckpt, llava_cfg(), Device::cpu(), DType::F32);
  const Image img = load_image(source_dir() + "/assets/images/extreme_ironing.jpg");
  const Tensor px = clip_preprocess(img, ClipPreprocessConfig{});  // [3, 336, 336]
  ASSERT_EQ(px.shape(), (Shape{3, 336, 336}));
  const double e_px = rel_err(px.unsqueeze(0), golden().get("pixel_values"));
  const Tensor vf = enc.vision_features(px.unsqueeze(0));
  const double e_vf = rel_err(vf, golden().get("vision_features"));
  const double e_img = rel_err(enc.projector().forward(vf), golden().get("image_features"));
  std::printf("end to end: pixel_values rel err %.3g, vision_features %.3g, image_features %.3g\n", e_px, e_vf, e_img);
#if MMATTN_HAS_LIBJPEG
  EXPECT_LT(e_px, 1e-6);
  EXPECT_LT(e_vf, 1e-4);
  EXPECT_LT(e_img, 1e-4);
#else
  // stb's JPEG decoder differs from PIL's libjpeg by a few levels (vision/CMakeLists.txt).
  EXPECT_LT(e_vf, 3e-2);
#endif
}
