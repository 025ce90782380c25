#include "core/tensor.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <numeric>

#include "core/ops/copy.h"

namespace mmattn {

std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

Shape contiguous_strides(const Shape& shape) {
  Shape st(shape.size());
  int64_t acc = 1;
  for (int i = int(shape.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= std::max<int64_t>(shape[i], 1);
  }
  return st;
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::shared_ptr<Storage> Storage::allocate(size_t bytes, Device dev) {
  if (dev.is_cuda()) {
    void* p = cuda_alloc(bytes, current_stream());
    return std::make_shared<Storage>(p, bytes, dev, [](void* q) { cuda_free(q); });
  }
  // 64-byte aligned so that vectorised CPU loops and BLAS see aligned rows.
  void* p = std::aligned_alloc(64, (std::max<size_t>(bytes, 1) + 63) & ~size_t(63));
  MMATTN_CHECK(p, IoError, "out of host memory allocating ", bytes, " bytes");
  return std::make_shared<Storage>(p, bytes, dev, [](void* q) { std::free(q); });
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device dev) {
  for (int64_t d : shape) MMATTN_CHECK(d >= 0, ShapeError, "Tensor::empty: negative size in ", mmattn::shape_str(shape));
  Tensor t;
  t.storage_ = Storage::allocate(size_t(shape_numel(shape)) * dtype_size(dtype), dev);
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device dev) { return full(shape, 0.f, dtype, dev); }

Tensor Tensor::full(const Shape& shape, float value, DType dtype, Device dev) {
  Tensor t = empty(shape, dtype, dev);
  t.fill_(value);
  return t;
}

Tensor Tensor::from_blob(void* data, const Shape& shape, DType dtype, Device dev, std::shared_ptr<void> keep_alive) {
  Tensor t;
  const size_t bytes = size_t(shape_numel(shape)) * dtype_size(dtype);
  t.storage_ = std::make_shared<Storage>(data, bytes, dev, [k = std::move(keep_alive)](void*) mutable { k.reset(); });
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::from_storage(std::shared_ptr<Storage> storage, size_t byte_offset, const Shape& shape, DType dtype) {
  const size_t es = dtype_size(dtype);
  MMATTN_CHECK(byte_offset % es == 0, ShapeError, "from_storage: byte offset ", byte_offset, " not a multiple of ", es);
  MMATTN_CHECK(byte_offset + size_t(shape_numel(shape)) * es <= storage->bytes(), ShapeError, "from_storage: ",
               mmattn::shape_str(shape), " at byte ", byte_offset, " exceeds storage of ", storage->bytes(), " bytes");
  Tensor t;
  t.storage_ = std::move(storage);
  t.offset_ = int64_t(byte_offset / es);
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::from_floats(const std::vector<float>& v, const Shape& shape, DType dtype) {
  MMATTN_CHECK(int64_t(v.size()) == shape_numel(shape), ShapeError, "from_floats: ", v.size(),
               " values for shape ", mmattn::shape_str(shape));
  Tensor f = from_blob(const_cast<float*>(v.data()), shape, DType::F32, Device::cpu(), nullptr);
  Tensor t = empty(shape, dtype);
  t.copy_from(f);
  return t;
}

int64_t Tensor::numel() const { return shape_numel(shape_); }

bool Tensor::is_contiguous() const {
  if (numel() == 0) return true;  // nothing to lay out (and fill_/copy must not recurse on it)
  int64_t expect = 1;
  for (int i = dim() - 1; i >= 0; --i) {
    if (shape_[i] == 1) continue;
    if (strides_[i] != expect) return false;
    expect *= shape_[i];
  }
  return true;
}

std::string Tensor::desc() const {
  if (!defined()) return "undefined";
  return str_cat(dtype_name(dtype_), shape_str(), " ", device().str());
}

int Tensor::wrap_dim(int d) const {
  const int n = dim();
  MMATTN_CHECK(d >= -n && d < n, ShapeError, "dimension ", d, " out of range for tensor ", shape_str());
  return d < 0 ? d + n : d;
}

void* Tensor::data_ptr() const {
  MMATTN_CHECK(defined(), ShapeError, "data_ptr() of an undefined tensor");
  return static_cast<char*>(storage_->data()) + offset_ * int64_t(itemsize());
}

uint16_t* Tensor::data_u16() const {
  MMATTN_CHECK(dtype_ == DType::F16 || dtype_ == DType::BF16, ShapeError, "data_u16(): tensor is ",
               dtype_name(dtype_));
  return static_cast<uint16_t*>(data_ptr());
}

Tensor Tensor::view(const Shape& shape) const {
  MMATTN_CHECK(is_contiguous(), ShapeError, "view ", mmattn::shape_str(shape), " of non-contiguous tensor ",
               shape_str(), " (use reshape)");
  Shape s = shape;
  int infer = -1;
  int64_t known = 1;
  for (int i = 0; i < int(s.size()); ++i) {
    if (s[i] == -1) {
      MMATTN_CHECK(infer < 0, ShapeError, "view: more than one -1 in ", mmattn::shape_str(shape));
      infer = i;
    } else {
      MMATTN_CHECK(s[i] >= 0, ShapeError, "view: bad size in ", mmattn::shape_str(shape));
      known *= s[i];
    }
  }
  if (infer >= 0) {
    MMATTN_CHECK(known > 0 && numel() % known == 0, ShapeError, "view: cannot infer -1 in ",
                 mmattn::shape_str(shape), " for ", numel(), " elements");
    s[infer] = numel() / known;
  }
  MMATTN_CHECK(shape_numel(s) == numel(), ShapeError, "view: shape ", mmattn::shape_str(shape), " has ",
               shape_numel(s), " elements, tensor ", shape_str(), " has ", numel());
  Tensor t = *this;
  t.shape_ = s;
  t.strides_ = contiguous_strides(s);
  return t;
}

Tensor Tensor::permute(const std::vector<int>& dims) const {
  MMATTN_CHECK(int(dims.size()) == dim(), ShapeError, "permute: ", dims.size(), " dims for tensor ", shape_str());
  std::vector<bool> seen(dim(), false);
  Tensor t = *this;
  for (int i = 0; i < dim(); ++i) {
    const int d = wrap_dim(dims[i]);
    MMATTN_CHECK(!seen[d], ShapeError, "permute: repeated dim ", d);
    seen[d] = true;
    t.shape_[i] = shape_[d];
    t.strides_[i] = strides_[d];
  }
  return t;
}

Tensor Tensor::transpose(int a, int b) const {
  std::vector<int> p(dim());
  std::iota(p.begin(), p.end(), 0);
  std::swap(p[wrap_dim(a)], p[wrap_dim(b)]);
  return permute(p);
}

Tensor Tensor::slice(int d, int64_t start, int64_t end, int64_t step) const {
  d = wrap_dim(d);
  const int64_t n = shape_[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  end = std::min(end, n);
  MMATTN_CHECK(step >= 1 && start >= 0 && start <= end, ShapeError, "slice: bad range [", start, ", ", end,
               ") step ", step, " of dim ", d, " (size ", n, ")");
  Tensor t = *this;
  t.offset_ += start * strides_[d];
  t.shape_[d] = (end - start + step - 1) / step;
  t.strides_[d] *= step;
  return t;
}

Tensor Tensor::select(int d, int64_t index) const {
  d = wrap_dim(d);
  if (index < 0) index += shape_[d];
  MMATTN_CHECK(index >= 0 && index < shape_[d], ShapeError, "select: index ", index, " out of range for dim ", d,
               " of ", shape_str());
  Tensor t = *this;
  t.offset_ += index * strides_[d];
  t.shape_.erase(t.shape_.begin() + d);
  t.strides_.erase(t.strides_.begin() + d);
  return t;
}

Tensor Tensor::unsqueeze(int d) const {
  const int n = dim() + 1;
  MMATTN_CHECK(d >= -n && d < n, ShapeError, "unsqueeze: dim ", d, " out of range for ", shape_str());
  if (d < 0) d += n;
  Tensor t = *this;
  const int64_t st = d < dim() ? strides_[d] * shape_[d] : 1;
  t.shape_.insert(t.shape_.begin() + d, 1);
  t.strides_.insert(t.strides_.begin() + d, st);
  return t;
}

Tensor Tensor::squeeze(int d) const {
  d = wrap_dim(d);
  MMATTN_CHECK(shape_[d] == 1, ShapeError, "squeeze: dim ", d, " of ", shape_str(), " is not 1");
  Tensor t = *this;
  t.shape_.erase(t.shape_.begin() + d);
  t.strides_.erase(t.strides_.begin() + d);
  return t;
}

Tensor Tensor::as_strided(const Shape& shape, const Shape& strides, int64_t offset) const {
  MMATTN_CHECK(shape.size() == strides.size(), ShapeError, "as_strided: shape/strides rank mismatch");
  int64_t last = offset;
  for (size_t i = 0; i < shape.size(); ++i)
    if (shape[i] > 0) last += (shape[i] - 1) * strides[i];
  MMATTN_CHECK(offset >= 0 && size_t(last + 1) * itemsize() <= storage_->bytes(), ShapeError,
               "as_strided: view exceeds storage of ", storage_->bytes(), " bytes");
  Tensor t = *this;
  t.shape_ = shape;
  t.strides_ = strides;
  t.offset_ = offset;
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const { return is_contiguous() ? view(shape) : contiguous().view(shape); }

Tensor Tensor::contiguous() const { return is_contiguous() ? *this : clone(); }

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_, device());
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(Device dev) const { return to(dev, dtype_); }
Tensor Tensor::to(DType dt) const { return to(device(), dt); }
Tensor Tensor::to(Device dev, DType dt) const {
  if (dev == device() && dt == dtype_) return *this;
  Tensor t = empty(shape_, dt, dev);
  t.copy_from(*this);
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  check_defined(*this, "copy_from", "dst");
  check_defined(src, "copy_from", "src");
  MMATTN_CHECK(src.shape_ == shape_, ShapeError, "copy_from: src ", src.desc(), " vs dst ", desc());
  MMATTN_CHECK(dim() <= kMaxDims, ShapeError, "copy_from: more than ", kMaxDims, " dims");
  if (numel() == 0) return;
  if (src.device() != device()) {
    // Move the bytes across as a contiguous block in the source dtype, then convert here.
    Tensor s = src.contiguous();
    Tensor staged = (is_contiguous() && dtype_ == s.dtype_) ? *this : empty(shape_, s.dtype_, device());
    copy_bytes(staged.data_ptr(), device(), s.data_ptr(), s.device(), s.nbytes());
    if (staged.data_ptr() != data_ptr()) copy_from(staged);
    return;
  }
  if (src.is_contiguous() && is_contiguous() && src.dtype_ == dtype_) {
    copy_bytes(data_ptr(), device(), src.data_ptr(), device(), nbytes());
    return;
  }
  CopyParams p;
  p.ndim = dim();
  p.numel = numel();
  for (int i = 0; i < dim(); ++i) {
    p.shape[i] = shape_[i];
    p.src_strides[i] = src.strides_[i];
    p.dst_strides[i] = strides_[i];
  }
  p.src = src.data_ptr();
  p.dst = data_ptr();
  p.src_dtype = src.dtype_;
  p.dst_dtype = dtype_;
  if (is_cuda()) {
#if MMATTN_HAS_CUDA
    copy_cuda(p, current_stream());
#endif
  } else {
    copy_cpu(p);
  }
}

void Tensor::fill_(float value) {
  check_defined(*this, "fill_", "self");
  if (numel() == 0) return;
  if (!is_contiguous()) {
    Tensor t = full(shape_, value, dtype_, device());
    copy_from(t);
    return;
  }
  FillParams p{data_ptr(), numel(), dtype_, value};
  if (is_cuda()) {
#if MMATTN_HAS_CUDA
    fill_cuda(p, current_stream());
#endif
  } else {
    fill_cpu(p);
  }
}

std::vector<float> Tensor::to_floats() const {
  Tensor t = to(Device::cpu(), DType::F32).contiguous();
  const float* p = t.data<float>();
  return std::vector<float>(p, p + t.numel());
}

float Tensor::item() const {
  MMATTN_CHECK(numel() == 1, ShapeError, "item(): tensor ", shape_str(), " has ", numel(), " elements");
  return to_floats()[0];
}

void check_defined(const Tensor& t, const char* op, const char* arg) {
  MMATTN_CHECK(t.defined(), ShapeError, op, ": argument '", arg, "' is undefined");
}
void check_dtype(const Tensor& t, DType dt, const char* op, const char* arg) {
  check_defined(t, op, arg);
  MMATTN_CHECK(t.dtype() == dt, ShapeError, op, ": argument '", arg, "' must be ", dtype_name(dt), ", got ", t.desc());
}
void check_float(const Tensor& t, const char* op, const char* arg) {
  check_defined(t, op, arg);
  MMATTN_CHECK(is_float(t.dtype()), ShapeError, op, ": argument '", arg, "' must be F32/F16/BF16, got ", t.desc());
}
void check_same_device(const Tensor& a, const Tensor& b, const char* op, const char* arg_a, const char* arg_b) {
  MMATTN_CHECK(a.device() == b.device(), ShapeError, op, ": '", arg_a, "' is on ", a.device().str(), " but '", arg_b,
               "' is on ", b.device().str());
}
void check_dim(const Tensor& t, int d, const char* op, const char* arg) {
  check_defined(t, op, arg);
  MMATTN_CHECK(t.dim() == d, ShapeError, op, ": argument '", arg, "' must have ", d, " dims, got ", t.desc());
}
void check_contiguous(const Tensor& t, const char* op, const char* arg) {
  MMATTN_CHECK(t.is_contiguous(), ShapeError, op, ": argument '", arg, "' must be contiguous, got strides ",
               shape_str(t.strides()));
}

}  // namespace mmattn
