// CPU nearest upsampling by hand (PyTorch's mode="nearest" index rule), and bad input.
#include "core/ops/upsample.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

TEST(Upsample, ScaleFactorTwo) {
  Tensor x = Tensor::from_floats({1, 2, 3, 4, 5, 6}, {1, 1, 2, 3});
  Tensor y = upsample_nearest2d(x, 2);
  EXPECT_EQ(y.shape(), (Shape{1, 1, 4, 6}));
  EXPECT_EQ(y.to_floats(), (std::vector<float>{1, 1, 2, 2, 3, 3,  //
                                               1, 1, 2, 2, 3, 3,  //
                                               4, 4, 5, 5, 6, 6,  //
                                               4, 4, 5, 5, 6, 6}));
  EXPECT_EQ(rel_err(upsample_nearest2d(x, 1), x), 0);
}

TEST(Upsample, ScaleFactorThreeManyPlanes) {
  Tensor x = rand_tensor({2, 3, 4, 5}, 1);
  Tensor y = upsample_nearest2d(x, 3);
  ASSERT_EQ(y.shape(), (Shape{2, 3, 12, 15}));
  const auto xv = x.to_floats(), yv = y.to_floats();
  for (int p = 0; p < 6; ++p)
    for (int i = 0; i < 12; ++i)
      for (int j = 0; j < 15; ++j) ASSERT_EQ(yv[(p * 12 + i) * 15 + j], xv[(p * 4 + i / 3) * 5 + j / 3]);
}

TEST(Upsample, ExplicitSizes) {
  // F.interpolate(torch.arange(5.).view(1, 1, 1, 5), size=(1, 3), mode="nearest") == [0, 1, 3]
  Tensor x = Tensor::from_floats({0, 1, 2, 3, 4}, {1, 1, 1, 5});
  EXPECT_EQ(upsample_nearest2d(x, 1, 3).to_floats(), (std::vector<float>{0, 1, 3}));
  // 3 -> 5: src = floor(dst * 0.6) = 0, 0, 1, 1, 2
  Tensor x3 = Tensor::from_floats({7, 8, 9}, {1, 1, 3, 1});
  EXPECT_EQ(upsample_nearest2d(x3, 5, 2).to_floats(), (std::vector<float>{7, 7, 7, 7, 8, 8, 8, 8, 9, 9}));
  // 3 -> 7: scale 3/7, src = 0, 0, 0, 1, 1, 2, 2
  EXPECT_EQ(upsample_nearest2d(x3, 7, 1).to_floats(), (std::vector<float>{7, 7, 7, 8, 8, 9, 9}));
}

TEST(Upsample, StridedAndOtherDtypes) {
  Tensor x = rand_tensor({1, 4, 3, 2}, 2).permute({0, 1, 3, 2});  // [1, 4, 2, 3], non-contiguous
  EXPECT_EQ(rel_err(upsample_nearest2d(x, 2), upsample_nearest2d(x.contiguous(), 2)), 0);
  Tensor xb = x.to(DType::BF16);
  EXPECT_EQ(upsample_nearest2d(xb, 3, 5).dtype(), DType::BF16);
  EXPECT_EQ(rel_err(upsample_nearest2d(xb, 3, 5), upsample_nearest2d(xb.to(DType::F32), 3, 5)), 0);
  Tensor m = Tensor::from_vector<uint8_t>({1, 0, 0, 1}, {1, 1, 2, 2});
  EXPECT_EQ(upsample_nearest2d(m, 2).to_floats(),
            (std::vector<float>{1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1}));
}

TEST(Upsample, BadInput) {
  EXPECT_THROW(upsample_nearest2d(rand_tensor({1, 2, 3}, 1), 2), ShapeError);
  EXPECT_THROW(upsample_nearest2d(rand_tensor({1, 1, 2, 2}, 1), 0), ShapeError);
  EXPECT_THROW(upsample_nearest2d(rand_tensor({1, 1, 2, 2}, 1), 0, 3), ShapeError);
  EXPECT_THROW(upsample_nearest2d(Tensor(), 2), ShapeError);
  try {
    upsample_nearest2d(rand_tensor({4, 4}, 1), 2);
    FAIL();
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("'x'"), std::string::npos) << e.what();
  }
}
