// CUDA nearest upsampling against the CPU gather (exact), scale factors and explicit sizes.
#include "core/ops/upsample.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

class UpsampleCuda : public ::testing::TestWithParam<DType> {};

TEST_P(UpsampleCuda, MatchesCpu) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  uint64_t seed = 1;
  for (const Shape& s : std::vector<Shape>{{1, 1, 1, 1}, {1, 3, 17, 5}, {2, 4, 33, 31}, {1, 17, 64, 64}}) {
    Tensor x = rand_tensor(s, seed++, 0.f, 200.f).to(dt);  // U8 keeps 0..200
    Tensor gx = x.to(Device::cuda());
    for (int sf : {1, 2, 3}) {
      Tensor y = upsample_nearest2d(gx, sf);
      ASSERT_TRUE(y.is_cuda());
      EXPECT_EQ(y.dtype(), dt);
      EXPECT_EQ(max_abs_diff(y, upsample_nearest2d(x, sf)), 0) << shape_str(s) << " x" << sf;
    }
    for (auto [h, w] : std::vector<std::pair<int64_t, int64_t>>{{7, 3}, {1, 1}, {40, 17}, {2 * s[2], 2 * s[3]}, {5, 1000}})
      EXPECT_EQ(max_abs_diff(upsample_nearest2d(gx, h, w), upsample_nearest2d(x, h, w)), 0)
          << shape_str(s) << " -> " << h << "x" << w;
  }
  Tensor x = rand_tensor({2, 3, 5, 7}, 50).to(dt);  // strided input
  EXPECT_EQ(max_abs_diff(upsample_nearest2d(x.to(Device::cuda()).transpose(2, 3), 2),
                         upsample_nearest2d(x.transpose(2, 3), 2)),
            0);
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, UpsampleCuda, ::testing::Values(DType::F32, DType::F16, DType::BF16, DType::U8),
                         [](const auto& i) { return std::string(dtype_name(i.param)); });
