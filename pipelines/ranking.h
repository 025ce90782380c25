#pragma once
// Index rankings shared by token pruning and head modulation.
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

namespace mmattn {

// Indices of the k largest scores in descending score order (ties: lower index first, as a stable
// sort; torch.topk's tie order is unspecified). k is clamped to [0, size].
template <class T>
std::vector<int64_t> largest_k(const std::vector<T>& s, int64_t k) {
  std::vector<int64_t> idx(s.size());
  std::iota(idx.begin(), idx.end(), int64_t(0));
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return s[size_t(a)] > s[size_t(b)]; });
  idx.resize(size_t(std::clamp<int64_t>(k, 0, int64_t(s.size()))));
  return idx;
}

}  // namespace mmattn
