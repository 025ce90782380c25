// HF config.json reading: transformers-5-shaped LLaVA, configs relying on defaults, RoPE variants,
// and errors that name the JSON path.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/hf_config.h"
#include "test_util.h"

using namespace mmattn;
namespace fs = std::filesystem;

namespace {

// A LLaVA-1.5-7b config.json in the shape transformers 5 writes it (nested configs carry only
// non-default values plus their model_type; rope_theta lives in rope_parameters).
const char* kLlava15 = R"({
  "architectures": ["LlavaForConditionalGeneration"],
  "dtype": "float16",
  "image_seq_length": 576,
  "image_token_id": 32000,
  "model_type": "llava",
  "multimodal_projector_bias": true,
  "pad_token_id": 32001,
  "projector_hidden_act": "gelu",
  "text_config": {
    "architectures": ["LlamaForCausalLM"],
    "dtype": "float16",
    "max_position_embeddings": 4096,
    "model_type": "llama",
    "pad_token_id": 32001,
    "rms_norm_eps": 1e-05,
    "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
    "vocab_size": 32064
  },
  "tie_word_embeddings": false,
  "transformers_version": "5.17.0",
  "vision_config": {
    "hidden_size": 1024,
    "image_size": 336,
    "intermediate_size": 4096,
    "model_type": "clip_vision_model",
    "num_attention_heads": 16,
    "num_hidden_layers": 24,
    "patch_size": 14,
    "projection_dim": 768,
    "vocab_size": 32000
  },
  "vision_feature_layer": -2,
  "vision_feature_select_strategy": "default"
})";

Json parse(const std::string& s) { return Json::parse(s); }

// Expects a ConfigError whose message names `where` and contains every phrase.
void expect_config_error(const std::string& json, std::initializer_list<const char*> phrases,
                         LlavaConfig (*fn)(const Json&, const std::string&, const std::string&) = parse_llava_config) {
  try {
    fn(parse(json), "config.json", "$");
    ADD_FAILURE() << "no error for " << json;
  } catch (const ConfigError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("config.json"), std::string::npos) << m;
    for (const char* p : phrases) EXPECT_NE(m.find(p), std::string::npos) << "missing '" << p << "' in: " << m;
  }
}

struct TempDir {
  fs::path path;
  TempDir() {
    std::string t = (fs::temp_directory_path() / "mmattn_cfg_XXXXXX").string();
    if (!::mkdtemp(t.data())) throw std::runtime_error("mkdtemp failed");
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  void write(const std::string& name, const std::string& text) const { std::ofstream(path / name) << text; }
};

}  // namespace

TEST(HfConfig, Llava15AsTransformers5WritesIt) {
  const LlavaConfig c = parse_llava_config(parse(kLlava15), "config.json");
  const LlamaConfig& t = c.text_config;
  EXPECT_EQ(t.vocab_size, 32064);
  EXPECT_EQ(t.hidden_size, 4096);  // defaults fill what was not written
  EXPECT_EQ(t.intermediate_size, 11008);
  EXPECT_EQ(t.num_hidden_layers, 32);
  EXPECT_EQ(t.num_attention_heads, 32);
  EXPECT_EQ(t.num_key_value_heads, 32);
  EXPECT_EQ(t.head_dim, 128);
  EXPECT_DOUBLE_EQ(t.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(t.rope_theta, 10000.0);
  EXPECT_FALSE(t.rope_scaling.has_value());
  EXPECT_EQ(t.max_position_embeddings, 4096);
  EXPECT_EQ(t.hidden_act, "silu");
  EXPECT_EQ(t.bos_token_id, 1);
  EXPECT_EQ(t.eos_token_ids, std::vector<int64_t>{2});
  EXPECT_EQ(t.pad_token_id, 32001);
  EXPECT_EQ(t.dtype, "float16");
  EXPECT_FALSE(t.attention_bias || t.mlp_bias || t.tie_word_embeddings);

  const ClipVisionConfig& v = c.vision_config;
  EXPECT_EQ(v.hidden_size, 1024);
  EXPECT_EQ(v.intermediate_size, 4096);
  EXPECT_EQ(v.num_hidden_layers, 24);
  EXPECT_EQ(v.num_attention_heads, 16);
  EXPECT_EQ(v.image_size, 336);
  EXPECT_EQ(v.patch_size, 14);
  EXPECT_EQ(v.num_patches(), 576);
  EXPECT_EQ(v.head_dim(), 64);
  EXPECT_EQ(v.num_channels, 3);
  EXPECT_DOUBLE_EQ(v.layer_norm_eps, 1e-5);
  EXPECT_EQ(v.hidden_act, "quick_gelu");
  EXPECT_EQ(v.projection_dim, 768);

  EXPECT_EQ(c.image_token_index, 32000);
  EXPECT_EQ(c.projector_hidden_act, "gelu");
  EXPECT_EQ(c.vision_feature_layers, std::vector<int64_t>{-2});
  EXPECT_FALSE(c.vision_feature_layer_is_list);
  EXPECT_EQ(c.vision_feature_select_strategy, "default");
  EXPECT_EQ(c.image_seq_length, 576);
  EXPECT_TRUE(c.multimodal_projector_bias);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.dtype, "float16");
}

