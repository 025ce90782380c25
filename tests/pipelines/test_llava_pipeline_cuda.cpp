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
