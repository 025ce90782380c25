// CPU softmax against values computed independently (Python math, f64), and bad input.
#include "core/ops/softmax.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

namespace {
void expect_values(const Tensor& y, const std::vector<double>& want, double tol = 1e-6) {
  const auto v = y.to_floats();
  ASSERT_EQ(v.size(), want.size());
  for (size_t i = 0; i < v.size(); ++i) EXPECT_NEAR(v[i], want[i], tol) << "at " << i;
}
}  // namespace

TEST(Softmax, ByHand) {
  Tensor x = Tensor::from_floats({1, 2, 3, 0, 0, 0}, {2, 3});
  expect_values(softmax(x), {0.09003057317038046, 0.24472847105479764, 0.6652409557748218, 1 / 3.0, 1 / 3.0, 1 / 3.0});
  expect_values(log_softmax(x), {-2.40760596444438, -1.4076059644443804, -0.40760596444438046, -std::log(3.0),
                                 -std::log(3.0), -std::log(3.0)});
  // scale multiplies the logits first: softmax([0.5, 1, 1.5])
  expect_values(softmax(x, -1, 0.5f),
                {0.1863237232258476, 0.3071958857184984, 0.506480391055654, 1 / 3.0, 1 / 3.0, 1 / 3.0});
}

TEST(Softmax, LargeLogitsAreStable) {
  Tensor x = Tensor::from_floats({1001, 1002, 1003, -1e30f, 0, -1e30f}, {2, 3});
  expect_values(softmax(x), {0.09003057317038046, 0.24472847105479764, 0.6652409557748218, 0, 1, 0});
  Tensor m = Tensor::from_floats({-INFINITY, 0, -INFINITY}, {1, 3});  // masked entries
  expect_values(softmax(m), {0, 1, 0});
}

TEST(Softmax, SingleColumnIsOne) {
  expect_values(softmax(rand_tensor({4, 1}, 1, -50.f, 50.f)), {1, 1, 1, 1});
  expect_values(log_softmax(rand_tensor({2, 1}, 2)), {0, 0});
}

TEST(Softmax, OtherDims) {
  Tensor x = rand_tensor({3, 4, 5}, 3, -3.f, 3.f);
  // dim 0 equals the last-dim softmax of the permuted tensor, permuted back
  Tensor ref = softmax(x.permute({1, 2, 0}).contiguous()).permute({2, 0, 1});
  EXPECT_LT(rel_err(softmax(x, 0), ref), 1e-7);
  EXPECT_EQ(softmax(x, 0).shape(), x.shape());
  EXPECT_EQ(rel_err(softmax(x, 2), softmax(x, -1)), 0);
  // rows sum to one along the chosen dim
  const auto v = softmax(x, 1).to_floats();
  for (int a = 0; a < 3; ++a)
    for (int c = 0; c < 5; ++c) {
      double s = 0;
      for (int b = 0; b < 4; ++b) s += v[(a * 4 + b) * 5 + c];
      EXPECT_NEAR(s, 1.0, 1e-6);
    }
  Tensor xt = x.transpose(1, 2);  // strided input
  EXPECT_LT(rel_err(softmax(xt), softmax(xt.contiguous())), 1e-7);
}

TEST(Softmax, BadInput) {
  EXPECT_THROW(softmax(Tensor::zeros({2, 3}, DType::I32)), ShapeError);
  EXPECT_THROW(softmax(rand_tensor({2, 3}, 1).to(DType::F16)), ShapeError);  // CPU is f32-only
  EXPECT_THROW(softmax(rand_tensor({2, 3}, 1), 2), ShapeError);
  EXPECT_THROW(softmax(rand_tensor({2, 3}, 1), -3), ShapeError);
  EXPECT_THROW(softmax(Tensor()), ShapeError);
  try {
    softmax(Tensor::zeros({2}, DType::I64));
    FAIL();
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("'x'"), std::string::npos) << e.what();
  }
}
