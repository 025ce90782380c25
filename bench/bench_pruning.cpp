// Visual token pruning on the LLaVA-1.5-7B-shaped random checkpoint (issue 6), in the llava7b stage
// after bench/peer_llava7b.py wrote it. For each method and keep count (576 = unpruned, 192, 128, 64):
//   TTFT at batch 1 (the pipeline: image -> ViT -> selection -> prefill -> first token; at keep 64,
//   the target's row, against unpruned requests interleaved with the pruned ones),
//   decoder prefill throughput at batch 16 (16 copies of the prompt, pruning inside the step),
//   decode tokens/s at batch 16 over the pruned caches, KV bytes per sequence,
//   selection overhead: the method's extra work relative to the unpruned prefill (in-LLM methods:
//   the forward with keep = all minus the plain forward; pre-LLM: the selection step's extra time;
//   both as the median of paired differences, timed back to back).
// Targets (issue 6), at 64 kept tokens: TTFT <= 0.6x unpruned at batch 1; batch-16 prefill
// throughput >= 4x unpruned; selection overhead < 3% of the prefill.
//   bench_pruning --out bench/results [--model /tmp/llava7b]
//                 [--methods pdrop,divprune] [--overhead-only]   (development runs: a subset; they need
//                                                                 an explicit --out)
#include <chrono>
#include <set>

#include "bench/bench_util.h"
#include "core/io.h"
#include "language/chat.h"
#include "language/llama.h"
#include "language/llava.h"
#include "language/tokenizer.h"
#include "pipelines/llava.h"
#include "pipelines/pruning.h"
#include "vision/clip_preprocess.h"
#include "vision/image.h"
#include "vision/projector.h"

using namespace mmattn;
using namespace mmattn::bench;

