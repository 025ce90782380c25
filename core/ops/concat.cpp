// concat via Tensor::slice + copy_from (the strided copy kernels of copy_cpu.cpp / copy_cuda.cu);
// the splits are views.
#include "core/ops/concat.h"

#include <algorithm>

namespace mmattn {

namespace {
int wrap(int dim, int ndim, const char* op, const Tensor& x) {
  MMATTN_CHECK(dim >= -ndim && dim < ndim, ShapeError, op, ": dim ", dim, " out of range for ", x.desc());
  return dim < 0 ? dim + ndim : dim;
}
}  // namespace

Tensor concat(const std::vector<Tensor>& xs, int dim) {
  const char* op = "concat";
  MMATTN_CHECK(!xs.empty(), ShapeError, op, ": no tensors");
  check_defined(xs[0], op, "xs[0]");
  const Tensor& x0 = xs[0];
  const int d = wrap(dim, x0.dim(), op, x0);
  int64_t total = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& x = xs[i];
    MMATTN_CHECK(x.defined(), ShapeError, op, ": tensor ", i, " is undefined");
    MMATTN_CHECK(x.dtype() == x0.dtype(), ShapeError, op, ": tensor ", i, " is ", x.desc(), " but tensor 0 is ",
                 x0.desc(), " (dtypes must match)");
    MMATTN_CHECK(x.device() == x0.device(), ShapeError, op, ": tensor ", i, " is ", x.desc(), " but tensor 0 is ",
                 x0.desc(), " (devices must match)");
    bool same = x.dim() == x0.dim();
    for (int k = 0; same && k < x.dim(); ++k) same = k == d || x.size(k) == x0.size(k);
    MMATTN_CHECK(same, ShapeError, op, ": tensor ", i, " has shape ", x.shape_str(), " but tensor 0 has shape ",
                 x0.shape_str(), " (sizes must match except in dim ", d, ")");
    total += x.size(d);
  }
  Shape out = x0.shape();
  out[d] = total;
  Tensor y = Tensor::empty(out, x0.dtype(), x0.device());
  int64_t at = 0;
  for (const Tensor& x : xs) {
    const int64_t n = x.size(d);
    if (n > 0) y.slice(d, at, at + n).copy_from(x);
    at += n;
  }
  return y;
}

std::vector<Tensor> split_with_sizes(const Tensor& x, const std::vector<int64_t>& sizes, int dim) {
  const char* op = "split_with_sizes";
  check_defined(x, op, "x");
  const int d = wrap(dim, x.dim(), op, x);
  int64_t sum = 0;
  for (int64_t s : sizes) {
    MMATTN_CHECK(s >= 0, ShapeError, op, ": negative size ", s);
    sum += s;
  }
  MMATTN_CHECK(sum == x.size(d), ShapeError, op, ": sizes sum to ", sum, " but dim ", d, " of ", x.desc(), " is ",
               x.size(d));
  std::vector<Tensor> r;
  int64_t at = 0;
  for (int64_t s : sizes) {
    r.push_back(x.slice(d, at, at + s));
    at += s;
  }
  return r;
}

std::vector<Tensor> split(const Tensor& x, int64_t split_size, int dim) {
  const char* op = "split";
  check_defined(x, op, "x");
  const int d = wrap(dim, x.dim(), op, x);
  MMATTN_CHECK(split_size >= 1, ShapeError, op, ": split_size must be >= 1, got ", split_size);
  const int64_t n = x.size(d);
  std::vector<int64_t> sizes;
  for (int64_t at = 0; at < n; at += split_size) sizes.push_back(std::min(split_size, n - at));
  if (sizes.empty()) sizes.push_back(0);  // torch.split of an empty dim gives one empty tensor
  return split_with_sizes(x, sizes, d);
}

std::vector<Tensor> chunk(const Tensor& x, int chunks, int dim) {
  const char* op = "chunk";
  check_defined(x, op, "x");
  const int d = wrap(dim, x.dim(), op, x);
  MMATTN_CHECK(chunks >= 1, ShapeError, op, ": chunks must be >= 1, got ", chunks);
  const int64_t n = x.size(d);
  if (n == 0) return split_with_sizes(x, std::vector<int64_t>(size_t(chunks), 0), d);  // as torch.chunk
  return split(x, (n + chunks - 1) / chunks, d);
}

}  // namespace mmattn
