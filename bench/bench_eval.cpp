// POPE-style evaluation throughput (issue 8) on the LLaVA-1.5-7B-shaped random checkpoint, in the
// llava7b stage after bench/peer_llava7b.py wrote it and timed HF transformers' batched generate on
// the same questions: questions/s, each question = its image (576 tokens) + a short question with
// LLaVA's POPE suffix, 3 answer tokens, through LlavaPipeline::run_batch (image decode + resize on
// worker threads, ViT, continuous batching), at several batch sizes; unpruned and FastV keep 64.
// Targets: >= 60 questions/s unpruned, >= 150 with FastV keeping 64 tokens.
//   bench_eval --out bench/results [--model /tmp/llava7b]
#include <chrono>

#include "bench/bench_util.h"
#include "core/io.h"
#include "pipelines/llava.h"

using namespace mmattn;
using namespace mmattn::bench;

int main(int argc, char** argv) {
  try {
    const std::string out = arg_value(argc, argv, "--out", "bench/results");
    const std::string model = llava7b_model(argc, argv, "bench_eval");
    if (model.empty()) return 0;
    Json peer = path_exists(out + "/llava7b_peer.json") ? read_json_file(out + "/llava7b_peer.json")["rows"] : Json::object();
    auto pv = [&](const char* k) { return peer.contains(k) ? peer[k].get<double>() : 0.0; };
    Results r{"eval"};
    const LlavaPipeline pipe(model, Device::cuda(), DType::BF16);
    const std::string dir = std::string(MMATTN_SOURCE_DIR_BENCH) + "/assets/images/";
    const std::vector<std::string> images = {"extreme_ironing.jpg", "waterview.jpg", "astronaut.png", "coffee.png"};
    const std::vector<std::string> objects = {"car", "person", "dog", "cup"};
    auto requests = [&](int n, const PruningConfig& pruning) {
      std::vector<LlavaRequest> reqs;
      for (int i = 0; i < n; ++i) {
        LlavaRequest q;
        q.image = dir + images[size_t(i) % images.size()];
        q.prompt = "Is there a " + objects[size_t(i / 4) % objects.size()] +
                   " in the image?\nAnswer the question using a single word or phrase.";
        q.max_new_tokens = 3;
        q.min_new_tokens = 3;
        q.pruning = pruning;
        reqs.push_back(q);
      }
      return reqs;
    };
    auto qps = [&](const PruningConfig& pc, int batch) {
      const int n = std::max(64, 4 * batch);
      pipe.run_batch(requests(batch, pc), batch);  // warm-up
      synchronize();
      const auto t0 = std::chrono::steady_clock::now();
      const auto items = pipe.run_batch(requests(n, pc), batch);
      synchronize();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      for (const auto& it : items)
        if (!it.ok) MMATTN_THROW(Error, "bench_eval: a request failed: ", it.error);
      return double(n) / s;
    };
    PruningConfig none, fastv;
    fastv.method = PruneMethod::FastV;
    fastv.keep = 64;
    fastv.resolve(576, pipe.language_model().num_layers(), 24);
    for (const auto& [name, pc, target] :
         {std::tuple<std::string, PruningConfig, double>{"unpruned", none, 60.0}, {"fastv keep 64", fastv, 150.0}}) {
      double best = 0;
      int best_b = 0;
      for (int b : {8, 16, 32, 64}) {
        const double q = qps(pc, b);
        r.add({{"case", "POPE-style " + name + " b" + std::to_string(b)}, {"metric", "throughput"},
               {"unit", "questions/s"}, {"ours", q}});
        if (q > best) best = q, best_b = b;
      }
      r.add({{"case", "POPE-style " + name + " best (b" + std::to_string(best_b) + ")"},
             {"metric", "throughput"},
             {"unit", "questions/s"},
             {"ours", best},
             {"peer", pv("pope q/s b16")},
             {"peer_name", "HF transformers generate, batch 16"},
             {"target", "ours >= " + std::to_string(int(target)) + " questions/s"},
             {"meets_target", best >= target}});
    }
    r.write(out);
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_eval: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
