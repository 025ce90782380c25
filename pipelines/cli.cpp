#include "pipelines/cli.h"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>

#include "core/log.h"
#include "pipelines/inspect.h"
#include "pipelines/registry.h"
#include "pipelines/spec.h"
#include "pipelines/version.h"

namespace mmattn {

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
      const Spec spec = load_spec(spec_path);
      const Json report = run_spec(spec);
      if (print_json) std::printf("%s\n", report.dump(1).c_str());
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
