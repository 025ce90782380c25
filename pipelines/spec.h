#pragma once
// JSON pipeline specs: the product's interface. Parsed strictly: unknown keys and bad values are
// ConfigErrors naming the file and JSON path. Defaults live here and in docs/specs.md only.
//
// {
//   "pipeline": "inspect",            required; a name from the registry (mmattn run --list)
//   "model": "path/to/checkpoint",    required; relative paths resolve against the spec's folder
//   "device": "cuda",                 "cpu" | "cuda" | "cuda:N"; default "cuda" if available else "cpu"
//   "dtype": "bf16",                  "f32" | "f16" | "bf16"; default bf16 on cuda, f32 on cpu
//   "seed": 0,                        default 0
//   "output": {"json": "report.json", "quiet": false},   optional
//   "<pipeline>": { ... }             options of the chosen pipeline (validated by it)
// }
#include <cstdint>
#include <string>

#include "core/device.h"
#include "core/dtype.h"
#include "core/json_reader.h"

namespace mmattn {

struct OutputSpec {
  std::string json;    // report path ("" = none); resolved against the spec folder
  bool quiet = false;  // no progress bars
};

struct Spec {
  std::string source;    // file name (for messages)
  std::string base_dir;  // folder relative paths resolve against
  std::string pipeline;
  std::string model;
  Device device;
  DType dtype = DType::F32;
  uint64_t seed = 0;
  OutputSpec output;
  Json options = Json::object();  // the "<pipeline>" block, validated by the pipeline
  // Not a spec key: set by the CLI's --json, whose stdout carries the report alone (pipelines then
  // print no text or streamed output there).
  bool report_on_stdout = false;
};

// Parses "f32" | "f16" | "bf16" (also "float32", "float16", "bfloat16").
bool parse_compute_dtype(const std::string& s, DType* out);
std::string compute_dtype_name(DType t);  // "f32" | "f16" | "bf16"

Spec parse_spec(const Json& j, const std::string& source, const std::string& base_dir);
Spec load_spec(const std::string& path);

}  // namespace mmattn
