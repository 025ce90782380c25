// greedy_max_min on the GPU against the CPU reference, index for index: awkward item counts
// (1, 3, 17, 577, more items than threads, the device limit), k from 1 to n, duplicated rows
// (ties), and the host fallback above the device limit.
#include <algorithm>
#include <limits>

#include "core/ops/diversity.h"
#include "core/ops/linear.h"
#include "core/ops/reduce.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

TEST(GreedyMaxMinCuda, MatchesCpu) {
  MMATTN_REQUIRE_GPU();
  uint64_t seed = 11;
  for (int64_t n : {1, 3, 17, 576, 577, 1024, 1025, 1500, 2049})
    for (bool dups : {false, true}) {
      Tensor x = rand_tensor({n, 24}, seed++, -1.f, 1.f);
      if (dups && n > 2)  // every third row repeats the one before: zero distances and ties
        for (int64_t i = 2; i < n; i += 3) x.slice(0, i, i + 1).copy_from(x.slice(0, i - 1, i));
      const Tensor g = matmul(x, x, true), nr = vector_norm(x, 2);
      const Tensor gd = g.to(Device::cuda()), nd = nr.to(Device::cuda());
      for (int64_t k : {int64_t(1), std::min<int64_t>(n, 64), n}) {
        const std::vector<int64_t> want = greedy_max_min(g, nr, k);
        EXPECT_EQ(greedy_max_min(gd, nd, k), want) << "n " << n << " k " << k << " dups " << dups;
      }
    }
}

TEST(GreedyMaxMinCuda, AboveTheDeviceLimitRunsOnTheHost) {
  MMATTN_REQUIRE_GPU();
  const int64_t n = kGreedyMaxMinDeviceItems + 5;
  const Tensor x = rand_tensor({n, 4}, 5, -1.f, 1.f);
  const Tensor g = matmul(x, x, true), nr = vector_norm(x, 2);
  EXPECT_EQ(greedy_max_min(g.to(Device::cuda()), nr.to(Device::cuda()), 8), greedy_max_min(g, nr, 8));
  // the indices variant leaves its result on the device either way
  EXPECT_TRUE(greedy_max_min_indices(g.to(Device::cuda()), nr.to(Device::cuda()), 8).is_cuda());
}

// The indices variant (what DivPrune queues): on the device, in selection order, equal to the host's
// pick for pick; with a NaN norm (NaN distances) too, where any stop marks (-1) must come last.
TEST(GreedyMaxMinCuda, IndicesStayOnTheDeviceWithTheStopMarks) {
  MMATTN_REQUIRE_GPU();
  for (int64_t n : {5, 700}) {
    Tensor x = rand_tensor({n, 8}, 17 + uint64_t(n), -1.f, 1.f);
    const Tensor g = matmul(x, x, true);
    Tensor nr = vector_norm(x, 2);
    const std::vector<int64_t> plain = greedy_max_min(g, nr, n);
    const Tensor id = greedy_max_min_indices(g.to(Device::cuda()), nr.to(Device::cuda()), n);
    ASSERT_TRUE(id.is_cuda());
    const Tensor ih = id.to(Device::cpu());
    EXPECT_EQ(std::vector<int64_t>(ih.data<int64_t>(), ih.data<int64_t>() + ih.numel()), plain);
    nr.data<float>()[1] = std::numeric_limits<float>::quiet_NaN();  // item 1's distances are NaN
    const std::vector<int64_t> want = greedy_max_min(g, nr, n);
    const Tensor cut = greedy_max_min_indices(g.to(Device::cuda()), nr.to(Device::cuda()), n).to(Device::cpu());
    std::vector<int64_t> got(cut.data<int64_t>(), cut.data<int64_t>() + cut.numel());
    EXPECT_EQ(int64_t(got.size()), n);
    const auto stop = std::find(got.begin(), got.end(), int64_t(-1));
    EXPECT_TRUE(std::all_of(stop, got.end(), [](int64_t i) { return i == -1; }));
    got.erase(stop, got.end());
    EXPECT_EQ(got, want) << "n " << n;
  }
}
