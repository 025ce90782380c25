// CUDA activations against the CPU reference on awkward sizes (vector tails, misaligned views),
// every float dtype.
#include "core/ops/activation.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

class ActivationCuda : public ::testing::TestWithParam<DType> {};

namespace {
const Activation kAll[] = {Activation::Gelu, Activation::GeluTanh, Activation::QuickGelu,
                           Activation::Silu, Activation::Relu,     Activation::Identity};
}

TEST_P(ActivationCuda, UnaryMatchesCpu) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  uint64_t seed = 1;
  for (int64_t n : {1, 3, 17, 1000, 4097, 100003}) {
    Tensor x = round_to(rand_tensor({n}, seed++, -6.f, 6.f), dt);
    Tensor gx = x.to(Device::cuda(), dt);
    for (Activation a : kAll) {
      Tensor y = apply_activation(gx, a);
      ASSERT_TRUE(y.is_cuda());
      EXPECT_EQ(y.dtype(), dt);
      EXPECT_LT(rel_err(y, apply_activation(x, a)), tol_for(dt)) << activation_name(a) << " n=" << n;
      if (n > 1) {  // a view starting one element in: not 16-byte aligned, scalar path
        Tensor ys = apply_activation(gx.slice(0, 1, n), a);
        EXPECT_LT(rel_err(ys, apply_activation(x.slice(0, 1, n), a)), tol_for(dt)) << activation_name(a);
      }
    }
  }
  // multi-dim and strided
  Tensor x = round_to(rand_tensor({17, 33}, 99, -4.f, 4.f), dt);
  Tensor gx = x.to(Device::cuda(), dt).transpose(0, 1);
  EXPECT_LT(rel_err(gelu(gx, GeluApprox::Tanh), gelu(x.transpose(0, 1), GeluApprox::Tanh)), tol_for(dt));
  EXPECT_EQ(gelu(gx).shape(), (Shape{33, 17}));
}

TEST_P(ActivationCuda, GatedMatchesCpu) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  uint64_t seed = 100;
  for (auto [rows, f] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 1}, {3, 17}, {17, 1000}, {5, 4097}, {4, 64}, {1000, 8}, {2, 11008}}) {
    Tensor x = round_to(rand_tensor({rows, 2 * f}, seed++, -5.f, 5.f), dt);
    Tensor gx = x.to(Device::cuda(), dt);
    for (Activation a : kAll) {
      Tensor y = gated_activation_fused(gx, a);
      EXPECT_EQ(y.shape(), (Shape{rows, f}));
      EXPECT_LT(rel_err(y, gated_activation_fused(x, a)), tol_for(dt))
          << activation_name(a) << " " << rows << "x" << f;
    }
    EXPECT_LT(rel_err(swiglu_fused(gx), swiglu_fused(x)), tol_for(dt));
    // separate gate / up tensors (contiguous copies, and strided halves)
    Tensor g = x.slice(1, 0, f), u = x.slice(1, f, 2 * f);
    Tensor gg = gx.slice(1, 0, f), gu = gx.slice(1, f, 2 * f);
    EXPECT_LT(rel_err(swiglu(gg.contiguous(), gu.contiguous()), swiglu(g, u)), tol_for(dt));
    EXPECT_LT(rel_err(swiglu(gg, gu), swiglu(g, u)), tol_for(dt));
    EXPECT_LT(rel_err(gated_activation(gg, gu, Activation::GeluTanh), gated_activation(g, u, Activation::GeluTanh)),
              tol_for(dt));
  }
  // 3-D, odd total size
  Tensor x = round_to(rand_tensor({3, 5, 2 * 7}, 7), dt);
  EXPECT_LT(rel_err(swiglu_fused(x.to(Device::cuda(), dt)), swiglu_fused(x)), tol_for(dt));
}

TEST_P(ActivationCuda, BadInput) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  Tensor g = rand_tensor({2, 4}, 1).to(Device::cuda(), dt);
  EXPECT_THROW(swiglu(g, rand_tensor({2, 4}, 2).to(dt)), ShapeError);  // up on the CPU
  EXPECT_THROW(swiglu(g, rand_tensor({2, 4}, 2).to(Device::cuda(), dt == DType::F32 ? DType::BF16 : DType::F32)),
               ShapeError);
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, ActivationCuda, ::testing::Values(DType::F32, DType::F16, DType::BF16),
                         [](const auto& i) { return std::string(dtype_name(i.param)); });
