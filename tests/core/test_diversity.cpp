// greedy_max_min (DivPrune's selection) on the CPU: a hand-worked example, the tie rule, a brute
// force check of the max-min invariant, k edge cases and errors.
#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/ops/diversity.h"
#include "core/ops/linear.h"
#include "core/ops/reduce.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

namespace {
std::vector<int64_t> select(const std::vector<float>& rows, int64_t n, int64_t d, int64_t k) {
  const Tensor x = Tensor::from_vector(rows, {n, d});
  return greedy_max_min(matmul(x, x, true), vector_norm(x, 2), k);
}
}  // namespace

// Four unit vectors in the plane at 0, 10, 90 and 180 degrees. Nearest-neighbour distances
// (1 - cos): 0 deg -> 1 - cos 10, 10 deg -> same, 90 deg -> 1 - cos 80, 180 deg -> 1 - cos 170
// (to 10 deg). First pick: 180 deg (index 3). Then the farthest from {180}: 0 deg (distance 2;
// 10 deg has 1 + cos 10 < 2). Then from {180, 0}: 90 deg (1), not 10 deg (1 - cos 10).
TEST(GreedyMaxMin, HandWorked) {
  auto v = [](double deg) { return std::vector<float>{float(std::cos(deg * std::numbers::pi / 180)), float(std::sin(deg * std::numbers::pi / 180))}; };
  std::vector<float> rows;
  for (double a : {0.0, 10.0, 90.0, 180.0})
    for (float c : v(a)) rows.push_back(c);
  EXPECT_EQ(select(rows, 4, 2, 4), (std::vector<int64_t>{3, 0, 2, 1}));
  EXPECT_EQ(select(rows, 4, 2, 2), (std::vector<int64_t>{3, 0}));
  EXPECT_EQ(select(rows, 4, 2, 9), (std::vector<int64_t>{3, 0, 2, 1}));  // k clamped to n
  EXPECT_TRUE(select(rows, 4, 2, 0).empty());
}

// Equal distances go to the lower index (the first pick and every later one).
TEST(GreedyMaxMin, TiesGoToTheLowerIndex) {
  // four copies of two directions: every item's nearest neighbour is at distance 0
  const std::vector<float> rows = {1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1};
  const std::vector<int64_t> got = select(rows, 8, 2, 3);
  EXPECT_EQ(got, (std::vector<int64_t>{0, 1, 2}));  // 0 first (tie), then 1 (distance 1), then 2 (0 vs 0: lowest)
}

// Each pick maximises the distance to the nearest item picked before it (brute force).
TEST(GreedyMaxMin, EveryPickIsTheFarthest) {
  const int64_t n = 60, d = 5;
  const Tensor x = rand_tensor({n, d}, 7, -1.f, 1.f);
  const std::vector<float> xv = x.to_floats();
  const std::vector<int64_t> got = greedy_max_min(matmul(x, x, true), vector_norm(x, 2), 20);
  ASSERT_EQ(got.size(), 20u);
  auto dist = [&](int64_t i, int64_t j) {
    double dot = 0, ni = 0, nj = 0;
    for (int64_t c = 0; c < d; ++c) {
      dot += xv[size_t(i * d + c)] * xv[size_t(j * d + c)];
      ni += xv[size_t(i * d + c)] * xv[size_t(i * d + c)];
      nj += xv[size_t(j * d + c)] * xv[size_t(j * d + c)];
    }
    return 1 - dot / std::sqrt(ni * nj);
  };
  for (size_t s = 1; s < got.size(); ++s) {
    auto to_sel = [&](int64_t j) {
      double m = 1e30;
      for (size_t t = 0; t < s; ++t) m = std::min(m, dist(got[t], j));
      return m;
    };
    const double chosen = to_sel(got[s]);
    for (int64_t j = 0; j < n; ++j)
      if (std::find(got.begin(), got.begin() + std::ptrdiff_t(s), j) == got.begin() + std::ptrdiff_t(s))
        EXPECT_LE(to_sel(j), chosen + 1e-5) << "pick " << s;
  }
}

TEST(GreedyMaxMin, Errors) {
  const Tensor g = Tensor::zeros({3, 3}, DType::F32), nr = Tensor::full({3}, 1.f, DType::F32);
  EXPECT_THROW(greedy_max_min(g, nr, -1), ShapeError);
  EXPECT_THROW(greedy_max_min(Tensor::zeros({3, 4}, DType::F32), nr, 1), ShapeError);
  EXPECT_THROW(greedy_max_min(g, Tensor::full({2}, 1.f, DType::F32), 1), ShapeError);
  EXPECT_THROW(greedy_max_min(g.to(DType::BF16), nr, 1), ShapeError);
}
