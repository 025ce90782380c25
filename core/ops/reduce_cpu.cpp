// CPU reference of the row reductions (any float dtype, f32 accumulation).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

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

namespace mmattn {

void column_sum_cpu(const ColumnSumParams& p) {
  for (int64_t c = 0; c < p.cols; ++c) {
    float acc = 0.f;
    for (int64_t r = 0; r < p.rows; ++r) acc += p.x[r * p.cols + c];
    p.y[c] = acc / p.divisor;
  }
}

void top_k_indices_cpu(const TopKParams& p) {
  // NaN below every number, then largest_k's order (a stable sort by descending score)
  std::vector<float> s(p.scores, p.scores + p.n);
  for (float& v : s)
    if (std::isnan(v)) v = -INFINITY;
  std::vector<int64_t> idx(size_t(p.n));
  std::iota(idx.begin(), idx.end(), int64_t(0));
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) {
    const bool na = std::isnan(p.scores[a]), nb = std::isnan(p.scores[b]);
    if (na != nb) return nb;  // a number before a NaN
    return s[size_t(a)] > s[size_t(b)];
  });
  idx.resize(size_t(p.k));
  std::sort(idx.begin(), idx.end());
  std::copy(idx.begin(), idx.end(), p.out);
}

void sort_ascending_cpu(const SortParams& p) {
  std::copy(p.v, p.v + p.n, p.out);
  std::sort(p.out, p.out + p.n);
}

}  // namespace mmattn
