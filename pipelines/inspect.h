#pragma once
// `mmattn info DIR` and the "inspect" pipeline: what a checkpoint holds (architecture, tensors,
// dtypes, parameters per top-level module) and, for inspect, a pass over every tensor's values.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/json_reader.h"

namespace mmattn {

struct Spec;

struct CheckpointSummary {
  std::string path;
  std::string architecture;  // config.json architectures[0] / diffusers _class_name / "unknown"
  std::string model_type;
  std::vector<std::string> files;
  int64_t num_tensors = 0;
  int64_t num_params = 0;
  std::map<std::string, int64_t> dtype_tensors;   // "BF16" -> tensor count
  std::map<std::string, int64_t> module_params;   // "language_model" -> parameters
  Json config_summary = Json::object();           // typed fields read from config.json
};

CheckpointSummary summarize_checkpoint(const std::string& path);
Json summary_to_json(const CheckpointSummary& s);
std::string summary_to_text(const CheckpointSummary& s);
std::string format_count(int64_t n);  // 4374144 -> "4.37M"

void validate_inspect_options(JsonReader& r);
Json run_inspect(const Spec& spec);

}  // namespace mmattn
