#pragma once
// Binary elementwise ops, b broadcast onto a (NumPy rules, one-sided: the result has a's shape).
// b's shape, aligned at the trailing dim, has each dim equal to a's or 1, and may have fewer dims:
// bias [D] onto [N, D], [N, 1] onto [N, D], [B, 1, D] onto [B, N, D], [1] onto anything.
//   add(a, b)              a + b
//   add_scaled(a, b, s)    a + s * b
//   mul(a, b)              a * b
//   scale(x, s)            s * x
//   add_(a, b)             a += b in place (residual adds); returns a. b must not partly overlap a.
// a and b: same dtype, same device, any strides, at most 8 dims. Outputs are contiguous (add_ keeps
// a's layout). Computed in f32 with one rounding to the dtype, as PyTorch's opmath.
// CUDA: F32/F16/BF16; CPU: F32.
#include <cstdint>

#include "core/ops/copy.h"
#include "core/tensor.h"

namespace mmattn {

Tensor add(const Tensor& a, const Tensor& b);
Tensor add_scaled(const Tensor& a, const Tensor& b, float s);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& x, float s);
Tensor add_(const Tensor& a, const Tensor& b);

enum class BinaryOp : uint8_t {
  AddScaled,  // y = a + alpha * b
  Mul,        // y = a * b
  Scale,      // y = alpha * a   (b unused: null, strides 0)
};

// y[i] = op(a[i], b[i]) over `shape`, every operand with its own strides in elements (b's are 0
// along broadcast dims). The launcher drops size-1 dims and merges dims that are contiguous for
// all three operands, so common cases arrive as 1 or 2 dims.
struct BinaryParams {
  BinaryOp op = BinaryOp::AddScaled;
  float alpha = 1.f;
  int ndim = 0;
  int64_t numel = 0;
  int64_t shape[kMaxDims] = {};
  int64_t a_strides[kMaxDims] = {};
  int64_t b_strides[kMaxDims] = {};
  int64_t y_strides[kMaxDims] = {};
  const void* a = nullptr;
  const void* b = nullptr;
  void* y = nullptr;  // may equal a (in place, with y_strides == a_strides)
  DType dtype = DType::F32;
};
void binary_cpu(const BinaryParams& p);
void binary_cuda(const BinaryParams& p, StreamHandle s);

}  // namespace mmattn
