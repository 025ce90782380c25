#include "pipelines/spec.h"

#include "core/io.h"
#include "pipelines/registry.h"

namespace mmattn {

bool parse_compute_dtype(const std::string& s, DType* out) {
  if (s == "f32" || s == "float32") *out = DType::F32;
  else if (s == "f16" || s == "float16") *out = DType::F16;
  else if (s == "bf16" || s == "bfloat16") *out = DType::BF16;
  else return false;
  return true;
}

std::string compute_dtype_name(DType t) {
  return t == DType::F32 ? "f32" : t == DType::F16 ? "f16" : t == DType::BF16 ? "bf16" : std::string(dtype_name(t));
}

Spec parse_spec(const Json& j, const std::string& source, const std::string& base_dir) {
  JsonReader r(j, source);
  Spec s;
  s.source = source;
  s.base_dir = base_dir;
  s.pipeline = r.get<std::string>("pipeline");
  const PipelineEntry* entry = find_pipeline(s.pipeline);
  if (!entry) r.fail_key("pipeline", "is '" + s.pipeline + "', not one of: " + pipeline_names());
  s.model = resolve_path(base_dir, r.get<std::string>("model"));

  const std::string dev = r.get<std::string>("device", cuda_available() ? "cuda" : "cpu");
  try {
    s.device = parse_device(dev, r.path_of("device"));
  } catch (const ConfigError& e) {
    r.fail_key("device", "is '" + dev + "', expected cpu, cuda or cuda:N");
  }
  const std::string dt = r.get<std::string>("dtype", s.device.is_cuda() ? "bf16" : "f32");
  if (!parse_compute_dtype(dt, &s.dtype)) r.fail_key("dtype", "is '" + dt + "', expected f32, f16 or bf16");
  if (s.device.is_cpu() && s.dtype != DType::F32)
    r.fail_key("dtype", "is '" + dt + "' but the CPU path computes in f32");
  s.seed = r.get<uint64_t>("seed", 0);

  JsonReader out = r.child_or_empty("output");
  s.output.json = resolve_path(base_dir, out.get<std::string>("json", ""));
  s.output.quiet = out.get<bool>("quiet", false);
  out.finish();

  // the pipeline's own block: validated now so that a bad spec fails before any work starts
  if (r.has(s.pipeline)) s.options = r.get<Json>(s.pipeline);
  else r.ignore(s.pipeline);
  JsonReader opts(s.options, source, r.path_of(s.pipeline));
  entry->validate(opts);
  r.finish();
  return s;
}

Spec load_spec(const std::string& path) {
  return parse_spec(read_json_file(path), path, parent_dir(path));
}

}  // namespace mmattn
