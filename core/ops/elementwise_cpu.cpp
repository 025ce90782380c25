// CPU reference for the binary elementwise ops: an odometer walk over the (coalesced) shape.
#include "core/ops/elementwise.h"

namespace mmattn {

void binary_cpu(const BinaryParams& p) {
  const float* a = static_cast<const float*>(p.a);
  const float* b = static_cast<const float*>(p.b);
  float* y = static_cast<float*>(p.y);
  int64_t idx[kMaxDims] = {};
  int64_t ao = 0, bo = 0, yo = 0;
  for (int64_t n = 0; n < p.numel; ++n) {
    switch (p.op) {
      case BinaryOp::AddScaled: y[yo] = a[ao] + p.alpha * b[bo]; break;
      case BinaryOp::Mul: y[yo] = a[ao] * b[bo]; break;
      case BinaryOp::Scale: y[yo] = p.alpha * a[ao]; break;
    }
    for (int d = p.ndim - 1; d >= 0; --d) {  // innermost dim fastest
      if (++idx[d] < p.shape[d]) {
        ao += p.a_strides[d];
        bo += p.b_strides[d];
        yo += p.y_strides[d];
        break;
      }
      ao -= p.a_strides[d] * (p.shape[d] - 1);
      bo -= p.b_strides[d] * (p.shape[d] - 1);
      yo -= p.y_strides[d] * (p.shape[d] - 1);
      idx[d] = 0;
    }
  }
}

}  // namespace mmattn
