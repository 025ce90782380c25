#pragma once
// Typed Hugging Face model configs read from config.json.
//
// transformers writes only the values that differ from a config class's defaults (nested
// text_config/vision_config included), so every absent key takes the transformers default of
// that class; the defaults below are copied from configuration_llama.py / configuration_clip.py /
// configuration_llava.py. Unused keys are ignored (no JsonReader::finish()), but every key that is
// read is type- and range-checked: errors are ConfigError naming the file and the JSON path
// ("config.json: $.text_config.num_key_value_heads must divide num_attention_heads (32), got 5").
// An explicit JSON null counts as absent, except for the token ids where null means "none".
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "core/json_reader.h"

namespace mmattn {

// RoPE scaling, from `rope_scaling` (transformers 4) or `rope_parameters` (transformers 5, which
// also carries rope_theta). type is "linear", "dynamic" or "llama3"; "default" means none.
struct RopeScaling {
  std::string type = "default";
  double factor = 1.0;
  double low_freq_factor = 1.0;                   // llama3
  double high_freq_factor = 4.0;                  // llama3
  int64_t original_max_position_embeddings = 0;   // llama3 (required), dynamic (optional; 0 = absent)
  Json raw;                                       // the object as written
};

struct LlamaConfig {
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 32;  // default: num_attention_heads
  int64_t head_dim = 128;            // default: hidden_size / num_attention_heads
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  std::optional<RopeScaling> rope_scaling;  // absent for plain RoPE
  int64_t max_position_embeddings = 2048;
  std::string hidden_act = "silu";  // supported: silu
  bool tie_word_embeddings = false;
  bool attention_bias = false;
  bool mlp_bias = false;
  std::optional<int64_t> bos_token_id = 1;
  std::vector<int64_t> eos_token_ids = {2};  // `eos_token_id`: an int or a list; null -> empty
  std::optional<int64_t> pad_token_id;
  std::string dtype;  // `dtype` (transformers 5) or `torch_dtype`; "" when absent
};

struct ClipVisionConfig {
  int64_t hidden_size = 768;
  int64_t intermediate_size = 3072;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t image_size = 224;
  int64_t patch_size = 32;  // must divide image_size
  int64_t num_channels = 3;
  double layer_norm_eps = 1e-5;
  std::string hidden_act = "quick_gelu";  // supported: quick_gelu, gelu
  std::optional<int64_t> projection_dim;  // only when written (transformers' default is 512)
  std::string dtype;
  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  int64_t num_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
};

// The vision config LlavaConfig builds when config.json has none: CLIP ViT-L/14 at 336 px
// (hidden 1024, intermediate 4096, 24 layers, 16 heads, patch 14, projection_dim 768).
ClipVisionConfig llava_default_vision_config();

struct LlavaConfig {
  LlamaConfig text_config;
  // No vision_config at all gives llava_default_vision_config(); a partial vision_config object
  // takes CLIPVisionConfig's own defaults instead (as in transformers).
  ClipVisionConfig vision_config = llava_default_vision_config();
  int64_t image_token_index = 32000;     // `image_token_index` or `image_token_id`
  std::string projector_hidden_act = "gelu";  // supported: gelu
  // `vision_feature_layer` as an int or a list (features of several layers concatenated);
  // negative values count from the end of the hidden-state list (num_hidden_layers + 1 entries).
  std::vector<int64_t> vision_feature_layers = {-2};
  bool vision_feature_layer_is_list = false;
  std::string vision_feature_select_strategy = "default";  // "default" (drop CLS) | "full"
  int64_t image_seq_length = 576;
  bool multimodal_projector_bias = true;
  bool tie_word_embeddings = false;  // true also when text_config says so (as transformers does)
  std::string dtype;
};

// `j` is the object at JSON path `path` of the file `where` (used in messages).
LlamaConfig parse_llama_config(const Json& j, const std::string& where, const std::string& path = "$");
ClipVisionConfig parse_clip_vision_config(const Json& j, const std::string& where, const std::string& path = "$");
LlavaConfig parse_llava_config(const Json& j, const std::string& where, const std::string& path = "$");

enum class ModelKind { Unknown, Llama, ClipVision, Llava };
std::string_view model_kind_name(ModelKind k);  // "unknown", "llama", "clip_vision", "llava"

struct ModelConfig {
  std::string path;          // the config.json read
  std::string architecture;  // architectures[0], else diffusers' _class_name, else model_type
  std::string model_type;    // "" when absent
  ModelKind kind = ModelKind::Unknown;
  std::variant<std::monostate, LlamaConfig, ClipVisionConfig, LlavaConfig> typed;
  Json raw;
  // The typed config; ConfigError naming the file when the model is of another kind.
  const LlamaConfig& llama() const;
  const ClipVisionConfig& clip_vision() const;
  const LlavaConfig& llava() const;
};

// `path` is a model folder (reads <path>/config.json) or a config.json file. Recognised:
// LlavaForConditionalGeneration / model_type llava, LlamaForCausalLM / LlamaModel / llama,
// CLIPVisionModel / CLIPVisionModelWithProjection / clip_vision_model. Anything else (e.g. a
// diffusers config) gives kind Unknown with the raw JSON. IoError / FormatError for the file.
ModelConfig read_model_config(const std::string& path);

}  // namespace mmattn
