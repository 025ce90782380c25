#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>

#include "core/json_reader.h"

namespace mmattn {

namespace {

std::string errno_str() { return std::strerror(errno); }

// dtype names the safetensors format defines but mmattn does not load.
bool is_known_unsupported_dtype(const std::string& s) {
  static const char* kNames[] = {"F64", "BOOL", "I8", "I16", "U16", "U32", "U64", "F8_E4M3", "F8_E5M2",
                                 "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64"};
  for (const char* n : kNames)
    if (s == n) return true;
  return false;
}

std::string quote_name(const std::string& s) {
  std::string q = "'";
  for (char c : s) {  // keep garbage names printable in messages
    const unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      q += buf;
    } else {
      q += c;
    }
  }
  return q + "'";
}

// Parses the header, flagging the first duplicate key in any object (nlohmann keeps the last one
// silently; a duplicated tensor name would hide a tensor).
Json parse_header(const char* begin, const char* end, std::string* duplicate) {
  std::vector<std::set<std::string>> keys;
  auto cb = [&](int, Json::parse_event_t ev, Json& parsed) {
    switch (ev) {
      case Json::parse_event_t::object_start: keys.emplace_back(); break;
      case Json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case Json::parse_event_t::key:
        if (!keys.empty() && parsed.is_string() && !keys.back().insert(parsed.get<std::string>()).second &&
            duplicate->empty())
          *duplicate = parsed.get<std::string>();
        break;
      default: break;
    }
    return true;
  };
  return Json::parse(begin, end, cb);
}

bool get_u64(const Json& v, uint64_t* out) {
  if (!v.is_number_integer()) return false;  // floats (even 2.0) are rejected
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  const int64_t x = v.get<int64_t>();
  if (x < 0) return false;
  *out = uint64_t(x);
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

MappedFile::MappedFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  MMATTN_CHECK(fd >= 0, IoError, "cannot open '", path, "': ", errno_str());
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const std::string e = errno_str();
    ::close(fd);
    MMATTN_THROW(IoError, "cannot stat '", path, "': ", e);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    MMATTN_THROW(IoError, "'", path, "' is not a regular file");
  }
  size_ = size_t(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const std::string e = errno_str();
      ::close(fd);
      MMATTN_THROW(IoError, "cannot mmap '", path, "' (", size_, " bytes): ", e);
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);  // the mapping stays valid without the descriptor
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

// ---------------------------------------------------------------------------------------------

#define ST_FAIL(...) MMATTN_THROW(FormatError, path_, ": ", __VA_ARGS__)

SafeTensorsFile::SafeTensorsFile(const std::string& path) : path_(path) {
  auto map = std::make_shared<MappedFile>(path);
  base_ = map->data();
  size_ = map->size();
  keep_alive_ = std::move(map);
  parse();
}

SafeTensorsFile::SafeTensorsFile(std::shared_ptr<const std::string> bytes, const std::string& label) : path_(label) {
  MMATTN_CHECK(bytes != nullptr, IoError, "'", label, "': no bytes given");
  base_ = reinterpret_cast<const uint8_t*>(bytes->data());
  size_ = bytes->size();
  keep_alive_ = std::const_pointer_cast<std::string>(bytes);
  parse();
}

void SafeTensorsFile::parse() {
  const uint8_t* base = base_;
  const uint64_t fsize = size_;
  if (fsize < 8) ST_FAIL("file is ", fsize, " bytes, too small for a safetensors header (8-byte length + JSON)");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | base[i];
  if (n > kSafeTensorsMaxHeader)
    ST_FAIL("header length ", n, " exceeds the ", kSafeTensorsMaxHeader, "-byte limit (not a safetensors file?)");
  if (n > fsize - 8) ST_FAIL("header length ", n, " runs past the end of the file (", fsize, " bytes)");
  if (n < 2) ST_FAIL("header length ", n, " is too small for a JSON object");
  data_start_ = 8 + n;
  const uint64_t data_size = fsize - data_start_;

  Json h;
  std::string dup;
  try {
    const char* hb = reinterpret_cast<const char*>(base + 8);
    h = parse_header(hb, hb + n, &dup);
  } catch (const Json::exception& e) {
    ST_FAIL("malformed JSON header: ", e.what());
  }
  if (!h.is_object()) ST_FAIL("header must be a JSON object, got ", json_type_desc(h));
  if (!dup.empty()) ST_FAIL("duplicate key ", quote_name(dup), " in the header");

  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const Json& e = it.value();
    if (name == "__metadata__") {
      if (!e.is_object()) ST_FAIL("__metadata__ must be an object of strings, got ", json_type_desc(e));
      for (auto m = e.begin(); m != e.end(); ++m) {
        if (!m.value().is_string())
          ST_FAIL("__metadata__.", m.key(), " must be a string, got ", json_type_desc(m.value()));
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string tn = "tensor " + quote_name(name);
    if (name.empty()) ST_FAIL("empty tensor name in the header");
    if (!e.is_object()) ST_FAIL(tn, ": entry must be an object, got ", json_type_desc(e));
    for (auto k = e.begin(); k != e.end(); ++k)
      if (k.key() != "dtype" && k.key() != "shape" && k.key() != "data_offsets")
        ST_FAIL(tn, ": unknown key ", quote_name(k.key()));
    if (!e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets"))
      ST_FAIL(tn, ": entry needs \"dtype\", \"shape\" and \"data_offsets\"");

    TensorInfo info;
    info.name = name;
    info.file = path_;
    const Json& jd = e["dtype"];
    if (!jd.is_string()) ST_FAIL(tn, ": dtype must be a string, got ", json_type_desc(jd));
    const std::string ds = jd.get<std::string>();
    if (!parse_dtype(ds, &info.dtype)) {
      if (is_known_unsupported_dtype(ds))
        ST_FAIL(tn, ": dtype ", ds, " is not supported (supported: F32 F16 BF16 I32 I64 U8)");
      ST_FAIL(tn, ": unknown dtype ", json_type_desc(jd));
    }

    const Json& js = e["shape"];
    if (!js.is_array()) ST_FAIL(tn, ": shape must be an array of integers, got ", json_type_desc(js));
    bool has_zero = false;
    for (const Json& d : js) {
      uint64_t v = 0;
      if (!get_u64(d, &v)) ST_FAIL(tn, ": shape must hold non-negative integers, got ", json_type_desc(js));
      if (v > uint64_t(INT64_MAX)) ST_FAIL(tn, ": shape dimension ", v, " is too large");
      info.shape.push_back(int64_t(v));
      has_zero |= v == 0;
    }
    // numel and byte size without overflow (a zero dim makes any other dim harmless)
    uint64_t bytes = 0;
    if (!has_zero) {
      uint64_t numel = 1;
      for (int64_t d : info.shape)
        if (__builtin_mul_overflow(numel, uint64_t(d), &numel) || numel > uint64_t(INT64_MAX))
          ST_FAIL(tn, ": shape ", shape_str(info.shape), " is too large");
      if (__builtin_mul_overflow(numel, uint64_t(dtype_size(info.dtype)), &bytes))
        ST_FAIL(tn, ": shape ", shape_str(info.shape), " is too large");
    }

    const Json& jo = e["data_offsets"];
    if (!jo.is_array() || jo.size() != 2 || !get_u64(jo[0], &info.begin) || !get_u64(jo[1], &info.end))
      ST_FAIL(tn, ": data_offsets must be [begin, end] with non-negative integers, got ", json_type_desc(jo));
    if (info.begin > info.end) ST_FAIL(tn, ": data_offsets [", info.begin, ", ", info.end, "] end before they begin");
    if (info.end > data_size)
      ST_FAIL(tn, ": data_offsets [", info.begin, ", ", info.end, "] run past the data section (", data_size,
              " bytes; file truncated?)");
    if (info.end - info.begin != bytes)
      ST_FAIL(tn, ": data_offsets [", info.begin, ", ", info.end, "] span ", info.end - info.begin, " bytes but ",
              ds, shape_str(info.shape), " needs ", bytes);
    info.aligned = reinterpret_cast<uintptr_t>(base + data_start_ + info.begin) % dtype_size(info.dtype) == 0;
    infos_.push_back(std::move(info));
  }

  // Data order; then no two non-empty ranges may overlap.
  std::sort(infos_.begin(), infos_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end != b.end ? a.end < b.end : a.name < b.name;
  });
  const TensorInfo* prev = nullptr;
  for (const TensorInfo& t : infos_) {
    if (t.begin == t.end) continue;
    if (prev && t.begin < prev->end)
      ST_FAIL("tensor ", quote_name(t.name), " (bytes [", t.begin, ", ", t.end, ")) overlaps tensor ", quote_name(prev->name),
              " (bytes [", prev->begin, ", ", prev->end, "))");
    if (!prev || t.end > prev->end) prev = &t;
  }
  names_.reserve(infos_.size());
  for (size_t i = 0; i < infos_.size(); ++i) {
    names_.push_back(infos_[i].name);
    index_[infos_[i].name] = i;
  }
}

#undef ST_FAIL

const TensorInfo& SafeTensorsFile::info(const std::string& name) const {
  auto it = index_.find(name);
  MMATTN_CHECK(it != index_.end(), WeightError, "no tensor ", quote_name(name), " in '", path_, "'");
  return infos_[it->second];
}

Tensor SafeTensorsFile::get(const std::string& name) const {
  const TensorInfo& i = info(name);
  // Validation guarantees [begin, end) lies inside the data section, hence inside the mapping.
  uint8_t* p = const_cast<uint8_t*>(base_) + data_start_ + i.begin;
  return Tensor::from_blob(p, i.shape, i.dtype, Device::cpu(), keep_alive_);
}

// ---------------------------------------------------------------------------------------------

namespace {

void write_all(int fd, const void* data, size_t n, const std::string& tmp) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, std::min<size_t>(n, size_t(1) << 30));
    if (w < 0 && errno == EINTR) continue;
    MMATTN_CHECK(w > 0, IoError, "cannot write '", tmp, "': ", w < 0 ? errno_str() : "short write");
    p += w;
    n -= size_t(w);
  }
}

}  // namespace

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const char* op = "save_safetensors";
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    h["__metadata__"] = std::move(m);
  }
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    MMATTN_CHECK(!name.empty() && name != "__metadata__", ShapeError, op, ": '", path, "': bad tensor name '", name,
                 "'");
    MMATTN_CHECK(seen.insert(name).second, ShapeError, op, ": '", path, "': tensor '", name, "' given twice");
    MMATTN_CHECK(t.defined(), ShapeError, op, ": '", path, "': tensor '", name, "' is undefined");
    const uint64_t nb = t.nbytes();
    h[name] = {{"dtype", std::string(dtype_name(t.dtype()))},
               {"shape", t.shape()},
               {"data_offsets", {offset, offset + nb}}};
    offset += nb;
  }
  std::string header;
  try {
    header = h.dump();
  } catch (const nlohmann::ordered_json::exception& e) {
    MMATTN_THROW(ShapeError, op, ": '", path, "': cannot encode the header (tensor or metadata names must be UTF-8): ",
                 e.what());
  }
  header.append((8 - header.size() % 8) % 8, ' ');
  MMATTN_CHECK(header.size() <= kSafeTensorsMaxHeader, ShapeError, op, ": '", path, "': header of ", header.size(),
               " bytes exceeds the safetensors limit");

  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  MMATTN_CHECK(fd >= 0, IoError, "cannot create '", tmp, "': ", errno_str());
  bool open_fd = true;
  try {
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(header.size()) >> (8 * i));
    write_all(fd, len, 8, tmp);
    write_all(fd, header.data(), header.size(), tmp);
    for (const auto& [name, t] : tensors) {
      if (t.numel() == 0) continue;
      const Tensor c = t.to(Device::cpu()).contiguous();  // one tensor at a time
      write_all(fd, c.data_ptr(), c.nbytes(), tmp);
    }
    MMATTN_CHECK(::fsync(fd) == 0, IoError, "cannot fsync '", tmp, "': ", errno_str());
    const int rc = ::close(fd);
    open_fd = false;
    MMATTN_CHECK(rc == 0, IoError, "cannot close '", tmp, "': ", errno_str());
  } catch (...) {
    if (open_fd) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string e = errno_str();
    ::unlink(tmp.c_str());
    MMATTN_THROW(IoError, "cannot rename '", tmp, "' to '", path, "': ", e);
  }
}

}  // namespace mmattn
