// CUDA concat against the CPU one (exact), every dim, strided inputs.
#include "core/ops/concat.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

class ConcatCuda : public ::testing::TestWithParam<DType> {};

TEST_P(ConcatCuda, MatchesCpu) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  uint64_t seed = 1;
  for (int dim : {0, 1, 2, -1}) {
    std::vector<Tensor> cpu, gpu;
    for (int64_t n : {1, 3, 17, 0, 1000}) {
      Shape s = {2, 5, 7};
      s[dim < 0 ? 2 : dim] = n;
      Tensor x = rand_tensor(s, seed++).to(dt);
      cpu.push_back(x);
      gpu.push_back(x.to(Device::cuda()));
    }
    Tensor y = concat(gpu, dim);
    ASSERT_TRUE(y.is_cuda());
    EXPECT_EQ(y.shape(), concat(cpu, dim).shape());
    EXPECT_EQ(max_abs_diff(y, concat(cpu, dim)), 0) << dim;
    // split back into the same pieces
    auto parts = split_with_sizes(y, {1, 3, 17, 0, 1000}, dim);
    for (size_t i = 0; i < parts.size(); ++i) EXPECT_EQ(max_abs_diff(parts[i], cpu[i]), 0);
  }
  Tensor a = rand_tensor({6, 4}, 99).to(dt);
  Tensor b = rand_tensor({4, 3}, 98).to(dt);
  EXPECT_EQ(max_abs_diff(concat({a.to(Device::cuda()), b.to(Device::cuda()).transpose(0, 1)}, 0),
                         concat({a, b.transpose(0, 1)}, 0)),
            0);
  EXPECT_THROW(concat({a.to(Device::cuda()), a}, 0), ShapeError);  // mixed devices
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, ConcatCuda, ::testing::Values(DType::F32, DType::F16, DType::BF16),
                         [](const auto& i) { return std::string(dtype_name(i.param)); });
