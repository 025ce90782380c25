// CPU activations against values computed independently (Python math, f64), names, bad input.
#include "core/ops/activation.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

namespace {
void expect_values(const Tensor& y, const std::vector<double>& want) {
  const auto v = y.to_floats();
  ASSERT_EQ(v.size(), want.size());
  for (size_t i = 0; i < v.size(); ++i) EXPECT_NEAR(v[i], want[i], 2e-6 * (1 + std::fabs(want[i]))) << "at " << i;
}
template <class F>
void expect_shape_error(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no ShapeError (wanted one mentioning " << needle << ")";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}
}  // namespace

TEST(Activation, ValuesByHand) {
  Tensor x = Tensor::from_floats({1, -1, 2, -0.5f, 3, 0}, {2, 3});
  expect_values(gelu(x), {0.8413447460685429, -0.15865525393145707, 1.9544997361036416, -0.15426876936299344,
                          2.99595030590511, 0});
  expect_values(gelu(x, GeluApprox::Tanh), {0.8411919906082768, -0.15880800939172324, 1.954597694087775,
                                            -0.15428599017485606, 2.996362607918227, 0});
  expect_values(quick_gelu(x), {0.8457957659328212, -0.1542042340671787, 1.9356586231442083, -0.1496115633936199,
                                2.981928690292214, 0});
  expect_values(silu(x), {0.7310585786300049, -0.2689414213699951, 1.7615941559557646, -0.1887703343990727,
                          2.8577223804672998, 0});
  expect_values(relu(x), {1, 0, 2, 0, 3, 0});
  EXPECT_EQ(gelu(x).shape(), x.shape());
  // quick_gelu(1) = 1 / (1 + exp(-1.702))
  EXPECT_NEAR(quick_gelu(Tensor::from_floats({1}, {1})).item(), 1.0 / (1.0 + std::exp(-1.702)), 1e-7);
}

TEST(Activation, ExtremesStayFinite) {
  Tensor x = Tensor::from_floats({-100, 100, -1000, 1000}, {4});
  for (Activation a : {Activation::Gelu, Activation::GeluTanh, Activation::QuickGelu, Activation::Silu}) {
    const auto v = apply_activation(x, a).to_floats();
    EXPECT_NEAR(v[0], 0.f, 1e-6) << activation_name(a);
    EXPECT_FLOAT_EQ(v[1], 100.f) << activation_name(a);
    EXPECT_NEAR(v[2], 0.f, 1e-6) << activation_name(a);
    EXPECT_FLOAT_EQ(v[3], 1000.f) << activation_name(a);
  }
}

TEST(Activation, ApplyMatchesNamedFunctions) {
  Tensor x = rand_tensor({3, 7}, 1, -4.f, 4.f);
  EXPECT_EQ(rel_err(apply_activation(x, Activation::Gelu), gelu(x)), 0);
  EXPECT_EQ(rel_err(apply_activation(x, Activation::GeluTanh), gelu(x, GeluApprox::Tanh)), 0);
  EXPECT_EQ(rel_err(apply_activation(x, Activation::QuickGelu), quick_gelu(x)), 0);
  EXPECT_EQ(rel_err(apply_activation(x, Activation::Silu), silu(x)), 0);
  EXPECT_EQ(rel_err(apply_activation(x, Activation::Relu), relu(x)), 0);
  EXPECT_EQ(rel_err(apply_activation(x, Activation::Identity), x), 0);
}

TEST(Activation, StridedInput) {
  Tensor x = rand_tensor({5, 8}, 2).transpose(0, 1);  // [8, 5], non-contiguous
  EXPECT_EQ(rel_err(silu(x), silu(x.contiguous())), 0);
  EXPECT_EQ(silu(x).shape(), (Shape{8, 5}));
}

TEST(Activation, SwigluByHand) {
  Tensor g = Tensor::from_floats({2, -1}, {1, 2});
  Tensor u = Tensor::from_floats({3, 0.5f}, {1, 2});
  // silu(2) * 3, silu(-1) * 0.5
  expect_values(swiglu(g, u), {5.284782467867294, -0.13447071068499755});
  // fused: x = [gate | up] along the last dim
  Tensor x = Tensor::from_floats({2, -1, 3, 0.5f, 1, 0, -2, 4}, {2, 4});
  Tensor y = swiglu_fused(x);
  EXPECT_EQ(y.shape(), (Shape{2, 2}));
  expect_values(y, {5.284782467867294, -0.13447071068499755, 0.7310585786300049 * -2, 0});
  // gated gelu (T5 v1.1's DenseGatedActDense uses gelu_new)
  expect_values(gated_activation(g, u, Activation::GeluTanh), {1.954597694087775 * 3, -0.15880800939172324 * 0.5});
  EXPECT_EQ(rel_err(gated_activation_fused(x, Activation::Gelu),
                    gated_activation(x.slice(-1, 0, 2), x.slice(-1, 2, 4), Activation::Gelu)),
            0);
}

TEST(Activation, Names) {
  EXPECT_EQ(parse_activation("gelu"), Activation::Gelu);
  EXPECT_EQ(parse_activation("gelu_pytorch_tanh"), Activation::GeluTanh);
  EXPECT_EQ(parse_activation("gelu_new"), Activation::GeluTanh);
  EXPECT_EQ(parse_activation("quick_gelu"), Activation::QuickGelu);
  EXPECT_EQ(parse_activation("silu"), Activation::Silu);
  EXPECT_EQ(parse_activation("swish"), Activation::Silu);
  EXPECT_EQ(parse_activation("relu"), Activation::Relu);
  EXPECT_EQ(parse_activation("identity"), Activation::Identity);
  for (Activation a : {Activation::Gelu, Activation::GeluTanh, Activation::QuickGelu, Activation::Silu,
                       Activation::Relu, Activation::Identity})
    EXPECT_EQ(parse_activation(activation_name(a)), a);  // round trip
  EXPECT_EQ(activation_name(Activation::GeluTanh), "gelu_pytorch_tanh");
  try {
    parse_activation("gelu_fancy", "text_config.hidden_act");
    FAIL();
  } catch (const ConfigError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("'gelu_fancy'"), std::string::npos) << m;
    EXPECT_NE(m.find("text_config.hidden_act"), std::string::npos) << m;
    EXPECT_NE(m.find("quick_gelu"), std::string::npos) << m;  // lists the accepted names
  }
}

TEST(Activation, BadInputNamesTheArgument) {
  Tensor g = rand_tensor({2, 4}, 1);
  expect_shape_error([&] { swiglu(g, rand_tensor({2, 3}, 2)); }, "'up'");
  expect_shape_error([&] { swiglu(g, rand_tensor({4, 2}, 2)); }, "[4, 2]");
  expect_shape_error([&] { swiglu(g, Tensor::zeros({2, 4}, DType::I32)); }, "'up'");
  expect_shape_error([&] { swiglu(g, Tensor()); }, "'up'");
  expect_shape_error([&] { swiglu_fused(rand_tensor({2, 5}, 3)); }, "even");
  expect_shape_error([&] { gelu(Tensor::zeros({3}, DType::I64)); }, "'x'");
  expect_shape_error([&] { silu(g.to(DType::BF16)); }, "F32");  // the CPU path is f32-only
  expect_shape_error([&] { apply_activation(Tensor::zeros({3}, DType::I32), Activation::Identity); }, "'x'");
}
