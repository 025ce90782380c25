#pragma once
// VisionZip's contextual tokens (pipelines/pruning.cpp), planned on the metric's device so that the
// merge is queued behind the ViT without a host round trip.
//   visionzip_merge_plan(metric [T, d] F32, dominant [D - 1] I64, C): tokens 0..T-1 ([CLS] = token 0
//   and the patches, token = patch + 1); `dominant` are patch indices in ascending order, which
//   with the [CLS] make the D dominant tokens. The other R = T - D tokens, in index order, are the
//   rest; the targets are rest positions 0, s, 2s, ... (s = max(1, R / max(C, 1)); at most C of
//   them, C' in all); every other rest token joins the target whose L2-normalised metric row has
//   the largest dot product with its own (a row's norm summed in f64, the row divided by
//   max(norm, 1e-12) in f32, products summed in f32 in column order; ties: the first target).
//   The plan, weighted_rows' lists (core/ops/embedding.h) on the metric's device: D rows, one
//   entry each (the dominant tokens, weight 1), then C' rows, one per target: the target (weight
//   1), then its members in index order (weight 1 / members). heads [D + C'] I64: the token that
//   heads each row. The CPU is the reference; CUDA gives the same lists bit for bit (one block,
//   every token's unit row in its shared memory; past the limits of visionzip_merge_plan_on_device
//   the host plans it: a LLaVA-1.5 ViT's 577 x 64 fits).
#include <cstdint>

#include "core/ops/embedding.h"
#include "core/tensor.h"

namespace mmattn {

constexpr int64_t kMergeDeviceTokens = 4096;
constexpr int64_t kMergeDeviceTargets = 1024;
constexpr int64_t kMergeDeviceUnitFloats = 40960;  // tokens x (d + 1): 160 KB of shared memory
inline bool visionzip_merge_plan_on_device(int64_t tokens, int64_t d, int64_t targets) {
  return tokens <= kMergeDeviceTokens && targets <= kMergeDeviceTargets && tokens * (d + 1) <= kMergeDeviceUnitFloats;
}

struct MergePlan {
  RowPlan rows;
  Tensor heads;  // I64 [D + C']
};
// The number of contextual rows C' for R rest tokens and C asked for.
int64_t visionzip_targets(int64_t rest, int64_t contextual);
MergePlan visionzip_merge_plan(const Tensor& metric, const Tensor& dominant, int64_t contextual);

struct MergePlanParams {
  const float* metric = nullptr;      // contiguous [tokens, d]
  const int64_t* dominant = nullptr;  // [n_dominant - 1] ascending patch indices
  int64_t tokens = 0, d = 0, n_dominant = 0, contextual = 0, targets = 0;
  int32_t* offsets = nullptr;  // [n_dominant + targets + 1]
  int32_t* index = nullptr;    // [entries]
  float* weights = nullptr;    // [entries]
  int64_t* heads = nullptr;    // [n_dominant + targets]
};
void visionzip_merge_plan_cpu(const MergePlanParams& p);
void visionzip_merge_plan_cuda(const MergePlanParams& p, StreamHandle s);

}  // namespace mmattn
