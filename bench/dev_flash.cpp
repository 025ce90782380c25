// Development timing of the flash prefill paths (not a results benchmark: bench_attention is).
// Times the prefill kernel's fastest path (kernel override 1: the Hopper wgmma kernel in sm_90a
// builds) and its general mma.sync path (override 3) on the shapes and every head dim,
// and checks that the two agree on each shape. --mod times the Hopper kernel's modulated
// softmax variants instead (every row, with and without post weights and LSE; the last row; half
// the rows; modulation present but no row reached), each against the plain call, in one process.
//   bench_flash_dev [--quick] [--mod]
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "attention/attention.h"
#include "attention/attention_kernels.h"
#include "bench/bench_util.h"

using namespace mmattn;
using namespace mmattn::bench;

namespace {

Tensor rnd(const Shape& s, uint64_t seed, DType dt) { return bench_random(s, seed, dt); }

double rel_diff(const Tensor& a, const Tensor& b) {
  const auto x = a.to_floats(), y = b.to_floats();
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i]) || !std::isfinite(y[i])) return INFINITY;
    num += double(x[i] - y[i]) * (x[i] - y[i]);
    den += double(y[i]) * y[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1));
}

}  // namespace

// The modulated variants on three shapes (see the header), fast path forced (override 1).
void time_modulation() {
  struct Shape {
    int64_t h, l;
    bool causal;
  };
  for (const Shape sh : {Shape{24, 4096, false}, Shape{32, 640, true}, Shape{32, 2048, true}}) {
    Tensor q = rnd({1, sh.l, sh.h, 128}, 1, DType::BF16), k = rnd({1, sh.l, sh.h, 128}, 2, DType::BF16),
           v = rnd({1, sh.l, sh.h, 128}, 3, DType::BF16);
    std::vector<uint8_t> cls(size_t(sh.l));
    for (int64_t j = 0; j < sh.l; ++j) cls[size_t(j)] = j < 35 ? 0 : j < sh.l - 29 ? 1 : 2;
    const int64_t C = 3;
    auto make = [&](bool bias, bool weights, bool renorm, int64_t first) {
      HeadModulation m;
      m.key_class = Tensor::from_vector(cls, {1, sh.l}).to(Device::cuda());
      m.num_classes = int(C);
      m.logit_abs_gain = Tensor::full({sh.h, C}, 0.2f, DType::F32, Device::cuda());
      if (bias) m.logit_bias = Tensor::full({sh.h, C}, 0.1f, DType::F32, Device::cuda());
      if (weights) m.post_weight = Tensor::full({sh.h, C}, 0.9f, DType::F32, Device::cuda());
      m.renormalize = renorm;
      m.first_modulated_row = first;
      return m;
    };
    struct Variant {
      const char* name;
      HeadModulation m;
      bool lse;
    };
    const Variant variants[] = {
        {"no row reached (first = L)", make(true, true, true, sh.l), false},
        {"every row: gain + bias", make(true, false, false, 0), false},
        {"every row: + weights renorm (folded)", make(true, true, true, 0), false},
        {"every row: + weights renorm + LSE", make(true, true, true, 0), true},
        {"every row: + weights, no renorm", make(true, true, false, 0), false},
        {"last row: gain + weights + LSE", make(false, true, false, sh.l - 1), true},
        {"rows >= L/2 + 17: gain + bias", make(true, false, false, sh.l / 2 + 17), false},
    };
    set_attention_kernel_override(1);
    AttentionOptions plain;
    plain.causal = sh.causal;
    const double base = time_ms([&] { attention(q, k, v, plain); }, 3, 30);
    std::printf("h%lld n%lld%s plain %.4f ms\n", (long long)sh.h, (long long)sh.l, sh.causal ? " causal" : "", base);
    for (const Variant& var : variants) {
      AttentionOptions o = plain;
      o.mod = &var.m;
      o.return_lse = var.lse;
      const double ms = time_ms([&] { attention(q, k, v, o); }, 3, 30);
      std::printf("  %-40s %.4f ms  %.3fx\n", var.name, ms, ms / base);
    }
    set_attention_kernel_override(0);
    std::fflush(stdout);
  }
}

int main(int argc, char** argv) {
  try {
    const bool quick = has_flag(argc, argv, "--quick");
    if (has_flag(argc, argv, "--mod")) {
      time_modulation();
      return 0;
    }
    struct Case {
      int64_t b, h, hkv, l, d;
      bool causal;
      DType dt;
    };
    std::vector<Case> cases = {
        {1, 24, 24, 4096, 128, false, DType::BF16}, {1, 24, 24, 16384, 128, false, DType::BF16},
        {1, 32, 32, 4096, 128, true, DType::BF16},  {1, 24, 24, 4096, 128, false, DType::F16},
        {1, 24, 24, 4096, 64, false, DType::BF16},  {1, 24, 24, 4096, 72, false, DType::BF16},
        {1, 24, 24, 4096, 80, false, DType::BF16},  {1, 24, 24, 4096, 96, false, DType::BF16},
        {4, 32, 8, 2048, 128, true, DType::BF16},
    };
    if (!quick) cases.push_back({1, 24, 24, 65536, 128, false, DType::BF16});
    std::printf("%-40s %10s %10s %10s %10s %9s\n", "case", "fast ms", "TFLOP/s", "gen ms", "TFLOP/s", "rel diff");
    for (const Case& c : cases) {
      Tensor q = rnd({c.b, c.l, c.h, c.d}, 1, c.dt), k = rnd({c.b, c.l, c.hkv, c.d}, 2, c.dt),
             v = rnd({c.b, c.l, c.hkv, c.d}, 3, c.dt);
      AttentionOptions opt;
      opt.causal = c.causal;
      const double flops = 4.0 * c.b * c.h * double(c.l) * c.l * c.d / (c.causal ? 2 : 1);
      const int reps = c.l >= 65536 ? 5 : c.l >= 16384 ? 10 : 30;
      double ms[2];
      Tensor out[2];
      for (int i = 0; i < 2; ++i) {
        set_attention_kernel_override(i == 0 ? 1 : 3);
        out[i] = attention(q, k, v, opt).out;
        ms[i] = time_ms([&] { attention(q, k, v, opt); }, 2, reps);
      }
      set_attention_kernel_override(0);
      const double diff = c.l <= 16384 ? rel_diff(out[0], out[1]) : -1;
      char name[96];
      std::snprintf(name, sizeof name, "%s b%lld h%lld/%lld n%lld d%lld%s", std::string(dtype_name(c.dt)).c_str(), (long long)c.b,
                    (long long)c.h, (long long)c.hkv, (long long)c.l, (long long)c.d, c.causal ? " causal" : "");
      std::printf("%-40s %10.3f %10.1f %10.3f %10.1f %9.2e\n", name, ms[0], flops / ms[0] * 1e-9, ms[1],
                  flops / ms[1] * 1e-9, diff);
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_flash_dev: %s\n", e.what());
    return 1;
  }
  return 0;
}
