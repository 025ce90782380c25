// The LLaVA pipeline end to end on the GPU (bf16): image file -> preprocessing -> ViT -> projector
// -> decoder -> tokens, against the golden greedy ids (transformers, f32), and the peak-memory
// report. The decoder alone matches all 32 ids from the golden image features (test_llama_cuda);
// here the bf16 vision tower feeds it, so only the first tokens are required to agree.
#include "core/checkpoint.h"
#include "pipelines/llava.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

TEST(LlavaPipelineCuda, ImageToTokensAndPeakMemory) {
  MMATTN_REQUIRE_GPU();
  static LlavaPipeline pipe(golden_dir() + "/tiny_llava", Device::cuda(), DType::BF16);
  Checkpoint g(golden_dir() + "/tiny_llava_golden.safetensors");
  const Tensor want = g.load("greedy_ids", Device::cpu(), DType::I64);  // [1, 32]
  LlavaRequest req;
  req.image = source_dir() + "/assets/images/extreme_ironing.jpg";
  req.prompt = "What is unusual about this image?";
  req.max_new_tokens = req.min_new_tokens = 8;
  const LlavaResult res = pipe.run(req);
  ASSERT_EQ(res.token_ids.size(), 8u);
  size_t match = 0;
  while (match < 8 && res.token_ids[match] == want.data<int64_t>()[match]) ++match;
  std::printf("bf16 pipeline: the first %zu of 8 tokens match the golden\n", match);
  EXPECT_GE(match, 4u);
  EXPECT_EQ(res.image_tokens, 576);
  EXPECT_GT(res.peak_memory_bytes, size_t(0));
  EXPECT_LT(res.peak_memory_bytes, size_t(1) << 30);  // a 9 MB model: weights, a 603-row cache, activations
  // a batch of the same request twice: both finish with the same first token as alone (the
  // batched prefill may take other cuBLAS algorithms, so later bf16 tokens may drift)
  const std::vector<LlavaBatchItem> b = pipe.run_batch({req, req}, 2);
  ASSERT_EQ(b.size(), 2u);
  for (const LlavaBatchItem& it : b) {
    ASSERT_TRUE(it.ok) << it.error;
    ASSERT_EQ(it.result.token_ids.size(), 8u);
    EXPECT_EQ(it.result.token_ids[0], res.token_ids[0]);
  }
  EXPECT_EQ(b[0].result.token_ids, b[1].result.token_ids);  // identical rows of one batch
}

// run() decodes greedy requests on the device with the host one step behind; sampling with top_k = 1
// takes the host path (Sampler) and picks the same tokens: both must agree token for token,
// including where a stop string ends the request early (the device path has then computed one
// step more) and while min_new_tokens bans EOS.
TEST(LlavaPipelineCuda, DeviceGreedyEqualsHostGreedy) {
  MMATTN_REQUIRE_GPU();
  static LlavaPipeline pipe(golden_dir() + "/tiny_llava", Device::cuda(), DType::BF16);
  LlavaRequest req;
  req.image = source_dir() + "/assets/images/extreme_ironing.jpg";
  req.prompt = "Describe the image.";
  req.max_new_tokens = 16;
  auto both = [&](const LlavaRequest& r) {
    LlavaRequest host = r;
    host.sampling.do_sample = true;
    host.sampling.top_k = 1;
    const LlavaResult a = pipe.run(r), b = pipe.run(host);
    EXPECT_EQ(a.token_ids, b.token_ids);
    EXPECT_EQ(a.text, b.text);
    EXPECT_EQ(a.stop_reason, b.stop_reason);
    return a;
  };
  const LlavaResult full = both(req);
  ASSERT_FALSE(full.token_ids.empty());
  std::string text;
  LlavaRequest streamed = req;
  streamed.on_text = [&](const std::string& s) { text += s; };
  EXPECT_EQ(pipe.run(streamed).text, full.text);
  EXPECT_EQ(text, full.text);
  // a stop string from the middle of the text
  const std::string& t = full.text;
  size_t at = t.size() / 2;
  while (at + 2 < t.size() && (t[at] == ' ' || t[at + 1] == ' ')) ++at;
  if (at + 2 < t.size()) {
    LlavaRequest stop = req;
    stop.stop = {t.substr(at, 2)};
    const LlavaResult s = both(stop);
    EXPECT_EQ(s.stop_reason, "stop_string");
    EXPECT_LT(s.token_ids.size(), full.token_ids.size());
  }
  LlavaRequest min = req;
  min.min_new_tokens = 6;
  min.max_new_tokens = 9;
  const LlavaResult m = both(min);  // EOS banned for tokens 0-5 (fill_ on the device logits)
  EXPECT_GE(m.token_ids.size(), m.stop_reason == "eos" ? 7u : 9u);
  EXPECT_LE(m.token_ids.size(), 9u);
  LlavaRequest one = req;
  one.max_new_tokens = 1;
  EXPECT_EQ(both(one).token_ids.size(), 1u);
  // run_batch: an all-greedy batch takes the device's argmax (B ids per step); the same batch
  // sampled with top_k = 1 takes the host's rows
  std::vector<LlavaRequest> dev = {req, min, one, req}, host = dev;
  for (LlavaRequest& r : host) r.sampling.do_sample = true, r.sampling.top_k = 1;
  const std::vector<LlavaBatchItem> bd = pipe.run_batch(dev, 2), bh = pipe.run_batch(host, 2);
  ASSERT_EQ(bd.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    ASSERT_TRUE(bd[i].ok && bh[i].ok) << bd[i].error << bh[i].error;
    EXPECT_EQ(bd[i].result.token_ids, bh[i].result.token_ids) << "request " << i;
    EXPECT_EQ(bd[i].result.stop_reason, bh[i].result.stop_reason) << "request " << i;
  }
  EXPECT_GE(bd[1].result.token_ids.size(), bd[1].result.stop_reason == "eos" ? 7u : 9u);
}
