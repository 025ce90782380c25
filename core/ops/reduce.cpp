#include "core/ops/reduce.h"

#include <algorithm>

#include "core/ops/dispatch.h"

namespace mmattn {

Tensor vector_norm(const Tensor& x, int p) {
  const char* op = "vector_norm";
  check_float(x, op, "x");
  MMATTN_CHECK(p == 1 || p == 2, UnsupportedError, op, ": p = ", p, " (1 or 2 supported)");
  MMATTN_CHECK(x.dim() >= 1, ShapeError, op, ": x must have at least one dim, got ", x.desc());
  Shape out_shape(x.shape().begin(), x.shape().end() - 1);
  Tensor y = Tensor::empty(out_shape, DType::F32, x.device());
  const Tensor xc = x.contiguous();
  VectorNormParams vp;
  vp.x = xc.data_ptr();
  vp.y = y.data<float>();
  vp.cols = x.size(-1);
  vp.rows = vp.cols ? x.numel() / vp.cols : y.numel();
  vp.p = p;
  vp.dtype = x.dtype();
  if (vp.rows == 0) return y;
  if (x.is_cuda()) {
    MMATTN_IF_CUDA(vector_norm_cuda(vp, current_stream()));
  } else {
    vector_norm_cpu(vp);
  }
  return y;
}

Tensor argmax(const Tensor& x) {
  const char* op = "argmax";
  check_float(x, op, "x");
  MMATTN_CHECK(x.dim() >= 1 && x.size(-1) >= 1, ShapeError, op, ": x must have a non-empty last dim, got ", x.desc());
  Shape out_shape(x.shape().begin(), x.shape().end() - 1);
  Tensor y = Tensor::empty(out_shape, DType::I64, x.device());
  const Tensor xc = x.contiguous();
  ArgmaxParams ap;
  ap.x = xc.data_ptr();
  ap.y = y.data<int64_t>();
  ap.cols = x.size(-1);
  ap.rows = x.numel() / ap.cols;
  ap.dtype = x.dtype();
  if (ap.rows == 0) return y;
  if (x.is_cuda()) {
    MMATTN_IF_CUDA(argmax_cuda(ap, current_stream()));
  } else {
    argmax_cpu(ap);
  }
  return y;
}

}  // namespace mmattn

namespace mmattn {

Tensor column_sum(const Tensor& x, float divisor) {
  const char* op = "column_sum";
  check_dim(x, 2, op, "x");
  MMATTN_CHECK(x.dtype() == DType::F32, ShapeError, op, ": 'x' must be F32, got ", x.desc());
  MMATTN_CHECK(x.size(0) >= 1, ShapeError, op, ": 'x' must have at least one row, got ", x.desc());
  Tensor y = Tensor::empty({x.size(1)}, DType::F32, x.device());
  const Tensor xc = x.contiguous();
  ColumnSumParams p;
  p.x = xc.data<float>();
  p.y = y.data<float>();
  p.rows = x.size(0);
  p.cols = x.size(1);
  p.divisor = divisor;
  if (p.cols == 0) return y;
  if (x.is_cuda()) {
    MMATTN_IF_CUDA(column_sum_cuda(p, current_stream()));
  } else {
    column_sum_cpu(p);
  }
  return y;
}

namespace {

// A one-block selection: run(in, out) on in's device when it holds at most kSelectDeviceItems
// items, else on a host copy whose result goes back to in's device. y: the result on in's device.
template <class Run>
Tensor select_on_device_or_host(const Tensor& in, Tensor y, const Run& run) {
  const bool device = in.is_cuda() && in.numel() <= kSelectDeviceItems;
  const Tensor ic = device ? in.contiguous() : in.to(Device::cpu()).contiguous();
  Tensor out = device || !in.is_cuda() ? y : Tensor::empty(y.shape(), y.dtype(), Device::cpu());
  run(ic, out, device);
  if (!device && in.is_cuda()) y.copy_from(out);
  return y;
}

}  // namespace

Tensor top_k_indices(const Tensor& scores, int64_t k) {
  const char* op = "top_k_indices";
  check_dim(scores, 1, op, "scores");
  MMATTN_CHECK(scores.dtype() == DType::F32, ShapeError, op, ": 'scores' must be F32, got ", scores.desc());
  MMATTN_CHECK(k >= 0, ShapeError, op, ": k must be >= 0, got ", k);
  k = std::min(k, scores.size(0));
  Tensor y = Tensor::empty({k}, DType::I64, scores.device());
  if (k == 0) return y;
  return select_on_device_or_host(scores, y, [&](const Tensor& in, Tensor& out, bool device) {
    TopKParams p;
    p.scores = in.data<float>();
    p.out = out.data<int64_t>();
    p.n = in.numel();
    p.k = k;
    if (device) {
      MMATTN_IF_CUDA(top_k_indices_cuda(p, current_stream()));
    } else {
      top_k_indices_cpu(p);
    }
  });
}

Tensor sort_ascending(const Tensor& v) {
  const char* op = "sort_ascending";
  check_dim(v, 1, op, "v");
  MMATTN_CHECK(v.dtype() == DType::I64, ShapeError, op, ": 'v' must be I64, got ", v.desc());
  Tensor y = Tensor::empty({v.size(0)}, DType::I64, v.device());
  if (v.size(0) == 0) return y;
  return select_on_device_or_host(v, y, [&](const Tensor& in, Tensor& out, bool device) {
    SortParams p;
    p.v = in.data<int64_t>();
    p.out = out.data<int64_t>();
    p.n = in.numel();
    if (device) {
      MMATTN_IF_CUDA(sort_ascending_cuda(p, current_stream()));
    } else {
      sort_ascending_cpu(p);
    }
  });
}

std::vector<int64_t> host_indices(const Tensor& idx) {
  check_dtype(idx, DType::I64, "host_indices", "idx");
  const Tensor c = idx.contiguous();
  std::vector<int64_t> v(size_t(c.numel()));
  if (!v.empty()) copy_bytes(v.data(), Device::cpu(), c.data_ptr(), c.device(), v.size() * sizeof(int64_t));
  return v;
}

}  // namespace mmattn
