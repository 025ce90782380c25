#include "attention/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "attention/kv_cache_kernels.h"
#include "core/ops/dispatch.h"
#include "core/ops/rope.h"

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
  pos_ = Tensor::full({layers, batch, max_len}, -1.f, DType::I32);
  lens_dev_ = Tensor::zeros({layers, 2, batch}, DType::I32, device);
  len_.assign(size_t(layers * batch), 0);
  next_.assign(size_t(layers * batch), 0);
  step_max_.assign(size_t(layers * batch), 0);
  step_valid_.assign(size_t(layers), {});
}

void KVCache::check_b(int64_t b, const char* fn) const {
  MMATTN_CHECK(b >= 0 && b < batch_, ShapeError, kCls, "::", fn, ": sequence index ", b, " is outside [0, ", batch_,
               ")");
}

void KVCache::check_layer(int layer, const char* fn) const {
  MMATTN_CHECK(layer >= 0 && layer < layers_, ShapeError, kCls, "::", fn, ": layer ", layer, " is outside [0, ",
               layers_, ")");
}

void KVCache::check_no_step(const char* fn) const {
  MMATTN_CHECK(!step_open(), Error, kCls, "::", fn, ": a step is open (append() without advance())");
}

int64_t KVCache::length(int64_t b) const {
  check_b(b, "length");
  int64_t m = 0;
  for (int l = 0; l < layers_; ++l) m = std::max(m, len(l, b));
  return m;
}

std::vector<int64_t> KVCache::lengths() const {
  std::vector<int64_t> r(static_cast<size_t>(batch_));
  for (int64_t b = 0; b < batch_; ++b) r[size_t(b)] = length(b);
  return r;
}

int64_t KVCache::layer_length(int layer, int64_t b) const {
  check_layer(layer, "layer_length");
  check_b(b, "layer_length");
  return len(layer, b);
}

Tensor KVCache::k(int layer) const {
  check_layer(layer, "k");
  return storage_.select(0, layer).select(0, 0);
}

Tensor KVCache::v(int layer) const {
  check_layer(layer, "v");
  return storage_.select(0, layer).select(0, 1);
}

Tensor KVCache::lens_tensor(int layer) const {
  check_layer(layer, "lens_tensor");
  return lens_dev_.select(0, layer).select(0, 1);
}

size_t KVCache::used_bytes() const {
  int64_t rows = 0;
  for (int64_t n : len_) rows += n;
  return size_t(rows * 2 * hkv_ * d_) * dtype_size(dtype());
}

void KVCache::upload_lens(int layer) {
  const int l0 = layer < 0 ? 0 : layer, l1 = layer < 0 ? layers_ : layer + 1;
  std::vector<int32_t> v(size_t((l1 - l0) * 2 * batch_));
  for (int l = l0; l < l1; ++l) {
    // Layers that did not append yet in the open step are shown with the rows they will most likely
    // append (those of the step's first append): a layer's own append re-uploads when it differs.
    const std::vector<int>& sv = !step_valid_[size_t(l)].empty() ? step_valid_[size_t(l)] : step_uploaded_;
    int32_t* row = v.data() + (l - l0) * 2 * batch_;
    for (int64_t b = 0; b < batch_; ++b) {
      row[b] = int32_t(len(l, b));
      row[batch_ + b] = int32_t(len(l, b) + (open_ && !sv.empty() ? sv[size_t(b)] : 0));
    }
  }
  int32_t* dst = lens_dev_.data<int32_t>() + l0 * 2 * batch_;
  if (lens_dev_.is_cuda()) {
    MMATTN_IF_CUDA(kv_set_i32_cuda(dst, v.data(), int64_t(v.size()), current_stream()));
  } else {
    std::copy(v.begin(), v.end(), dst);
  }
}

void KVCache::append(int layer, const Tensor& k_new, const Tensor& v_new, const std::vector<int>& n_valid,
                     const std::vector<std::vector<int32_t>>& positions) {
  append_impl(layer, k_new, v_new, n_valid, positions, nullptr);
}

