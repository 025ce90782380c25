// CPU reference of the row reductions (any float dtype, f32 accumulation).
#include <cmath>

#include "core/ops/elem.h"
#include "core/ops/reduce.h"

namespace mmattn {

void vector_norm_cpu(const VectorNormParams& p) {
  const size_t item = dtype_size(p.dtype);
  const char* x = static_cast<const char*>(p.x);
  for (int64_t r = 0; r < p.rows; ++r) {
    float acc = 0.f;
    for (int64_t c = 0; c < p.cols; ++c) {
      const float v = float(load_elem(x + size_t(r * p.cols + c) * item, p.dtype));
      acc += p.p == 1 ? std::fabs(v) : v * v;
    }
    p.y[r] = p.p == 1 ? acc : std::sqrt(acc);
  }
}

void argmax_cpu(const ArgmaxParams& p) {
  const size_t item = dtype_size(p.dtype);
  const char* x = static_cast<const char*>(p.x);
  for (int64_t r = 0; r < p.rows; ++r) {
    int64_t best = 0;
    double best_v = 0;
    bool found = false;  // a number seen (NaNs rank below every number)
    for (int64_t c = 0; c < p.cols; ++c) {
      const double v = load_elem(x + size_t(r * p.cols + c) * item, p.dtype);
      if (std::isnan(v) || (found && !(v > best_v))) continue;
      best = c, best_v = v, found = true;
    }
    p.y[r] = best;
  }
}

}  // namespace mmattn
