// Development timer (issue 5): where a LLaVA-1.5-7B decode step goes. Replays the decoder's per-layer
// kernel sequence (language/llama.cpp, CUDA path) on random weights of the 7B shapes, 32 layers over
// 4 rotating weight sets (1.6 GB: L2 stays cold as in the model), a KV cache holding 700 tokens per
// sequence (576 image tokens + prompt + generated), at batch 1 and 8, and times whole steps of:
//   full       rms_norm_linear(qkv) -> append_rope -> attention -> linear_add_(o) ->
//              rms_norm_linear(gate_up) -> swiglu_linear_add_(down), x 32 layers
//   full llama the sequence llama.cpp runs: q/k/v + RoPE into the cache where linear_qkv_rope takes
//              it, and down after rms_norm_linear_swiglu
//   llama bare full llama without its RMSNorm and SwiGLU kernels (the bound for fusing them)
//   full fused full llama with the decode attention inside the q/k/v product's kernel
//              (attention/decode_fused.h) where it takes the step (b1); "qkv+attn fused" that kernel
//              alone per layer, against "qkv paired" then "attn only"
//   products   the four products only (attention output fixed)
//   attention  append_rope + attention only (q/k/v fixed)
//   qkv / o / gate_up / down   one product x 32 layers, back to back (lm_head: the vocabulary head's
//              product, 32 times over two copies)
// and prints each as ms per step and the step's weight (+ KV) bytes over the measured copy bandwidth.
// --rows N (> 1): the same for a prefill of N rows at batch 1 into an empty cache (a pruned
// request's decoder prefill: ~104 rows at 64 kept image tokens), RoPE at positions 0..N-1.
// --only a,b: those variants only; --batches 1: batch 1 only.
//   dev_step [--ctx 700] [--steps 40] [--rows N] [--only a,b] [--batches 1|8|1,8]
#include <cmath>
#include <cstdio>
#include <functional>

#include "attention/attention.h"
#include "attention/attention_kernels.h"
#include "attention/decode_fused.h"
#include "attention/kv_cache.h"
#include "bench/bench_util.h"
#include "core/ops/activation.h"
#include "core/ops/linear.h"
#include "core/ops/norm.h"

using namespace mmattn;
using namespace mmattn::bench;

