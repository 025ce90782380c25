// vector_norm, argmax and the selections (column_sum, top_k_indices, sort_ascending) on the CPU:
// hand-computed values, leading dims, empty rows, ties, NaN, errors.
#include <algorithm>
#include <cmath>
#include <limits>

#include "core/ops/reduce.h"
#include "pipelines/ranking.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

TEST(VectorNorm, HandValues) {
  Tensor x = Tensor::from_vector<float>({3, -4, 0, 1, -1, 2}, {2, 3});
  EXPECT_EQ(vector_norm(x, 2).to_floats(), (std::vector<float>{5.f, std::sqrt(6.f)}));
  EXPECT_EQ(vector_norm(x, 1).to_floats(), (std::vector<float>{7.f, 4.f}));
  Tensor y = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6, 7, 8}, {2, 2, 2});
  EXPECT_EQ(vector_norm(y, 1).shape(), (Shape{2, 2}));
  EXPECT_EQ(vector_norm(y, 1).to_floats(), (std::vector<float>{3, 7, 11, 15}));
  EXPECT_EQ(vector_norm(Tensor::zeros({2, 0}, DType::F32), 2).to_floats(), (std::vector<float>{0, 0}));
  EXPECT_EQ(vector_norm(x.to(DType::BF16), 1).to_floats(), (std::vector<float>{7.f, 4.f}));
  EXPECT_THROW(vector_norm(x, 3), UnsupportedError);
}

TEST(Argmax, HandValuesTiesAndNaN) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const Tensor x = Tensor::from_vector<float>({1, 3, 3, -1,                // first of a tie
                                               nan, -inf, -5, nan,         // NaN below every number
                                               nan, nan, nan, nan,         // all NaN: 0
                                               -0.f, 0.f, -1, -2},         // -0 equals +0: the first
                                              {2, 2, 4});
  const Tensor y = argmax(x);
  EXPECT_EQ(y.dtype(), DType::I64);
  EXPECT_EQ(y.shape(), (Shape{2, 2}));
  EXPECT_EQ(std::vector<int64_t>(y.data<int64_t>(), y.data<int64_t>() + 4), (std::vector<int64_t>{1, 2, 0, 0}));
  EXPECT_EQ(argmax(Tensor::from_vector<float>({-inf, -inf}, {2})).data<int64_t>()[0], 0);
  EXPECT_EQ(argmax(x.to(DType::BF16)).data<int64_t>()[1], 2);
  EXPECT_THROW(argmax(Tensor::zeros({3, 0}, DType::F32)), ShapeError);
  EXPECT_THROW(argmax(Tensor::zeros({3}, DType::I64)), ShapeError);
}

TEST(Selection, ColumnMeanTopKAndSortByHand) {
  // column_sum: row-order sums, one division
  const Tensor x = Tensor::from_vector<float>({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}, {2, 3});
  EXPECT_EQ(column_sum(x).to_floats(), (std::vector<float>{5.f, 7.f, 9.f}));
  EXPECT_EQ(column_sum(x, 2.f).to_floats(), (std::vector<float>{2.5f, 3.5f, 4.5f}));
  // (1e8 + 1) - 1e8 in row order is 0 in f32 (1 is lost), not the 1 of another order
  EXPECT_EQ(column_sum(Tensor::from_vector<float>({1e8f, 1.f, -1e8f}, {3, 1})).to_floats(), (std::vector<float>{0.f}));
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  // top_k_indices: ascending indices; ties go to the lower index; NaN below -inf; -0 equals +0
  const Tensor s = Tensor::from_vector<float>({0.5f, nan, 2.f, 0.5f, -inf, 2.f, -0.f, 0.f}, {8});
  auto ids = [](const Tensor& t) { return host_values<int64_t>(t); };
  EXPECT_EQ(ids(top_k_indices(s, 1)), (std::vector<int64_t>{2}));
  EXPECT_EQ(ids(top_k_indices(s, 3)), (std::vector<int64_t>{0, 2, 5}));
  EXPECT_EQ(ids(top_k_indices(s, 5)), (std::vector<int64_t>{0, 2, 3, 5, 6}));
  EXPECT_EQ(ids(top_k_indices(s, 7)), (std::vector<int64_t>{0, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(ids(top_k_indices(s, 99)).size(), 8u);
  EXPECT_EQ(ids(top_k_indices(s, 0)).size(), 0u);
  // the order of largest_k (pipelines' host ranking) on numbers
  const std::vector<float> r = {0.1f, 0.7f, 0.7f, 0.3f, 0.9f, 0.1f};
  std::vector<int64_t> want = largest_k(r, 4);
  std::sort(want.begin(), want.end());
  EXPECT_EQ(ids(top_k_indices(Tensor::from_vector<float>(r, {6}), 4)), want);
  EXPECT_EQ(ids(sort_ascending(Tensor::from_vector<int64_t>({5, -1, 3, 3, 0}, {5}))),
            (std::vector<int64_t>{-1, 0, 3, 3, 5}));
  EXPECT_THROW(top_k_indices(s, -1), ShapeError);
  EXPECT_THROW(top_k_indices(s.to(DType::BF16), 2), ShapeError);
  EXPECT_THROW(column_sum(Tensor::empty({0, 3}, DType::F32)), ShapeError);
  EXPECT_THROW(sort_ascending(s), ShapeError);
}
