#include "core/hf_config.h"

#include <cmath>
#include <filesystem>
#include <initializer_list>

namespace mmattn {

namespace {

int64_t positive(JsonReader& r, const std::string& key, int64_t fallback) {
  const int64_t v = r.get<int64_t>(key, fallback);
  if (v <= 0) r.fail_key(key, str_cat("must be > 0, got ", v));
  return v;
}

double positive_real(JsonReader& r, const std::string& key, double fallback) {
  const double v = r.get<double>(key, fallback);
  if (!(v > 0) || !std::isfinite(v)) r.fail_key(key, str_cat("must be a finite number > 0, got ", v));
  return v;
}

std::string one_of(JsonReader& r, const std::string& key, const std::string& fallback,
                   std::initializer_list<const char*> allowed) {
  const std::string v = r.get<std::string>(key, fallback);
  std::string list;
  for (const char* a : allowed) {
    if (v == a) return v;
    list += (list.empty() ? "" : ", ") + std::string(a);
  }
  r.fail_key(key, str_cat("must be one of ", list, ", got \"", v, "\""));
}

// Token ids: absent -> fallback, explicit null -> none.
std::optional<int64_t> token_id(JsonReader& r, const std::string& key, std::optional<int64_t> fallback) {
  if (!r.json().contains(key)) return fallback;
  if (r.json()[key].is_null()) {
    r.ignore(key);
    return std::nullopt;
  }
  return r.get<int64_t>(key);
}

std::string read_dtype(JsonReader& r) {
  // transformers 5 writes `dtype`; older versions `torch_dtype`.
  if (r.has("dtype")) return r.get<std::string>("dtype");
  return r.get<std::string>("torch_dtype", "");
}

std::optional<std::string> model_type_of(JsonReader& r) {
  if (!r.has("model_type")) return std::nullopt;
  return r.get<std::string>("model_type");
}

// A rope_scaling / rope_parameters object; nullopt for plain RoPE ("default").
std::optional<RopeScaling> parse_rope_scaling(JsonReader& rs) {
  const char* type_key = rs.has("rope_type") || !rs.has("type") ? "rope_type" : "type";
  RopeScaling s;
  s.type = one_of(rs, type_key, "default", {"default", "linear", "dynamic", "llama3"});
  rs.ignore("rope_theta");  // read by the caller
  if (s.type == "default") return std::nullopt;
  s.raw = rs.json();
  s.factor = rs.get<double>("factor");
  if (!(s.factor > 0) || !std::isfinite(s.factor)) rs.fail_key("factor", str_cat("must be a finite number > 0, got ", s.factor));
  if (s.type == "llama3") {
    s.low_freq_factor = rs.get<double>("low_freq_factor");
    s.high_freq_factor = rs.get<double>("high_freq_factor");
    if (!(s.low_freq_factor > 0)) rs.fail_key("low_freq_factor", str_cat("must be > 0, got ", s.low_freq_factor));
    if (!(s.high_freq_factor > s.low_freq_factor))
      rs.fail_key("high_freq_factor", str_cat("must be > low_freq_factor (", s.low_freq_factor, "), got ",
                                              s.high_freq_factor));
    s.original_max_position_embeddings = rs.get<int64_t>("original_max_position_embeddings");
    if (s.original_max_position_embeddings <= 0)
      rs.fail_key("original_max_position_embeddings", str_cat("must be > 0, got ", s.original_max_position_embeddings));
  } else if (s.type == "dynamic" && rs.has("original_max_position_embeddings")) {
    s.original_max_position_embeddings = positive(rs, "original_max_position_embeddings", 0);
  }
  return s;
}

const std::vector<std::string>& known_architectures(ModelKind k) {
  static const std::vector<std::string> llama = {"LlamaForCausalLM", "LlamaModel"};
  static const std::vector<std::string> clip = {"CLIPVisionModel", "CLIPVisionModelWithProjection"};
  static const std::vector<std::string> llava = {"LlavaForConditionalGeneration"};
  static const std::vector<std::string> none;
  return k == ModelKind::Llama ? llama : k == ModelKind::ClipVision ? clip : k == ModelKind::Llava ? llava : none;
}

}  // namespace

LlamaConfig parse_llama_config(const Json& j, const std::string& where, const std::string& path) {
  JsonReader r(j, where, path);
  LlamaConfig c;
  if (auto mt = model_type_of(r); mt && *mt != "llama")
    r.fail_key("model_type", "must be \"llama\", got \"" + *mt + "\" (unsupported text model)");
  c.vocab_size = positive(r, "vocab_size", c.vocab_size);
  c.hidden_size = positive(r, "hidden_size", c.hidden_size);
  c.intermediate_size = positive(r, "intermediate_size", c.intermediate_size);
  c.num_hidden_layers = positive(r, "num_hidden_layers", c.num_hidden_layers);
  c.num_attention_heads = positive(r, "num_attention_heads", c.num_attention_heads);
  if (r.has("head_dim")) {
    c.head_dim = positive(r, "head_dim", 0);
  } else {
    if (c.hidden_size % c.num_attention_heads != 0)
      r.fail_key("num_attention_heads", str_cat("must divide hidden_size (", c.hidden_size, ") when head_dim is not given, got ",
                                                c.num_attention_heads));
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  c.num_key_value_heads = positive(r, "num_key_value_heads", c.num_attention_heads);
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    r.fail_key("num_key_value_heads", str_cat("must divide num_attention_heads (", c.num_attention_heads, "), got ",
                                              c.num_key_value_heads));
  c.rms_norm_eps = positive_real(r, "rms_norm_eps", c.rms_norm_eps);
  c.max_position_embeddings = positive(r, "max_position_embeddings", c.max_position_embeddings);
  c.hidden_act = one_of(r, "hidden_act", c.hidden_act, {"silu"});
  c.tie_word_embeddings = r.get<bool>("tie_word_embeddings", c.tie_word_embeddings);
  c.attention_bias = r.get<bool>("attention_bias", c.attention_bias);
  c.mlp_bias = r.get<bool>("mlp_bias", c.mlp_bias);
  c.bos_token_id = token_id(r, "bos_token_id", c.bos_token_id);
  c.pad_token_id = token_id(r, "pad_token_id", c.pad_token_id);
  if (r.json().contains("eos_token_id")) {
    const Json& e = r.json()["eos_token_id"];
    if (e.is_null()) c.eos_token_ids.clear();
    else if (e.is_array()) c.eos_token_ids = r.get<std::vector<int64_t>>("eos_token_id");
    else c.eos_token_ids = {r.get<int64_t>("eos_token_id")};
  }
  c.dtype = read_dtype(r);

  // RoPE: rope_theta at the top (transformers 4) or inside rope_parameters (transformers 5, where
  // rope_scaling is an alias of rope_parameters). Scaling: rope_parameters when it names a type
  // other than "default", else rope_scaling.
  c.rope_theta = positive_real(r, "rope_theta", c.rope_theta);
  if (r.has("rope_parameters")) {
    JsonReader rp = r.child("rope_parameters");
    c.rope_theta = positive_real(rp, "rope_theta", c.rope_theta);
    c.rope_scaling = parse_rope_scaling(rp);
  }
  if (!c.rope_scaling && r.has("rope_scaling")) {
    JsonReader rs = r.child("rope_scaling");
    c.rope_scaling = parse_rope_scaling(rs);
  }
  return c;
}

ClipVisionConfig parse_clip_vision_config(const Json& j, const std::string& where, const std::string& path) {
  JsonReader r(j, where, path);
  ClipVisionConfig c;
  if (auto mt = model_type_of(r); mt && *mt != "clip_vision_model")
    r.fail_key("model_type", "must be \"clip_vision_model\", got \"" + *mt + "\" (unsupported vision model)");
  c.hidden_size = positive(r, "hidden_size", c.hidden_size);
  c.intermediate_size = positive(r, "intermediate_size", c.intermediate_size);
  c.num_hidden_layers = positive(r, "num_hidden_layers", c.num_hidden_layers);
  c.num_attention_heads = positive(r, "num_attention_heads", c.num_attention_heads);
  if (c.hidden_size % c.num_attention_heads != 0)
    r.fail_key("num_attention_heads", str_cat("must divide hidden_size (", c.hidden_size, "), got ", c.num_attention_heads));
  c.image_size = positive(r, "image_size", c.image_size);
  c.patch_size = positive(r, "patch_size", c.patch_size);
  if (c.image_size % c.patch_size != 0)
    r.fail_key("patch_size", str_cat("must divide image_size (", c.image_size, "), got ", c.patch_size));
  c.num_channels = positive(r, "num_channels", c.num_channels);
  c.layer_norm_eps = positive_real(r, "layer_norm_eps", c.layer_norm_eps);
  c.hidden_act = one_of(r, "hidden_act", c.hidden_act, {"quick_gelu", "gelu"});
  if (r.has("projection_dim")) c.projection_dim = positive(r, "projection_dim", 0);
  c.dtype = read_dtype(r);
  return c;
}

ClipVisionConfig llava_default_vision_config() {
  ClipVisionConfig c;
  c.intermediate_size = 4096;
  c.hidden_size = 1024;
  c.patch_size = 14;
  c.image_size = 336;
  c.num_hidden_layers = 24;
  c.num_attention_heads = 16;
  c.projection_dim = 768;
  return c;
}

LlavaConfig parse_llava_config(const Json& j, const std::string& where, const std::string& path) {
  JsonReader r(j, where, path);
  LlavaConfig c;
  if (auto mt = model_type_of(r); mt && *mt != "llava") r.fail_key("model_type", "must be \"llava\", got \"" + *mt + "\"");
  // Nested configs: absent -> the class defaults; present -> must be objects (JsonReader checks).
  if (r.has("text_config")) c.text_config = parse_llama_config(r.json()["text_config"], where, r.path_of("text_config"));
  if (r.has("vision_config"))
    c.vision_config = parse_clip_vision_config(r.json()["vision_config"], where, r.path_of("vision_config"));

  const bool has_index = r.has("image_token_index"), has_id = r.has("image_token_id");
  if (has_index) c.image_token_index = r.get<int64_t>("image_token_index");
  if (has_id) {
    const int64_t id = r.get<int64_t>("image_token_id");
    if (has_index && id != c.image_token_index)
      r.fail_key("image_token_id", str_cat("is ", id, " but image_token_index is ", c.image_token_index));
    c.image_token_index = id;
  }
  if (c.image_token_index < 0) r.fail_key(has_id ? "image_token_id" : "image_token_index", str_cat("must be >= 0, got ", c.image_token_index));

  c.projector_hidden_act = one_of(r, "projector_hidden_act", c.projector_hidden_act, {"gelu"});
  c.vision_feature_select_strategy =
      one_of(r, "vision_feature_select_strategy", c.vision_feature_select_strategy, {"default", "full"});
  if (r.has("vision_feature_layer")) {
    if (r.json()["vision_feature_layer"].is_array()) {
      c.vision_feature_layers = r.get<std::vector<int64_t>>("vision_feature_layer");
      c.vision_feature_layer_is_list = true;
      if (c.vision_feature_layers.empty()) r.fail_key("vision_feature_layer", "must not be an empty list");
    } else {
      c.vision_feature_layers = {r.get<int64_t>("vision_feature_layer")};
    }
  }
  // hidden_states of the vision tower: the embeddings plus one entry per layer.
  const int64_t n_states = c.vision_config.num_hidden_layers + 1;
  for (int64_t l : c.vision_feature_layers)
    if (l < -n_states || l >= n_states)
      r.fail_key("vision_feature_layer", str_cat("layer ", l, " is out of range for a vision tower with ",
                                                 c.vision_config.num_hidden_layers, " layers (valid: ", -n_states, "..",
                                                 n_states - 1, ")"));
  c.image_seq_length = positive(r, "image_seq_length", c.image_seq_length);
  c.multimodal_projector_bias = r.get<bool>("multimodal_projector_bias", c.multimodal_projector_bias);
  c.tie_word_embeddings = r.get<bool>("tie_word_embeddings", false) || c.text_config.tie_word_embeddings;
  c.dtype = read_dtype(r);
  return c;
}

std::string_view model_kind_name(ModelKind k) {
  switch (k) {
    case ModelKind::Llama: return "llama";
    case ModelKind::ClipVision: return "clip_vision";
    case ModelKind::Llava: return "llava";
    case ModelKind::Unknown: break;
  }
  return "unknown";
}

ModelConfig read_model_config(const std::string& path) {
  std::error_code ec;
  ModelConfig m;
  m.path = std::filesystem::is_directory(path, ec) ? (std::filesystem::path(path) / "config.json").string() : path;
  m.raw = read_json_file(m.path);
  JsonReader r(m.raw, m.path);
  if (r.has("model_type")) m.model_type = r.get<std::string>("model_type");
  if (r.has("architectures")) {
    const auto archs = r.get<std::vector<std::string>>("architectures");
    if (!archs.empty()) m.architecture = archs[0];
  }
  if (m.architecture.empty() && r.has("_class_name")) m.architecture = r.get<std::string>("_class_name");
  if (m.architecture.empty()) m.architecture = m.model_type;

  for (ModelKind k : {ModelKind::Llava, ModelKind::Llama, ModelKind::ClipVision})
    for (const auto& a : known_architectures(k))
      if (m.architecture == a) m.kind = k;
  if (m.kind == ModelKind::Unknown) {
    if (m.model_type == "llava") m.kind = ModelKind::Llava;
    else if (m.model_type == "llama") m.kind = ModelKind::Llama;
    else if (m.model_type == "clip_vision_model") m.kind = ModelKind::ClipVision;
  }
  switch (m.kind) {
    case ModelKind::Llava: m.typed = parse_llava_config(m.raw, m.path); break;
    case ModelKind::Llama: m.typed = parse_llama_config(m.raw, m.path); break;
    case ModelKind::ClipVision: m.typed = parse_clip_vision_config(m.raw, m.path); break;
    case ModelKind::Unknown: break;
  }
  return m;
}

namespace {
template <class T>
const T& typed_as(const ModelConfig& m, ModelKind want) {
  const T* p = std::get_if<T>(&m.typed);
  MMATTN_CHECK(p != nullptr, ConfigError, m.path, ": expected a ", model_kind_name(want), " config, but the model is '",
               m.architecture, "' (", model_kind_name(m.kind), ")");
  return *p;
}
}  // namespace

const LlamaConfig& ModelConfig::llama() const { return typed_as<LlamaConfig>(*this, ModelKind::Llama); }
const ClipVisionConfig& ModelConfig::clip_vision() const {
  return typed_as<ClipVisionConfig>(*this, ModelKind::ClipVision);
}
const LlavaConfig& ModelConfig::llava() const { return typed_as<LlavaConfig>(*this, ModelKind::Llava); }

}  // namespace mmattn
