#include "core/ops/softmax.h"

#include <climits>

#include "core/ops/dispatch.h"

namespace mmattn {

namespace {
Tensor softmax_impl(const char* op, const Tensor& x, int dim, float scale, bool log) {
  check_float(x, op, "x");
  check_cpu_f32(x, op, "x");
  MMATTN_CHECK(x.dim() >= 1, ShapeError, op, ": 'x' must have at least one dim, got ", x.desc());
  MMATTN_CHECK(dim >= -x.dim() && dim < x.dim(), ShapeError, op, ": dim ", dim, " out of range for 'x' ", x.desc());
  const int d = dim < 0 ? dim + x.dim() : dim;
  const int last = x.dim() - 1;
  // Other dims: move `dim` last ([..., n, ..., m] -> [..., m, ..., n]), compute, move it back.
  Tensor xc = (d == last ? x : x.transpose(d, last)).contiguous();
  const int64_t cols = xc.size(-1);
  MMATTN_CHECK(cols <= INT_MAX, ShapeError, op, ": dim ", dim, " of 'x' ", x.desc(), " is too long");
  Tensor y = Tensor::empty(xc.shape(), x.dtype(), x.device());
  SoftmaxParams p;
  p.x = xc.data_ptr();
  p.y = y.data_ptr();
  p.cols = cols;
  p.rows = cols ? xc.numel() / cols : 0;
  MMATTN_CHECK(p.rows <= INT_MAX, ShapeError, op, ": 'x' ", x.desc(), " has too many rows");
  p.scale = scale;
  p.log = log;
  p.dtype = x.dtype();
  if (p.rows > 0 && p.cols > 0) {
    if (x.is_cuda()) {
      MMATTN_IF_CUDA(softmax_cuda(p, current_stream()));
    } else {
      softmax_cpu(p);
    }
  }
  return d == last ? y : y.transpose(d, last).contiguous();
}
}  // namespace

Tensor softmax(const Tensor& x, int dim, float scale) { return softmax_impl("softmax", x, dim, scale, false); }
Tensor log_softmax(const Tensor& x, int dim, float scale) { return softmax_impl("log_softmax", x, dim, scale, true); }

}  // namespace mmattn
