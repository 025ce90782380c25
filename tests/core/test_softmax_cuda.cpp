// CUDA softmax against the CPU reference: warp-per-row and block-per-row paths, awkward sizes,
// every float dtype.
#include "core/ops/softmax.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

class SoftmaxCuda : public ::testing::TestWithParam<DType> {};

TEST_P(SoftmaxCuda, MatchesCpu) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  uint64_t seed = 1;
  std::vector<std::pair<int64_t, int64_t>> cases;
  for (int64_t rows : {1, 3, 17, 1000})
    for (int64_t cols : {1, 3, 17, 33, 1000, 1024, 1025, 4097}) cases.push_back({rows, cols});
  for (int64_t rows : {1, 3, 17}) cases.push_back({rows, 100000});
  for (auto [rows, cols] : cases) {
    Tensor x = round_to(rand_tensor({rows, cols}, seed++, -8.f, 8.f), dt);
    Tensor gx = x.to(Device::cuda(), dt);
    Tensor y = softmax(gx);
    EXPECT_EQ(y.dtype(), dt);
    EXPECT_LT(rel_err(y, softmax(x)), tol_for(dt)) << rows << "x" << cols;
    EXPECT_LT(rel_err(softmax(gx, -1, 0.125f), softmax(x, -1, 0.125f)), tol_for(dt)) << rows << "x" << cols;
    EXPECT_LT(rel_err(log_softmax(gx, -1, 2.f), log_softmax(x, -1, 2.f)), tol_for(dt)) << rows << "x" << cols;
  }
}

TEST_P(SoftmaxCuda, MaskedLargeAndOtherDims) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  // -inf entries (masks) and large offsets, in both kernels
  for (int64_t cols : {5, 3000}) {
    Tensor x = rand_tensor({4, cols}, 7, 100.f, 110.f);
    for (int64_t c = 0; c < cols; c += 2) x.select(0, 1).select(0, c).fill_(-INFINITY);
    x.select(0, 2).select(0, 0).fill_(1e4f);  // one dominant logit
    x = round_to(x, dt);
    Tensor y = softmax(x.to(Device::cuda(), dt));
    EXPECT_LT(rel_err(y, softmax(x)), tol_for(dt)) << cols;
  }
  Tensor x = round_to(rand_tensor({5, 6, 7}, 8, -3.f, 3.f), dt);
  EXPECT_LT(rel_err(softmax(x.to(Device::cuda(), dt), 1), softmax(x, 1)), tol_for(dt));
  EXPECT_LT(rel_err(softmax(x.to(Device::cuda(), dt).transpose(0, 2)), softmax(x.transpose(0, 2))), tol_for(dt));
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, SoftmaxCuda, ::testing::Values(DType::F32, DType::F16, DType::BF16),
                         [](const auto& i) { return std::string(dtype_name(i.param)); });
