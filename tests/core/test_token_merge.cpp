// VisionZip's merge plan (core/ops/token_merge.h) on the CPU: hand-worked plans for one, two and no
// contextual rows, the plan applied through weighted_rows, and bad input.
#include <vector>

#include "core/ops/embedding.h"
#include "core/ops/token_merge.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

TEST(VisionZipMergePlan, HandWorked) {
  // tokens 0..5 ([CLS] = 0); patch 2 (token 3) dominant; rest 1, 2, 4, 5
  const Tensor metric = Tensor::from_vector<float>({1, 0, 1, 0, 0, 1, 5, 5, 0, 2, 2, 0.1f}, {6, 2});
  const Tensor dom = Tensor::from_vector<int64_t>({2}, {1});
  // C = 2: step 2, targets tokens 1 and 4; token 2 (0, 1) joins 4, token 5 (~1, 0.05) joins 1
  MergePlan p = visionzip_merge_plan(metric, dom, 2);
  EXPECT_EQ(host_values<int32_t>(p.rows.offsets), (std::vector<int32_t>{0, 1, 2, 4, 6}));
  EXPECT_EQ(host_values<int32_t>(p.rows.index), (std::vector<int32_t>{0, 3, 1, 5, 4, 2}));
  EXPECT_EQ(host_values<float>(p.rows.weights), (std::vector<float>(6, 1.f)));
  EXPECT_EQ(host_values<int64_t>(p.heads), (std::vector<int64_t>{0, 3, 1, 4}));
  // C = 1: step 4, one target (token 1) taking the three others at 1/3 each
  p = visionzip_merge_plan(metric, dom, 1);
  EXPECT_EQ(host_values<int32_t>(p.rows.offsets), (std::vector<int32_t>{0, 1, 2, 6}));
  EXPECT_EQ(host_values<int32_t>(p.rows.index), (std::vector<int32_t>{0, 3, 1, 2, 4, 5}));
  EXPECT_EQ(host_values<float>(p.rows.weights), (std::vector<float>{1, 1, 1, 1.f / 3, 1.f / 3, 1.f / 3}));
  // C = 0: the dominant rows alone
  p = visionzip_merge_plan(metric, dom, 0);
  EXPECT_EQ(host_values<int32_t>(p.rows.offsets), (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(host_values<int32_t>(p.rows.index), (std::vector<int32_t>{0, 3}));
  EXPECT_EQ(visionzip_targets(4, 2), 2);
  EXPECT_EQ(visionzip_targets(4, 9), 4);  // more asked than there are rest tokens
  EXPECT_EQ(visionzip_targets(0, 3), 0);
  // applied: [CLS], token 3, token 1 + token 5, token 4 + token 2
  const Tensor h = Tensor::from_vector<float>({0, 1, 2, 3, 4, 5}, {6, 1});
  EXPECT_EQ(weighted_rows(h, visionzip_merge_plan(metric, dom, 2).rows).to_floats(),
            (std::vector<float>{0, 3, 6, 6}));
}

TEST(VisionZipMergePlan, BadInput) {
  const Tensor metric = Tensor::zeros({6, 2}, DType::F32);
  EXPECT_THROW(visionzip_merge_plan(metric, Tensor::from_vector<int64_t>({7}, {1}), 1), ShapeError);  // past the patches
  EXPECT_THROW(visionzip_merge_plan(metric, Tensor::from_vector<int64_t>({3, 1}, {2}), 1), ShapeError);  // not ascending
  EXPECT_THROW(visionzip_merge_plan(metric, Tensor::from_vector<float>({1}, {1}), 1), ShapeError);
  EXPECT_THROW(visionzip_merge_plan(metric, Tensor::from_vector<int64_t>({1}, {1}), -1), ShapeError);
  RowPlan bad{Tensor::from_vector<int32_t>({0, 1}, {2}), Tensor::from_vector<int32_t>({0}, {1}),
              Tensor::from_vector<int32_t>({1}, {1})};  // weights must be F32
  EXPECT_THROW(weighted_rows(metric, bad), ShapeError);
}
