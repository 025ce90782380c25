#include "core/ops/norm.h"

#include "core/ops/dispatch.h"

namespace mmattn {

namespace {
void check_param(const Tensor& p, const Tensor& x, int64_t n, const char* op, const char* arg) {
  if (!p.defined()) return;
  MMATTN_CHECK(p.dim() == 1 && p.size(0) == n, ShapeError, op, ": '", arg, "' must be [", n, "], got ", p.desc());
  MMATTN_CHECK(p.dtype() == x.dtype(), ShapeError, op, ": '", arg, "' is ", p.desc(), " but x is ", x.desc());
  check_same_device(x, p, op, "x", arg);
}

Tensor row_norm(const char* op, const Tensor& x, const Tensor& w, const Tensor& b, float eps, bool rms) {
  check_float(x, op, "x");
  MMATTN_CHECK(x.dim() >= 1 && x.size(-1) > 0, ShapeError, op, ": x must have a non-empty last dim, got ", x.desc());
  check_cpu_f32(x, op, "x");
  const int64_t d = x.size(-1);
  check_param(w, x, d, op, "weight");
  check_param(b, x, d, op, "bias");
  Tensor xc = x.contiguous();
  Tensor wc = w.defined() ? w.contiguous() : w;
  Tensor bc = b.defined() ? b.contiguous() : b;
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  RowNormParams p;
  p.x = xc.data_ptr();
  p.weight = wc.defined() ? wc.data_ptr() : nullptr;
  p.bias = bc.defined() ? bc.data_ptr() : nullptr;
  p.y = y.data_ptr();
  p.rows = x.numel() / d;
  p.cols = d;
  p.eps = eps;
  p.dtype = x.dtype();
  if (p.rows == 0) return y;
  if (x.is_cuda()) {
    MMATTN_IF_CUDA(rms ? rms_norm_cuda(p, current_stream()) : layer_norm_cuda(p, current_stream()));
  } else {
    rms ? rms_norm_cpu(p) : layer_norm_cpu(p);
  }
  return y;
}
}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps) {
  return row_norm("layer_norm", x, weight, bias, eps, false);
}

Tensor rms_norm(const Tensor& x, const Tensor& weight, float eps) {
  check_defined(weight, "rms_norm", "weight");
  return row_norm("rms_norm", x, weight, Tensor(), eps, true);
}

Tensor group_norm(const Tensor& x, int groups, const Tensor& weight, const Tensor& bias, float eps) {
  const char* op = "group_norm";
  check_float(x, op, "x");
  check_cpu_f32(x, op, "x");
  MMATTN_CHECK(x.dim() >= 2, ShapeError, op, ": x must be [N, C, ...], got ", x.desc());
  const int64_t c = x.size(1);
  MMATTN_CHECK(groups >= 1 && c % groups == 0, ShapeError, op, ": ", c, " channels are not divisible into ", groups,
               " groups");
  check_param(weight, x, c, op, "weight");
  check_param(bias, x, c, op, "bias");
  Tensor xc = x.contiguous();
  Tensor wc = weight.defined() ? weight.contiguous() : weight;
  Tensor bc = bias.defined() ? bias.contiguous() : bias;
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  GroupNormParams p;
  p.x = xc.data_ptr();
  p.weight = wc.defined() ? wc.data_ptr() : nullptr;
  p.bias = bc.defined() ? bc.data_ptr() : nullptr;
  p.y = y.data_ptr();
  p.n = x.size(0);
  p.channels = c;
  p.spatial = c ? x.numel() / (p.n * c) : 0;
  p.groups = groups;
  p.eps = eps;
  p.dtype = x.dtype();
  if (x.numel() == 0) return y;
  if (x.is_cuda()) {
    MMATTN_IF_CUDA(group_norm_cuda(p, current_stream()));
  } else {
    group_norm_cpu(p);
  }
  return y;
}

}  // namespace mmattn
