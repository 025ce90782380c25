// CUDA norms against the CPU reference on awkward sizes, every float dtype.
#include "core/ops/norm.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

class NormCuda : public ::testing::TestWithParam<DType> {};

TEST_P(NormCuda, RowNormsMatchCpu) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  uint64_t seed = 1;
  for (int64_t rows : {1, 3, 17, 1000})
    for (int64_t cols : {1, 3, 17, 64, 1000, 4096, 13000}) {
      Tensor x = round_to(rand_tensor({rows, cols}, seed++, -2.f, 3.f), dt);
      Tensor w = round_to(rand_tensor({cols}, seed++), dt);
      Tensor b = round_to(rand_tensor({cols}, seed++), dt);
      Tensor gx = x.to(Device::cuda(), dt), gw = w.to(Device::cuda(), dt), gb = b.to(Device::cuda(), dt);
      EXPECT_LT(rel_err(layer_norm(gx, gw, gb, 1e-5f), layer_norm(x, w, b, 1e-5f)), tol_for(dt))
          << rows << "x" << cols;
      EXPECT_LT(rel_err(layer_norm(gx, Tensor(), Tensor(), 1e-6f), layer_norm(x, Tensor(), Tensor(), 1e-6f)),
                tol_for(dt));
      EXPECT_LT(rel_err(rms_norm(gx, gw, 1e-6f), rms_norm(x, w, 1e-6f)), tol_for(dt)) << rows << "x" << cols;
    }
}

TEST_P(NormCuda, GroupNormMatchesCpu) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  uint64_t seed = 100;
  for (auto [n, c, h, w, g] : std::vector<std::array<int64_t, 5>>{{1, 4, 3, 5, 2}, {2, 32, 17, 9, 32}, {1, 64, 33, 31, 8}}) {
    Tensor x = round_to(rand_tensor({n, c, h, w}, seed++), dt);
    Tensor wt = round_to(rand_tensor({c}, seed++), dt);
    Tensor b = round_to(rand_tensor({c}, seed++), dt);
    Tensor y = group_norm(x.to(Device::cuda(), dt), int(g), wt.to(Device::cuda(), dt), b.to(Device::cuda(), dt), 1e-6f);
    EXPECT_LT(rel_err(y, group_norm(x, int(g), wt, b, 1e-6f)), tol_for(dt));
  }
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, NormCuda, ::testing::Values(DType::F32, DType::F16, DType::BF16),
                         [](const auto& i) { return std::string(dtype_name(i.param)); });