TEST(HfConfig, MinimalConfigsTakeTransformersDefaults) {
  // Nested objects present but empty: LlamaConfig() and CLIPVisionConfig() defaults.
  LlavaConfig c = parse_llava_config(
      parse(R"({"model_type": "llava", "text_config": {"model_type": "llama"}, "vision_config": {}})"), "c.json");
  EXPECT_EQ(c.text_config.vocab_size, 32000);
  EXPECT_EQ(c.text_config.hidden_size, 4096);
  EXPECT_EQ(c.text_config.intermediate_size, 11008);
  EXPECT_EQ(c.text_config.num_hidden_layers, 32);
  EXPECT_EQ(c.text_config.num_attention_heads, 32);
  EXPECT_DOUBLE_EQ(c.text_config.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.text_config.max_position_embeddings, 2048);
  EXPECT_DOUBLE_EQ(c.text_config.rope_theta, 10000.0);
  EXPECT_EQ(c.vision_config.hidden_size, 768);
  EXPECT_EQ(c.vision_config.intermediate_size, 3072);
  EXPECT_EQ(c.vision_config.num_hidden_layers, 12);
  EXPECT_EQ(c.vision_config.num_attention_heads, 12);
  EXPECT_EQ(c.vision_config.image_size, 224);
  EXPECT_EQ(c.vision_config.patch_size, 32);
  EXPECT_EQ(c.vision_config.hidden_act, "quick_gelu");
  EXPECT_FALSE(c.vision_config.projection_dim.has_value());
  EXPECT_EQ(c.image_token_index, 32000);
  EXPECT_EQ(c.vision_feature_layers, std::vector<int64_t>{-2});
  EXPECT_EQ(c.image_seq_length, 576);

  // No vision_config at all: LlavaConfig's own CLIP ViT-L/14-336.
  c = parse_llava_config(parse(R"({})"), "c.json");
  EXPECT_EQ(c.vision_config.hidden_size, 1024);
  EXPECT_EQ(c.vision_config.image_size, 336);
  EXPECT_EQ(c.vision_config.patch_size, 14);
  EXPECT_EQ(c.vision_config.num_hidden_layers, 24);
  EXPECT_EQ(c.vision_config.projection_dim, 768);

  // Tied embeddings forwarded from the text config; list-valued feature layers; legacy key name.
  c = parse_llava_config(parse(R"({"text_config": {"tie_word_embeddings": true}, "vision_feature_layer": [-2, -5, 3],
                                   "image_token_index": 7, "vision_feature_select_strategy": "full"})"),
                         "c.json");
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_TRUE(c.vision_feature_layer_is_list);
  EXPECT_EQ(c.vision_feature_layers, (std::vector<int64_t>{-2, -5, 3}));
  EXPECT_EQ(c.image_token_index, 7);
  EXPECT_EQ(c.vision_feature_select_strategy, "full");
}

