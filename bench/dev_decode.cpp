// Development benchmark of the split-KV decode kernel (issue 4): time of attention() and of the
// bare flash_decode_cuda() call (no validation / output allocation) over K + V bytes, as a
// fraction of the measured copy bandwidth; inputs rotated over several sets so that repeated
// runs do not hit L2 (and the same-buffer number, as the SDPA peer is measured).
//   dev_decode routes        (the small prefills' kernel routes, timed side by side)
//   dev_decode [NAME-PART]   (prints a table; MMATTN_DECODE_DEBUG=1 prints each launch's grid,
//                             MMATTN_DECODE_BX=N forces N blocks per unit)
#include <cstdio>
#include <string>
#include <tuple>

#include "attention/attention.h"
#include "attention/attention_kernels.h"
#include "bench/bench_util.h"

using namespace mmattn;
using namespace mmattn::bench;

namespace {

Tensor rnd(const Shape& s, uint64_t seed, DType dt) { return bench_random(s, seed, dt); }

struct Case {
  const char* name;
  int64_t b, lq, lk, hq, hkv, d;
  bool mod;
  DType dt;
  double target_ms;  // 0: none
};

AttentionParams params_of(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out) {
  AttentionParams p;
  p.q = q.data_ptr(), p.k = k.data_ptr(), p.v = v.data_ptr(), p.out = out.data_ptr();
  p.q_sb = q.stride(0), p.q_sl = q.stride(1), p.q_sh = q.stride(2);
  p.k_sb = k.stride(0), p.k_sl = k.stride(1), p.k_sh = k.stride(2);
  p.v_sb = v.stride(0), p.v_sl = v.stride(1), p.v_sh = v.stride(2);
  p.batch = int(q.size(0)), p.lq = int(q.size(1)), p.hq = int(q.size(2)), p.d = int(q.size(3));
  p.lk = int(k.size(1)), p.hkv = int(k.size(2));
  p.scale = 1.f / std::sqrt(float(p.d));
  p.dtype = q.dtype();
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string only = argc > 1 ? argv[1] : "";  // run only the cases whose name contains it
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // lines reach a log even when a timeout stops the run
  try {
    const double copy = measure_copy_GBps();
    std::printf("device %s, copy %.0f GB/s (read + write)\n", device_name().c_str(), copy);
    const Case cases[] = {
        {"h32 d128 k4096 (issue: <= 0.034)", 1, 1, 4096, 32, 32, 128, false, DType::BF16, 0.034},
        {"h32 d128 k32768 (issue: <= 0.203)", 1, 1, 32768, 32, 32, 128, false, DType::BF16, 0.203},
        {"h32 d128 k32768 f16", 1, 1, 32768, 32, 32, 128, false, DType::F16, 0},
        {"h32 d128 k4096 mod+lse+mass", 1, 1, 4096, 32, 32, 128, true, DType::BF16, 0},
        {"h32 d128 k32768 mod+lse+mass", 1, 1, 32768, 32, 32, 128, true, DType::BF16, 0},
        {"h32 d64 k32768", 1, 1, 32768, 32, 32, 64, false, DType::BF16, 0},
        {"h32 d80 k32768", 1, 1, 32768, 32, 32, 80, false, DType::BF16, 0},
        {"h32 d96 k32768", 1, 1, 32768, 32, 32, 96, false, DType::BF16, 0},
        {"h32/8 d128 k32768 gqa4", 1, 1, 32768, 32, 8, 128, false, DType::BF16, 0},
        {"h28/4 d128 k16384 gqa7", 1, 1, 16384, 28, 4, 128, false, DType::BF16, 0},
        {"h32/8 d128 k8192 lq4 (16 rows)", 1, 4, 8192, 32, 8, 128, false, DType::BF16, 0},
        {"h32/4 d128 k8192 lq4 (32 rows)", 1, 4, 8192, 32, 4, 128, false, DType::BF16, 0},
        {"b8 h32 d128 k4096", 8, 1, 4096, 32, 32, 128, false, DType::BF16, 0},
        {"b1 h32 d128 k1024", 1, 1, 1024, 32, 32, 128, false, DType::BF16, 0},
        {"b1 h32 d128 k700 (llava step)", 1, 1, 700, 32, 32, 128, false, DType::BF16, 0},
        {"b8 h32 d128 k700 (llava b8 step)", 8, 1, 700, 32, 32, 128, false, DType::BF16, 0},
        {"b1 h1 d128 k16 (fixed cost)", 1, 1, 16, 1, 1, 128, false, DType::BF16, 0},
        {"b1 h32/8 d128 k4096 gqa4 lq1", 1, 1, 4096, 32, 8, 128, false, DType::BF16, 0},
    };
    {
      // The harness's floor: one 4-byte memset (a near-empty GPU operation) between the events.
      void* buf = cuda_alloc(256, current_stream());
      std::printf("harness floor (4-byte memset between the events) %.4f ms\n", time_ms([&] {
                    MMATTN_CUDA_CHECK(cudaMemsetAsync(buf, 0, 4, current_stream()));
                  }, 5, 50));
      cuda_free(buf);
    }
    if (only == "routes") {
      // The small prefills of a pruned request and the ViT on each kernel route (override: 0 auto,
      // 1 prefill (Hopper when available), 2 split-KV decode kernel, 3 general mma.sync kernel).
      for (const auto& [L, H, D, causal] : {std::tuple<int64_t, int64_t, int64_t, bool>{83, 32, 128, true},
                                            std::tuple<int64_t, int64_t, int64_t, bool>{104, 32, 128, true},
                                            std::tuple<int64_t, int64_t, int64_t, bool>{200, 32, 128, true},
                                            std::tuple<int64_t, int64_t, int64_t, bool>{577, 16, 64, false}}) {
        const Tensor q = rnd({1, L, H, D}, 1, DType::BF16), k = rnd({1, L, H, D}, 2, DType::BF16),
                     v = rnd({1, L, H, D}, 3, DType::BF16);
        AttentionOptions ao;
        ao.causal = causal;
        std::printf("L %4lld H %2lld D %3lld causal %d:", (long long)L, (long long)H, (long long)D, int(causal));
        for (int which : {0, 1, 2, 3}) {
          set_attention_kernel_override(which);
          std::printf("  route %d %7.4f ms", which, time_ms([&] { attention(q, k, v, ao); }, 5, 50));
        }
        set_attention_kernel_override(0);
        std::printf("\n");
      }
      return 0;
    }
    std::printf("%-36s %9s %9s %9s %8s %8s %8s\n", "case", "api_ms", "bare_ms", "same_ms", "GB/s", "of_copy", "target");
    for (const Case& c : cases) {
      if (!only.empty() && std::string(c.name).find(only) == std::string::npos) continue;
      const double bytes = 2.0 * double(c.b) * c.lk * c.hkv * c.d * 2.0;
      const int sets = bytes > 4e9 ? 1 : bytes > 1e9 ? 2 : 4;
      std::vector<Tensor> qs, ks, vs;
      for (int i = 0; i < sets; ++i) {
        qs.push_back(rnd({c.b, c.lq, c.hq, c.d}, 10 * i + 1, c.dt));
        ks.push_back(rnd({c.b, c.lk, c.hkv, c.d}, 10 * i + 2, c.dt));
        vs.push_back(rnd({c.b, c.lk, c.hkv, c.d}, 10 * i + 3, c.dt));
      }
      HeadModulation m;
      AttentionOptions opt;
      if (c.mod) {
        const int64_t C = 3;
        std::vector<uint8_t> cls(size_t(c.b * c.lk));
        for (size_t j = 0; j < cls.size(); ++j) cls[j] = uint8_t(j % 577 < 35 ? 0 : j % 577 < 500 ? 1 : 2);
        m.key_class = Tensor::from_vector(cls, {c.b, c.lk}).to(Device::cuda());
        m.num_classes = int(C);
        m.logit_abs_gain = Tensor::full({c.hq, C}, 0.1f, DType::F32).to(Device::cuda());
        m.logit_bias = Tensor::full({c.hq, C}, 0.2f, DType::F32).to(Device::cuda());
        m.post_weight = Tensor::full({c.hq, C}, 1.5f, DType::F32).to(Device::cuda());
        m.renormalize = true;
        m.head_gain = Tensor::full({c.hq}, 1.1f, DType::F32).to(Device::cuda());
        opt.mod = &m;
        opt.return_lse = true;
        opt.return_class_mass = true;
      }
      int it = 0;
      const double api = time_ms([&] { attention(qs[it % sets], ks[it % sets], vs[it % sets], opt), ++it; }, 5, 50);
      const double same = time_ms([&] { attention(qs[0], ks[0], vs[0], opt); }, 5, 50);
      double bare = 0;
      if (!c.mod) {
        Tensor out = Tensor::empty(qs[0].shape(), c.dt, Device::cuda());
        std::vector<AttentionParams> ps;
        for (int i = 0; i < sets; ++i) ps.push_back(params_of(qs[i], ks[i], vs[i], out));
        it = 0;
        bare = time_ms([&] { flash_decode_cuda(ps[size_t(it++ % sets)], current_stream()); }, 5, 50);
      }
      const double best = bare > 0 ? bare : api;
      const double gbps = bytes / (api * 1e-3) / 1e9;
      std::printf("%-36s %9.4f %9.4f %9.4f %8.0f %7.0f%% %8s\n", c.name, api, bare, same, gbps, 100 * gbps / copy,
                  c.target_ms > 0 ? (api <= c.target_ms ? "met" : "MISSED") : "-");
      (void)best;
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_decode_dev: %s\n", e.what());
    return 1;
  }
}
