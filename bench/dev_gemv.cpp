// Decode-product timer for kernel development (no results file): the four fused b1 products of a
// Llama-7B layer, each over a rotating set of weight copies (>= 160 MB: cold L2, as in a decode
// step), in ms and as a fraction of the measured copy bandwidth (bench_core's repeated-weight
// numbers read partly from L2). Used for the bulk-copy experiment in bench/NOTES.md, session 6.
//   dev_gemv [m]
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "core/ops/linear.h"

using namespace mmattn;
using namespace mmattn::bench;

int main(int argc, char** argv) {
  try {
    const int64_t m = argc > 1 ? std::atoll(argv[1]) : 1;
    const double copy = measure_copy_GBps();
    struct Case { const char* form; int64_t n, k; };
    const Case cases[] = {{"rms_norm_linear", 12288, 4096}, {"linear_add_", 4096, 4096},
                          {"rms_norm_linear", 22016, 4096}, {"swiglu_linear_add_", 4096, 11008}};
    double total = 0, floor = 0;
    for (const auto& c : cases) {
      const std::string form = c.form;
      const double bytes = 2.0 * double(c.n * c.k);
      std::vector<Tensor> ws;
      for (int i = 0; i < int(160e6 / bytes) + 2; ++i) ws.push_back(bench_random({c.n, c.k}, 10 + uint64_t(i), DType::BF16, -1.f, 1.f));
      Tensor x = bench_random({m, form == "swiglu_linear_add_" ? 2 * c.k : c.k}, 9, DType::BF16, -1.f, 1.f);
      Tensor nw = bench_random({c.k}, 11, DType::BF16, -1.f, 1.f), y = bench_random({m, c.n}, 12, DType::BF16, -1.f, 1.f);
      size_t next = 0;
      const double ms = time_ms([&] {
        const Tensor& w = ws[next++ % ws.size()];
        if (form == "rms_norm_linear") y = rms_norm_linear(x, nw, 1e-6f, w);
        else if (form == "linear_add_") linear_add_(y, x, w);
        else swiglu_linear_add_(y, x, w);
      }, 10, 100);
      total += ms, floor += bytes / (copy * 1e9) * 1e3;
      std::printf("%-20s M%lld N%-6lld K%-6lld %.4f ms  %3.0f%% of copy\n", c.form, (long long)m, (long long)c.n,
                  (long long)c.k, ms, 100 * bytes / (ms * 1e-3) / 1e9 / copy);
    }
    std::printf("layer (4 products)   %.4f ms  %3.0f%% of copy (copy %.0f GB/s)\n", total, 100 * floor / total, copy);
  } catch (const Error& e) {
    std::fprintf(stderr, "dev_gemv: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
