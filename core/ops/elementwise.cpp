#include "core/ops/elementwise.h"

#include "core/ops/dispatch.h"

namespace mmattn {

namespace {

// b's strides over a's dims (0 where b broadcasts); throws when b does not broadcast onto a.
Shape broadcast_strides(const char* op, const Tensor& a, const Tensor& b) {
  const int off = a.dim() - b.dim();
  bool ok = off >= 0;
  Shape st(a.dim(), 0);
  for (int i = 0; ok && i < a.dim(); ++i) {
    const int j = i - off;
    if (j < 0) continue;
    if (b.size(j) == a.size(i))
      st[i] = a.size(i) == 1 ? 0 : b.stride(j);
    else if (b.size(j) == 1)
      st[i] = 0;
    else
      ok = false;
  }
  MMATTN_CHECK(ok, ShapeError, op, ": 'b' of shape ", b.shape_str(), " cannot be broadcast to 'a' of shape ",
               a.shape_str());
  return st;
}

// Drops size-1 dims and merges neighbours that are contiguous for all three operands.
void coalesce(BinaryParams& p, const Shape& shape, const Shape& as, const Shape& bs, const Shape& ys) {
  p.ndim = 0;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 1) continue;
    const int k = p.ndim - 1;
    if (k >= 0 && p.a_strides[k] == as[i] * shape[i] && p.b_strides[k] == bs[i] * shape[i] &&
        p.y_strides[k] == ys[i] * shape[i]) {
      p.shape[k] *= shape[i];
      p.a_strides[k] = as[i];
      p.b_strides[k] = bs[i];
      p.y_strides[k] = ys[i];
      continue;
    }
    p.shape[p.ndim] = shape[i];
    p.a_strides[p.ndim] = as[i];
    p.b_strides[p.ndim] = bs[i];
    p.y_strides[p.ndim] = ys[i];
    ++p.ndim;
  }
  if (p.ndim == 0) {  // a single element
    p.ndim = 1;
    p.shape[0] = 1;
    p.a_strides[0] = p.y_strides[0] = 1;
    p.b_strides[0] = 0;
  }
}

// b undefined for BinaryOp::Scale. in_place: y is a.
Tensor binary(const char* op, const Tensor& a, const Tensor& b, BinaryOp bop, float alpha, bool in_place,
              const char* a_name = "a") {
  check_float(a, op, a_name);
  check_cpu_f32(a, op, a_name);
  MMATTN_CHECK(a.dim() <= kMaxDims, ShapeError, op, ": '", a_name, "' ", a.desc(), " has more than ", kMaxDims,
               " dims");
  Shape bst(a.dim(), 0);
  if (bop != BinaryOp::Scale) {
    check_defined(b, op, "b");
    MMATTN_CHECK(b.dtype() == a.dtype(), ShapeError, op, ": 'a' is ", a.desc(), " but 'b' is ", b.desc(),
                 " (dtypes must match)");
    check_same_device(a, b, op, "a", "b");
    bst = broadcast_strides(op, a, b);
  }
  if (in_place)
    for (int i = 0; i < a.dim(); ++i)
      MMATTN_CHECK(a.stride(i) != 0 || a.size(i) <= 1, ShapeError, op, ": 'a' ", a.desc(),
                   " has broadcast (stride 0) dims and cannot be written in place");
  Tensor y = in_place ? a : Tensor::empty(a.shape(), a.dtype(), a.device());
  BinaryParams p;
  p.op = bop;
  p.alpha = alpha;
  p.numel = a.numel();
  coalesce(p, a.shape(), a.strides(), bst, y.strides());
  p.a = a.data_ptr();
  p.b = bop == BinaryOp::Scale ? nullptr : b.data_ptr();
  p.y = y.data_ptr();
  p.dtype = a.dtype();
  if (p.numel == 0) return y;
  if (a.is_cuda()) {
    MMATTN_IF_CUDA(binary_cuda(p, current_stream()));
  } else {
    binary_cpu(p);
  }
  return y;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary("add", a, b, BinaryOp::AddScaled, 1.f, false); }
Tensor add_scaled(const Tensor& a, const Tensor& b, float s) {
  return binary("add_scaled", a, b, BinaryOp::AddScaled, s, false);
}
Tensor mul(const Tensor& a, const Tensor& b) { return binary("mul", a, b, BinaryOp::Mul, 1.f, false); }
Tensor scale(const Tensor& x, float s) { return binary("scale", x, Tensor(), BinaryOp::Scale, s, false, "x"); }
Tensor add_(const Tensor& a, const Tensor& b) { return binary("add_", a, b, BinaryOp::AddScaled, 1.f, true); }

}  // namespace mmattn
