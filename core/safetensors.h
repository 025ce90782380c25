#pragma once
// safetensors files: strict reading through a read-only mmap, and atomic writing.
//
// Format: [u64 little-endian N][N bytes of JSON header][data section]. The header maps each
// tensor name to {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]} with byte offsets
// relative to the data section; an optional "__metadata__" entry is a string->string map.
//
// Reading validates everything before any tensor is handed out (a FormatError naming the file and,
// for tensor-level problems, the tensor): header length (<= 100 MB, inside the file), JSON syntax,
// duplicate keys, entry types, dtype (F32 F16 BF16 I32 I64 U8; others are reported as
// unsupported), shape (non-negative ints), data_offsets (two non-negative ints, begin <= end,
// end inside the data section), byte size == numel * itemsize, and no two tensors overlapping.
// Gaps between tensors and trailing bytes are tolerated (the reference writer produces neither).
// So a tensor that passed validation never reads outside the file.
//
// Pitfalls:
//  - Views are zero-copy into a PROT_READ mapping: writing through them crashes. clone() first.
//  - Data may be unaligned for its dtype (offsets need not be multiples of the item size; the
//    reference writer keeps them aligned by ordering tensors by itemsize). Byte access (memcpy,
//    copy_from, host-to-device copies) is fine; TensorInfo::aligned tells whether typed pointer
//    access is too. Checkpoint::load() returns an aligned tensor.
//  - Truncating or rewriting a file while it is mapped raises SIGBUS in the reader; nothing can
//    guard against that short of copying.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace mmattn {

// Largest header accepted (and written), as in the reference implementation.
constexpr uint64_t kSafeTensorsMaxHeader = 100'000'000;

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte range in the data section
  std::string file;             // path of the .safetensors file holding it
  bool aligned = true;          // its address is a multiple of the item size
  int64_t numel() const { return shape_numel(shape); }
  uint64_t nbytes() const { return end - begin; }
};

// A read-only mmap of a whole file; unmapped when the last holder (file or tensor view) goes.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);  // IoError if it cannot be opened / mapped
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

class SafeTensorsFile {
 public:
  // IoError when missing/unreadable; FormatError when malformed.
  explicit SafeTensorsFile(const std::string& path);
  // The same validation over an in-memory image of a file (fuzz tests, embedded assets); `label`
  // stands for the path in messages and TensorInfo::file. Views keep `bytes` alive.
  SafeTensorsFile(std::shared_ptr<const std::string> bytes, const std::string& label);

  const std::string& path() const { return path_; }
  // Tensor names in data order (ascending data_offsets).
  const std::vector<std::string>& names() const { return names_; }
  size_t size() const { return names_.size(); }
  bool has(const std::string& name) const { return index_.count(name) != 0; }
  // WeightError naming the file when absent.
  const TensorInfo& info(const std::string& name) const;
  // Zero-copy CPU view; keeps the mapping alive. See the pitfalls above.
  Tensor get(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // The whole mapped file (for checks that views lie inside it).
  const uint8_t* map_data() const { return base_; }
  size_t map_size() const { return size_; }
  uint64_t data_section_offset() const { return data_start_; }

 private:
  void parse();
  std::string path_;
  std::shared_ptr<void> keep_alive_;  // the MappedFile or the in-memory bytes
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  uint64_t data_start_ = 0;  // 8 + header length
  std::vector<std::string> names_;
  std::vector<TensorInfo> infos_;  // same order as names_
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` (offsets in the given order; names unique, not "__metadata__") and `metadata`
// to `path`. Tensors may live on any device and have any strides (copied to a contiguous CPU
// buffer one at a time). The header is padded with spaces to a multiple of 8 bytes, as the
// reference writer does; for aligned data pass tensors in descending itemsize order.
// Atomic: the bytes go to `path + ".tmp"`, which is fsync'ed and renamed over `path`; on any
// failure the temporary is removed and `path` is left untouched (IoError / ShapeError).
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace mmattn
