// Times LLaVA's vision stage piece by piece on the 7B-shaped checkpoint (bench/peer_llava7b.py
// writes it): JPEG decode, preprocessing, the ViT's embedding and each op of its layers (each
// synchronised, medians), the projector, the whole encoder, and the pre-LLM pruning methods'
// encode_visual_tokens at keep 64 and keep N - 1. Then, between cudaProfilerStart/Stop, one encoder
// pass and one pass of each pruning method, for `ncu --profile-from-start off`.
//   dev_vision [--model DIR] [--reps N]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

#if __has_include(<cuda_profiler_api.h>)
#include <cuda_profiler_api.h>
#define MMATTN_HAVE_PROFILER_API 1
#endif

#include "attention/attention.h"
#include "attention/attention_kernels.h"
#include "bench/bench_util.h"
#include "core/cuda_graph.h"
#include "core/device.h"
#include "core/ops/activation.h"
#include "core/ops/embedding.h"
#include "core/ops/elementwise.h"
#include "core/ops/linear.h"
#include "core/ops/norm.h"
#include "language/llama.h"
#include "pipelines/llava.h"
#include "pipelines/pruning.h"
#include "vision/clip_preprocess.h"
#include "vision/image.h"
#include "vision/projector.h"

using namespace mmattn;
using namespace mmattn::bench;

