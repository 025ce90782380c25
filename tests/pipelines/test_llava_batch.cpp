// LlavaPipeline::run_batch (continuous batching) on the CPU with the tiny golden LLaVA
// (tests/golden/tiny_llava): every request of a batch gives the ids it gives alone through run()
// (greedy), the golden request keeps the golden ids inside a batch, bad items become error items
// naming the file while the others complete, and on_done fires once per item.
#include <fstream>
#include <map>

#include "core/checkpoint.h"
#include "core/io.h"
#include "language/tokenizer.h"
#include "pipelines/llava.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

namespace {

std::string tiny() { return golden_dir() + "/tiny_llava"; }
std::string image(const std::string& name) { return source_dir() + "/assets/images/" + name; }

const LlavaPipeline& pipe() {
  static LlavaPipeline p(tiny(), Device::cpu(), DType::F32);
  return p;
}

std::vector<int64_t> golden_greedy() {
  Checkpoint g(golden_dir() + "/tiny_llava_golden.safetensors");
  const Tensor t = g.load("greedy_ids", Device::cpu(), DType::I64);  // [1, 32]
  const int64_t* p = t.data<int64_t>();
  return {p, p + t.numel()};
}

LlavaRequest request(const std::string& img, const std::string& prompt, int64_t max_new, int64_t min_new = 0) {
  LlavaRequest r;
  r.image = image(img);
  r.prompt = prompt;
  r.max_new_tokens = max_new;
  r.min_new_tokens = min_new;
  return r;
}

// Five requests over different images, prompts and lengths (different prompt lengths too).
std::vector<LlavaRequest> five() {
  std::vector<LlavaRequest> v = {
      request("chelsea.png", "What animal is this?", 7),
      request("rocket.png", "", 3),
      request("coffee.png", "Describe the drink in one short sentence, please.", 12),
      request("astronaut.png", "Who?", 5),
      request("waterview.jpg", "Where was this photo taken?", 9),
  };
  v[3].system_prompt = true;  // a longer prompt
  v[4].pad_to_square = true;
  return v;
}

}  // namespace

TEST(LlavaBatch, EveryRequestMatchesRunAlone) {
  const std::vector<LlavaRequest> reqs = five();
  std::vector<std::vector<int64_t>> alone;
  for (const auto& r : reqs) {
    alone.push_back(pipe().run(r).token_ids);
    EXPECT_EQ(int64_t(alone.back().size()), r.max_new_tokens);  // random weights: no early EOS here
  }
  for (int max_batch : {2, 3}) {
    std::vector<int> calls(reqs.size(), 0);
    const std::vector<LlavaBatchItem> out =
        pipe().run_batch(reqs, max_batch, [&](size_t i, const LlavaBatchItem& it) {
          ASSERT_LT(i, reqs.size());
          EXPECT_TRUE(it.ok) << it.error;
          ++calls[i];
        });
    ASSERT_EQ(out.size(), reqs.size());
    for (size_t i = 0; i < reqs.size(); ++i) {
      SCOPED_TRACE("max_batch " + std::to_string(max_batch) + ", request " + std::to_string(i));
      ASSERT_TRUE(out[i].ok) << out[i].error;
      EXPECT_EQ(out[i].result.token_ids, alone[i]);
      EXPECT_EQ(calls[i], 1);
      EXPECT_EQ(out[i].result.text, pipe().tokenizer().decode(out[i].result.token_ids));
      EXPECT_EQ(out[i].result.image_tokens, 576);
      EXPECT_GT(out[i].result.timings.total_ms, 0);
    }
  }
}

TEST(LlavaBatch, GoldenRequestInsideABatch) {
  std::vector<LlavaRequest> reqs = {request("chelsea.png", "What animal is this?", 6),
                                    request("extreme_ironing.jpg", "What is unusual about this image?", 32, 32),
                                    request("rocket.png", "", 4)};
  const std::vector<LlavaBatchItem> out = pipe().run_batch(reqs, 2);
  ASSERT_TRUE(out[1].ok) << out[1].error;
  EXPECT_EQ(out[1].result.token_ids, golden_greedy());
  EXPECT_EQ(out[1].result.prompt_tokens, 595);
  EXPECT_EQ(out[1].result.stop_reason, "max_new_tokens");
  EXPECT_TRUE(out[0].ok && out[2].ok);
}

TEST(LlavaBatch, BadItemsAreReportedAndTheRestContinue) {
  const std::string dir = ::testing::TempDir() + "/llava_batch_bad";
  const std::string jpg = read_text_file(image("extreme_ironing.jpg"));
  write_file_atomic(dir + "/truncated.jpg", jpg.substr(0, jpg.size() / 2));
  std::vector<LlavaRequest> reqs = {request("chelsea.png", "What animal is this?", 4),
                                    request("rocket.png", "Hi", 5), request("coffee.png", "", 3),
                                    request("astronaut.png", "Who?", 4)};
  reqs[1].image = dir + "/missing.jpg";
  reqs[2].image = dir + "/truncated.jpg";
  LlavaRequest too_long = request("chelsea.png", "x", 4000);  // 4000 + the prompt > 4096
  reqs.push_back(too_long);
  reqs.push_back(request("waterview.jpg", "Where?", 3));
  std::map<size_t, int> calls;
  const std::vector<LlavaBatchItem> out =
      pipe().run_batch(reqs, 2, [&](size_t i, const LlavaBatchItem&) { ++calls[i]; });
  ASSERT_EQ(out.size(), reqs.size());
  EXPECT_FALSE(out[1].ok);
  EXPECT_NE(out[1].error.find("missing.jpg"), std::string::npos) << out[1].error;
  EXPECT_FALSE(out[2].ok);
  EXPECT_NE(out[2].error.find("truncated.jpg"), std::string::npos) << out[2].error;
  EXPECT_FALSE(out[4].ok);
  EXPECT_NE(out[4].error.find("max_position_embeddings"), std::string::npos) << out[4].error;
  for (size_t i : {size_t(0), size_t(3), size_t(5)}) {
    ASSERT_TRUE(out[i].ok) << i << ": " << out[i].error;
    EXPECT_EQ(out[i].result.token_ids, pipe().run(reqs[i]).token_ids) << i;
  }
  EXPECT_EQ(calls.size(), reqs.size());
  for (const auto& [i, n] : calls) EXPECT_EQ(n, 1) << i;
  // max_batch < 1 is a ConfigError; an empty batch is empty
  EXPECT_THROW(pipe().run_batch(reqs, 0), ConfigError);
  EXPECT_TRUE(pipe().run_batch({}, 2).empty());
}

TEST(LlavaBatch, StopStringsAndStreamingPerSequence) {
  std::vector<LlavaRequest> reqs = five();
  const LlavaResult full = pipe().run(reqs[2]);
  ASSERT_GT(full.text.size(), 8u) << full.text;
  reqs[2].stop = {full.text.substr(4, 3)};
  std::vector<std::string> streamed(reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i) reqs[i].on_text = [&streamed, i](const std::string& s) { streamed[i] += s; };
  const std::vector<LlavaBatchItem> out = pipe().run_batch(reqs, 3);
  EXPECT_EQ(out[2].result.stop_reason, "stop_string");
  EXPECT_EQ(out[2].result.text, full.text.substr(0, full.text.find(reqs[2].stop[0])));
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_TRUE(out[i].ok) << out[i].error;
    EXPECT_EQ(streamed[i], out[i].result.text) << i;
  }
}
