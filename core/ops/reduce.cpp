#include "core/ops/reduce.h"

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
