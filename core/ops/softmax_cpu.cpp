// CPU reference for softmax: max, then sum of exp in double, then normalise.
#include <cmath>

#include "core/ops/softmax.h"

namespace mmattn {

void softmax_cpu(const SoftmaxParams& p) {
  const float* x = static_cast<const float*>(p.x);
  float* y = static_cast<float*>(p.y);
  for (int64_t r = 0; r < p.rows; ++r) {
    const float* xr = x + r * p.cols;
    float* yr = y + r * p.cols;
    float m = -INFINITY;
    for (int64_t c = 0; c < p.cols; ++c) m = std::fmax(m, xr[c] * p.scale);
    double sum = 0;
    for (int64_t c = 0; c < p.cols; ++c) sum += std::exp(double(xr[c] * p.scale - m));
    if (p.log) {
      const double lse = std::log(sum);
      for (int64_t c = 0; c < p.cols; ++c) yr[c] = float(double(xr[c] * p.scale - m) - lse);
    } else {
      const double inv = 1.0 / sum;
      for (int64_t c = 0; c < p.cols; ++c) yr[c] = float(std::exp(double(xr[c] * p.scale - m)) * inv);
    }
  }
}

}  // namespace mmattn
