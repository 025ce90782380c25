#pragma once
// The pipeline registry: name -> option validation + run. Pipelines add themselves in
// registry.cpp (an explicit list: no static-initialisation tricks, so nothing is dropped by the
// linker and the order is fixed).
#include <functional>
#include <string>
#include <vector>

#include "core/json_reader.h"

namespace mmattn {

struct Spec;

struct PipelineEntry {
  std::string name;
  std::string description;
  // Reads and checks the spec's "<name>" block (strict: call finish()). Throws ConfigError.
  std::function<void(JsonReader&)> validate;
  // Runs the pipeline; returns the JSON report (also written to spec.output.json when set).
  std::function<Json(const Spec&)> run;
};

const std::vector<PipelineEntry>& pipelines();
const PipelineEntry* find_pipeline(const std::string& name);
std::string pipeline_names();  // "a, b, c"

// Runs a parsed spec: the pipeline, then the report written atomically to output.json.
Json run_spec(const Spec& spec);

}  // namespace mmattn
