#include "core/ops/diversity.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/ops/dispatch.h"
#include "core/ops/reduce.h"

namespace mmattn {

void greedy_max_min_cpu(const GreedyMaxMinParams& p) {
  const int64_t n = p.n;
  auto dist = [&](int64_t i, int64_t j) {
    return 1.f - p.gram[size_t(i * n + j)] / std::max(p.norms[i] * p.norms[j], 1e-8f);
  };
  // unfilled entries stay -1 (only when distances are NaN: the loop below then stops early)
  const float inf = std::numeric_limits<float>::infinity();
  int64_t cur = 0;
  float best = -inf;
  for (int64_t j = 0; j < n; ++j) {
    float nearest = inf;
    for (int64_t i = 0; i < n; ++i)
      if (i != j) nearest = std::min(nearest, dist(i, j));
    if (nearest > best) best = nearest, cur = j;
  }
  std::vector<float> to_sel(size_t(n), inf);
  std::vector<bool> taken(size_t(n), false);
  std::fill(p.out, p.out + p.k, int64_t(-1));
  for (int64_t s = 0; s < p.k; ++s) {
    taken[size_t(cur)] = true;
    p.out[s] = cur;
    int64_t nxt = -1;
    float far = -inf;
    for (int64_t j = 0; j < n; ++j) {
      to_sel[size_t(j)] = std::min(to_sel[size_t(j)], dist(cur, j));
      if (!taken[size_t(j)] && to_sel[size_t(j)] > far) far = to_sel[size_t(j)], nxt = j;
    }
    if (nxt < 0) break;
    cur = nxt;
  }
}

Tensor greedy_max_min_indices(const Tensor& gram, const Tensor& norms, int64_t k) {
  const char* op = "greedy_max_min";
  check_dim(gram, 2, op, "gram");
  check_dim(norms, 1, op, "norms");
  const int64_t n = gram.size(0);
  MMATTN_CHECK(gram.size(1) == n && norms.size(0) == n, ShapeError, op, ": 'gram' ", gram.desc(),
               " must be [n, n] and 'norms' ", norms.desc(), " [n]");
  MMATTN_CHECK(gram.dtype() == DType::F32 && norms.dtype() == DType::F32, ShapeError, op,
               ": 'gram' and 'norms' must be F32, got ", gram.desc(), " and ", norms.desc());
  MMATTN_CHECK(gram.device() == norms.device(), ShapeError, op, ": 'gram' is on ", gram.device().str(),
               " but 'norms' on ", norms.device().str());
  MMATTN_CHECK(k >= 0, ShapeError, op, ": k must be >= 0, got ", k);
  k = std::min(k, n);
  Tensor idx = Tensor::empty({k}, DType::I64, gram.device());
  if (k == 0) return idx;
  const bool device = gram.is_cuda() && n <= kGreedyMaxMinDeviceItems;
  const Tensor g = device ? gram.contiguous() : gram.to(Device::cpu()).contiguous();
  const Tensor nr = device ? norms.contiguous() : norms.to(Device::cpu()).contiguous();
  GreedyMaxMinParams p;
  p.gram = g.data<float>();
  p.norms = nr.data<float>();
  p.n = n;
  p.k = k;
  if (!device) {
    Tensor host = gram.is_cuda() ? Tensor::empty({k}, DType::I64, Device::cpu()) : idx;
    p.out = host.data<int64_t>();
    greedy_max_min_cpu(p);
    if (gram.is_cuda()) idx.copy_from(host);
    return idx;
  }
#if MMATTN_HAS_CUDA
  Tensor nearest = Tensor::empty({n}, DType::F32, gram.device());
  p.out = idx.data<int64_t>();
  p.nearest = nearest.data<float>();
  greedy_max_min_cuda(p, current_stream());
#endif
  return idx;
}

std::vector<int64_t> greedy_max_min(const Tensor& gram, const Tensor& norms, int64_t k) {
  std::vector<int64_t> out = host_indices(greedy_max_min_indices(gram, norms, k));
  out.erase(std::find(out.begin(), out.end(), int64_t(-1)), out.end());
  return out;
}

}  // namespace mmattn