namespace {

constexpr int64_t kHidden = 4096, kHeads = 32, kDim = 128, kFfn = 11008, kLayers = 32, kSets = 4, kVocab = 32064;

struct LayerWeights {
  Tensor in_norm, qkv, o, post_norm, gate_up, down;
};

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // lines reach a log even when a timeout stops the run
  try {
    const int64_t rows = std::stoll(arg_value(argc, argv, "--rows", "1"));
    const int64_t ctx = std::stoll(arg_value(argc, argv, "--ctx", rows > 1 ? "0" : "700"));
    const int steps = std::stoi(arg_value(argc, argv, "--steps", "40"));
    const double copy = measure_copy_GBps();
    std::printf("device %s, copy %.0f GB/s, context %lld tokens\n", device_name().c_str(), copy, (long long)ctx);
    const DType dt = DType::BF16;
    const Device dev = Device::cuda();
    std::vector<LayerWeights> w;
    for (int s = 0; s < kSets; ++s) {
      const uint64_t b = 100 * uint64_t(s);
      w.push_back({bench_random({kHidden}, b + 1, dt, 0.5f, 1.5f), bench_random({3 * kHidden, kHidden}, b + 2, dt, -0.02f, 0.02f),
                   bench_random({kHidden, kHidden}, b + 3, dt, -0.02f, 0.02f), bench_random({kHidden}, b + 4, dt, 0.5f, 1.5f),
                   bench_random({2 * kFfn, kHidden}, b + 5, dt, -0.02f, 0.02f),
                   bench_random({kHidden, kFfn}, b + 6, dt, -0.02f, 0.02f)});
    }
    const std::vector<Tensor> head = {bench_random({kVocab, kHidden}, 201, dt, -0.02f, 0.02f),
                                      bench_random({kVocab, kHidden}, 202, dt, -0.02f, 0.02f)};
    const double layer_bytes = 2.0 * double(kHidden) * (3 * kHidden + kHidden + 2 * kFfn) + 2.0 * double(kHidden) * kFfn;
    const float scale = float(1.0 / std::sqrt(double(kDim)));
    const float eps = 1e-5f;

    const std::string only = "," + arg_value(argc, argv, "--only", "") + ",";
    const std::string bl = arg_value(argc, argv, "--batches", "1,8");
    std::vector<int64_t> batches;
    for (int64_t b : {1, 8})
      if ((rows == 1 || b == 1) && ("," + bl + ",").find("," + std::to_string(b) + ",") != std::string::npos)
        batches.push_back(b);
    for (int64_t B : batches) {
      KVCache cache(int(kLayers), B, ctx + 8 + std::max<int64_t>(rows, steps * 16), kHeads, kDim, dt, dev);
      if (ctx > 0) {
        const Tensor k0 = bench_random({B, ctx, kHeads, kDim}, 7, dt), v0 = bench_random({B, ctx, kHeads, kDim}, 8, dt);
        for (int l = 0; l < kLayers; ++l) cache.append(l, k0, v0);
        cache.advance();
      }
      std::vector<float> cv(size_t(rows * kDim / 2)), sv(size_t(rows * kDim / 2));
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < kDim / 2; ++i) {
          const float a = float(ctx + r) * std::pow(10000.f, -2.f * float(i) / float(kDim));
          cv[size_t(r * kDim / 2 + i)] = std::cos(a), sv[size_t(r * kDim / 2 + i)] = std::sin(a);
        }
      const Tensor cos = Tensor::from_floats(cv, {rows, kDim / 2}).to(dev);
      const Tensor sin = Tensor::from_floats(sv, {rows, kDim / 2}).to(dev);
      Tensor x = bench_random({B, rows, kHidden}, 11, dt, -1.f, 1.f);
      const Tensor att_fixed = bench_random({B, rows, kHidden}, 12, dt, -1.f, 1.f);
      const Tensor gu_fixed = bench_random({B, rows, 2 * kFfn}, 13, dt, -1.f, 1.f);
      const Tensor g_fixed = bench_random({B, rows, kFfn}, 15, dt, -1.f, 1.f);
      const Tensor qkv_fixed = bench_random({B, rows, 3 * kHeads, kDim}, 14, dt, -1.f, 1.f);
      auto reset = [&] {
        for (int64_t b = 0; b < B; ++b) cache.truncate(b, ctx);
        x = bench_random({B, rows, kHidden}, 11, dt, -1.f, 1.f);
      };
      // a prefill step starts from the same cache length every time
      auto rewind = [&] {
        if (rows > 1)
          for (int64_t b = 0; b < B; ++b) cache.truncate(b, ctx);
      };
      // RoPE + KV append of a q/k/v product's rows (one launch); returns q, rotated
      auto append = [&](int l, const Tensor& qkv) {
        Tensor q = qkv.slice(2, 0, kHeads);
        cache.append_rope(l, q, qkv.slice(2, kHeads, 2 * kHeads), qkv.slice(2, 2 * kHeads, 3 * kHeads), cos, sin);
        return q;
      };
      // the attention of q over layer l's cache
      auto attend_q = [&](int l, const Tensor& q) {
        AttentionOptions ao;
        ao.causal = true;
        ao.scale = scale;
        ao.k_lens = cache.lens_tensor(l);
        return attention(q, cache.k(l), cache.v(l), ao).out.reshape({B, rows, kHidden});
      };
      auto attend = [&](int l, const Tensor& qkv) { return attend_q(l, append(l, qkv)); };
      // as llama.cpp runs one sequence where linear_qkv_rope takes it: the norm, the q/k/v product and
      // RoPE in one kernel, k and v written into the cache (no separate append); returns q
      auto project_into_cache = [&](int l, const LayerWeights& L) {
        Tensor q = Tensor::empty({B, rows, kHeads, kDim}, dt, dev);
        Tensor q2 = q.view({rows, kHeads * kDim}), k2 = cache.next_rows_k(l, rows), v2 = cache.next_rows_v(l, rows);
        rms_norm_linear_qkv_rope(x, L.in_norm, eps, L.qkv, Tensor(), cos, sin, kHeads, kHeads, q2, k2, v2);
        cache.append_written(l, rows);
        return q;
      };
      // the attention half of a b1 step in one kernel (attention/decode_fused.h), undefined where it
      // does not take the step
      auto attend_fused = [&](int l, const LayerWeights& L) {
        const int64_t len = cache.layer_length(l, 0);
        if (B != 1 || rows != 1 || !decode_attention_fusable(x, L.qkv, kHeads, kHeads, kDim, len)) return Tensor();
        Tensor att = rms_norm_qkv_rope_attention(x, L.in_norm, eps, L.qkv, Tensor(), cos, sin, kHeads, kHeads,
                                                 cache.k(l), cache.v(l), len, scale);
        cache.append_written(l, 1);
        return att;
      };
      struct Variant {
        const char* name;
        double bytes;  // read per step
        std::function<void()> step;
      };
      // A step that runs fn on each layer's weights.
      auto per_layer = [&](auto fn) {
        return [&w, fn] {
          for (int l = 0; l < kLayers; ++l) fn(w[size_t(l % kSets)]);
        };
      };
      const double kv_bytes = double(B) * double(ctx + rows) * 2.0 * kHeads * kDim * 2.0 * kLayers;
      // RoPE + KV append of qkv_fixed's rows in every layer, one step
      auto append_all = [&] {
        rewind();
        for (int l = 0; l < kLayers; ++l) (void)append(l, qkv_fixed);
        cache.advance();
      };
      bool attn_ready = false;
      std::vector<Variant> variants = {
          {"full", layer_bytes * kLayers + kv_bytes,
           [&] {
             rewind();
             for (int l = 0; l < kLayers; ++l) {
               const LayerWeights& L = w[size_t(l % kSets)];
               const Tensor qkv = rms_norm_linear(x, L.in_norm, eps, L.qkv).view({B, rows, 3 * kHeads, kDim});
               const Tensor att = attend(l, qkv);
               linear_add_(x, att, L.o);
               const Tensor gu = rms_norm_linear(x, L.post_norm, eps, L.gate_up);
               swiglu_linear_add_(x, gu, L.down);
             }
             cache.advance();
           }},
          // the sequence llama.cpp runs: q/k/v into the cache where linear_qkv_rope takes it, the gated
          // activation out of the gate/up product (rms_norm_linear_swiglu: decode sizes), down on it
          {"full llama", layer_bytes * kLayers + kv_bytes,
           [&] {
             rewind();
             for (int l = 0; l < kLayers; ++l) {
               const LayerWeights& L = w[size_t(l % kSets)];
               const Tensor att = B == 1 && linear_qkv_rope_fusable(x, L.qkv, kDim)
                                      ? attend_q(l, project_into_cache(l, L))
                                      : attend(l, rms_norm_linear(x, L.in_norm, eps, L.qkv).view({B, rows, 3 * kHeads, kDim}));
               linear_add_(x, att, L.o);
               linear_add_(x, rms_norm_linear_swiglu(x, L.post_norm, eps, L.gate_up), L.down);
             }
             cache.advance();
           }},
          // full llama with the attention half of a b1 step in one kernel where it is fusable
          {"full fused", layer_bytes * kLayers + kv_bytes,
           [&] {
             rewind();
             for (int l = 0; l < kLayers; ++l) {
               const LayerWeights& L = w[size_t(l % kSets)];
               Tensor att = attend_fused(l, L);
               if (!att.defined()) att = attend_q(l, project_into_cache(l, L));
               linear_add_(x, att, L.o);
               linear_add_(x, rms_norm_linear_swiglu(x, L.post_norm, eps, L.gate_up), L.down);
             }
             cache.advance();
           }},
          {"qkv+attn fused", 2.0 * 3 * kHidden * kHidden * kLayers + kv_bytes,
           [&] {
             rewind();
             for (int l = 0; l < kLayers; ++l)
               if (!attend_fused(l, w[size_t(l % kSets)]).defined()) throw std::runtime_error("not fusable");
             cache.advance();
           }},
          // full llama with its three small kernels left out (no RMSNorms, down reads a fixed gated
          // activation): what fusing all of them into the products could save at best
          {"llama bare", layer_bytes * kLayers + kv_bytes,
           [&] {
             rewind();
             for (int l = 0; l < kLayers; ++l) {
               const LayerWeights& L = w[size_t(l % kSets)];
               Tensor att;
               if (B == 1 && linear_qkv_rope_fusable(x, L.qkv, kDim)) {
                 Tensor q = Tensor::empty({B, rows, kHeads, kDim}, dt, dev);
                 Tensor q2 = q.view({rows, kHeads * kDim}), k2 = cache.next_rows_k(l, rows),
                        v2 = cache.next_rows_v(l, rows);
                 linear_qkv_rope(x, L.qkv, Tensor(), cos, sin, kHeads, kHeads, q2, k2, v2);
                 cache.append_written(l, rows);
                 att = attend_q(l, q);
               } else {
                 att = attend(l, linear(x, L.qkv).view({B, rows, 3 * kHeads, kDim}));
               }
               linear_add_(x, att, L.o);
               (void)linear(x, L.gate_up);
               linear_add_(x, g_fixed, L.down);
             }
             cache.advance();
           }},
          {"products", layer_bytes * kLayers, per_layer([&](const LayerWeights& L) {
             (void)rms_norm_linear(x, L.in_norm, eps, L.qkv);
             linear_add_(x, att_fixed, L.o);
             const Tensor gu = rms_norm_linear(x, L.post_norm, eps, L.gate_up);
             swiglu_linear_add_(x, gu, L.down);
           })},
          {"attention", kv_bytes,
           [&] {
             rewind();
             for (int l = 0; l < kLayers; ++l) (void)attend(l, qkv_fixed);
             cache.advance();
           }},
          {"qkv", 2.0 * 3 * kHidden * kHidden * kLayers,
           per_layer([&](const LayerWeights& L) { (void)rms_norm_linear(x, L.in_norm, eps, L.qkv); })},
          {"o", 2.0 * kHidden * kHidden * kLayers, per_layer([&](const LayerWeights& L) { linear_add_(x, att_fixed, L.o); })},
          {"gate_up", 2.0 * 2 * kFfn * kHidden * kLayers,
           per_layer([&](const LayerWeights& L) { (void)rms_norm_linear(x, L.post_norm, eps, L.gate_up); })},
          {"down", 2.0 * kHidden * kFfn * kLayers,
           per_layer([&](const LayerWeights& L) { swiglu_linear_add_(x, gu_fixed, L.down); })},
          // gate_up -> down as two kernels: the norm + gate/up product + SwiGLU staged by down (above), or
          // the gated activation written by the gate/up kernel (paired rows) and down on a plain input
          {"mlp", 2.0 * 3 * kFfn * kHidden * kLayers, per_layer([&](const LayerWeights& L) {
             swiglu_linear_add_(x, rms_norm_linear(x, L.post_norm, eps, L.gate_up), L.down);
           })},
          {"mlp paired", 2.0 * 3 * kFfn * kHidden * kLayers, per_layer([&](const LayerWeights& L) {
             linear_add_(x, rms_norm_linear_swiglu(x, L.post_norm, eps, L.gate_up), L.down);
           })},
          {"qkv+append", 2.0 * 3 * kHidden * kHidden * kLayers, [&] {
             rewind();
             for (int l = 0; l < kLayers; ++l) {
               const LayerWeights& L = w[size_t(l % kSets)];
               (void)append(l, rms_norm_linear(x, L.in_norm, eps, L.qkv).view({B, rows, 3 * kHeads, kDim}));
             }
             cache.advance();
           }},
          {"qkv paired", 2.0 * 3 * kHidden * kHidden * kLayers, [&] {
             rewind();
             for (int l = 0; l < kLayers; ++l) {
               const LayerWeights& L = w[size_t(l % kSets)];
               if (B != 1 || !linear_qkv_rope_fusable(x, L.qkv, kDim)) throw std::runtime_error("not fusable");
               (void)project_into_cache(l, L);
             }
             cache.advance();
           }},
          // the same products without their fused input kernels, and those kernels alone
          {"qkv bare", 2.0 * 3 * kHidden * kHidden * kLayers, per_layer([&](const LayerWeights& L) { (void)linear(x, L.qkv); })},
          // the vocabulary head's shape (LLaVA-1.5: 32064 rows), 32 times
          {"lm_head", 2.0 * kVocab * kHidden * kLayers, [&] {
             for (int l = 0; l < kLayers; ++l) (void)linear(x, head[size_t(l % 2)]);
           }},
          {"gu bare", 2.0 * 2 * kFfn * kHidden * kLayers, per_layer([&](const LayerWeights& L) { (void)linear(x, L.gate_up); })},
          {"down bare", 2.0 * kHidden * kFfn * kLayers, per_layer([&](const LayerWeights& L) { linear_add_(x, g_fixed, L.down); })},
          {"rms_norm", 2.0 * B * rows * kHidden * kLayers, per_layer([&](const LayerWeights& L) { (void)rms_norm(x, L.in_norm, eps); })},
          {"swiglu", 2.0 * B * rows * 3 * kFfn * kLayers, per_layer([&](const LayerWeights&) { (void)swiglu_fused(gu_fixed); })},
          // the attention chain's two halves: the RoPE + KV append alone, and the attention alone
          // over the rows of a cache filled once (auto kernel choice, then each kernel forced)
          {"append", kv_bytes, append_all},
      };
      for (int which : {0, 1, 2, 3})
        variants.push_back({which == 0 ? "attn only" : which == 1 ? "attn hopper" : which == 2 ? "attn decode" : "attn mma",
                            kv_bytes, [&, which] {
                              if (!attn_ready) append_all(), attn_ready = true;  // fill the cache's rows once
                              set_attention_kernel_override(which);
                              const Tensor q = qkv_fixed.slice(2, 0, kHeads);
                              for (int l = 0; l < kLayers; ++l) (void)attend_q(l, q);
                              set_attention_kernel_override(0);
                            }});
      std::printf("\nbatch %lld: weights %.2f GB per step, KV %.2f GB per step\n", (long long)B, layer_bytes * kLayers / 1e9,
                  kv_bytes / 1e9);
      std::printf("%-10s %9s %9s %8s %10s\n", "variant", "ms/step", "us/layer", "of_copy", "tok/s");
      for (const Variant& v : variants) {
        if (only != ",," && only.find("," + std::string(v.name) + ",") == std::string::npos) continue;
        reset();
        attn_ready = false;
        try {
          const double ms = time_ms(v.step, 3, steps);
          const double gbps = v.bytes / (ms * 1e-3) / 1e9;
          std::printf("%-10s %9.3f %9.1f %7.0f%% %10.1f\n", v.name, ms, 1000 * ms / kLayers, 100 * gbps / copy,
                      double(B * rows) * 1000.0 / ms);
        } catch (const std::exception& e) {
          set_attention_kernel_override(0);
          std::printf("%-10s n/a (%s)\n", v.name, e.what());
        }
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dev_step: %s\n", e.what());
    return 1;
  }
}
