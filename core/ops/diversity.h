#pragma once
// Greedy max-min diversity selection (DivPrune's solver of the max-min diversity problem) over
// cosine distances. Items are given by their Gram matrix gram [n, n] = X X^T and row norms
// norms [n] (F32, same device); d(i, j) = 1 - gram[i, j] / max(norms[i] * norms[j], 1e-8), in
// f32 with exactly this operation order on both devices.
//   first = argmax_j min_{i != j} d(i, j)   (the item farthest from its nearest neighbour)
//   then, k - 1 times: the item not yet taken whose distance to its nearest taken item is largest.
// Ties go to the lower index. Returns min(k, n) indices in selection order (k >= 0).
// CUDA: a many-block pass finds every item's nearest-neighbour distance (the one step that reads
// the whole matrix), then one block does the greedy selection on the device (the n x n matrix never
// leaves it; the k indices are the one download); n above kGreedyMaxMinDeviceItems is selected on
// the host.
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace mmattn {

constexpr int64_t kGreedyMaxMinDeviceItems = 8192;

std::vector<int64_t> greedy_max_min(const Tensor& gram, const Tensor& norms, int64_t k);
// The same selection left on gram's device: I64 [min(k, n)] in selection order, entries past an
// early stop (NaN distances) -1 (greedy_max_min drops those).
Tensor greedy_max_min_indices(const Tensor& gram, const Tensor& norms, int64_t k);

struct GreedyMaxMinParams {
  const float* gram = nullptr;   // contiguous [n, n]
  const float* norms = nullptr;  // [n]
  int64_t n = 0, k = 0;          // 1 <= k <= n
  int64_t* out = nullptr;        // [k]
  float* nearest = nullptr;      // CUDA scratch [n]: min_{i != j} d(i, j)
};
void greedy_max_min_cpu(const GreedyMaxMinParams& p);
void greedy_max_min_cuda(const GreedyMaxMinParams& p, StreamHandle s);

}  // namespace mmattn
