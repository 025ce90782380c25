#include "pipelines/cli.h"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>

#include "core/log.h"
#include "pipelines/eval.h"
#include "pipelines/inspect.h"
#include "pipelines/llava.h"
#include "pipelines/modulation.h"
#include "pipelines/registry.h"
#include "pipelines/spec.h"
#include "pipelines/version.h"

namespace mmattn {

namespace {

// Flags of `mmattn caption` / `mmattn vqa`. Only the flags given go into the spec they build, so
// every default stays in one place (the llava options parser, docs/specs.md).
struct LlavaFlags {
  std::string model, image, prompt, device, dtype, output, prune, kept_map, head_map;
  std::vector<std::string> modulation;
  int64_t keep = 0;
  double ratio = 0;
  int prune_layer = 0;
  uint64_t seed = 0;
  int64_t max_new_tokens = 0, min_new_tokens = 0;
  double temperature = 1, top_p = 1, repetition_penalty = 1;
  int top_k = 0;
  std::vector<std::string> stop;
  bool json = false, system_prompt = false, pad_to_square = false, do_sample = false, no_stream = false;
  CLI::App* app = nullptr;
  bool given(const std::string& name) const { return app->count(name) > 0; }
};

void add_llava_flags(CLI::App* sub, LlavaFlags& f, bool vqa) {
  f.app = sub;
  sub->add_option("--model", f.model, "LLaVA model folder (HF layout)")->required();
  sub->add_option("--image", f.image, "image file (JPEG or PNG)")->required();
  if (vqa) sub->add_option("--question", f.prompt, "the question")->required();
  else sub->add_option("--prompt", f.prompt, std::string("instruction (default: \"") + kDefaultCaptionPrompt + "\")");
  sub->add_option("--max-new-tokens", f.max_new_tokens, "most tokens to generate (default 128)");
  sub->add_option("--min-new-tokens", f.min_new_tokens, "EOS is masked before this many tokens (default 0)");
  sub->add_option("--device", f.device, "cpu | cuda | cuda:N (default cuda when available)");
  sub->add_option("--dtype", f.dtype, "f32 | f16 | bf16 (default bf16 on cuda, f32 on cpu)");
  sub->add_option("--seed", f.seed, "sampling seed (default 0)");
  sub->add_flag("--do-sample", f.do_sample, "sample instead of greedy decoding");
  sub->add_option("--temperature", f.temperature, "sampling temperature (implies --do-sample)");
  sub->add_option("--top-k", f.top_k, "top-k filter, 0 = off (implies --do-sample)");
  sub->add_option("--top-p", f.top_p, "nucleus filter in (0, 1] (implies --do-sample)");
  sub->add_option("--repetition-penalty", f.repetition_penalty, "CTRL repetition penalty (default 1 = off)");
  sub->add_option("--stop", f.stop, "stop string (repeatable): the text ends before its first occurrence")
      ->allow_extra_args(false);
  sub->add_flag("--system-prompt", f.system_prompt, "prepend LLaVA's vicuna_v1 system prompt");
  sub->add_flag("--pad-to-square", f.pad_to_square, "pad the image to a square with the mean colour first");
  sub->add_flag("--no-stream", f.no_stream, "print the answer at the end instead of token by token");
  sub->add_option("--output", f.output, "also write the JSON report to this file");
  sub->add_flag("--json", f.json, "print the JSON report on stdout (no streaming)");
  sub->add_option("--prune", f.prune,
                  "visual token pruning: fastv | pdrop | fastervlm | visionzip | dart | divprune | vflowopt "
                  "(docs/pruning.md; other parameters through a spec)");
  sub->add_option("--keep", f.keep, "image tokens kept by --prune");
  sub->add_option("--ratio", f.ratio, "fraction of the image tokens kept by --prune");
  sub->add_option("--prune-layer", f.prune_layer, "LLM layer fastv / dart prune before (default 2)");
  sub->add_option("--save-kept-map", f.kept_map, "write a PNG of the kept patches and the importance heatmap");
  sub->add_option("--modulation", f.modulation,
                  "hallucination mitigation, repeatable: METHOD[:key=value,...], METHOD one of pai, paint, adhh, "
                  "var, vhr, vcd, damro, ritual (docs/modulation.md), e.g. pai:alpha=0.5 or ritual:transform=hflip")
      ->allow_extra_args(false);
  sub->add_option("--save-head-map", f.head_map,
                  "write a PNG (layers x heads) of the last prompt row's attention mass on the image, and the "
                  "values as JSON beside it");
}

// The spec a caption/vqa command line stands for (paths relative to the working directory).
Json llava_spec_json(const LlavaFlags& f, bool vqa) {
  Json j = {{"pipeline", "llava"}, {"model", f.model}};
  if (f.given("--device")) j["device"] = f.device;
  if (f.given("--dtype")) j["dtype"] = f.dtype;
  if (f.given("--seed")) j["seed"] = f.seed;
  if (f.given("--output")) j["output"] = {{"json", f.output}};
  Json o = {{"image", f.image}, {"task", vqa ? "vqa" : "caption"}};
  if (vqa || f.given("--prompt")) o["prompt"] = f.prompt;
  if (f.given("--max-new-tokens")) o["max_new_tokens"] = f.max_new_tokens;
  if (f.given("--min-new-tokens")) o["min_new_tokens"] = f.min_new_tokens;
  if (f.do_sample || f.given("--temperature") || f.given("--top-k") || f.given("--top-p")) o["do_sample"] = true;
  if (f.given("--temperature")) o["temperature"] = f.temperature;
  if (f.given("--top-k")) o["top_k"] = f.top_k;
  if (f.given("--top-p")) o["top_p"] = f.top_p;
  if (f.given("--repetition-penalty")) o["repetition_penalty"] = f.repetition_penalty;
  if (!f.stop.empty()) o["stop"] = f.stop;
  if (f.system_prompt) o["system_prompt"] = true;
  if (f.pad_to_square) o["pad_to_square"] = true;
  if (f.no_stream) o["stream"] = false;
  if (f.given("--prune")) {
    Json p = {{"method", f.prune}};
    if (f.given("--keep")) p["keep"] = f.keep;
    if (f.given("--ratio")) p["ratio"] = f.ratio;
    if (f.given("--prune-layer")) p["layer"] = f.prune_layer;
    o["pruning"] = p;
  } else if (f.given("--keep") || f.given("--ratio") || f.given("--prune-layer")) {
    MMATTN_THROW(ConfigError, "--keep, --ratio and --prune-layer need --prune METHOD");
  }
  if (f.given("--save-kept-map")) o["save_kept_map"] = f.kept_map;
  if (!f.modulation.empty()) {
    Json m = Json::array();
    for (const std::string& t : f.modulation) m.push_back(modulation_flag_json(t));
    const Json set = {{"modulation", m}};  // the set's own rules (at most one contrastive method)
    JsonReader r(set, "--modulation");
    ModulationSet::parse(r, "modulation");
    o["modulation"] = m;
  }
  if (f.given("--save-head-map")) o["save_head_map"] = f.head_map;
  j["llava"] = o;
  return j;
}

// Splits at the commas outside [...] and "...".
std::vector<std::string> split_top_level(const std::string& s) {
  std::vector<std::string> parts(1);
  int depth = 0;
  bool quoted = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '"' && (i == 0 || s[i - 1] != '\\')) quoted = !quoted;
    if (!quoted && (c == '[' || c == '{')) ++depth;
    if (!quoted && (c == ']' || c == '}')) --depth;
    if (c == ',' && depth == 0 && !quoted) parts.emplace_back();
    else parts.back() += c;
  }
  return parts;
}

}  // namespace