namespace {

PruningConfig make(PruneMethod m, int64_t keep) {
  PruningConfig c;
  c.method = m;
  if (m != PruneMethod::None) c.keep = keep;
  return c;
}

// Host-bound or not: the median host time to enqueue fn (device idle before), fn synchronised, and
// fn captured once into a CUDA graph (CapturedGraph) and replayed.
void host_vs_graph(const char* name, const std::function<void()>& fn, int reps) {
  std::vector<double> enq;
  for (int i = 0; i < reps; ++i) {
    synchronize();
    const auto a = std::chrono::steady_clock::now();
    fn();
    enq.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
  }
  synchronize();
  std::sort(enq.begin(), enq.end());
  std::printf("%-28s enqueue %8.3f ms, synchronised %8.3f ms", name, enq[enq.size() / 2], host_median_ms(fn, reps));
  try {
    CapturedGraph g([&] {
      fn();
      return std::vector<Tensor>{};
    });
    std::printf(", graph (%zu nodes) %8.3f ms", g.num_nodes(), host_median_ms([&] { g.replay(); }, reps));
  } catch (const Error& e) {
    std::printf(", graph: capture failed (%s)", e.what());
  }
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string model = llava7b_model(argc, argv, "dev_vision");
    if (model.empty()) return 0;
    const int reps = std::atoi(arg_value(argc, argv, "--reps", "20").c_str());
    LlavaPipeline pipe(model, Device::cuda(), DType::BF16);
    const LlavaImageEncoder& enc = pipe.image_encoder();
    const ClipVisionTower& tower = enc.tower();
    const ClipVisionConfig& vc = pipe.config().vision_config;
    const std::string image = std::string(MMATTN_SOURCE_DIR_BENCH) + "/assets/images/extreme_ironing.jpg";

    Image img;
    Tensor px, crop;  // crop: the preprocessed U8 image on the device (vflowopt's patch entropy)
    std::printf("decode               %8.3f ms\n", host_median_ms([&] { img = load_image(image); }, reps));
    std::printf("preprocess (GPU)     %8.3f ms\n", host_median_ms([&] {
                  px = clip_preprocess_to(img, pipe.preprocess_config(), Device::cuda(), DType::BF16, nullptr, &crop)
                           .unsqueeze(0);
                }, reps));
    const int64_t n_run = ClipVisionTower::layers_for_feature_layer(vc, enc.feature_layers()[0]);
    std::printf("encoder (%lld layers + projector) %8.3f ms\n", (long long)n_run,
                host_median_ms([&] { enc.encode(px); }, reps));
    std::printf("tower forward        %8.3f ms\n", host_median_ms([&] { tower.forward(px, n_run); }, reps));
    std::printf("embed                %8.3f ms\n", host_median_ms([&] { tower.embed(px); }, reps));
    const Tensor feats = enc.vision_features(px);
    std::printf("projector            %8.3f ms\n", host_median_ms([&] { enc.projector().forward(feats); }, reps));

    // One layer, op by op (each synchronised): where a layer's time goes.
    const Tensor x = tower.embed(px);
    const ClipEncoderLayerWeights& w = tower.layer(0);
    const int64_t B = x.size(0), L = x.size(1), D = vc.hidden_size, H = vc.num_attention_heads, hd = D / H;
    const float eps = float(vc.layer_norm_eps);
    Tensor h, qkv, o, y, f;
    std::printf("layer_forward        %8.3f ms\n", host_median_ms([&] { tower.layer_forward(0, x); }, reps));
    std::printf("  layer_norm         %8.3f ms\n", host_median_ms([&] { h = layer_norm(x, w.ln1_w, w.ln1_b, eps); }, reps));
    std::printf("  qkv linear         %8.3f ms\n", host_median_ms([&] { qkv = linear(h, w.qkv_w, w.qkv_b); }, reps));
    const Tensor q5 = qkv.view({B, L, 3, H, hd});
    AttentionOptions opt;
    opt.scale = float(1.0 / std::sqrt(double(hd)));
    std::printf("  attention          %8.3f ms\n", host_median_ms([&] {
                  o = attention(q5.select(2, 0), q5.select(2, 1), q5.select(2, 2), opt).out;
                }, reps));
    {  // the general mma.sync kernel instead of the Hopper one (override 3), and the encoder with it
      set_attention_kernel_override(3);
      std::printf("  attention (mma.sync kernel) %8.3f ms\n", host_median_ms([&] {
                    o = attention(q5.select(2, 0), q5.select(2, 1), q5.select(2, 2), opt).out;
                  }, reps));
      std::printf("encoder with the mma.sync attention %8.3f ms\n", host_median_ms([&] { enc.encode(px); }, reps));
      set_attention_kernel_override(0);
    }
    std::printf("  out linear         %8.3f ms\n", host_median_ms([&] { y = linear(o.view({B, L, D}), w.out_w, w.out_b); }, reps));
    std::printf("  residual add       %8.3f ms\n", host_median_ms([&] { y = add(x, y); }, reps));
    std::printf("  fc1 linear         %8.3f ms\n", host_median_ms([&] { f = linear(h, w.fc1_w, w.fc1_b); }, reps));
    const Activation act = parse_activation(vc.hidden_act, "hidden_act");
    std::printf("  activation         %8.3f ms\n", host_median_ms([&] { f = apply_activation(f, act); }, reps));
    std::printf("  fc2 linear_add_    %8.3f ms\n", host_median_ms([&] { linear_add_(y, f, w.fc2_w, w.fc2_b); }, reps));

    // The pre-LLM pruning methods' whole vision step.
    const int64_t N = vc.num_patches(), grid = vc.image_size / vc.patch_size;
    const int n_layers = pipe.language_model().num_layers();
    std::vector<std::pair<std::string, PruningConfig>> cfgs;
    for (PruneMethod m : {PruneMethod::None, PruneMethod::FasterVLM, PruneMethod::VisionZip, PruneMethod::DivPrune,
                          PruneMethod::VFlowOpt}) {
      for (int64_t keep : {int64_t(64), N - 1}) {
        if (m == PruneMethod::None && keep != 64) continue;
        PruningConfig c = make(m, keep);
        c.resolve(N, n_layers, grid);
        cfgs.push_back({std::string(prune_method_name(m)) + " keep " + std::to_string(keep), c});
      }
    }
    for (const auto& [name, c] : cfgs)
      std::printf("encode_visual_tokens %-22s %8.3f ms\n", name.c_str(),
                  host_median_ms([&] { encode_visual_tokens(c, enc, px, crop); }, reps));
    for (unsigned taps : {0u, unsigned(ClipVisionTower::kTapClsAttention),
                          unsigned(ClipVisionTower::kTapClsAttention | ClipVisionTower::kTapKeyMean),
                          unsigned(ClipVisionTower::kTapAttentionMatrix)})
      std::printf("feature_taps (taps %u) %8.3f ms\n", taps,
                  host_median_ms([&] { tower.feature_taps(px, enc.feature_layers()[0], taps); }, reps));

    // FasterVLM's steps after the taps, one by one
    {
      const ClipVisionTower::FeatureTaps taps = tower.feature_taps(px, enc.feature_layers()[0], ClipVisionTower::kTapClsAttention);
      const Tensor patches = taps.features.select(0, 0).slice(0, 1, N + 1);
      std::vector<float> cls;
      std::printf("  sum_over_heads     %8.3f ms\n", host_median_ms([&] { cls = sum_over_heads(taps.cls_attention); }, reps));
      std::vector<int64_t> off{0}, idx;
      std::vector<float> w;
      for (int64_t i = 0; i < 64; ++i) idx.push_back(i * 9), w.push_back(1.f), off.push_back(i + 1);
      Tensor sel;
      std::printf("  weighted_rows 64   %8.3f ms\n", host_median_ms([&] { sel = weighted_rows(patches, off, idx, w); }, reps));
      std::printf("  projector 64 rows  %8.3f ms\n", host_median_ms([&] { enc.projector().forward(sel); }, reps));
    }

    // The decoder prefill of a 64-kept prompt (~83 rows: FasterVLM's TTFT at keep 64)
    const LlamaModel& lm = pipe.language_model();
    const int64_t rows = std::atoi(arg_value(argc, argv, "--rows", "83").c_str());
    std::vector<float> e(size_t(rows * lm.hidden_size()));
    for (size_t i = 0; i < e.size(); ++i) e[i] = float((i * 2654435761u) % 1000) / 1000.f - 0.5f;
    const Tensor embeds = Tensor::from_floats(e, {1, rows, lm.hidden_size()}).to(Device::cuda(), DType::BF16);
    KVCache cache = lm.make_cache(1, rows + 1);
    LlamaForwardOptions fo;
    fo.last_only = true;
    const int64_t fused_before = linear_qkv_rope_calls();
    std::printf("decoder prefill %lld rows %8.3f ms\n", (long long)rows, host_median_ms([&] {
                  cache.reset_all();
                  lm.forward(embeds, cache, fo);
                }, reps));
    std::printf("  layers through linear_qkv_rope: %lld\n", (long long)(linear_qkv_rope_calls() - fused_before));
    host_vs_graph("encoder (tower graphed)", [&] { enc.encode(px); }, reps);
    set_cuda_graphs_enabled(false);
    host_vs_graph("encoder (eager)", [&] { enc.encode(px); }, reps);
    set_cuda_graphs_enabled(true);
    host_vs_graph("decoder prefill", [&] {
      cache.reset_all();
      lm.forward(embeds, cache, fo);
    }, reps);

    // Attention routes on the two small shapes of a pruned request: the ~83-row decoder prefill
    // (32 heads x 128, causal) and the ViT (577 tokens, 16 heads x 64)
    for (const auto& [L, H, D, causal] : {std::tuple<int64_t, int64_t, int64_t, bool>{rows, 32, 128, true},
                                          std::tuple<int64_t, int64_t, int64_t, bool>{577, 16, 64, false}}) {
      const Tensor qa = bench_random({1, L, H, D}, 1, DType::BF16), ka = bench_random({1, L, H, D}, 2, DType::BF16),
                   va = bench_random({1, L, H, D}, 3, DType::BF16);
      AttentionOptions ao;
      ao.causal = causal;
      ao.scale = float(1.0 / std::sqrt(double(D)));
      for (int which : {1, 3}) {
        set_attention_kernel_override(which);
        std::printf("attention L %lld H %lld D %lld override %d %8.4f ms\n", (long long)L, (long long)H,
                    (long long)D, which, host_median_ms([&] { attention(qa, ka, va, ao); }, reps));
      }
      set_attention_kernel_override(0);
    }

#ifdef MMATTN_HAVE_PROFILER_API
    synchronize();
    cache.reset_all();
    cudaProfilerStart();
    lm.forward(embeds, cache, fo);
    enc.encode(px);
    for (const auto& [name, c] : cfgs)
      if (name.find("keep 64") != std::string::npos) encode_visual_tokens(c, enc, px, crop);
    synchronize();
    cudaProfilerStop();
#endif
  } catch (const Error& e) {
    std::fprintf(stderr, "dev_vision: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
