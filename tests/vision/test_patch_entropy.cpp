// patch_gray_entropy (vision/patch_entropy.h) on the CPU against the formula evaluated here, and its
// bad inputs.
#include <cmath>
#include <map>
#include <random>

#include "test_util.h"
#include "vision/patch_entropy.h"

using namespace mmattn;

namespace {

Tensor image(int64_t h, int64_t w, uint32_t seed, int levels = 256) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(size_t(h * w * 3));
  for (auto& x : v) x = uint8_t(int(rng() % uint32_t(levels)));
  return Tensor::from_vector(v, {h, w, 3});
}

// -sum over the patch's gray levels, in level order, of (c / n) log2(c / n + 1e-10)
float direct(const Tensor& img, int64_t patch, int64_t py, int64_t px) {
  const uint8_t* d = img.data<uint8_t>();
  const int64_t w = img.size(1);
  std::map<int, int> hist;
  for (int64_t y = py * patch; y < (py + 1) * patch; ++y)
    for (int64_t x = px * patch; x < (px + 1) * patch; ++x) {
      const uint8_t* q = d + (y * w + x) * 3;
      hist[int(std::nearbyint((int(q[0]) + int(q[1]) + int(q[2])) / 3.0))]++;
    }
  const double n = double(patch * patch);
  double e = 0;
  for (const auto& [g, c] : hist) e -= (double(c) / n) * std::log2(double(c) / n + 1e-10);
  return float(e);
}

}  // namespace

TEST(PatchEntropy, MatchesTheFormula) {
  for (const auto& [h, w, patch] : {std::tuple<int64_t, int64_t, int64_t>{28, 42, 14}, {5, 7, 1}, {6, 4, 2},
                                    {51, 34, 17}, {336, 336, 14}}) {
    for (int levels : {256, 3}) {  // (3: few distinct gray levels, large counts)
      const Tensor img = image(h, w, uint32_t(h * 131 + w + levels), levels);
      const std::vector<float> got = patch_gray_entropy(img, patch).to_floats();
      const int64_t gw = w / patch, gh = h / patch;
      ASSERT_EQ(int64_t(got.size()), gw * gh);
      for (int64_t py = 0; py < gh; ++py)
        for (int64_t px = 0; px < gw; ++px)
          ASSERT_EQ(got[size_t(py * gw + px)], direct(img, patch, py, px)) << h << "x" << w << " patch " << patch;
    }
  }
}

TEST(PatchEntropy, KnownValues) {
  // 2x2 patches: four distinct grays -> 2 bits; one gray -> ~0 (log2(1 + 1e-10)); two and two -> 1 bit
  std::vector<uint8_t> v = {0, 0, 0, 30, 30, 30, 9, 9, 9, 9, 9, 9,  // row 0: patch 0 (0, 30), patch 1 (9, 9)
                            60, 60, 60, 90, 90, 90, 9, 9, 9, 9, 9, 9};
  // row 1: patch 0 (60, 90), patch 1 (9, 9)
  const std::vector<float> e = patch_gray_entropy(Tensor::from_vector(v, {2, 4, 3}), 2).to_floats();
  ASSERT_EQ(e.size(), 2u);
  EXPECT_NEAR(e[0], 2.0, 1e-6);
  EXPECT_NEAR(e[1], 0.0, 1e-6);
  std::vector<uint8_t> u = {10, 10, 10, 10, 10, 10, 20, 20, 20, 20, 20, 20};
  EXPECT_NEAR(patch_gray_entropy(Tensor::from_vector(u, {2, 2, 3}), 2).to_floats()[0], 1.0, 1e-6);
  // the gray level is the rounded mean of the three channels: (1, 2, 3) and (2, 2, 2) share level 2
  std::vector<uint8_t> g = {1, 2, 3, 2, 2, 2, 3, 2, 1, 2, 2, 2};
  EXPECT_NEAR(patch_gray_entropy(Tensor::from_vector(g, {2, 2, 3}), 2).to_floats()[0], 0.0, 1e-6);
}

TEST(PatchEntropy, BadInputsNameTheProblem) {
  const Tensor img = image(28, 28, 1);
  EXPECT_THROW(patch_gray_entropy(img, 5), ShapeError);   // 5 does not tile 28
  EXPECT_THROW(patch_gray_entropy(img, 0), ShapeError);
  EXPECT_THROW(patch_gray_entropy(Tensor::zeros({28, 28, 3}, DType::F32), 14), ShapeError);
  EXPECT_THROW(patch_gray_entropy(Tensor::zeros({28, 28, 4}, DType::U8), 14), ShapeError);
  EXPECT_THROW(patch_gray_entropy(Tensor(), 14), ShapeError);
}