namespace {

using Clock = std::chrono::steady_clock;
double since_ms(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The median of `pairs` paired differences a() - b(), each pair timed back to back in alternating
// order: clock and host drift between two separately timed medians (+-2-4 ms on a ~190 ms batch-16
// prefill, more than the overheads measured) cancels within a pair.
constexpr int kTtftRounds = 31;

double paired_difference_ms(const std::function<double()>& a, const std::function<double()>& b, int pairs) {
  std::vector<double> d;
  for (int i = 0; i < pairs; ++i) {
    double ta = 0, tb = 0;
    if (i % 2) ta = a(), tb = b();
    else tb = b(), ta = a();
    d.push_back(ta - tb);
  }
  return median(d);
}

constexpr PruneMethod kAllMethods[] = {PruneMethod::FastV,     PruneMethod::PDrop, PruneMethod::FasterVLM,
                                       PruneMethod::VisionZip, PruneMethod::Dart,  PruneMethod::DivPrune,
                                       PruneMethod::VFlowOpt};

PruningConfig make(PruneMethod m, int64_t keep) {
  PruningConfig c;
  c.method = m;
  if (m != PruneMethod::None) c.keep = keep;
  return c;
}

struct Prompt {
  Tensor embeds;  // [1, L, hidden]
  std::pair<int64_t, int64_t> span;
  std::vector<float> row_importance;
};

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string out = arg_value(argc, argv, "--out", "bench/results");
    const std::string model = llava7b_model(argc, argv, "bench_pruning");
    const std::string only_methods = arg_value(argc, argv, "--methods", "");
    const bool overhead_only = has_flag(argc, argv, "--overhead-only"), out_given = has_flag(argc, argv, "--out");
    // a partial run must not replace the committed bench/results/pruning.json by default
    MMATTN_CHECK(out_given || (only_methods.empty() && !overhead_only), ConfigError,
                 "bench_pruning: --methods / --overhead-only write a partial pruning.json; give --out DIR");
    std::set<std::string> selected;  // empty: every method
    for (size_t a = 0, b; a < only_methods.size(); a = b + 1) {
      b = std::min(only_methods.find(',', a), only_methods.size());
      const std::string name = only_methods.substr(a, b - a);
      MMATTN_CHECK(std::any_of(std::begin(kAllMethods), std::end(kAllMethods),
                               [&](PruneMethod m) { return name == prune_method_name(m); }),
                   ConfigError, "bench_pruning: --methods: unknown method '", name, "'");
      selected.insert(name);
    }
    if (model.empty()) return 0;
    Results r{"pruning"};
    r.ceilings = {{"copy_GBps", measure_copy_GBps()}};
    LlavaPipeline pipe(model, Device::cuda(), DType::BF16);
    const LlamaModel& lm = pipe.language_model();
    const int n_layers = lm.num_layers();
    const std::string image = std::string(MMATTN_SOURCE_DIR_BENCH) + "/assets/images/extreme_ironing.jpg";
    const std::string question = "What is unusual about this image?";
    const int64_t N = pipe.config().vision_config.num_patches();
    const int64_t grid = pipe.config().vision_config.image_size / pipe.config().vision_config.patch_size;

    // The prompt pieces shared by every configuration.
    const Image img = load_image(image);
    const Image crop_img = clip_resize_crop(img, pipe.preprocess_config());
    const Tensor px = clip_normalize(crop_img, pipe.preprocess_config()).unsqueeze(0).to(Device::cuda(), DType::BF16);
    const Tensor crop = crop_img.to_tensor().to(Device::cuda());  // U8 [S, S, 3] (vflowopt's patch entropy)
    const std::vector<int64_t> ids = pipe.tokenizer().encode(llava_prompt(question, true), true);
    const int64_t img_tok = pipe.config().image_token_index;
    const int64_t img_at = int64_t(std::find(ids.begin(), ids.end(), img_tok) - ids.begin());
    auto prompt_for = [&](const PruningConfig& c) {
      VisualTokens vt = encode_visual_tokens(c, pipe.image_encoder(), px, crop);
      const int64_t n = vt.features.size(0);
      const std::vector<int64_t> ex = expand_image_tokens(ids, img_tok, n, 1);
      Prompt p;
      p.embeds = llava_input_embeds(lm, Tensor::from_vector<int64_t>(ex, {1, int64_t(ex.size())}),
                                    vt.features.unsqueeze(0), img_tok);
      p.span = {img_at, n};
      p.row_importance = vt.row_importance;
      return p;
    };

    constexpr int64_t B = 16, kDecode = 32;
    struct Run {
      double ttft = 0, prefill_ms = 0, decode_tps = 0, prefill_b1_ms = 0;
      double preprocess_ms = 0, vision_ms = 0;  // TTFT b1 breakdown (medians)
      size_t kv_bytes = 0;
      int64_t image_tokens = 0;
    };
    // Median time of the decoder prefill of embeds e ([batch, L, hidden], copies of p's prompt) with
    // config c and a fresh pruner per forward, over reps - 1 runs after a warm-up; `cache` keeps the
    // last run's rows.
    auto one_prefill = [&](const PruningConfig& c, const Prompt& p, const Tensor& e, KVCache& cache) {
      const int64_t batch = e.size(0);
      cache.reset_all();
      std::unique_ptr<LlavaTokenPruner> pr;
      if (c.in_llm())
        pr = std::make_unique<LlavaTokenPruner>(c, lm, std::vector<std::pair<int64_t, int64_t>>(size_t(batch), p.span),
                                                std::vector<std::vector<float>>(size_t(batch), p.row_importance));
      LlamaForwardOptions o;
      o.last_only = true;
      o.pruner = pr.get();
      synchronize();
      const auto t0 = Clock::now();
      lm.forward(e, cache, o);
      synchronize();
      return since_ms(t0);
    };
    auto time_prefill = [&](const PruningConfig& c, const Prompt& p, const Tensor& e, KVCache& cache, int reps) {
      std::vector<double> t;
      for (int rep = 0; rep < reps; ++rep) {
        const double ms = one_prefill(c, p, e, cache);
        if (rep) t.push_back(ms);  // the first is a warm-up
      }
      return median(t);
    };
    auto batch_of = [&](const Prompt& p) {  // B copies of p's prompt
      Tensor e = Tensor::empty({B, p.embeds.size(1), lm.hidden_size()}, p.embeds.dtype(), p.embeds.device());
      for (int64_t b = 0; b < B; ++b) e.slice(0, b, b + 1).copy_from(p.embeds);
      return e;
    };
    // Batch-16 decoder prefill + decode with config c (a fresh pruner per forward).
    auto run_b16 = [&](const PruningConfig& c, Run& run) {
      const Prompt p = prompt_for(c);
      const int64_t L = p.embeds.size(1);
      Tensor e = batch_of(p);
      KVCache cache = lm.make_cache(B, L + kDecode);
      run.prefill_ms = time_prefill(c, p, e, cache, 4);
      // the decoder prefill alone at batch 1 (TTFT b1 less preprocessing, vision and the pipeline)
      KVCache c1 = lm.make_cache(1, L + 1);
      run.prefill_b1_ms = time_prefill(c, p, p.embeds, c1, 8);
      int64_t kv_rows = 0;
      for (int l = 0; l < n_layers; ++l) kv_rows += cache.layer_length(l, 0);
      run.kv_bytes = size_t(kv_rows) * 2 * size_t(lm.num_kv_heads() * lm.attn_head_dim()) * 2;
      Tensor tok = Tensor::full({B, 1}, 29871.f, DType::I64, Device::cuda());
      synchronize();
      const auto d0 = Clock::now();
      LlamaForwardOptions o;
      o.last_only = true;
      for (int64_t s = 0; s < kDecode; ++s) lm.forward(lm.embed(tok), cache, o);
      synchronize();
      run.decode_tps = double(B * kDecode) / (since_ms(d0) / 1000.0);
    };
    // TTFT b1 of each config, medians of kTtftRounds runs; several configs run interleaved (one
    // request of each per round), so that host jitter (the JPEG decode moves by +-0.5 ms between
    // phases of a run) falls on all of them alike. 31 rounds (11 until session 23: the keep-64
    // ratios of one build moved by +-0.01 between calls, as much as a pruned-side change of ~0.2 ms)
    auto ttft_b1_of = [&](const std::vector<std::pair<PruningConfig, Run*>>& cs) {
      std::vector<LlavaRequest> reqs;
      for (const auto& [c, run] : cs) {
        LlavaRequest req;
        req.image = image;
        req.prompt = question;
        req.max_new_tokens = 1;
        req.pruning = c;
        pipe.run(req);  // warm-up
        reqs.push_back(req);
      }
      std::vector<std::vector<double>> t(cs.size()), tp(cs.size()), tv(cs.size());
      for (int i = 0; i < kTtftRounds; ++i)  // single runs move by +-2 ms (host jitter)
        for (size_t j = 0; j < cs.size(); ++j) {
          const LlavaResult res = pipe.run(reqs[j]);
          t[j].push_back(res.timings.prefill_ms);
          tp[j].push_back(res.timings.load_preprocess_ms);
          tv[j].push_back(res.timings.vision_ms);
          cs[j].second->image_tokens = res.pruning.stages.empty() ? res.pruning.image_tokens_before
                                                                  : res.pruning.stages.back().image_tokens;
        }
      for (size_t j = 0; j < cs.size(); ++j) {
        cs[j].second->ttft = median(t[j]);
        cs[j].second->preprocess_ms = median(tp[j]);
        cs[j].second->vision_ms = median(tv[j]);
      }
    };
    auto ttft_b1 = [&](const PruningConfig& c, Run& run) { ttft_b1_of({{c, &run}}); };

    Run base;
    ttft_b1(make(PruneMethod::None, N), base);
    run_b16(make(PruneMethod::None, N), base);
    r.add({{"case", "unpruned (576 image tokens) TTFT b1"}, {"metric", "time"}, {"unit", "ms"}, {"ours", base.ttft},
           {"load_preprocess_ms", base.preprocess_ms}, {"vision_ms", base.vision_ms},
           {"decoder_prefill_b1_ms", base.prefill_b1_ms}});
    r.add({{"case", "unpruned prefill b16"}, {"metric", "time"}, {"unit", "ms"}, {"ours", base.prefill_ms},
           {"kv_bytes_per_seq", base.kv_bytes}});
    r.add({{"case", "unpruned decode b16"}, {"metric", "throughput"}, {"unit", "tok/s"}, {"ours", base.decode_tps}});

    for (PruneMethod m : kAllMethods) {
      const std::string name = prune_method_name(m);
      if (!selected.empty() && !selected.count(name)) continue;
      // selection overhead: keep everything (the method still ranks and selects)
      // in-LLM part (ms at batch 16, fraction of the unpruned b16 prefill) and per-image part (ms at
      // batch 1, fraction of the unpruned TTFT b1); the target applies to the sum of the fractions
      double in_llm_ms = 0, in_llm_frac = 0, per_image_ms = 0, per_image_frac = 0, per_image_ms_keep64 = 0;
      {
        // keep = all runs a real selection only for FastV and PDrop; for the others it is the
        // identity (PruningConfig::keep_all), so they select all but one token (DART: its pivots +
        // picks, the most it can keep)
        PruningConfig all = make(m, N);
        if (m != PruneMethod::FastV && m != PruneMethod::PDrop) all.keep = N - 1;
        if (m == PruneMethod::Dart) all.keep = N - 2 * (all.pivot_image + all.pivot_text);
        if (m == PruneMethod::VFlowOpt) all.llm_ratios.assign(all.llm_ratios.size(), 1.0);
        all.resolve(N, n_layers, grid);
        const PruningConfig none = make(PruneMethod::None, N);
        // the batch-16 forward with keep = all against the plain one, in pairs
        // same_rows: both forwards on `with`'s prompt (a method that also selects before the LLM then
        // gets no credit for the rows its pre-LLM step removed: those are the per-image part's)
        const auto in_llm_overhead = [&](const PruningConfig& with, const PruningConfig& without,
                                         bool same_rows = false) {
          const Prompt pa = prompt_for(with), pn = same_rows ? pa : prompt_for(without);
          const Tensor ea = batch_of(pa), en = batch_of(pn);
          KVCache ca = lm.make_cache(B, ea.size(1)), cn = lm.make_cache(B, en.size(1));
          one_prefill(with, pa, ea, ca), one_prefill(without, pn, en, cn);  // warm-up
          return paired_difference_ms([&] { return one_prefill(with, pa, ea, ca); },
                                      [&] { return one_prefill(without, pn, en, cn); }, 9);
        };
        if (m == PruneMethod::Dart) {
          // DART cannot keep everything (its pivots' picks exclude the pivots), so against the plain
          // forward it would be credited with the rows it drops. It is measured against FastV keeping
          // as many rows (DART keeps its image pivots + keep / P picks per pivot, P pivots: 564 of 576
          // here) at the same layer, plus FastV's own overhead.
          const int64_t P = all.pivot_image + all.pivot_text;
          PruningConfig fastv = make(PruneMethod::FastV, all.pivot_image + all.keep / P * P);
          PruningConfig fastv_all = make(PruneMethod::FastV, N);
          fastv.layer = fastv_all.layer = all.layer;
          fastv.resolve(N, n_layers, grid), fastv_all.resolve(N, n_layers, grid);
          in_llm_ms = in_llm_overhead(all, fastv) + in_llm_overhead(fastv_all, none);
          in_llm_frac = in_llm_ms / base.prefill_ms;
        } else if (all.in_llm()) {
          // VFlowOpt's keep = all still drops and recycles ~1/4 of the rows before the LLM (its
          // pre-LLM step keeps keep + the recycled cells); against the plain prompt it would be
          // credited with those rows, so its in-LLM stages are timed on its own prompt
          in_llm_ms = in_llm_overhead(all, none, all.before_llm());
          in_llm_frac = in_llm_ms / base.prefill_ms;
        }
        if (all.before_llm()) {  // the pre-LLM selection step against the plain visual tokens, in pairs
          const auto sel = [&](const PruningConfig& c) {
            synchronize();
            const auto t0 = Clock::now();
            encode_visual_tokens(c, pipe.image_encoder(), px, crop);
            synchronize();
            return since_ms(t0);
          };
          sel(all), sel(none);  // warm-up
          per_image_ms = paired_difference_ms([&] { return sel(all); }, [&] { return sel(none); }, 11);
          per_image_frac = per_image_ms / base.ttft;
          // also at the benchmarked keep 64 (informative: the projector then runs on fewer rows for
          // the methods that select before it)
          PruningConfig k64 = make(m, 64);
          k64.resolve(N, n_layers, grid);
          sel(k64);
          per_image_ms_keep64 = paired_difference_ms([&] { return sel(k64); }, [&] { return sel(none); }, 11);
        }
      }
      if (overhead_only) {
        r.add({{"case", name + " selection overhead"}, {"metric", "overhead"}, {"unit", "fraction"},
               {"ours", in_llm_frac + per_image_frac}, {"in_llm_ms_b16", in_llm_ms}, {"per_image_ms_b1", per_image_ms},
               {"per_image_ms_b1_keep64", per_image_ms_keep64}});
        continue;
      }
      for (int64_t keep : {192, 128, 64}) {
        PruningConfig c = make(m, keep);
        c.resolve(N, n_layers, grid);
        Run run, paired;  // keep 64 (the target's row): against unpruned requests interleaved with it
        if (keep == 64) ttft_b1_of({{c, &run}, {make(PruneMethod::None, N), &paired}});
        else ttft_b1(c, run), paired = base;
        run_b16(c, run);
        const std::string cs = name + " keep " + std::to_string(keep);
        const double ttft_ratio = run.ttft / paired.ttft, tp_ratio = base.prefill_ms / run.prefill_ms;
        const double ovh = in_llm_frac + per_image_frac;
        Json row = {{"case", cs + " TTFT b1"},       {"metric", "time"},
                    {"unit", "ms"},                  {"ours", run.ttft},
                    {"peer", paired.ttft},           {"peer_name", "mmattn unpruned"},
                    {"image_tokens", run.image_tokens},
                    {"load_preprocess_ms", run.preprocess_ms},
                    {"vision_ms", run.vision_ms},
                    {"decoder_prefill_b1_ms", run.prefill_b1_ms}};
        if (keep == 64) {
          row["target"] = "ours <= 0.6x unpruned", row["meets_target"] = ttft_ratio <= 0.6;
          row["peer_measured"] = "unpruned requests interleaved with these (" + std::to_string(kTtftRounds) + " each, medians)";
          row["peer_load_preprocess_ms"] = paired.preprocess_ms, row["peer_vision_ms"] = paired.vision_ms;
        }
        r.add(row);
        Json row2 = {{"case", cs + " prefill b16"},
                     {"metric", "time"},
                     {"unit", "ms"},
                     {"ours", run.prefill_ms},
                     {"peer", base.prefill_ms},
                     {"peer_name", "mmattn unpruned"},
                     {"throughput_x", tp_ratio},
                     {"kv_bytes_per_seq", run.kv_bytes},
                     {"kv_fraction", double(run.kv_bytes) / double(base.kv_bytes)}};
        if (keep == 64) row2["target"] = "throughput >= 4x unpruned", row2["meets_target"] = tp_ratio >= 4.0;
        r.add(row2);
        r.add({{"case", cs + " decode b16"}, {"metric", "throughput"}, {"unit", "tok/s"}, {"ours", run.decode_tps},
               {"peer", base.decode_tps}, {"peer_name", "mmattn unpruned"}});
        if (keep == 64)
          r.add({{"case", name + " selection overhead"},
                 {"metric", "overhead"},
                 {"unit", "fraction"},
                 {"ours", ovh},
                 {"in_llm_ms_b16", in_llm_ms},
                 {"in_llm_fraction", in_llm_frac},
                 {"per_image_ms_b1", per_image_ms},
                 {"per_image_fraction", per_image_frac},
                 {"per_image_ms_b1_keep64", per_image_ms_keep64},
                 {"target", "in-LLM ms / unpruned b16 prefill + per-image ms / unpruned TTFT b1 < 3%"},
                 {"meets_target", ovh < 0.03}});
      }
    }
    r.write(out);
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_pruning: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