void KVCache::append_rope(int layer, Tensor& q, const Tensor& k_new, const Tensor& v_new, const Tensor& cos,
                          const Tensor& sin, const std::vector<int>& n_valid,
                          const std::vector<std::vector<int32_t>>& positions) {
  const char* fn = "KVCache::append_rope";
  check_defined(q, fn, "q");
  check_defined(k_new, fn, "k_new");
  check_defined(cos, fn, "cos");
  check_defined(sin, fn, "sin");
  const int64_t n = k_new.dim() == 4 ? k_new.size(1) : -1;
  MMATTN_CHECK(q.dim() == 4 && q.size(0) == batch_ && q.size(1) == n && q.size(3) == d_ && q.stride(3) == 1 &&
                   q.dtype() == dtype() && q.device() == device(),
               ShapeError, fn, ": 'q' must be [", batch_, ", ", n, ", Hq, ", d_, "] ", dtype_name(dtype()), " on ",
               device().str(), " with a dense last dim, got ", q.desc());
  MMATTN_CHECK(d_ % 2 == 0, ShapeError, fn, ": head_dim ", d_, " is odd");
  for (const Tensor* t : {&cos, &sin})
    MMATTN_CHECK(t->dim() == 2 && t->size(0) == n && t->size(1) == d_ / 2 && t->dtype() == DType::F32 &&
                     t->is_contiguous() && t->device() == device(),
                 ShapeError, fn, ": '", t == &cos ? "cos" : "sin", "' must be contiguous F32 [", n, ", ", d_ / 2,
                 "] on ", device().str(), ", got ", t->desc());
  const Rope r{&q, &cos, &sin};
  append_impl(layer, k_new, v_new, n_valid, positions, &r);
}

Tensor KVCache::next_rows(int layer, int64_t n, int which, const char* fn) const {
  check_layer(layer, fn);
  MMATTN_CHECK(batch_ == 1, UnsupportedError, kCls, "::", fn, ": batch 1 only, the cache holds ", batch_);
  MMATTN_CHECK(step_valid_[size_t(layer)].empty(), Error, kCls, "::", fn, ": layer ", layer,
               " was already appended in this step (call advance() first)");
  const int64_t at = len(layer, 0);
  MMATTN_CHECK(n >= 0 && at + n <= max_len_, ShapeError, kCls, "::", fn, ": the sequence holds ", at, " tokens; ", n,
               " more exceed the capacity ", max_len_);
  const Tensor t = which == 0 ? k(layer) : v(layer);  // [1, max_len, Hkv, D]
  return t.select(0, 0).slice(0, at, at + n).view({n, hkv_ * d_});
}
Tensor KVCache::next_rows_k(int layer, int64_t n) const { return next_rows(layer, n, 0, "next_rows_k"); }
Tensor KVCache::next_rows_v(int layer, int64_t n) const { return next_rows(layer, n, 1, "next_rows_v"); }

void KVCache::append_written(int layer, int64_t n, const std::vector<std::vector<int32_t>>& positions) {
  const Tensor kr = next_rows(layer, n, 0, "append_written"), vr = next_rows(layer, n, 1, "append_written");
  append_impl(layer, kr.view({1, n, hkv_, d_}), vr.view({1, n, hkv_, d_}), {}, positions, nullptr, false);
}

