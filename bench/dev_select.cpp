// Development timer (issue 6): the pieces of DivPrune's selection on LLaVA-1.5-7B shapes (576
// projected visual tokens x 4096, bf16, random): the Gram matrix (f32 result on the tensor cores,
// and the f32 copy + SGEMM it replaced), the row norms, and the greedy max-min at k = 64 and 575;
// synchronised medians (host clock, as bench_pruning's per-image step).
//   dev_select [--reps N]
#include <chrono>
#include <cstdio>

#include "bench/bench_util.h"
#include "core/device.h"
#include "core/ops/diversity.h"
#include "core/ops/linear.h"
#include "core/ops/reduce.h"

using namespace mmattn;
using namespace mmattn::bench;

int main(int argc, char** argv) {
  try {
    const int reps = std::stoi(arg_value(argc, argv, "--reps", "21"));
    const Tensor v = bench_random({576, 4096}, 1, DType::BF16, -1.f, 1.f);
    const Tensor vf = v.to(DType::F32);
    Tensor gram = matmul_f32(v, v, true), norms = vector_norm(v, 2);
    std::printf("gram f32 copy + sgemm   %8.4f ms\n", host_median_ms([&] { (void)matmul(v.to(DType::F32), vf, true); }, reps));
    std::printf("gram bf16 -> f32 (TC)   %8.4f ms\n", host_median_ms([&] { gram = matmul_f32(v, v, true); }, reps));
    std::printf("row norms               %8.4f ms\n", host_median_ms([&] { norms = vector_norm(v, 2); }, reps));
    for (int64_t k : {1, 64, 575})
      std::printf("greedy k %-4lld          %8.4f ms\n", (long long)k,
                  host_median_ms([&] { (void)greedy_max_min(gram, norms, k); }, reps));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dev_select: %s\n", e.what());
    return 1;
  }
}
