// VisionZip's merge plan on the GPU against the CPU reference, list for list and bit for bit:
// awkward token counts (1 dominant of 2, 33, a ViT's 577, the device limit and past it: the host),
// contextual counts from none to more than the rest, duplicated metric rows (tied similarities),
// a zero row (the 1e-12 floor); and the plan applied through weighted_rows on both devices.
#include <vector>

#include "core/ops/embedding.h"
#include "core/ops/reduce.h"
#include "core/ops/token_merge.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

TEST(VisionZipMergePlanCuda, MatchesCpu) {
  MMATTN_REQUIRE_GPU();
  uint64_t seed = 5;
  // 630 x 65 floats is the largest that plans on the device at d 64; 631 and 4096 take the host
  for (int64_t T : {int64_t(2), int64_t(33), int64_t(577), int64_t(630), int64_t(631), kMergeDeviceTokens})
    for (int64_t D : {int64_t(1), std::min<int64_t>(T, 54), T / 2})
      for (int64_t C : {int64_t(0), int64_t(1), int64_t(10), int64_t(90), T}) {
        if (D < 1) continue;
        Tensor metric = rand_tensor({T, 64}, seed++, -1.f, 1.f);
        for (int64_t t = 3; t < T; t += 5) metric.slice(0, t, t + 1).copy_from(metric.slice(0, t - 1, t));  // ties
        if (T > 7) metric.slice(0, 7, 8).copy_from(Tensor::zeros({1, 64}, DType::F32));
        const Tensor dom = top_k_indices(rand_tensor({T - 1}, seed++, 0.f, 1.f), D - 1);
        const MergePlan want = visionzip_merge_plan(metric, dom, C);
        const MergePlan got = visionzip_merge_plan(metric.to(Device::cuda()), dom.to(Device::cuda()), C);
        ASSERT_TRUE(got.rows.offsets.is_cuda() && got.heads.is_cuda());
        const std::string at = "T " + std::to_string(T) + " D " + std::to_string(D) + " C " + std::to_string(C);
        EXPECT_EQ(host_values<int32_t>(got.rows.offsets), host_values<int32_t>(want.rows.offsets)) << at;
        EXPECT_EQ(host_values<int32_t>(got.rows.index), host_values<int32_t>(want.rows.index)) << at;
        EXPECT_EQ(host_values<float>(got.rows.weights), host_values<float>(want.rows.weights)) << at;
        EXPECT_EQ(host_values<int64_t>(got.heads), host_values<int64_t>(want.heads)) << at;
        if (T == 577 && D == 54 && C == 10) {  // applied: the device mix equals the host's
          const Tensor h = rand_tensor({T, 40}, seed++, -1.f, 1.f);
          EXPECT_LT(max_abs_diff(weighted_rows(h.to(Device::cuda()), got.rows).to(Device::cpu()), weighted_rows(h, want.rows)),
                    1e-6);
        }
      }
}