void KVCache::append_impl(int layer, const Tensor& k_new, const Tensor& v_new, const std::vector<int>& n_valid,
                          const std::vector<std::vector<int32_t>>& positions, const Rope* rope, bool copy) {
  check_layer(layer, "append");
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
    MMATTN_CHECK(len(layer, b) + nv <= max_len_, ShapeError, kCls, "::append: sequence ", b, " holds ", len(layer, b),
                 " tokens; ", nv, " more exceed the capacity ", max_len_);
  }
  MMATTN_CHECK(positions.empty() || int64_t(positions.size()) == batch_, ShapeError, kCls, "::append: positions has ",
               positions.size(), " sequences for batch ", batch_);
  for (int64_t b = 0; b < batch_; ++b)
    MMATTN_CHECK(positions.empty() || int64_t(positions[size_t(b)].size()) == valid[size_t(b)], ShapeError, kCls,
                 "::append: positions[", b, "] has ", positions.empty() ? 0 : positions[size_t(b)].size(),
                 " entries for ", valid[size_t(b)], " new tokens");
  MMATTN_CHECK(step_valid_[size_t(layer)].empty(), Error, kCls, "::append: layer ", layer,
               " was already appended in this step (call advance() first)");
  if (!open_) {
    step_next_.resize(size_t(batch_));
    for (int64_t b = 0; b < batch_; ++b) step_next_[size_t(b)] = next_position(b);
    open_ = true;
    step_valid_[size_t(layer)] = valid;
    step_uploaded_ = valid;
    upload_lens();  // lens_tensor(l) now includes the new rows
  } else {
    step_valid_[size_t(layer)] = valid;
    if (valid != step_uploaded_) upload_lens(layer);
  }
  for (int64_t b = 0; b < batch_; ++b) {
    int32_t* row = pos_row(layer, b) + len(layer, b);
    int32_t& mx = step_max_[size_t(layer * batch_ + b)];
    mx = 0;
    for (int i = 0; i < valid[size_t(b)]; ++i) {
      row[i] = positions.empty() ? step_next_[size_t(b)] + i : positions[size_t(b)][size_t(i)];
      mx = std::max(mx, row[i] + 1);
    }
  }
  if (n == 0 || !copy) return;

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
    p.dtype = dtype();
    p.start = lens_dev_.data<int32_t>() + layer * 2 * batch_;
    p.end = p.start + batch_;
    if (rope) {
      p.cos = rope->cos->data<float>(), p.sin = rope->sin->data<float>();
      p.q = rope->q->data_ptr();
      p.q_sb = rope->q->stride(0), p.q_sl = rope->q->stride(1), p.q_sh = rope->q->stride(2), p.hq = rope->q->size(2);
    }
    MMATTN_IF_CUDA(kv_append_cuda(p, current_stream()));
  } else {
    // with RoPE: the composition the fused kernel equals (apply_rope_ on q and k, then the copies)
    Tensor kr = k_new;
    if (rope) {
      RopeTable t;
      t.cos = *rope->cos, t.sin = *rope->sin, t.head_dim = d_;
      apply_rope_(*rope->q, t, RopeStyle::HalfSplit);
      kr = apply_rope(k_new, t, RopeStyle::HalfSplit);
    }
    for (int64_t b = 0; b < batch_; ++b) {
      const int nv = valid[size_t(b)];
      if (nv == 0) continue;
      const int64_t at = len(layer, b);
      kd.select(0, b).slice(0, at, at + nv).copy_from(kr.select(0, b).slice(0, 0, nv));
      vd.select(0, b).slice(0, at, at + nv).copy_from(v_new.select(0, b).slice(0, 0, nv));
    }
  }
}

void KVCache::advance() {
  MMATTN_CHECK(open_, Error, kCls, "::advance: no layer was appended since the last advance()");
  int64_t done = 0;
  int missing = -1;
  for (int l = 0; l < layers_; ++l) {
    if (!step_valid_[size_t(l)].empty())
      ++done;
    else if (missing < 0)
      missing = l;
  }
  MMATTN_CHECK(done == layers_, Error, kCls, "::advance: only ", done, " of ", layers_,
               " layers were appended in this step (layer ", missing, " is missing)");
  for (int l = 0; l < layers_; ++l)
    for (int64_t b = 0; b < batch_; ++b) {
      len(l, b) += step_valid_[size_t(l)][size_t(b)];
      const size_t i = size_t(l * batch_ + b);
      next_[i] = std::max(next_[i], step_max_[i]);
    }
  open_ = false;
  for (auto& sv : step_valid_) sv.clear();
  step_uploaded_.clear();
  upload_lens();
}

std::vector<int32_t> KVCache::positions(int64_t b, int layer) const {
  check_b(b, "positions");
  check_layer(layer, "positions");
  const int32_t* row = pos_row(layer, b);
  return std::vector<int32_t>(row, row + len(layer, b));
}

int64_t KVCache::visible_length(int64_t b, int layer) const {
  check_b(b, "visible_length");
  check_layer(layer, "visible_length");
  const auto& sv = step_valid_[size_t(layer)];
  return len(layer, b) + (open_ && !sv.empty() ? sv[size_t(b)] : 0);
}

std::vector<int32_t> KVCache::visible_positions(int64_t b, int layer) const {
  const int64_t n = visible_length(b, layer);
  const int32_t* row = pos_row(layer, b);
  return std::vector<int32_t>(row, row + n);
}

