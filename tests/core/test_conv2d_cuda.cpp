// CUDA conv2d (cuDNN and the direct kernel) against the CPU reference, every float dtype.
// Inputs are rounded to the GPU dtype first. Tolerances (norm-wise relative error):
//   f32: 5e-5 - cuDNN may pick Winograd/FFT algorithms, whose f32 error is above plain summation
//        (the direct kernel itself is within 1e-5);
//   f16/bf16: tol_for(dt) (2e-3 / 1e-2); with cuDNN the bias is added after the output rounding,
//        a second rounding of the same size.
#include <array>

#include "core/ops/conv2d.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

namespace {
struct ConvCase {
  int64_t n, c, h, w, o, kh, kw;
  int sh, sw, ph, pw, dh, dw, groups;
};
const std::vector<ConvCase> kCases = {
    {1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1},
    {2, 3, 17, 13, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1},
    {1, 3, 17, 19, 7, 3, 5, 2, 3, 2, 1, 1, 1, 1},
    {2, 4, 11, 10, 6, 3, 3, 1, 2, 2, 3, 2, 3, 2},    // dilation + groups
    {1, 6, 9, 9, 6, 3, 3, 1, 1, 1, 1, 1, 1, 6},      // depthwise
    {1, 64, 33, 31, 17, 1, 1, 1, 1, 0, 0, 1, 1, 1},  // pointwise
    {1, 3, 42, 42, 64, 14, 14, 14, 14, 0, 0, 1, 1, 1},  // patch embedding
    {1, 16, 64, 64, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1},  // 16-multiple channels (tensor-core friendly)
    {1, 64, 24, 24, 128, 3, 3, 1, 1, 1, 1, 1, 1, 1},
    {1, 5, 17, 3, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1},
};
double conv_tol(DType dt) { return dt == DType::F32 ? 5e-5 : tol_for(dt); }
}  // namespace

class Conv2dCuda : public ::testing::TestWithParam<DType> {};

TEST_P(Conv2dCuda, MatchesCpuBothBackends) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  uint64_t seed = 1;
  for (bool force_direct : {false, true}) {
    conv2d_force_direct(force_direct);
    for (const auto& k : kCases) {
      Tensor x = round_to(rand_tensor({k.n, k.c, k.h, k.w}, seed++), dt);
      Tensor w = round_to(rand_tensor({k.o, k.c / k.groups, k.kh, k.kw}, seed++, -0.3f, 0.3f), dt);
      Tensor b = round_to(rand_tensor({k.o}, seed++), dt);
      const std::array<int, 2> st{k.sh, k.sw}, pad{k.ph, k.pw}, dil{k.dh, k.dw};
      Tensor want = conv2d(x, w, b, st, pad, dil, k.groups);
      Tensor gx = x.to(Device::cuda(), dt), gw = w.to(Device::cuda(), dt), gb = b.to(Device::cuda(), dt);
      Tensor y = conv2d(gx, gw, gb, st, pad, dil, k.groups);
      const std::string backend = conv2d_cuda_backend();
      EXPECT_EQ(y.dtype(), dt);
      EXPECT_LT(rel_err(y, want), force_direct ? tol_for(dt) : conv_tol(dt))
          << "c=" << k.c << " h=" << k.h << " w=" << k.w << " o=" << k.o << " k=" << k.kh << "x" << k.kw
          << " groups=" << k.groups << " backend=" << backend;
      if (force_direct) EXPECT_EQ(backend, "direct");
      Tensor y0 = conv2d(gx, gw, Tensor(), st, pad, dil, k.groups);
      EXPECT_LT(rel_err(y0, conv2d(x, w, Tensor(), st, pad, dil, k.groups)), conv_tol(dt)) << "no bias";
      std::printf("[conv2d %s] n=%ld c=%ld %ldx%ld o=%ld k=%ldx%ld g=%d -> %s\n", std::string(dtype_name(dt)).c_str(),
                  long(k.n), long(k.c), long(k.h), long(k.w), long(k.o), long(k.kh), long(k.kw), k.groups,
                  backend.c_str());
    }
  }
  conv2d_force_direct(false);
}

TEST(Conv2dCudaBackend, CudnnIsUsedWhenBuilt) {
  MMATTN_REQUIRE_GPU();
  if (!conv2d_has_cudnn()) GTEST_SKIP() << "built without cuDNN";
  // A plain f16 3x3 conv must go through cuDNN in a cuDNN build.
  Tensor x = rand_tensor({1, 16, 32, 32}, 1).to(Device::cuda(), DType::F16);
  Tensor w = rand_tensor({32, 16, 3, 3}, 2).to(Device::cuda(), DType::F16);
  conv2d(x, w, Tensor(), {1, 1}, {1, 1});
  EXPECT_STREQ(conv2d_cuda_backend(), "cudnn");
}

TEST(Conv2dCudaBackend, StridedInputAndRepeats) {
  MMATTN_REQUIRE_GPU();
  Tensor x = rand_tensor({1, 9, 10, 3}, 1);
  Tensor w = rand_tensor({4, 3, 3, 3}, 2);
  Tensor b = rand_tensor({4}, 3);
  Tensor xs = x.permute({0, 3, 1, 2});  // [1, 3, 9, 10] non-contiguous
  Tensor want = conv2d(xs, w, b, {1, 1}, {1, 1});
  Tensor gxs = x.to(Device::cuda()).permute({0, 3, 1, 2});
  for (int rep = 0; rep < 3; ++rep)
    EXPECT_LT(rel_err(conv2d(gxs, w.to(Device::cuda()), b.to(Device::cuda()), {1, 1}, {1, 1}), want), 5e-5);
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, Conv2dCuda, ::testing::Values(DType::F32, DType::F16, DType::BF16),
                         [](const auto& i) { return std::string(dtype_name(i.param)); });
