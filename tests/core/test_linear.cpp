// CPU linear/matmul against an independent naive triple loop (double accumulation), and bad input.
#include "core/ops/activation.h"
#include "core/ops/elementwise.h"
#include "core/ops/linear.h"
#include "core/ops/norm.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

namespace {

// y[r, j] = sum_k x[r, k] * w[j, k] + b[j], in double.
std::vector<double> naive_linear(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>* b,
                                 int64_t rows, int64_t n, int64_t k) {
  std::vector<double> y(size_t(rows * n));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) {
      double acc = b ? (*b)[size_t(j)] : 0.0;
      for (int64_t q = 0; q < k; ++q) acc += double(x[size_t(r * k + q)]) * w[size_t(j * k + q)];
      y[size_t(r * n + j)] = acc;
    }
  return y;
}


void expect_shape_error(const std::function<void()>& f, const std::vector<std::string>& needles) {
  try {
    f();
    ADD_FAILURE() << "no ShapeError";
  } catch (const ShapeError& e) {
    for (const auto& s : needles) EXPECT_NE(std::string(e.what()).find(s), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(Linear, ByHand) {
  Tensor x = Tensor::from_floats({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor w = Tensor::from_floats({1, 0, -1, 0.5f, 0.5f, 0.5f}, {2, 3});
  Tensor b = Tensor::from_floats({10, -1}, {2});
  auto y = linear(x, w, b).to_floats();
  ASSERT_EQ(y.size(), 4u);
  EXPECT_FLOAT_EQ(y[0], 1 - 3 + 10);
  EXPECT_FLOAT_EQ(y[1], 3 - 1);
  EXPECT_FLOAT_EQ(y[2], 4 - 6 + 10);
  EXPECT_FLOAT_EQ(y[3], 7.5f - 1);
}

TEST(Linear, MatchesNaiveOnAwkwardSizes) {
  uint64_t seed = 1;
  for (int64_t m : {1, 3, 17, 257})
    for (int64_t k : {1, 3, 17, 257})
      for (int64_t n : {1, 3, 17, 257}) {
        Tensor x = rand_tensor({m, k}, seed++);
        Tensor w = rand_tensor({n, k}, seed++);
        Tensor b = rand_tensor({n}, seed++);
        const auto xv = x.to_floats(), wv = w.to_floats(), bv = b.to_floats();
        EXPECT_LT(rel_err_vs(linear(x, w, b), naive_linear(xv, wv, &bv, m, n, k)), 1e-6) << m << "x" << k << "x" << n;
        EXPECT_LT(rel_err_vs(linear(x, w), naive_linear(xv, wv, nullptr, m, n, k)), 1e-6) << m << "x" << k << "x" << n;
      }
}

TEST(Linear, LeadingDimsAndStridedInput) {
  Tensor x = rand_tensor({2, 3, 5, 17}, 7);
  Tensor w = rand_tensor({9, 17}, 8);
  Tensor b = rand_tensor({9}, 9);
  Tensor y = linear(x, w, b);
  EXPECT_EQ(y.shape(), (Shape{2, 3, 5, 9}));
  const auto bv = b.to_floats();
  EXPECT_LT(rel_err_vs(y, naive_linear(x.to_floats(), w.to_floats(), &bv, 30, 9, 17)), 1e-6);
  EXPECT_LT(rel_err(y.view({30, 9}), linear(x.view({30, 17}), w, b)), 1e-7);
  // non-contiguous x and weight (transposed storage)
  Tensor xt = rand_tensor({17, 6}, 10).transpose(0, 1);  // [6, 17] strided
  Tensor wt = rand_tensor({17, 9}, 11).transpose(0, 1);  // [9, 17] strided
  EXPECT_LT(rel_err(linear(xt, wt, b), linear(xt.contiguous(), wt.contiguous(), b)), 1e-7);
}

TEST(Linear, EmptyDims) {
  Tensor w = rand_tensor({4, 3}, 1);
  Tensor b = Tensor::from_floats({1, 2, 3, 4}, {4});
  Tensor y = linear(Tensor::empty({0, 3}, DType::F32), w, b);
  EXPECT_EQ(y.shape(), (Shape{0, 4}));
  // K == 0: the product is empty, the output is the bias (or zeros)
  Tensor y2 = linear(Tensor::empty({2, 0}, DType::F32), Tensor::empty({4, 0}, DType::F32), b);
  EXPECT_EQ(y2.to_floats(), (std::vector<float>{1, 2, 3, 4, 1, 2, 3, 4}));
  Tensor y3 = linear(Tensor::empty({2, 0}, DType::F32), Tensor::empty({4, 0}, DType::F32));
  EXPECT_EQ(y3.to_floats(), std::vector<float>(8, 0.f));
}

TEST(Matmul, BatchedBroadcastAndTranspose) {
  uint64_t seed = 100;
  for (int64_t m : {1, 3, 17})
    for (int64_t k : {1, 17, 64})
      for (int64_t n : {1, 3, 33}) {
        Tensor a = rand_tensor({2, 3, m, k}, seed++);
        Tensor b = rand_tensor({2, 3, k, n}, seed++);
        Tensor b2 = rand_tensor({k, n}, seed++);
        Tensor c = matmul(a, b);
        Tensor c2 = matmul(a, b2);
        Tensor ct = matmul(a, b.transpose(2, 3).contiguous(), /*transpose_b=*/true);
        ASSERT_EQ(c.shape(), (Shape{2, 3, m, n}));
        const auto av = a.to_floats(), bv = b.to_floats(), b2v = b2.to_floats();
        std::vector<double> want(size_t(6 * m * n)), want2(want.size());
        for (int64_t i = 0; i < 6; ++i)
          for (int64_t r = 0; r < m; ++r)
            for (int64_t j = 0; j < n; ++j) {
              double s = 0, s2 = 0;
              for (int64_t q = 0; q < k; ++q) {
                s += double(av[size_t((i * m + r) * k + q)]) * bv[size_t((i * k + q) * n + j)];
                s2 += double(av[size_t((i * m + r) * k + q)]) * b2v[size_t(q * n + j)];
              }
              want[size_t((i * m + r) * n + j)] = s;
              want2[size_t((i * m + r) * n + j)] = s2;
            }
        EXPECT_LT(rel_err_vs(c, want), 1e-6);
        EXPECT_LT(rel_err_vs(ct, want), 1e-6);
        EXPECT_LT(rel_err_vs(c2, want2), 1e-6);
        // 2-D b transposed: [n, k]
        EXPECT_LT(rel_err_vs(matmul(a, b2.transpose(0, 1), true), want2), 1e-6);
      }
}

TEST(Linear, BadInputNamesTheArguments) {
  Tensor x = rand_tensor({2, 5}, 1);
  expect_shape_error([&] { linear(x, rand_tensor({4, 6}, 2)); }, {"'x'", "'weight'", "[2, 5]", "[4, 6]"});
  expect_shape_error([&] { linear(x, rand_tensor({4, 5}, 2), rand_tensor({3}, 3)); }, {"'bias'", "[4]"});
  expect_shape_error([&] { linear(x, rand_tensor({4, 5}, 2).to(DType::BF16)); }, {"'weight'", "BF16"});
  expect_shape_error([&] { linear(x, rand_tensor({4, 5}, 2), rand_tensor({4}, 3).to(DType::F16)); }, {"'bias'"});
  expect_shape_error([&] { linear(x, rand_tensor({5}, 2)); }, {"'weight'"});
  expect_shape_error([&] { linear(x.to(DType::BF16), rand_tensor({4, 5}, 2).to(DType::BF16)); }, {"'x'", "F32"});
  expect_shape_error([&] { linear(Tensor::zeros({2, 5}, DType::I32), rand_tensor({4, 5}, 2)); }, {"'x'"});
  expect_shape_error([&] { matmul(rand_tensor({2, 3, 4}, 1), rand_tensor({2, 5, 6}, 2)); }, {"'a'", "'b'", "K"});
  expect_shape_error([&] { matmul(rand_tensor({2, 3, 4}, 1), rand_tensor({3, 4, 6}, 2)); }, {"batch"});
  expect_shape_error([&] { matmul(rand_tensor({4}, 1), rand_tensor({4, 6}, 2)); }, {"'a'"});
  expect_shape_error([&] { matmul(rand_tensor({2, 3, 4}, 1), rand_tensor({1, 2, 4, 6}, 2)); }, {"'b'"});
}

// The fused forms equal their compositions on the CPU (which runs the compositions: the fusion
// is a CUDA kernel; on CUDA see test_linear_cuda.cpp), with leading dims and K == 0.
TEST(Linear, FusedFormsEqualTheirCompositions) {
  Tensor x = rand_tensor({2, 3, 16}, 1), w = rand_tensor({5, 16}, 2), b = rand_tensor({5}, 3);
  Tensor y0 = rand_tensor({2, 3, 5}, 4);
  Tensor y = y0.clone();
  linear_add_(y, x, w, b);
  EXPECT_LT(rel_err(y, add(y0, linear(x, w, b))), 1e-6);
  Tensor nw = rand_tensor({16}, 5);
  EXPECT_LT(rel_err(rms_norm_linear(x, nw, 1e-6f, w, b), linear(rms_norm(x, nw, 1e-6f), w, b)), 1e-7);
  Tensor gu = rand_tensor({2, 3, 32}, 6);
  y = y0.clone();
  swiglu_linear_add_(y, gu, w);
  EXPECT_LT(rel_err(y, add(y0, linear(swiglu_fused(gu), w))), 1e-6);
  // linear_residual: a new tensor, the residual untouched (also a strided residual)
  const Tensor r = linear_residual(y0, x, w, b);
  EXPECT_LT(rel_err(r, add(y0, linear(x, w, b))), 1e-6);
  EXPECT_EQ(max_abs_diff(y0, y0.clone()), 0.0);
  const Tensor yt = rand_tensor({2, 5, 3}, 7).transpose(1, 2);
  EXPECT_LT(rel_err(linear_residual(yt, x, w), add(yt, linear(x, w))), 1e-6);
  // K == 0: adds the bias (or nothing)
  y = y0.clone();
  linear_add_(y, Tensor::empty({2, 3, 0}, DType::F32), Tensor::empty({5, 0}, DType::F32), b);
  EXPECT_LT(rel_err(y, add(y0, b)), 1e-7);
}

TEST(Linear, FusedFormsBadInputNamesTheArguments) {
  Tensor x = rand_tensor({2, 4}, 1), w = rand_tensor({3, 4}, 2);
  Tensor y = rand_tensor({2, 3}, 3);
  expect_shape_error([&] {
    Tensor bad = rand_tensor({2, 4}, 4);
    linear_add_(bad, x, w);
  }, {"linear_add_", "'y'", "[2, 3]"});
  expect_shape_error([&] {
    Tensor strided = rand_tensor({3, 2}, 4).transpose(0, 1);
    linear_add_(strided, x, w);
  }, {"'y'", "contiguous"});
  expect_shape_error([&] { rms_norm_linear(x, rand_tensor({5}, 4), 1e-6f, w); }, {"'norm_weight'", "[4]"});
  expect_shape_error([&] { linear_residual(rand_tensor({3, 3}, 4), x, w); }, {"linear_residual", "'residual'", "[2, 3]"});
  expect_shape_error([&] { swiglu_linear_add_(y, rand_tensor({2, 7}, 4), w); }, {"'gate_up'", "2K"});
  expect_shape_error([&] { swiglu_linear_add_(y, rand_tensor({2, 6}, 4), w); }, {"'x'", "K = 3", "K = 4"});
}