int32_t KVCache::next_position(int64_t b) const {
  check_b(b, "next_position");
  int32_t m = 0;
  for (int l = 0; l < layers_; ++l) m = std::max(m, next_[size_t(l * batch_ + b)]);
  return m;
}

int32_t KVCache::layer_next_position(int layer, int64_t b) const {
  check_layer(layer, "layer_next_position");
  check_b(b, "layer_next_position");
  return next_[size_t(layer * batch_ + b)];
}

void KVCache::rescan_next(int layer, int64_t b) {
  const int32_t* row = pos_row(layer, b);
  int32_t m = -1;
  for (int64_t i = 0; i < len(layer, b); ++i) m = std::max(m, row[i]);
  next_[size_t(layer * batch_ + b)] = m + 1;
}

void KVCache::truncate(int64_t b, int64_t n) {
  check_b(b, "truncate");
  check_no_step("truncate");
  const int64_t have = length(b);
  MMATTN_CHECK(n >= 0 && n <= have, ShapeError, kCls, "::truncate: length ", n, " for sequence ", b,
               " is outside [0, ", have, "]");
  for (int l = 0; l < layers_; ++l) {
    if (len(l, b) <= n) continue;
    int32_t* row = pos_row(l, b);
    std::fill(row + n, row + len(l, b), -1);
    len(l, b) = n;
    rescan_next(l, b);
  }
  upload_lens();
}

void KVCache::reset_all() {
  check_no_step("reset_all");
  for (int64_t b = 0; b < batch_; ++b) truncate(b, 0);
}

void KVCache::compact(int64_t b, const std::vector<int64_t>& keep, int first_layer) {
  check_b(b, "compact");
  check_layer(first_layer, "compact");
  check_no_step("compact");
  const int64_t n = len(first_layer, b);
  for (int l = first_layer + 1; l < layers_; ++l)
    MMATTN_CHECK(len(l, b) == n, ShapeError, kCls, "::compact: sequence ", b, " holds ", n, " tokens in layer ",
                 first_layer, " but ", len(l, b), " in layer ", l, "; the compacted layers must hold the same count");
  for (size_t i = 0; i < keep.size(); ++i) {
    MMATTN_CHECK(keep[i] >= 0 && keep[i] < n, ShapeError, kCls, "::compact: keep[", i, "] = ", keep[i],
                 " is outside [0, ", n, ") (sequence ", b, ")");
    MMATTN_CHECK(i == 0 || keep[i] > keep[i - 1], ShapeError, kCls, "::compact: keep must be strictly increasing; keep[",
                 i - 1, "] = ", keep[i - 1], ", keep[", i, "] = ", keep[i]);
  }
  const int64_t n_keep = int64_t(keep.size());
  // Rows move to lower or equal slots in increasing order, so the host can move them in place.
  const int64_t row_bytes = hkv_ * d_ * int64_t(dtype_size(dtype()));
  const int64_t plane_stride = batch_ * max_len_ * row_bytes;  // between the (layer, k/v) planes
  const int64_t planes = 2 * int64_t(layers_ - first_layer);
  char* base = static_cast<char*>(storage_.data_ptr()) + (2 * int64_t(first_layer) * batch_ + b) * max_len_ * row_bytes;
  if (n_keep == 0) {
    // nothing to move
  } else if (device().is_cuda()) {
    std::vector<int32_t> idx(keep.begin(), keep.end());
    Tensor keep_dev = Tensor::from_vector(idx, {n_keep}).to(device());
    MMATTN_IF_CUDA(kv_compact_cuda(base, planes, plane_stride, row_bytes, keep_dev.data<int32_t>(), n_keep,
                                   current_stream()));
  } else {
    for (int64_t plane = 0; plane < planes; ++plane) {
      char* pb = base + plane * plane_stride;
      for (int64_t i = 0; i < n_keep; ++i)
        if (keep[size_t(i)] != i) std::memmove(pb + i * row_bytes, pb + keep[size_t(i)] * row_bytes, size_t(row_bytes));
    }
  }
  for (int l = first_layer; l < layers_; ++l) {
    int32_t* row = pos_row(l, b);
    for (int64_t i = 0; i < n_keep; ++i) row[i] = row[keep[size_t(i)]];
    std::fill(row + n_keep, row + n, -1);
    len(l, b) = n_keep;
    rescan_next(l, b);
  }
  upload_lens();
}

}  // namespace mmattn
