// CPU conv2d against a naive 7-loop reference (double accumulation) with stride, padding,
// dilation and groups; a speed check on the shapes the models use; bad input.
#include <array>
#include <chrono>

#include "core/ops/conv2d.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

namespace {

struct ConvCase {
  int64_t n, c, h, w, o, kh, kw;
  int sh, sw, ph, pw, dh, dw, groups;
};

std::vector<double> naive_conv(const Tensor& x, const Tensor& w, const Tensor& b, const ConvCase& k, int64_t oh,
                               int64_t ow) {
  const auto xv = x.to_floats(), wv = w.to_floats();
  const auto bv = b.defined() ? b.to_floats() : std::vector<float>();
  const int64_t cg = k.c / k.groups, og = k.o / k.groups;
  std::vector<double> y(size_t(k.n * k.o * oh * ow));
  for (int64_t n = 0; n < k.n; ++n)
    for (int64_t o = 0; o < k.o; ++o)
      for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox) {
          double acc = bv.empty() ? 0.0 : bv[size_t(o)];
          const int64_t g = o / og;
          for (int64_t ci = 0; ci < cg; ++ci)
            for (int64_t ky = 0; ky < k.kh; ++ky)
              for (int64_t kx = 0; kx < k.kw; ++kx) {
                const int64_t iy = oy * k.sh - k.ph + ky * k.dh, ix = ox * k.sw - k.pw + kx * k.dw;
                if (iy < 0 || iy >= k.h || ix < 0 || ix >= k.w) continue;
                acc += double(xv[size_t(((n * k.c + g * cg + ci) * k.h + iy) * k.w + ix)]) *
                       wv[size_t(((o * cg + ci) * k.kh + ky) * k.kw + kx)];
              }
          y[size_t(((n * k.o + o) * oh + oy) * ow + ox)] = acc;
        }
  return y;
}


}  // namespace

TEST(Conv2d, ByHand) {
  // 1x1x3x3 input, 2x2 kernel of ones, stride 1: sums of 2x2 windows
  Tensor x = Tensor::from_floats({1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 1, 3, 3});
  Tensor w = Tensor::full({1, 1, 2, 2}, 1.f, DType::F32);
  Tensor b = Tensor::from_floats({0.5f}, {1});
  Tensor y = conv2d(x, w, b);
  EXPECT_EQ(y.shape(), (Shape{1, 1, 2, 2}));
  EXPECT_EQ(y.to_floats(), (std::vector<float>{12.5f, 16.5f, 24.5f, 28.5f}));
  // padding 1, stride 2: windows centred on corners and the middle
  Tensor y2 = conv2d(x, Tensor::full({1, 1, 3, 3}, 1.f, DType::F32), Tensor(), {2, 2}, {1, 1});
  EXPECT_EQ(y2.shape(), (Shape{1, 1, 2, 2}));
  EXPECT_EQ(y2.to_floats(), (std::vector<float>{12, 16, 24, 28}));
}

TEST(Conv2d, MatchesNaiveReference) {
  const std::vector<ConvCase> cases = {
      {1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1},
      {2, 3, 7, 9, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1},
      {1, 3, 17, 13, 5, 3, 5, 2, 3, 2, 1, 1, 1, 1},
      {2, 4, 11, 10, 6, 3, 3, 1, 2, 2, 3, 2, 3, 2},     // dilation + groups
      {1, 6, 9, 9, 6, 3, 3, 1, 1, 1, 1, 1, 1, 6},       // depthwise
      {1, 8, 5, 7, 4, 1, 1, 1, 1, 0, 0, 1, 1, 1},       // pointwise (no im2col)
      {1, 8, 5, 7, 4, 1, 1, 2, 1, 0, 0, 1, 1, 2},       // 1x1 strided, grouped
      {1, 3, 28, 28, 16, 14, 14, 14, 14, 0, 0, 1, 1, 1},  // patch embedding
      {1, 2, 4, 4, 3, 5, 5, 1, 1, 2, 2, 1, 1, 1},       // kernel larger than the input (padded)
      {3, 5, 13, 1, 7, 3, 1, 1, 1, 1, 0, 1, 1, 1},      // width 1
  };
  uint64_t seed = 1;
  for (const auto& k : cases) {
    Tensor x = rand_tensor({k.n, k.c, k.h, k.w}, seed++);
    Tensor w = rand_tensor({k.o, k.c / k.groups, k.kh, k.kw}, seed++);
    Tensor b = rand_tensor({k.o}, seed++);
    const int64_t oh = (k.h + 2 * k.ph - k.dh * (k.kh - 1) - 1) / k.sh + 1;
    const int64_t ow = (k.w + 2 * k.pw - k.dw * (k.kw - 1) - 1) / k.sw + 1;
    Tensor y = conv2d(x, w, b, {k.sh, k.sw}, {k.ph, k.pw}, {k.dh, k.dw}, k.groups);
    ASSERT_EQ(y.shape(), (Shape{k.n, k.o, oh, ow}));
    EXPECT_LT(rel_err_vs(y, naive_conv(x, w, b, k, oh, ow)), 1e-6) << "case c=" << k.c << " h=" << k.h;
    Tensor y0 = conv2d(x, w, Tensor(), {k.sh, k.sw}, {k.ph, k.pw}, {k.dh, k.dw}, k.groups);
    EXPECT_LT(rel_err_vs(y0, naive_conv(x, w, Tensor(), k, oh, ow)), 1e-6);
  }
}

