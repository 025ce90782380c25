#pragma once
// Tensor: a typed, strided view of a reference-counted storage on the CPU or a CUDA device.
// PyTorch conventions: row-major shapes, strides in elements, views share storage.
// Copies between devices or dtypes are explicit (.to(), .contiguous(), copy_from()).
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"

namespace mmattn {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2, 3, 4]"

// Raw memory block. The deleter releases it (free, cuda_free, munmap via a keep-alive...).
class Storage {
 public:
  Storage(void* data, size_t bytes, Device dev, std::function<void(void*)> deleter)
      : data_(data), bytes_(bytes), device_(dev), deleter_(std::move(deleter)) {}
  ~Storage() {
    if (deleter_) deleter_(data_);
  }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }
  static std::shared_ptr<Storage> allocate(size_t bytes, Device dev);

 private:
  void* data_;
  size_t bytes_;
  Device device_;
  std::function<void(void*)> deleter_;
};

template <class T> struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DType value = DType::F32; };
template <> struct DTypeOf<int32_t> { static constexpr DType value = DType::I32; };
template <> struct DTypeOf<int64_t> { static constexpr DType value = DType::I64; };
template <> struct DTypeOf<uint8_t> { static constexpr DType value = DType::U8; };

class Tensor {
 public:
  Tensor() = default;  // undefined tensor (defined() == false)

  static Tensor empty(const Shape& shape, DType dtype, Device dev = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype, Device dev = Device::cpu());
  static Tensor full(const Shape& shape, float value, DType dtype, Device dev = Device::cpu());
  // Wraps memory owned elsewhere; `keep_alive` is held as long as any view exists (zero-copy).
  static Tensor from_blob(void* data, const Shape& shape, DType dtype, Device dev,
                          std::shared_ptr<void> keep_alive);
  // A contiguous view into existing storage at a byte offset (must be a multiple of the itemsize).
  static Tensor from_storage(std::shared_ptr<Storage> storage, size_t byte_offset, const Shape& shape, DType dtype);
  // Copies host values into a new CPU tensor of the given dtype (f32 values are converted).
  static Tensor from_floats(const std::vector<float>& v, const Shape& shape, DType dtype = DType::F32);
  template <class T>
  static Tensor from_vector(const std::vector<T>& v, const Shape& shape) {
    Tensor t = empty(shape, DTypeOf<T>::value);
    MMATTN_CHECK(int64_t(v.size()) == t.numel(), ShapeError, "from_vector: ", v.size(), " values for shape ",
                 mmattn::shape_str(shape));
    std::copy(v.begin(), v.end(), t.data<T>());
    return t;
  }

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::cpu(); }
  bool is_cuda() const { return device().is_cuda(); }
  int dim() const { return int(shape_.size()); }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t size(int d) const { return shape_[wrap_dim(d)]; }
  int64_t stride(int d) const { return strides_[wrap_dim(d)]; }
  int64_t numel() const;
  size_t itemsize() const { return dtype_size(dtype_); }
  size_t nbytes() const { return size_t(numel()) * itemsize(); }
  bool is_contiguous() const;
  int64_t offset() const { return offset_; }
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  std::string shape_str() const { return mmattn::shape_str(shape_); }
  // "bf16[2, 3] cuda:0" for error messages.
  std::string desc() const;

  void* data_ptr() const;
  template <class T>
  T* data() const {
    MMATTN_CHECK(DTypeOf<T>::value == dtype_, ShapeError, "data<T>(): tensor is ", dtype_name(dtype_));
    return static_cast<T*>(data_ptr());
  }
  // Raw 16-bit payload of f16/bf16 tensors.
  uint16_t* data_u16() const;

  // --- views (share storage) ---
  Tensor view(const Shape& shape) const;  // requires contiguity; one -1 is inferred
  Tensor permute(const std::vector<int>& dims) const;
  Tensor transpose(int a, int b) const;
  Tensor slice(int dim, int64_t start, int64_t end, int64_t step = 1) const;  // [start, end)
  Tensor select(int dim, int64_t index) const;                                 // drops dim
  Tensor unsqueeze(int dim) const;
  Tensor squeeze(int dim) const;
  Tensor as_strided(const Shape& shape, const Shape& strides, int64_t offset) const;

  // --- copies ---
  Tensor reshape(const Shape& shape) const;  // view when possible, else contiguous copy
  Tensor contiguous() const;                 // self when already contiguous
  Tensor clone() const;
  Tensor to(Device dev) const;   // self when already there
  Tensor to(DType dt) const;     // self when already that dtype
  Tensor to(Device dev, DType dt) const;
  // Copies src (same shape; any device/dtype/strides) into this tensor's elements.
  void copy_from(const Tensor& src);
  void fill_(float value);

  // Host-side conveniences (copy through the CPU; for tests and small tensors).
  std::vector<float> to_floats() const;
  float item() const;

 private:
  int wrap_dim(int d) const;
  std::shared_ptr<Storage> storage_;
  int64_t offset_ = 0;  // in elements
  Shape shape_;
  Shape strides_;
  DType dtype_ = DType::F32;
};

Shape contiguous_strides(const Shape& shape);
int64_t shape_numel(const Shape& shape);

// Argument checks shared by the op launchers; messages name the op and the argument.
void check_defined(const Tensor& t, const char* op, const char* arg);
void check_dtype(const Tensor& t, DType dt, const char* op, const char* arg);
void check_float(const Tensor& t, const char* op, const char* arg);
void check_same_device(const Tensor& a, const Tensor& b, const char* op, const char* arg_a, const char* arg_b);
void check_dim(const Tensor& t, int dim, const char* op, const char* arg);
void check_contiguous(const Tensor& t, const char* op, const char* arg);

}  // namespace mmattn
