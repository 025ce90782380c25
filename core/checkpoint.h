#pragma once
// A model checkpoint in Hugging Face / diffusers layout: one or more .safetensors files, all
// mmap'ed, tensors looked up by their checkpoint names and handed out as zero-copy CPU views.
//
// Checkpoint(path) where path is
//   - a directory: the first of
//       model.safetensors.index.json, diffusion_pytorch_model.safetensors.index.json  (sharded:
//           weight_map {tensor name -> shard file}; every shard must exist and hold the tensors
//           mapped to it; tensors a shard holds but the map does not list are not exposed),
//       model.safetensors, diffusion_pytorch_model.safetensors,
//       every *.safetensors in the directory (a name in two files is an error);
//   - a *.json file: an index as above;
//   - any other file: a single .safetensors file.
// Errors: IoError (missing path / shard), FormatError (malformed file or index; names the file,
// the tensor and the JSON path), WeightError (asked for a tensor that is absent or mis-shaped).
// Read-only after construction, so safe to share between threads.
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/safetensors.h"

namespace mmattn {

class Checkpoint {
 public:
  explicit Checkpoint(const std::string& path);

  const std::string& path() const { return path_; }
  // The index file used ("" when not sharded) and the .safetensors files opened (sorted).
  const std::string& index_file() const { return index_file_; }
  const std::vector<std::string>& files() const { return file_paths_; }

  const std::vector<std::string>& names() const { return names_; }  // sorted
  size_t size() const { return names_.size(); }
  bool has(const std::string& name) const { return entries_.count(name) != 0; }
  // WeightError "missing tensor 'x' in <path> (did you mean ...?)" when absent.
  const TensorInfo& require(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const { return require(name); }
  // Up to `max` names close to `name` (same suffix, or small edit distance), best first.
  std::vector<std::string> close_names(const std::string& name, size_t max = 3) const;

  // Zero-copy CPU view into the mapping (read-only; possibly unaligned, see safetensors.h).
  Tensor get(const std::string& name) const;
  // As get(), and WeightError naming the tensor, the expected and the found shape on mismatch.
  Tensor get(const std::string& name, const Shape& expected_shape) const;
  // On `dev` in `dtype` (Tensor::to); still a view when nothing needs converting, but always
  // aligned for its dtype (unaligned data is copied).
  Tensor load(const std::string& name, Device dev, DType dtype) const;
  Tensor load(const std::string& name, const Shape& expected_shape, Device dev, DType dtype) const;

  int64_t num_params() const;                  // total elements over all tensors
  std::map<DType, int64_t> dtype_counts() const;  // number of tensors of each dtype

 private:
  void add_file(const std::string& file);
  std::string path_, index_file_;
  std::vector<std::shared_ptr<SafeTensorsFile>> files_;
  std::vector<std::string> file_paths_;
  std::vector<std::string> names_;
  struct Entry {
    const SafeTensorsFile* file;
    const TensorInfo* info;
  };
  std::unordered_map<std::string, Entry> entries_;
};

}  // namespace mmattn
