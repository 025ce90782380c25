// vector_norm and argmax on the CPU: hand-computed values, leading dims, empty rows, ties, NaN, errors.
#include <cmath>
#include <limits>

#include "core/ops/reduce.h"
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
