// CPU references for the norms: plain loops, double-free f32 math with a two-pass variance.
#include <cmath>

#include "core/ops/norm.h"

namespace mmattn {

void layer_norm_cpu(const RowNormParams& p) {
  const float* x = static_cast<const float*>(p.x);
  const float* w = static_cast<const float*>(p.weight);
  const float* b = static_cast<const float*>(p.bias);
  float* y = static_cast<float*>(p.y);
  for (int64_t r = 0; r < p.rows; ++r) {
    const float* xr = x + r * p.cols;
    float* yr = y + r * p.cols;
    float mean = 0.f;
    for (int64_t c = 0; c < p.cols; ++c) mean += xr[c];
    mean /= float(p.cols);
    float var = 0.f;
    for (int64_t c = 0; c < p.cols; ++c) var += (xr[c] - mean) * (xr[c] - mean);
    var /= float(p.cols);
    const float inv = 1.f / std::sqrt(var + p.eps);
    for (int64_t c = 0; c < p.cols; ++c) {
      float v = (xr[c] - mean) * inv;
      if (w) v *= w[c];
      if (b) v += b[c];
      yr[c] = v;
    }
  }
}

void rms_norm_cpu(const RowNormParams& p) {
  const float* x = static_cast<const float*>(p.x);
  const float* w = static_cast<const float*>(p.weight);
  float* y = static_cast<float*>(p.y);
  for (int64_t r = 0; r < p.rows; ++r) {
    const float* xr = x + r * p.cols;
    float* yr = y + r * p.cols;
    float ss = 0.f;
    for (int64_t c = 0; c < p.cols; ++c) ss += xr[c] * xr[c];
    const float inv = 1.f / std::sqrt(ss / float(p.cols) + p.eps);
    for (int64_t c = 0; c < p.cols; ++c) yr[c] = w[c] * (xr[c] * inv);
  }
}

void group_norm_cpu(const GroupNormParams& p) {
  const float* x = static_cast<const float*>(p.x);
  const float* w = static_cast<const float*>(p.weight);
  const float* b = static_cast<const float*>(p.bias);
  float* y = static_cast<float*>(p.y);
  const int64_t cpg = p.channels / p.groups;
  const int64_t group_elems = cpg * p.spatial;
  for (int64_t n = 0; n < p.n; ++n)
    for (int g = 0; g < p.groups; ++g) {
      const int64_t base = (n * p.channels + g * cpg) * p.spatial;
      double mean = 0;
      for (int64_t i = 0; i < group_elems; ++i) mean += x[base + i];
      mean /= double(group_elems);
      double var = 0;
      for (int64_t i = 0; i < group_elems; ++i) var += (x[base + i] - mean) * (x[base + i] - mean);
      var /= double(group_elems);
      const float inv = float(1.0 / std::sqrt(var + p.eps));
      for (int64_t c = 0; c < cpg; ++c) {
        const int64_t ch = g * cpg + c;
        for (int64_t s = 0; s < p.spatial; ++s) {
          const int64_t i = base + c * p.spatial + s;
          float v = float(x[i] - mean) * inv;
          if (w) v *= w[ch];
          if (b) v += b[ch];
          y[i] = v;
        }
      }
    }
}

}  // namespace mmattn
