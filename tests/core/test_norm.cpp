// CPU norm references against values worked out by hand, and bad input.
#include "core/ops/norm.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

TEST(Norm, LayerNormByHand) {
  // row [1, 2, 3, 4]: mean 2.5, var 1.25
  Tensor x = Tensor::from_floats({1, 2, 3, 4}, {1, 4});
  Tensor w = Tensor::from_floats({1, 2, 1, 1}, {4});
  Tensor b = Tensor::from_floats({0, 0, 0, 1}, {4});
  auto y = layer_norm(x, w, b, 0.f).to_floats();
  const float s = 1.f / std::sqrt(1.25f);
  EXPECT_NEAR(y[0], -1.5f * s, 1e-6);
  EXPECT_NEAR(y[1], 2 * -0.5f * s, 1e-6);
  EXPECT_NEAR(y[2], 0.5f * s, 1e-6);
  EXPECT_NEAR(y[3], 1.5f * s + 1, 1e-6);
}

TEST(Norm, RmsNormByHand) {
  // row [3, 4]: mean square 12.5
  Tensor x = Tensor::from_floats({3, 4, -1, 1}, {2, 2});
  Tensor w = Tensor::from_floats({1, 0.5f}, {2});
  auto y = rms_norm(x, w, 0.f).to_floats();
  EXPECT_NEAR(y[0], 3 / std::sqrt(12.5f), 1e-6);
  EXPECT_NEAR(y[1], 0.5f * 4 / std::sqrt(12.5f), 1e-6);
  EXPECT_NEAR(y[2], -1.f, 1e-6);
  EXPECT_NEAR(y[3], 0.5f, 1e-6);
}

TEST(Norm, GroupNormByHand) {
  // one sample, 4 channels, 2 groups, spatial 1: groups {1, 3} and {2, 6}
  Tensor x = Tensor::from_floats({1, 3, 2, 6}, {1, 4, 1});
  auto y = group_norm(x, 2, Tensor(), Tensor(), 0.f).to_floats();
  EXPECT_NEAR(y[0], -1.f, 1e-6);
  EXPECT_NEAR(y[1], 1.f, 1e-6);
  EXPECT_NEAR(y[2], -1.f, 1e-6);
  EXPECT_NEAR(y[3], 1.f, 1e-6);
}

TEST(Norm, StridedInputIsHandled) {
  Tensor x = rand_tensor({5, 8}, 3);
  Tensor w = rand_tensor({5}, 4);
  Tensor xt = x.transpose(0, 1);  // [8, 5], non-contiguous
  EXPECT_LT(rel_err(rms_norm(xt, w, 1e-6f), rms_norm(xt.contiguous(), w, 1e-6f)), 1e-7);
}

TEST(Norm, BadInputNamesTheArgument) {
  Tensor x = rand_tensor({2, 4}, 1);
  try {
    rms_norm(x, rand_tensor({3}, 2), 1e-6f);
    FAIL();
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("'weight'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[4]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(group_norm(rand_tensor({1, 6, 2}, 1), 4, Tensor(), Tensor(), 1e-5f), ShapeError);
  EXPECT_THROW(layer_norm(x.to(DType::BF16), Tensor(), Tensor(), 1e-5f), ShapeError);  // CPU is f32-only
  EXPECT_THROW(rms_norm(Tensor::zeros({2, 4}, DType::I32), rand_tensor({4}, 1), 1e-6f), ShapeError);
}