TEST(HfConfig, LlamaRopeAndTokens) {
  // transformers 4 style: top-level rope_theta, rope_scaling, eos list, GQA, torch_dtype.
  LlamaConfig c = parse_llama_config(parse(R"({"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
      "rope_theta": 500000.0, "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192, "rope_type": "llama3"}, "eos_token_id": [128001, 128008],
      "bos_token_id": 128000, "pad_token_id": null, "torch_dtype": "bfloat16", "tie_word_embeddings": true})"),
                                     "config.json");
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  ASSERT_TRUE(c.rope_scaling.has_value());
  EXPECT_EQ(c.rope_scaling->type, "llama3");
  EXPECT_DOUBLE_EQ(c.rope_scaling->factor, 8.0);
  EXPECT_EQ(c.rope_scaling->original_max_position_embeddings, 8192);
  EXPECT_EQ(c.rope_scaling->raw["rope_type"], "llama3");
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{128001, 128008}));
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_FALSE(c.pad_token_id.has_value());
  EXPECT_EQ(c.dtype, "bfloat16");
  EXPECT_TRUE(c.tie_word_embeddings);

  // transformers 5 style: everything inside rope_parameters; explicit head_dim.
  c = parse_llama_config(parse(R"({"hidden_size": 60, "num_attention_heads": 8, "head_dim": 16,
      "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000.0}, "eos_token_id": 5, "bos_token_id": null})"),
                         "config.json");
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1000.0);
  ASSERT_TRUE(c.rope_scaling.has_value());
  EXPECT_EQ(c.rope_scaling->type, "linear");
  EXPECT_DOUBLE_EQ(c.rope_scaling->factor, 2.0);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{5});
  EXPECT_FALSE(c.bos_token_id.has_value());

  // legacy "type" key, dynamic.
  c = parse_llama_config(parse(R"({"rope_scaling": {"type": "dynamic", "factor": 2}})"), "config.json");
  EXPECT_EQ(c.rope_scaling->type, "dynamic");
  // A "default" rope_scaling is no scaling.
  c = parse_llama_config(parse(R"({"rope_scaling": {"rope_type": "default"}, "rope_scaling_unused": 1})"), "config.json");
  EXPECT_FALSE(c.rope_scaling.has_value());
}

TEST(HfConfig, ErrorsNameTheJsonPath) {
  expect_config_error(R"({"text_config": {"num_key_value_heads": 5}})",
                      {"$.text_config.num_key_value_heads", "must divide num_attention_heads (32)", "got 5"});
  expect_config_error(R"({"text_config": {"hidden_size": "4096"}})",
                      {"$.text_config.hidden_size", "expected an integer", "\"4096\""});
  expect_config_error(R"({"text_config": {"hidden_size": 0}})", {"$.text_config.hidden_size", "must be > 0"});
  expect_config_error(R"({"text_config": {"hidden_size": 100, "num_attention_heads": 3}})",
                      {"$.text_config.num_attention_heads", "must divide hidden_size (100)"});
  expect_config_error(R"({"text_config": {"rms_norm_eps": 0}})", {"$.text_config.rms_norm_eps", "> 0"});
  expect_config_error(R"({"text_config": {"hidden_act": "gelu"}})", {"$.text_config.hidden_act", "silu", "\"gelu\""});
  expect_config_error(R"({"text_config": {"model_type": "mistral"}})", {"$.text_config.model_type", "mistral"});
  expect_config_error(R"({"text_config": 3})", {"$.text_config", "expected an object"});
  expect_config_error(R"({"text_config": {"rope_scaling": {"rope_type": "yarn", "factor": 4}}})",
                      {"$.text_config.rope_scaling.rope_type", "yarn"});
  expect_config_error(R"({"text_config": {"rope_parameters": {"rope_type": "linear"}}})",
                      {"$.text_config.rope_parameters.factor", "is required"});
  expect_config_error(R"({"text_config": {"rope_scaling": {"rope_type": "llama3", "factor": 8, "low_freq_factor": 1,
                          "high_freq_factor": 4}}})",
                      {"$.text_config.rope_scaling.original_max_position_embeddings", "is required"});
  expect_config_error(R"({"text_config": {"rope_parameters": {"rope_theta": -1}}})",
                      {"$.text_config.rope_parameters.rope_theta"});
  expect_config_error(R"({"text_config": {"eos_token_id": [2, "x"]}})", {"$.text_config.eos_token_id[1]"});
  expect_config_error(R"({"text_config": {"tie_word_embeddings": 1}})",
                      {"$.text_config.tie_word_embeddings", "true or false"});
  expect_config_error(R"({"vision_config": {"patch_size": 15}})", {"$.vision_config.patch_size", "image_size (224)"});
  expect_config_error(R"({"vision_config": {"hidden_act": "relu"}})", {"$.vision_config.hidden_act"});
  expect_config_error(R"({"vision_config": {"model_type": "siglip_vision_model"}})", {"$.vision_config.model_type"});
  expect_config_error(R"({"vision_feature_select_strategy": "cls"})", {"$.vision_feature_select_strategy", "\"cls\""});
  expect_config_error(R"({"vision_feature_layer": 25})", {"$.vision_feature_layer", "out of range", "24 layers"});
  expect_config_error(R"({"vision_feature_layer": [-2, -26]})", {"$.vision_feature_layer", "-26"});
  expect_config_error(R"({"vision_feature_layer": []})", {"$.vision_feature_layer", "empty"});
  expect_config_error(R"({"vision_feature_layer": 1.5})", {"$.vision_feature_layer", "expected an integer"});
  expect_config_error(R"({"image_token_index": 5, "image_token_id": 6})", {"$.image_token_id", "image_token_index is 5"});
  expect_config_error(R"({"projector_hidden_act": "silu"})", {"$.projector_hidden_act"});
  expect_config_error(R"({"multimodal_projector_bias": "yes"})", {"$.multimodal_projector_bias"});
  expect_config_error(R"({"model_type": "qwen2_vl"})", {"$.model_type"});
  expect_config_error(R"([1, 2])", {"$", "expected an object"});
}

