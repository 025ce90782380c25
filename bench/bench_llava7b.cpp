// LLaVA-1.5-7B-shaped end-to-end benchmark (issue 5), on the random bf16 checkpoint that
// bench/peer_llava7b.py writes (and times with HF transformers) just before, in the same run:
// TTFT (image load + preprocessing + ViT + projector + prefill of 576 image tokens and a short
// question, to the first token), decode tokens/s at batch 1 and 8 over 128 new tokens, peak memory.
//   bench_llava7b --out bench/results [--model /tmp/llava7b]
#include <chrono>

#include "bench/bench_util.h"
#include "core/io.h"
#include "core/ops/linear.h"
#include "language/llama.h"
#include "language/llava.h"
#include "pipelines/llava.h"

using namespace mmattn;
using namespace mmattn::bench;

int main(int argc, char** argv) {
  try {
    const std::string out = arg_value(argc, argv, "--out", "bench/results");
    const std::string model = llava7b_model(argc, argv, "bench_llava7b");
    if (model.empty()) return 0;
    Json peer = path_exists(out + "/llava7b_peer.json") ? read_json_file(out + "/llava7b_peer.json")["rows"] : Json::object();
    auto pv = [&](const char* k) { return peer.contains(k) ? peer[k].get<double>() : 0.0; };
    Results r{"llava7b"};
    r.ceilings = {{"copy_GBps", measure_copy_GBps()}};
    const auto t0 = std::chrono::steady_clock::now();
    LlavaPipeline pipe(model, Device::cuda(), DType::BF16);
    const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("loaded %s in %.1f s\n", model.c_str(), load_s);
    // the memory target: weights (all that is allocated after loading) + the KV cache, + 10%
    const double weights_gb = double(cuda_allocator_stats().allocated_bytes) / 1e9;
    const LlamaModel& lm = pipe.language_model();
    auto kv_gb = [&](int64_t batch, int64_t len) {
      return double(batch * len * lm.num_layers() * 2 * lm.num_kv_heads() * lm.attn_head_dim() * 2) / 1e9;
    };
    auto memory_row = [&](const std::string& c, double peak, double kv, double peer) {
      const double limit = 1.1 * (weights_gb + kv);
      r.add({{"case", c}, {"metric", "memory"}, {"unit", "GB"}, {"ours", peak}, {"peer", peer},
             {"peer_name", "HF transformers"}, {"weights_GB", weights_gb}, {"kv_cache_GB", kv},
             {"target", "ours <= (weights + KV cache) x 1.1"}, {"meets_target", peak <= limit}});
    };
    LlavaRequest req;
    req.image = std::string(MMATTN_SOURCE_DIR_BENCH) + "/assets/images/extreme_ironing.jpg";
    req.prompt = "What is unusual about this image?";
    req.max_new_tokens = 1;
    pipe.run(req);  // warm-up
    const int64_t B = 8, N = 128;
    // TTFT (median of 5), decode b1 over 128 tokens, and b8 (the same prompt 8 times through the
    // decoder directly, and the same 8 requests through run_batch); peaks of the b1 and b8 runs.
    struct Measured {
      double ttft, tps1, tps8, tps8_pipe, peak1, peak8;
      int64_t prompt_tokens;
    };
    auto measure = [&]() -> Measured {
      Measured m{};
      LlavaRequest q = req;
      q.max_new_tokens = 1;
      std::vector<double> ttfts;
      for (int i = 0; i < 5; ++i) ttfts.push_back(pipe.run(q).timings.prefill_ms);
      std::sort(ttfts.begin(), ttfts.end());
      m.ttft = ttfts[2];
      q.max_new_tokens = N;
      q.min_new_tokens = N;
      cuda_reset_peak();
      LlavaResult res = pipe.run(q);
      m.tps1 = res.timings.decode_tokens_per_s;
      m.peak1 = double(res.peak_memory_bytes) / 1e9;
      m.prompt_tokens = res.prompt_tokens;
      const int64_t L = res.prompt_tokens;
      Tensor e1 = lm.embed(Tensor::full({1, L}, 1.f, DType::I64, Device::cuda()));
      Tensor e = Tensor::empty({B, L, e1.size(2)}, e1.dtype(), e1.device());
      for (int64_t b = 0; b < B; ++b) e.slice(0, b, b + 1).copy_from(e1);
      KVCache cache = lm.make_cache(B, L + N);
      LlamaForwardOptions o;
      o.last_only = true;
      cuda_reset_peak();
      Tensor logits = lm.forward(e, cache, o);
      synchronize();
      Tensor tok = Tensor::full({B, 1}, 29871.f, DType::I64, Device::cuda());
      const auto d0 = std::chrono::steady_clock::now();
      for (int64_t s = 0; s < N - 1; ++s) logits = lm.forward(lm.embed(tok), cache, o);
      synchronize();
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - d0).count();
      m.tps8 = double(B * (N - 1)) / secs;
      m.peak8 = double(cuda_allocator_stats().peak_allocated_bytes) / 1e9;
      // b8 through the pipeline: 8 requests admitted together by run_batch (one batched prefill,
      // sampling per step); the sum of the sequences' decode rates
      const std::vector<LlavaBatchItem> items = pipe.run_batch(std::vector<LlavaRequest>(size_t(B), q), B);
      for (const LlavaBatchItem& it : items) m.tps8_pipe += it.ok ? it.result.timings.decode_tokens_per_s : 0.0;
      return m;
    };
    // the same three numbers under each Hopper skinny-product mode (core/ops/linear.h), in this run
    const int default_mode = skinny_gemm_mode();
    Json by_mode = Json::object();
    Measured m{};  // the default mode's
    const std::string modes = arg_value(argc, argv, "--modes", "0,1,2");  // (--modes 0: the default only, A/B runs)
    for (int md = 0; md <= 2; ++md) {
      if (modes.find(std::to_string(md)) == std::string::npos && md != default_mode) continue;
      const SkinnyGemmModeGuard mode(md);
      const Measured mm = measure();
      by_mode[std::to_string(md)] = {{"ttft_ms", mm.ttft},
                                     {"decode_b1_tok_s", mm.tps1},
                                     {"decode_b8_tok_s", mm.tps8},
                                     {"decode_b8_run_batch_tok_s", mm.tps8_pipe}};
      std::printf("skinny mode %d: TTFT %.2f ms, decode b1 %.1f tok/s, b8 %.1f tok/s (run_batch %.1f)\n", md, mm.ttft,
                  mm.tps1, mm.tps8, mm.tps8_pipe);
      if (md == default_mode) m = mm;
    }
    r.add({{"case", "TTFT b1 (image -> first token)"}, {"metric", "time"}, {"unit", "ms"}, {"ours", m.ttft},
           {"peer", pv("ttft b1")}, {"peer_name", "HF transformers"}, {"target", "ours <= 25 ms"},
           {"meets_target", m.ttft <= 25.0}, {"skinny_mode", default_mode}, {"by_skinny_mode", by_mode}});
    r.add({{"case", "decode b1 128 tokens"}, {"metric", "throughput"}, {"unit", "tok/s"}, {"ours", m.tps1},
           {"peer", pv("decode tok/s b1")}, {"peer_name", "HF transformers"}, {"target", "ours >= 200 tok/s"},
           {"meets_target", m.tps1 >= 200.0}, {"skinny_mode", default_mode}});
    r.add({{"case", "decode b8 128 tokens (total)"}, {"metric", "throughput"}, {"unit", "tok/s"}, {"ours", m.tps8},
           {"peer", pv("decode tok/s b8")}, {"peer_name", "HF transformers"}, {"target", "ours >= 1200 tok/s"},
           {"meets_target", m.tps8 >= 1200.0}, {"skinny_mode", default_mode}});
    r.add({{"case", "decode b8 128 tokens through run_batch (total)"}, {"metric", "throughput"}, {"unit", "tok/s"},
           {"ours", m.tps8_pipe}, {"peer", pv("decode tok/s b8")}, {"peer_name", "HF transformers"},
           {"target", "ours >= 1200 tok/s"}, {"meets_target", m.tps8_pipe >= 1200.0}, {"skinny_mode", default_mode}});
    memory_row("peak GPU memory b8", m.peak8, kv_gb(B, m.prompt_tokens + N), pv("peak GB b8"));
    memory_row("peak GPU memory b1", m.peak1, kv_gb(1, m.prompt_tokens + 128), pv("peak GB b1"));
    r.write(out);
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_llava7b: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
