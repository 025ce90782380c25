#include "core/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include "core/json_reader.h"

namespace fs = std::filesystem;

namespace mmattn {

namespace {

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

// A shard path from an index must stay inside the checkpoint folder.
bool safe_relative(const std::string& f) {
  if (f.empty()) return false;
  const fs::path p(f);
  if (p.is_absolute()) return false;
  for (const auto& part : p)
    if (part == "..") return false;
  return true;
}

}  // namespace

Checkpoint::Checkpoint(const std::string& path) : path_(path) {
  std::error_code ec;
  const fs::path p(path);
  const bool exists = fs::exists(p, ec);
  MMATTN_CHECK(exists, IoError, "checkpoint '", path, "' does not exist");

  if (fs::is_directory(p, ec)) {
    for (const char* idx : {"model.safetensors.index.json", "diffusion_pytorch_model.safetensors.index.json"}) {
      if (is_file(p / idx)) {
        index_file_ = (p / idx).string();
        break;
      }
    }
    if (index_file_.empty()) {
      for (const char* single : {"model.safetensors", "diffusion_pytorch_model.safetensors"}) {
        if (is_file(p / single)) {
          add_file((p / single).string());
          break;
        }
      }
    }
    if (index_file_.empty() && files_.empty()) {
      std::vector<std::string> found;
      for (fs::directory_iterator it(p, ec), end; !ec && it != end; it.increment(ec))
        if (it->path().extension() == ".safetensors" && is_file(it->path())) found.push_back(it->path().string());
      MMATTN_CHECK(!ec, IoError, "cannot list checkpoint folder '", path, "': ", ec.message());
      MMATTN_CHECK(!found.empty(), IoError, "no safetensors checkpoint in '", path,
                   "' (looked for model.safetensors[.index.json], diffusion_pytorch_model.safetensors[.index.json], "
                   "*.safetensors)");
      std::sort(found.begin(), found.end());
      for (const auto& f : found) add_file(f);
    }
  } else if (ends_with(path, ".json")) {
    index_file_ = path;
  } else {
    add_file(path);
  }

  if (!index_file_.empty()) {
    const std::string& ix = index_file_;
    const Json j = read_json_file(ix);
    MMATTN_CHECK(j.is_object(), FormatError, ix, ": $: expected an object, got ", json_type_desc(j));
    MMATTN_CHECK(j.contains("weight_map"), FormatError, ix, ": $.weight_map is required");
    const Json& wm = j["weight_map"];
    MMATTN_CHECK(wm.is_object(), FormatError, ix, ": $.weight_map: expected an object, got ", json_type_desc(wm));
    MMATTN_CHECK(!wm.empty(), FormatError, ix, ": $.weight_map is empty");
    const fs::path dir = fs::path(ix).parent_path();
    std::map<std::string, std::shared_ptr<SafeTensorsFile>> shards;  // shard name -> file
    for (auto it = wm.begin(); it != wm.end(); ++it) {
      const std::string& name = it.key();
      const Json& v = it.value();
      MMATTN_CHECK(v.is_string(), FormatError, ix, ": $.weight_map[\"", name, "\"]: expected a shard file name, got ",
                   json_type_desc(v));
      const std::string shard = v.get<std::string>();
      MMATTN_CHECK(safe_relative(shard), FormatError, ix, ": $.weight_map[\"", name, "\"]: shard '", shard,
                   "' must be a relative path inside the checkpoint folder");
      auto s = shards.find(shard);
      if (s == shards.end()) {
        const fs::path sp = dir / shard;
        MMATTN_CHECK(is_file(sp), IoError, ix, ": shard '", shard, "' (holding tensor '", name, "') not found at '",
                     sp.string(), "'");
        s = shards.emplace(shard, std::make_shared<SafeTensorsFile>(sp.string())).first;
        files_.push_back(s->second);
        file_paths_.push_back(sp.string());
      }
      const SafeTensorsFile& f = *s->second;
      MMATTN_CHECK(f.has(name), FormatError, ix, ": $.weight_map maps tensor '", name, "' to shard '", shard,
                   "', which does not hold it");
      entries_[name] = Entry{&f, &f.info(name)};
    }
  }

  names_.reserve(entries_.size());
  for (const auto& [name, e] : entries_) names_.push_back(name);
  std::sort(names_.begin(), names_.end());
  std::sort(file_paths_.begin(), file_paths_.end());
}

void Checkpoint::add_file(const std::string& file) {
  auto f = std::make_shared<SafeTensorsFile>(file);
  for (const auto& name : f->names()) {
    auto [it, fresh] = entries_.emplace(name, Entry{f.get(), &f->info(name)});
    MMATTN_CHECK(fresh, FormatError, "tensor '", name, "' is in both '", it->second.file->path(), "' and '", file,
                 "' (mixed checkpoint variants in one folder?)");
  }
  files_.push_back(std::move(f));
  file_paths_.push_back(file);
}

std::vector<std::string> Checkpoint::close_names(const std::string& name, size_t max) const {
  // A name that ends with the other (a missing/extra prefix such as "language_model.") is the
  // likeliest mistake; then the smallest edit distance within a third of the length.
  std::vector<std::pair<size_t, std::string>> scored;
  const size_t limit = std::max<size_t>(3, name.size() / 3);
  for (const auto& n : names_) {
    if (ends_with(n, "." + name) || ends_with(name, "." + n)) {
      scored.emplace_back(0, n);
      continue;
    }
    const size_t lo = n.size() > name.size() ? n.size() - name.size() : name.size() - n.size();
    if (lo > limit) continue;
    const size_t d = edit_distance(n, name);
    if (d <= limit) scored.emplace_back(d, n);
  }
  std::sort(scored.begin(), scored.end());
  std::vector<std::string> out;
  for (size_t i = 0; i < scored.size() && i < max; ++i) out.push_back(scored[i].second);
  return out;
}

const TensorInfo& Checkpoint::require(const std::string& name) const {
  auto it = entries_.find(name);
  if (it != entries_.end()) return *it->second.info;
  std::string hint;
  const auto close = close_names(name);
  for (size_t i = 0; i < close.size(); ++i) hint += (i ? ", '" : " (did you mean '") + close[i] + "'";
  if (!hint.empty()) hint += "?)";
  MMATTN_THROW(WeightError, "missing tensor '", name, "' in ", path_, hint, " [checkpoint has ", names_.size(),
               " tensors]");
}

Tensor Checkpoint::get(const std::string& name) const {
  require(name);
  const Entry& e = entries_.at(name);
  return e.file->get(name);
}

Tensor Checkpoint::get(const std::string& name, const Shape& expected_shape) const {
  const TensorInfo& i = require(name);
  MMATTN_CHECK(i.shape == expected_shape, WeightError, "tensor '", name, "' in ", i.file, ": expected shape ",
               shape_str(expected_shape), ", found ", shape_str(i.shape));
  return get(name);
}

Tensor Checkpoint::load(const std::string& name, Device dev, DType dtype) const {
  const TensorInfo& i = require(name);
  Tensor t = get(name);
  // Host-to-device copies and dtype conversion are bytewise; only a view kept as-is on the CPU
  // would hand out a misaligned typed pointer.
  if (!i.aligned && dev.is_cpu() && dtype == i.dtype) return t.clone();
  return t.to(dev, dtype);
}

Tensor Checkpoint::load(const std::string& name, const Shape& expected_shape, Device dev, DType dtype) const {
  get(name, expected_shape);  // shape check with the checkpoint's context
  return load(name, dev, dtype);
}

int64_t Checkpoint::num_params() const {
  int64_t n = 0;
  for (const auto& [name, e] : entries_) n += e.info->numel();
  return n;
}

std::map<DType, int64_t> Checkpoint::dtype_counts() const {
  std::map<DType, int64_t> m;
  for (const auto& [name, e] : entries_) ++m[e.info->dtype];
  return m;
}

}  // namespace mmattn
