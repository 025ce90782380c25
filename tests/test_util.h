#pragma once
// Shared test helpers: seeded random tensors, error norms, GPU skipping.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace mmattn::test {

inline std::string source_dir() { return MMATTN_SOURCE_DIR; }
inline std::string golden_dir() { return source_dir() + "/tests/golden"; }

// Uniform in [lo, hi), as an F32 CPU tensor. Never zeros: zeros hide unwritten outputs.
inline Tensor rand_tensor(const Shape& shape, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(size_t(shape_numel(shape)));
  for (auto& x : v) x = d(rng);
  return Tensor::from_floats(v, shape);
}

// ||a - b|| / ||b|| over all elements (both converted to f32 on the CPU). NaN anywhere -> inf.
inline double rel_err(const Tensor& a, const Tensor& b) {
  const auto x = a.to_floats();
  const auto y = b.to_floats();
  EXPECT_EQ(x.size(), y.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
    if (!std::isfinite(x[i]) || !std::isfinite(y[i])) return INFINITY;
    num += double(x[i] - y[i]) * (x[i] - y[i]);
    den += double(y[i]) * y[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1));
}
// ||got - want|| / ||want|| against a float64 reference computed by the test itself.
inline double rel_err_vs(const Tensor& got, const std::vector<double>& want) {
  const auto g = got.to_floats();
  EXPECT_EQ(g.size(), want.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < g.size() && i < want.size(); ++i) {
    num += (g[i] - want[i]) * (g[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1));
}
inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  const auto x = a.to_floats();
  const auto y = b.to_floats();
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) m = std::max(m, double(std::fabs(x[i] - y[i])));
  return m;
}

// Tolerances for GPU results against the f32 CPU reference, by the GPU dtype.
inline double tol_for(DType t) { return t == DType::F32 ? 1e-5 : t == DType::F16 ? 2e-3 : 1e-2; }

// Rounds an f32 CPU tensor through dtype t (so the CPU reference sees the GPU's inputs).
inline Tensor round_to(const Tensor& t, DType dt) { return t.to(dt).to(DType::F32); }

// A tensor's values (any device, any layout) as a host vector of its element type T.
template <class T>
std::vector<T> host_values(const Tensor& t) {
  const Tensor c = t.to(Device::cpu()).contiguous();
  return std::vector<T>(c.data<T>(), c.data<T>() + c.numel());
}

}  // namespace mmattn::test

#define MMATTN_REQUIRE_GPU()                                        \
  do {                                                              \
    if (!::mmattn::cuda_available()) GTEST_SKIP() << "no CUDA device"; \
  } while (0)
