#include "pipelines/registry.h"

#include "core/io.h"
#include "pipelines/eval.h"
#include "pipelines/inspect.h"
#include "pipelines/llava.h"
#include "pipelines/spec.h"

namespace mmattn {

const std::vector<PipelineEntry>& pipelines() {
  static const std::vector<PipelineEntry> list = {
      {"inspect", "load a checkpoint, check every tensor against its config, report its structure",
       validate_inspect_options, run_inspect},
      {"llava", "LLaVA-1.5 captioning / visual question answering on one image (streams the answer)",
       validate_llava_options, run_llava},
      {"eval", "POPE / CHAIR over several variants of one LLaVA model: batched, resumable, sharded, with reports",
       validate_eval_options, run_eval_spec},
  };
  return list;
}

const PipelineEntry* find_pipeline(const std::string& name) {
  for (const auto& p : pipelines())
    if (p.name == name) return &p;
  return nullptr;
}

std::string pipeline_names() {
  std::string s;
  for (const auto& p : pipelines()) s += (s.empty() ? "" : ", ") + p.name;
  return s;
}

Json run_spec(const Spec& spec) {
  const PipelineEntry* p = find_pipeline(spec.pipeline);
  MMATTN_CHECK(p, ConfigError, spec.source, ": unknown pipeline '", spec.pipeline, "'");
  Json report = p->run(spec);
  if (!spec.output.json.empty()) write_file_atomic(spec.output.json, report.dump(1) + "\n");
  return report;
}

}  // namespace mmattn