TEST(Conv2d, StridedInput) {
  Tensor x = rand_tensor({1, 5, 6, 3}, 1).permute({0, 3, 1, 2});  // [1, 3, 5, 6] non-contiguous
  Tensor w = rand_tensor({4, 3, 3, 3}, 2);
  EXPECT_LT(rel_err(conv2d(x, w, Tensor(), {1, 1}, {1, 1}), conv2d(x.contiguous(), w, Tensor(), {1, 1}, {1, 1})),
            1e-7);
}

TEST(Conv2d, ModelShapesAreFast) {
  // CLIP ViT-L/14-336 patch embedding and a VAE-style 3x3 conv: well under a second together.
  Tensor x = rand_tensor({1, 3, 336, 336}, 1);
  Tensor w = rand_tensor({1024, 3, 14, 14}, 2);
  Tensor x2 = rand_tensor({1, 128, 64, 64}, 3);
  Tensor w2 = rand_tensor({128, 128, 3, 3}, 4);
  Tensor b2 = rand_tensor({128}, 5);
  const auto t0 = std::chrono::steady_clock::now();
  Tensor y = conv2d(x, w, Tensor(), {14, 14});
  Tensor y2 = conv2d(x2, w2, b2, {1, 1}, {1, 1});
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(y.shape(), (Shape{1, 1024, 24, 24}));
  EXPECT_EQ(y2.shape(), (Shape{1, 128, 64, 64}));
  EXPECT_LT(s, 1.0);
  // spot-check one output of each against the definition
  const auto xv = x.to_floats(), wv = w.to_floats();
  double acc = 0;
  for (int c = 0; c < 3; ++c)
    for (int ky = 0; ky < 14; ++ky)
      for (int kx = 0; kx < 14; ++kx)
        acc += double(xv[size_t((c * 336 + 5 * 14 + ky) * 336 + 7 * 14 + kx)]) * wv[size_t(((9 * 3 + c) * 14 + ky) * 14 + kx)];
  EXPECT_NEAR(y.to_floats()[size_t((9 * 24 + 5) * 24 + 7)], acc, 1e-4);
}

TEST(Conv2d, BadInputNamesTheArgument) {
  Tensor x = rand_tensor({1, 4, 8, 8}, 1);
  auto expect_msg = [](const std::function<void()>& f, const std::vector<std::string>& needles) {
    try {
      f();
      ADD_FAILURE() << "no ShapeError";
    } catch (const ShapeError& e) {
      for (const auto& s : needles) EXPECT_NE(std::string(e.what()).find(s), std::string::npos) << e.what();
    }
  };
  expect_msg([&] { conv2d(x, rand_tensor({2, 3, 3, 3}, 2)); }, {"'weight'", "[2, 3, 3, 3]", "[1, 4, 8, 8]"});
  expect_msg([&] { conv2d(x, rand_tensor({2, 4, 3, 3}, 2), rand_tensor({3}, 3)); }, {"'bias'", "[2]"});
  expect_msg([&] { conv2d(x, rand_tensor({3, 2, 3, 3}, 2), Tensor(), {1, 1}, {0, 0}, {1, 1}, 2); }, {"groups"});
  expect_msg([&] { conv2d(x, rand_tensor({2, 4, 9, 9}, 2)); }, {"larger"});
  expect_msg([&] { conv2d(rand_tensor({4, 8, 8}, 1), rand_tensor({2, 4, 3, 3}, 2)); }, {"'x'"});
  expect_msg([&] { conv2d(x, rand_tensor({2, 4, 3, 3}, 2).to(DType::F16)); }, {"'weight'", "F16"});
  expect_msg([&] { conv2d(x, rand_tensor({2, 4, 3, 3}, 2), Tensor(), {0, 1}); }, {"stride"});
  expect_msg([&] { conv2d(x.to(DType::BF16), rand_tensor({2, 4, 3, 3}, 2).to(DType::BF16)); }, {"'x'", "F32"});
}
