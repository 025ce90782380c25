#include "pipelines/inspect.h"

#include <cmath>
#include <cstdio>

#include "core/checkpoint.h"
#include "core/hf_config.h"
#include "core/io.h"
#include "core/log.h"
#include "core/progress.h"
#include "pipelines/spec.h"

namespace mmattn {

namespace {

// Parameters are grouped by their top-level module: the first name component, or the first
// two when the first is the generic "model" (current transformers naming: model.vision_tower...).
std::string module_of(const std::string& name) {
  const size_t a = name.find('.');
  if (a == std::string::npos) return name;
  const std::string first = name.substr(0, a);
  if (first != "model") return first;
  const size_t b = name.find('.', a + 1);
  return b == std::string::npos ? name : name.substr(0, b);
}

std::string config_dir(const std::string& path) { return is_directory(path) ? path : parent_dir(path); }

Json describe_llama(const LlamaConfig& c) {
  return {{"layers", c.num_hidden_layers}, {"hidden", c.hidden_size}, {"intermediate", c.intermediate_size},
          {"heads", c.num_attention_heads}, {"kv_heads", c.num_key_value_heads}, {"head_dim", c.head_dim},
          {"vocab", c.vocab_size}, {"rope_theta", c.rope_theta},
          {"rope_scaling", c.rope_scaling ? c.rope_scaling->type : "none"}, {"rms_norm_eps", c.rms_norm_eps}};
}
Json describe_clip(const ClipVisionConfig& c) {
  return {{"layers", c.num_hidden_layers}, {"hidden", c.hidden_size}, {"intermediate", c.intermediate_size},
          {"heads", c.num_attention_heads}, {"image_size", c.image_size}, {"patch_size", c.patch_size},
          {"patches", c.num_patches()}, {"act", c.hidden_act}};
}

// The typed fields that matter for running the model, as read by the engine's config parser.
Json describe_config(const ModelConfig& mc) {
  switch (mc.kind) {
    case ModelKind::Llava: {
      const LlavaConfig& c = mc.llava();
      return {{"text", describe_llama(c.text_config)},
              {"vision", describe_clip(c.vision_config)},
              {"projector_act", c.projector_hidden_act},
              {"image_token_index", c.image_token_index},
              {"vision_feature_layer", c.vision_feature_layers},
              {"vision_feature_select_strategy", c.vision_feature_select_strategy}};
    }
    case ModelKind::Llama: return {{"text", describe_llama(mc.llama())}};
    case ModelKind::ClipVision: return {{"vision", describe_clip(mc.clip_vision())}};
    case ModelKind::Unknown: break;
  }
  return Json::object();
}

}  // namespace

std::string format_count(int64_t n) {
  char buf[32];
  if (n >= 1000000000) std::snprintf(buf, sizeof buf, "%.2fB", n / 1e9);
  else if (n >= 1000000) std::snprintf(buf, sizeof buf, "%.2fM", n / 1e6);
  else if (n >= 1000) std::snprintf(buf, sizeof buf, "%.2fK", n / 1e3);
  else std::snprintf(buf, sizeof buf, "%lld", (long long)n);
  return buf;
}

CheckpointSummary summarize_checkpoint(const std::string& path) {
  Checkpoint ckpt(path);
  CheckpointSummary s;
  s.path = path;
  s.files = ckpt.files();
  s.num_tensors = int64_t(ckpt.size());
  s.num_params = ckpt.num_params();
  for (const auto& [dt, n] : ckpt.dtype_counts()) s.dtype_tensors[std::string(dtype_name(dt))] = n;
  for (const auto& name : ckpt.names()) s.module_params[module_of(name)] += ckpt.info(name).numel();
  s.architecture = "unknown";
  const std::string cfg = config_dir(path) + "/config.json";
  if (path_exists(cfg)) {
    const ModelConfig mc = read_model_config(cfg);
    s.architecture = mc.architecture.empty() ? "unknown" : mc.architecture;
    s.model_type = mc.model_type;
    s.config_summary = describe_config(mc);
  }
  return s;
}

Json summary_to_json(const CheckpointSummary& s) {
  return Json{{"path", s.path},           {"architecture", s.architecture}, {"model_type", s.model_type},
              {"files", s.files},         {"num_tensors", s.num_tensors},   {"num_params", s.num_params},
              {"dtypes", s.dtype_tensors}, {"module_params", s.module_params}, {"config", s.config_summary}};
}

std::string summary_to_text(const CheckpointSummary& s) {
  std::string t = str_cat("checkpoint   ", s.path, "\narchitecture ", s.architecture,
                          s.model_type.empty() ? "" : " (model_type " + s.model_type + ")", "\nfiles        ",
                          s.files.size(), " safetensors\ntensors      ", s.num_tensors, "\nparameters   ",
                          s.num_params, " (", format_count(s.num_params), ")\ndtypes      ");
  for (const auto& [dt, n] : s.dtype_tensors) t += str_cat(" ", dt, ":", n);
  t += "\nmodules\n";
  for (const auto& [m, n] : s.module_params) t += str_cat("  ", m, "  ", n, " (", format_count(n), ")\n");
  for (auto it = s.config_summary.begin(); it != s.config_summary.end(); ++it)
    t += str_cat(it == s.config_summary.begin() ? "config\n" : "", "  ", it.key(), "  ", it.value().dump(), "\n");
  return t;
}

void validate_inspect_options(JsonReader& r) {
  r.get<bool>("verify_values", true);
  if (r.has("expect_params") && r.get<int64_t>("expect_params") < 0)
    r.fail_key("expect_params", "must be >= 0");
  r.finish();
}

Json run_inspect(const Spec& spec) {
  JsonReader opts(spec.options, spec.source, "$.inspect");
  const bool verify = opts.get<bool>("verify_values", true);
  const int64_t expect = opts.get<int64_t>("expect_params", -1);
  CheckpointSummary s = summarize_checkpoint(spec.model);
  if (expect >= 0 && expect != s.num_params)
    MMATTN_THROW(WeightError, spec.model, ": ", s.num_params, " parameters, the spec expects ", expect,
                 " ($.inspect.expect_params)");
  Json report = summary_to_json(s);
  if (!spec.report_on_stdout) std::printf("%s", summary_to_text(s).c_str());
  if (verify) {
    // Every tensor goes through the engine's load path (host->device copy and dtype conversion),
    // then its values are checked for NaN/Inf.
    Checkpoint ckpt(spec.model);
    ProgressBar bar(int64_t(ckpt.size()), "verify", spec.output.quiet);
    int64_t nonfinite = 0;
    double max_abs = 0;
    Json bad = Json::array();
    for (const auto& name : ckpt.names()) {
      Tensor t = ckpt.load(name, spec.device, spec.dtype);
      int64_t n_bad = 0;
      for (float v : t.to_floats()) {
        if (!std::isfinite(v)) ++n_bad;
        else max_abs = std::max(max_abs, double(std::fabs(v)));
      }
      if (n_bad) bad.push_back({{"tensor", name}, {"nonfinite", n_bad}});
      nonfinite += n_bad;
      bar.update();
    }
    bar.finish();
    report["verify"] = {{"device", spec.device.str()}, {"dtype", compute_dtype_name(spec.dtype)},
                        {"nonfinite_values", nonfinite}, {"max_abs", max_abs}, {"tensors_with_nonfinite", bad}};
    if (!spec.report_on_stdout)
      std::printf("verify       %lld tensors loaded on %s as %s: %lld non-finite values, max |w| %.4g\n",
                  (long long)s.num_tensors, spec.device.str().c_str(), compute_dtype_name(spec.dtype).c_str(),
                  (long long)nonfinite, max_abs);
    if (nonfinite) MMATTN_WARN(spec.model, ": ", nonfinite, " non-finite weight values (see the report)");
  }
  return report;
}

}  // namespace mmattn
