// patch_gray_entropy on CUDA against the CPU path, bit for bit, on awkward sizes (one-pixel
// patches, patches larger than a block's threads, few gray levels, the ViT's 336 / 14 grid).
#include <random>

#include "test_util.h"
#include "vision/patch_entropy.h"

using namespace mmattn;

TEST(PatchEntropyCuda, EqualsTheCpuBitForBit) {
  MMATTN_REQUIRE_GPU();
  for (const auto& [h, w, patch] : {std::tuple<int64_t, int64_t, int64_t>{336, 336, 14}, {5, 7, 1}, {6, 4, 2},
                                    {51, 34, 17}, {64, 96, 32}, {33, 33, 33}}) {
    for (int levels : {256, 5}) {
      std::mt19937 rng(uint32_t(h * 977 + w * 13 + patch + levels));
      std::vector<uint8_t> v(size_t(h * w * 3));
      for (auto& x : v) x = uint8_t(int(rng() % uint32_t(levels)) * (255 / (levels - 1)));
      const Tensor img = Tensor::from_vector(v, {h, w, 3});
      const std::vector<float> cpu = patch_gray_entropy(img, patch).to_floats();
      const Tensor g = patch_gray_entropy(img.to(Device::cuda()), patch);
      EXPECT_TRUE(g.is_cuda());
      const std::vector<float> gpu = g.to_floats();
      ASSERT_EQ(gpu.size(), cpu.size());
      for (size_t i = 0; i < cpu.size(); ++i)
        ASSERT_EQ(gpu[i], cpu[i]) << h << "x" << w << " patch " << patch << " levels " << levels << " cell " << i;
    }
  }
}