TEST(HfConfig, ReadModelConfigFromFolder) {
  TempDir dir;
  dir.write("config.json", kLlava15);
  ModelConfig m = read_model_config(dir.path.string());
  EXPECT_EQ(m.kind, ModelKind::Llava);
  EXPECT_EQ(m.architecture, "LlavaForConditionalGeneration");
  EXPECT_EQ(m.model_type, "llava");
  EXPECT_EQ(m.path, (dir.path / "config.json").string());
  EXPECT_EQ(m.llava().text_config.vocab_size, 32064);
  EXPECT_EQ(m.raw["transformers_version"], "5.17.0");
  try {
    m.llama();
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("LlavaForConditionalGeneration"), std::string::npos) << e.what();
  }

  dir.write("llama.json", R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256,
                              "num_attention_heads": 4})");
  m = read_model_config((dir.path / "llama.json").string());
  EXPECT_EQ(m.kind, ModelKind::Llama);
  EXPECT_EQ(m.llama().head_dim, 64);

  dir.write("clip.json", R"({"model_type": "clip_vision_model", "hidden_size": 32, "num_attention_heads": 4,
                             "image_size": 30, "patch_size": 6, "hidden_act": "gelu"})");
  m = read_model_config((dir.path / "clip.json").string());
  EXPECT_EQ(m.kind, ModelKind::ClipVision);
  EXPECT_EQ(m.architecture, "clip_vision_model");
  EXPECT_EQ(m.clip_vision().num_patches(), 25);
  EXPECT_EQ(m.clip_vision().hidden_act, "gelu");

  dir.write("flux.json", R"({"_class_name": "FluxTransformer2DModel", "_diffusers_version": "0.35.0",
                             "num_layers": 19})");
  m = read_model_config((dir.path / "flux.json").string());
  EXPECT_EQ(m.kind, ModelKind::Unknown);
  EXPECT_EQ(m.architecture, "FluxTransformer2DModel");
  EXPECT_EQ(m.raw["num_layers"], 19);

  // Type errors in recognised configs name the file and path.
  dir.write("bad.json", R"({"architectures": ["LlamaForCausalLM"], "num_key_value_heads": 7})");
  try {
    read_model_config((dir.path / "bad.json").string());
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.json: $.num_key_value_heads"), std::string::npos) << e.what();
  }
  dir.write("arch.json", R"({"architectures": "LlamaForCausalLM"})");
  EXPECT_THROW(read_model_config((dir.path / "arch.json").string()), ConfigError);
  dir.write("broken.json", R"({"model_type": )");
  EXPECT_THROW(read_model_config((dir.path / "broken.json").string()), FormatError);
  EXPECT_THROW(read_model_config((dir.path / "missing").string()), IoError);
}

// The tiny LLaVA config.json written by transformers 5.17 (tools/golden/llava.py).
TEST(HfConfig, GoldenTinyLlavaFromTransformers) {
  const std::string dir = mmattn::test::golden_dir() + "/tiny_llava";
  if (!fs::exists(dir + "/config.json")) GTEST_SKIP() << "no " << dir;
  const ModelConfig m = read_model_config(dir);
  ASSERT_EQ(m.kind, ModelKind::Llava);
  const LlavaConfig& c = m.llava();
  EXPECT_EQ(c.text_config.hidden_size, 64);
  EXPECT_EQ(c.text_config.num_attention_heads, 4);
  EXPECT_EQ(c.text_config.num_key_value_heads, 2);
  EXPECT_EQ(c.text_config.head_dim, 16);
  EXPECT_EQ(c.text_config.num_hidden_layers, 2);
  EXPECT_EQ(c.text_config.vocab_size, 32064);
  EXPECT_DOUBLE_EQ(c.text_config.rope_theta, 10000.0);
  EXPECT_EQ(c.vision_config.hidden_size, 64);
  EXPECT_EQ(c.vision_config.num_hidden_layers, 3);
  EXPECT_EQ(c.vision_config.num_patches(), 576);
  EXPECT_EQ(c.vision_feature_layers, std::vector<int64_t>{-2});
  EXPECT_EQ(c.image_token_index, 32000);
  EXPECT_EQ(c.dtype, "bfloat16");
}
