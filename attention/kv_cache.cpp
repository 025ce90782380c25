#include "attention/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "attention/kv_cache_kernels.h"
#include "core/ops/dispatch.h"

namespace mmattn {

namespace {
constexpr const char* kCls = "KVCache";
}

KVCache::KVCache(int layers, int64_t batch, int64_t max_len, int64_t kv_heads, int64_t head_dim, DType dtype,
                 Device device)
    : layers_(layers), batch_(batch), max_len_(max_len), hkv_(kv_heads), d_(head_dim) {
  MMATTN_CHECK(layers >= 1 && batch >= 1 && max_len >= 1 && kv_heads >= 1 && head_dim >= 1, ShapeError, kCls,
               ": layers ", layers, ", batch ", batch, ", max_len ", max_len, ", kv_heads ", kv_heads, ", head_dim ",
               head_dim, " must all be >= 1");
  MMATTN_CHECK(max_len <= INT32_MAX, ShapeError, kCls, ": max_len ", max_len, " exceeds the I32 lengths");
  MMATTN_CHECK(dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16, ShapeError, kCls,
               ": dtype must be F32, F16 or BF16, got ", dtype_name(dtype));
  storage_ = Tensor::zeros({layers, 2, batch, max_len, kv_heads, head_dim}, dtype, device);
  pos_ = Tensor::full({batch, max_len}, -1.f, DType::I32);
  lens_dev_ = Tensor::zeros({2, batch}, DType::I32, device);
  len_.assign(size_t(batch), 0);
  step_appended_.assign(size_t(layers), false);
}

void KVCache::check_b(int64_t b, const char* fn) const {
  MMATTN_CHECK(b >= 0 && b < batch_, ShapeError, kCls, "::", fn, ": sequence index ", b, " is outside [0, ", batch_,
               ")");
}

void KVCache::check_no_step(const char* fn) const {
  MMATTN_CHECK(!step_open(), Error, kCls, "::", fn, ": a step is open (append() without advance())");
}

int64_t KVCache::length(int64_t b) const {
  check_b(b, "length");
  return len_[size_t(b)];
}

Tensor KVCache::k(int layer) const {
  MMATTN_CHECK(layer >= 0 && layer < layers_, ShapeError, kCls, "::k: layer ", layer, " is outside [0, ", layers_, ")");
  return storage_.select(0, layer).select(0, 0);
}

Tensor KVCache::v(int layer) const {
  MMATTN_CHECK(layer >= 0 && layer < layers_, ShapeError, kCls, "::v: layer ", layer, " is outside [0, ", layers_, ")");
  return storage_.select(0, layer).select(0, 1);
}

void KVCache::upload_lens() {
  std::vector<int32_t> v(size_t(2 * batch_));
  for (int64_t b = 0; b < batch_; ++b) {
    v[size_t(b)] = int32_t(len_[size_t(b)]);
    v[size_t(batch_ + b)] = int32_t(len_[size_t(b)] + (step_open() ? step_valid_[size_t(b)] : 0));
  }
  if (lens_dev_.is_cuda()) {
    MMATTN_IF_CUDA(kv_set_i32_cuda(lens_dev_.data<int32_t>(), v.data(), int64_t(v.size()), current_stream()));
  } else {
    std::copy(v.begin(), v.end(), lens_dev_.data<int32_t>());
  }
}

void KVCache::append(int layer, const Tensor& k_new, const Tensor& v_new, const std::vector<int>& n_valid) {
  MMATTN_CHECK(layer >= 0 && layer < layers_, ShapeError, kCls, "::append: layer ", layer, " is outside [0, ", layers_,
               ")");
  check_defined(k_new, "KVCache::append", "k_new");
  check_defined(v_new, "KVCache::append", "v_new");
  for (const Tensor* t : {&k_new, &v_new}) {
    const char* name = t == &k_new ? "k_new" : "v_new";
    MMATTN_CHECK(t->dim() == 4 && t->size(0) == batch_ && t->size(2) == hkv_ && t->size(3) == d_, ShapeError, kCls,
                 "::append: '", name, "' must be [", batch_, ", n, ", hkv_, ", ", d_, "], got ", t->desc());
    MMATTN_CHECK(t->dtype() == dtype(), ShapeError, kCls, "::append: '", name, "' is ", t->desc(), ", the cache holds ",
                 dtype_name(dtype()));
    MMATTN_CHECK(t->device() == device(), ShapeError, kCls, "::append: '", name, "' is on ", t->device().str(),
                 ", the cache on ", device().str());
  }
  MMATTN_CHECK(k_new.shape() == v_new.shape(), ShapeError, kCls, "::append: k_new ", k_new.shape_str(), " and v_new ",
               v_new.shape_str(), " differ");
  const int64_t n = k_new.size(1);
  std::vector<int> valid = n_valid;
  if (valid.empty()) valid.assign(size_t(batch_), int(n));
  MMATTN_CHECK(int64_t(valid.size()) == batch_, ShapeError, kCls, "::append: n_valid has ", valid.size(),
               " entries for batch ", batch_);
  for (int64_t b = 0; b < batch_; ++b) {
    const int nv = valid[size_t(b)];
    MMATTN_CHECK(nv >= 0 && nv <= n, ShapeError, kCls, "::append: n_valid[", b, "] = ", nv, " is outside [0, ", n, "]");
    MMATTN_CHECK(len_[size_t(b)] + nv <= max_len_, ShapeError, kCls, "::append: sequence ", b, " holds ",
                 len_[size_t(b)], " tokens; ", nv, " more exceed the capacity ", max_len_);
  }
  if (step_open()) {
    MMATTN_CHECK(valid == step_valid_ && n == step_n_, ShapeError, kCls, "::append: layer ", layer,
                 " appends a different number of rows (n ", n, ") than the open step (n ", step_n_,
                 "); every layer of a step must append the same rows");
    MMATTN_CHECK(!step_appended_[size_t(layer)], Error, kCls, "::append: layer ", layer,
                 " was already appended in this step (call advance() first)");
  } else {
    step_valid_ = valid;
    step_n_ = n;
    upload_lens();  // lens_tensor() now includes the new rows
  }
  step_appended_[size_t(layer)] = true;
  if (n == 0) return;

  const Tensor kd = k(layer), vd = v(layer);
  if (device().is_cuda()) {
    const Tensor ks = k_new.stride(3) == 1 ? k_new : k_new.contiguous();
    const Tensor vs = v_new.stride(3) == 1 ? v_new : v_new.contiguous();
    KvAppendParams p;
    const Tensor* src[2] = {&ks, &vs};
    for (int w = 0; w < 2; ++w) {
      p.src[w] = src[w]->data_ptr();
      p.src_sb[w] = src[w]->stride(0), p.src_sl[w] = src[w]->stride(1), p.src_sh[w] = src[w]->stride(2);
    }
    p.dst[0] = kd.data_ptr(), p.dst[1] = vd.data_ptr();
    p.batch = batch_, p.n = n, p.hkv = hkv_, p.d = d_, p.max_len = max_len_;
    p.itemsize = dtype_size(dtype());
    p.start = lens_dev_.data<int32_t>();
    p.end = lens_dev_.data<int32_t>() + batch_;
    MMATTN_IF_CUDA(kv_append_cuda(p, current_stream()));
  } else {
    for (int64_t b = 0; b < batch_; ++b) {
      const int nv = valid[size_t(b)];
      if (nv == 0) continue;
      const int64_t at = len_[size_t(b)];
      kd.select(0, b).slice(0, at, at + nv).copy_from(k_new.select(0, b).slice(0, 0, nv));
      vd.select(0, b).slice(0, at, at + nv).copy_from(v_new.select(0, b).slice(0, 0, nv));
    }
  }
}

void KVCache::advance(const std::vector<int>& n_valid, const std::vector<std::vector<int32_t>>& positions) {
  MMATTN_CHECK(step_open(), Error, kCls, "::advance: no layer was appended since the last advance()");
  const int64_t done = std::count(step_appended_.begin(), step_appended_.end(), true);
  if (done != layers_) {
    int64_t missing = 0;
    while (step_appended_[size_t(missing)]) ++missing;
    MMATTN_THROW(Error, kCls, "::advance: only ", done, " of ", layers_, " layers were appended in this step (layer ",
                 missing, " is missing)");
  }
  MMATTN_CHECK(n_valid.empty() || n_valid == step_valid_, ShapeError, kCls,
               "::advance: n_valid differs from the one the step's appends used");
  MMATTN_CHECK(positions.empty() || int64_t(positions.size()) == batch_, ShapeError, kCls, "::advance: positions has ",
               positions.size(), " sequences for batch ", batch_);
  for (int64_t b = 0; b < batch_; ++b)
    MMATTN_CHECK(positions.empty() || int64_t(positions[size_t(b)].size()) == step_valid_[size_t(b)], ShapeError, kCls,
                 "::advance: positions[", b, "] has ", positions.empty() ? 0 : positions[size_t(b)].size(),
                 " entries for ", step_valid_[size_t(b)], " new tokens");
  int32_t* pos = pos_.data<int32_t>();
  for (int64_t b = 0; b < batch_; ++b) {
    const int nv = step_valid_[size_t(b)];
    const int32_t next = next_position(b);
    int32_t* row = pos + b * max_len_ + len_[size_t(b)];
    for (int i = 0; i < nv; ++i) row[i] = positions.empty() ? next + i : positions[size_t(b)][size_t(i)];
    len_[size_t(b)] += nv;
  }
  step_valid_.clear();
  step_n_ = 0;
  std::fill(step_appended_.begin(), step_appended_.end(), false);
  upload_lens();
}

std::vector<int32_t> KVCache::positions(int64_t b) const {
  check_b(b, "positions");
  const int32_t* row = pos_.data<int32_t>() + b * max_len_;
  return std::vector<int32_t>(row, row + len_[size_t(b)]);
}

int32_t KVCache::next_position(int64_t b) const {
  check_b(b, "next_position");
  const int32_t* row = pos_.data<int32_t>() + b * max_len_;
  int32_t m = -1;
  for (int64_t i = 0; i < len_[size_t(b)]; ++i) m = std::max(m, row[i]);
  return m + 1;
}

void KVCache::truncate(int64_t b, int64_t len) {
  check_b(b, "truncate");
  check_no_step("truncate");
  MMATTN_CHECK(len >= 0 && len <= len_[size_t(b)], ShapeError, kCls, "::truncate: length ", len, " for sequence ", b,
               " is outside [0, ", len_[size_t(b)], "]");
  int32_t* row = pos_.data<int32_t>() + b * max_len_;
  std::fill(row + len, row + len_[size_t(b)], -1);
  len_[size_t(b)] = len;
  upload_lens();
}

void KVCache::reset_all() {
  check_no_step("reset_all");
  for (int64_t b = 0; b < batch_; ++b) {
    int32_t* row = pos_.data<int32_t>() + b * max_len_;
    std::fill(row, row + len_[size_t(b)], -1);
    len_[size_t(b)] = 0;
  }
  upload_lens();
}

void KVCache::compact(int64_t b, const std::vector<int64_t>& keep) {
  check_b(b, "compact");
  check_no_step("compact");
  const int64_t len = len_[size_t(b)];
  for (size_t i = 0; i < keep.size(); ++i) {
    MMATTN_CHECK(keep[i] >= 0 && keep[i] < len, ShapeError, kCls, "::compact: keep[", i, "] = ", keep[i],
                 " is outside [0, ", len, ") (sequence ", b, ")");
    MMATTN_CHECK(i == 0 || keep[i] > keep[i - 1], ShapeError, kCls, "::compact: keep must be strictly increasing; keep[",
                 i - 1, "] = ", keep[i - 1], ", keep[", i, "] = ", keep[i]);
  }
  const int64_t n_keep = int64_t(keep.size());
  // Rows move to lower or equal slots in increasing order, so the host can move them in place.
  const int64_t row_bytes = hkv_ * d_ * int64_t(dtype_size(dtype()));
  const int64_t plane_stride = batch_ * max_len_ * row_bytes;  // between the (layer, k/v) planes
  char* base = static_cast<char*>(storage_.data_ptr()) + b * max_len_ * row_bytes;
  if (n_keep == 0) {
    // nothing to move
  } else if (device().is_cuda()) {
    std::vector<int32_t> idx(keep.begin(), keep.end());
    Tensor keep_dev = Tensor::from_vector(idx, {n_keep}).to(device());
    MMATTN_IF_CUDA(kv_compact_cuda(base, 2 * int64_t(layers_), plane_stride, row_bytes,
                                   keep_dev.data<int32_t>(), n_keep, current_stream()));
  } else {
    for (int64_t plane = 0; plane < 2 * int64_t(layers_); ++plane) {
      char* pb = base + plane * plane_stride;
      for (int64_t i = 0; i < n_keep; ++i)
        if (keep[size_t(i)] != i) std::memmove(pb + i * row_bytes, pb + keep[size_t(i)] * row_bytes, size_t(row_bytes));
    }
  }
  int32_t* row = pos_.data<int32_t>() + b * max_len_;
  for (int64_t i = 0; i < n_keep; ++i) row[i] = row[keep[size_t(i)]];
  std::fill(row + n_keep, row + len, -1);
  len_[size_t(b)] = n_keep;
  upload_lens();
}

}  // namespace mmattn