Json modulation_flag_json(const std::string& text) {
  const std::string where = "--modulation '" + text + "'";
  const size_t colon = text.find(':');
  const std::string method = text.substr(0, colon);
  MMATTN_CHECK(!method.empty(), ConfigError, where, ": expected METHOD[:key=value,...] (e.g. pai:alpha=0.5)");
  Json j = {{"method", method}};
  if (colon != std::string::npos) {
    for (const std::string& kv : split_top_level(text.substr(colon + 1))) {
      const size_t eq = kv.find('=');
      MMATTN_CHECK(eq != std::string::npos && eq > 0 && eq + 1 < kv.size(), ConfigError, where,
                   ": expected key=value after '", method, ":', got '", kv, "'");
      const std::string key = kv.substr(0, eq), value = kv.substr(eq + 1);
      MMATTN_CHECK(key != "method", ConfigError, where, ": the method is the part before ':'");
      MMATTN_CHECK(!j.contains(key), ConfigError, where, ": '", key, "' is given twice");
      j[key] = Json::accept(value) ? Json::parse(value) : Json(value);
    }
  }
  JsonReader r(j, where);
  ModulationConfig::parse(r);  // unknown keys and bad values, named
  return j;
}

int cli_main(int argc, char** argv) {
  CLI::App app{"mmattn: multimodal attention engine (LLaVA VQA/captioning with token pruning and head "
               "modulation; FLUX text-to-image with neighborhood/CLEAR attention; hallucination benchmarks)"};
  app.set_version_flag("--version", std::string("mmattn ") + version_string());
  app.require_subcommand(1);
  app.fallthrough();  // top-level options may follow the subcommand
  std::string log_level = "";
  app.add_option("--log-level", log_level, "debug|info|warn|error|quiet (default: $MMATTN_LOG or info)");

  auto* run = app.add_subcommand("run", "run a JSON pipeline spec");
  std::string spec_path;
  bool list = false, print_json = false;
  run->add_option("spec", spec_path, "spec file (JSON)");
  run->add_flag("--list", list, "list the pipelines a spec can name");
  run->add_flag("--json", print_json, "print the report as JSON on stdout");

  auto* info = app.add_subcommand("info", "print a checkpoint's architecture, tensors, dtypes and parameters");
  std::string model_dir;
  bool info_json = false;
  info->add_option("model", model_dir, "model folder (HF/diffusers layout) or .safetensors file")->required();
  info->add_flag("--json", info_json, "print JSON instead of text");

  auto* caption = app.add_subcommand("caption", "describe an image with a LLaVA model (builds and runs a llava spec)");
  LlavaFlags caption_flags;
  add_llava_flags(caption, caption_flags, /*vqa=*/false);
  auto* vqa = app.add_subcommand("vqa", "answer a question about an image with a LLaVA model (a llava spec)");
  LlavaFlags vqa_flags;
  add_llava_flags(vqa, vqa_flags, /*vqa=*/true);

  auto* eval = app.add_subcommand("eval", "evaluate POPE / CHAIR over the variants of an eval spec (resumable)");
  std::string eval_spec, shard;
  bool eval_quiet = false;
  eval->add_option("spec", eval_spec, "eval spec (JSON; \"pipeline\": \"eval\")")->required();
  eval->add_option("--shard", shard, "i/n: run only the samples with index % n == i (merge with eval-merge)");
  eval->add_flag("--quiet", eval_quiet, "no progress bar");
  auto* merge = app.add_subcommand("eval-merge", "merge the shard results of an eval output folder and report");
  std::string merge_dir;
  merge->add_option("output_dir", merge_dir, "the eval's output_dir")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (!log_level.empty()) {
      LogLevel l;
      MMATTN_CHECK(parse_log_level(log_level, &l), ConfigError, "--log-level: unknown level '", log_level, "'");
      set_log_level(l);
    }
    if (*run) {
      if (list) {
        for (const auto& p : pipelines()) std::printf("%-10s %s\n", p.name.c_str(), p.description.c_str());
        return 0;
      }
      MMATTN_CHECK(!spec_path.empty(), ConfigError, "mmattn run: a spec file is required (or --list)");
      Spec spec = load_spec(spec_path);
      spec.report_on_stdout = print_json;
      const Json report = run_spec(spec);
      if (print_json) std::printf("%s\n", report.dump(1).c_str());
      if (!spec.output.json.empty()) MMATTN_INFO("report written to ", spec.output.json);
    } else if (*eval) {
      Spec spec = load_spec(eval_spec);
      MMATTN_CHECK(spec.pipeline == "eval", ConfigError, eval_spec, ": $.pipeline is '", spec.pipeline,
                   "'; mmattn eval runs \"eval\" specs");
      if (eval_quiet) spec.output.quiet = true;
      const Json summary = run_eval(spec, shard.empty() ? EvalRunOptions{} : parse_shard(shard));
      std::printf("%s\n", summary.dump(1).c_str());
    } else if (*merge) {
      const Json summary = merge_eval(merge_dir);
      std::printf("%s\n", summary.dump(1).c_str());
    } else if (*caption || *vqa) {
      const bool is_vqa = bool(*vqa);
      const LlavaFlags& f = is_vqa ? vqa_flags : caption_flags;
      const std::string name = is_vqa ? "mmattn vqa" : "mmattn caption";
      Spec spec = parse_spec(llava_spec_json(f, is_vqa), name, "");
      spec.report_on_stdout = f.json;
      const Json report = run_spec(spec);
      if (f.json) std::printf("%s\n", report.dump(1).c_str());
      if (!spec.output.json.empty()) MMATTN_INFO("report written to ", spec.output.json);
    } else if (*info) {
      const CheckpointSummary s = summarize_checkpoint(model_dir);
      std::printf("%s", info_json ? (summary_to_json(s).dump(1) + "\n").c_str() : summary_to_text(s).c_str());
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "mmattn: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mmattn: internal error: %s\n", e.what());
    return 1;
  }
  return 0;
}

}  // namespace mmattn
