// Llama decoder + LLaVA text glue on the CPU (f32) against transformers' goldens for tests/golden/tiny_llava
// (tools/golden/llava.py): the last 8 prompt logits, greedy continuation, chunked prefill through the KV
// cache, right-padded batched prefill, and weight/feature errors.
#include <cmath>

#include "core/checkpoint.h"
#include "core/hf_config.h"
#include "language/llama.h"
#include "language/llava.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

namespace {

struct Golden {
  Checkpoint g{golden_dir() + "/tiny_llava_golden.safetensors"};
  Tensor input_ids = g.load("input_ids", Device::cpu(), DType::I64);            // [1, L]
  Tensor image_features = g.load("image_features", Device::cpu(), DType::F32);  // [1, 576, 64]
  Tensor logits_last = g.load("logits_last", Device::cpu(), DType::F32);        // [1, 8, V]
  Tensor greedy_ids = g.load("greedy_ids", Device::cpu(), DType::I64);          // [1, 32]
  std::vector<int64_t> ids() const {
    const int64_t* p = input_ids.data<int64_t>();
    return {p, p + input_ids.numel()};
  }
};

const Golden& golden() {
  static Golden g;
  return g;
}

const ModelConfig& config() {
  static ModelConfig c = read_model_config(golden_dir() + "/tiny_llava");
  return c;
}

const Checkpoint& ckpt() {
  static Checkpoint c(golden_dir() + "/tiny_llava");
  return c;
}

// The goldens come from transformers with f32 RoPE frequencies (as from_pretrained keeps them);
// bf16_inv_freq emulates a model that was cast with .to(torch.bfloat16) instead.
LlamaModel load_model(bool bf16_inv_freq) {
  LlamaModel m = LlamaModel::load(ckpt(), "language_model.", config().llava().text_config);
  m.set_rope_bf16_inv_freq(bf16_inv_freq);
  return m;
}
const LlamaModel& model() {
  static LlamaModel m = load_model(false);
  return m;
}

Tensor prompt_embeds() {
  return llava_input_embeds(model(), golden().input_ids, golden().image_features,
                            config().llava().image_token_index);
}

}  // namespace

TEST(Llama, LoadsTinyLlavaDecoder) {
  const LlamaModel& m = model();
  EXPECT_EQ(m.num_layers(), 2);
  EXPECT_EQ(m.hidden_size(), 64);
  EXPECT_EQ(m.vocab_size(), 32064);
  EXPECT_EQ(m.num_heads(), 4);
  EXPECT_EQ(m.num_kv_heads(), 2);
  EXPECT_EQ(m.head_dim(), 16);
  EXPECT_EQ(m.attn_head_dim(), 64);  // padded for the attention core
  EXPECT_EQ(m.names().decoder, "language_model.model.");
  EXPECT_EQ(m.names().lm_head, "language_model.lm_head.");
  EXPECT_EQ(detect_llama_weight_names(ckpt()).decoder, "language_model.model.");
  EXPECT_EQ(llama_weight_names("").decoder, "model.");
  EXPECT_EQ(llama_weight_names("model.language_model.").lm_head, "lm_head.");
}

TEST(Llama, PrefillLogitsMatchTransformers) {
  const Tensor e = prompt_embeds();
  const int64_t L = golden().input_ids.size(1);
  ASSERT_EQ(e.shape(), (Shape{1, L, 64}));
  KVCache cache = model().make_cache(1, L);
  const Tensor logits = model().forward(e, cache);  // [1, L, V]
  ASSERT_EQ(logits.shape(), (Shape{1, L, 32064}));
  EXPECT_EQ(cache.length(0), L);
  const double err = rel_err(logits.slice(1, L - 8, L), golden().logits_last);
  std::printf("prefill logits_last rel err %.3g\n", err);
  EXPECT_LT(err, 1e-4);

  // last_only gives the last row
  KVCache c2 = model().make_cache(1, L);
  LlamaForwardOptions o;
  o.last_only = true;
  const Tensor last = model().forward(e, c2, o);
  ASSERT_EQ(last.shape(), (Shape{1, 1, 32064}));
  EXPECT_LT(rel_err(last, golden().logits_last.slice(1, 7, 8)), 1e-4);

  // frequencies rounded through bf16 (a model cast with .to(bf16)) give visibly different logits
  const LlamaModel cast = load_model(true);
  KVCache c3 = cast.make_cache(1, L);
  const double err_cast = rel_err(cast.forward(e, c3).slice(1, L - 8, L), golden().logits_last);
  std::printf("prefill logits_last rel err with bf16-rounded inv_freq %.3g\n", err_cast);
  EXPECT_GT(err_cast, 1e-5);
}

TEST(Llama, ChunkedPrefillThroughTheCacheMatches) {
  const Tensor e = prompt_embeds();
  const int64_t L = e.size(1);
  KVCache cache = model().make_cache(1, L + 4);
  const int64_t split = 300;  // inside the image tokens
  model().forward(e.slice(1, 0, split), cache);
  EXPECT_EQ(cache.length(0), split);
  EXPECT_EQ(cache.next_position(0), split);
  const Tensor logits = model().forward(e.slice(1, split, L), cache);  // [1, L - split, V]
  const int64_t n = L - split;
  const double err = rel_err(logits.slice(1, n - 8, n), golden().logits_last);
  std::printf("chunked prefill logits_last rel err %.3g\n", err);
  EXPECT_LT(err, 1e-4);
  // a third split: chunks of 7 tokens for the tail (causal masking of several new rows with a cache)
  KVCache c3 = model().make_cache(1, L);
  model().forward(e.slice(1, 0, L - 14), c3);
  model().forward(e.slice(1, L - 14, L - 7), c3);
  const Tensor tail = model().forward(e.slice(1, L - 7, L), c3);
  EXPECT_LT(rel_err(tail, golden().logits_last.slice(1, 1, 8)), 1e-4);
}

TEST(Llama, GreedyGenerationMatchesTransformers) {
  const Tensor e = prompt_embeds();
  const int64_t L = e.size(1);
  KVCache cache = model().make_cache(1, L + 32);
  GenerationOptions o;
  o.max_new_tokens = 32;
  o.min_new_tokens = 32;  // as the golden (min_new_tokens=32)
  o.eos_token_ids = model().eos_token_ids();
  const GenerationResult r = generate(model(), e, golden().ids(), cache, o);
  const int64_t* want = golden().greedy_ids.data<int64_t>();
  ASSERT_EQ(r.tokens.size(), 32u);
  for (size_t i = 0; i < 32; ++i) EXPECT_EQ(r.tokens[i], want[i]) << "token " << i;
  EXPECT_FALSE(r.stopped_at_eos);
  EXPECT_EQ(cache.length(0), L + 31);
  EXPECT_LT(rel_err(r.prefill_logits, golden().logits_last.slice(1, 7, 8)), 1e-4);

  // chunked prefill inside generate gives the same tokens
  KVCache c2 = model().make_cache(1, L + 32);
  o.prefill_chunk = 256;
  o.max_new_tokens = 8;
  const GenerationResult r2 = generate(model(), e, golden().ids(), c2, o);
  ASSERT_EQ(r2.tokens.size(), 8u);
  for (size_t i = 0; i < 8; ++i) EXPECT_EQ(r2.tokens[i], want[i]) << "token " << i;
}

TEST(Llama, GenerationStopsAtEos) {
  const Tensor e = prompt_embeds();
  KVCache cache = model().make_cache(1, e.size(1) + 32);
  GenerationOptions o;
  o.max_new_tokens = 32;
  o.eos_token_ids = {golden().greedy_ids.data<int64_t>()[2]};  // pretend the third token is EOS
  const GenerationResult r = generate(model(), e, {}, cache, o);
  ASSERT_EQ(r.tokens.size(), 3u);
  EXPECT_TRUE(r.stopped_at_eos);
  // the cache is too small for the request
  KVCache small = model().make_cache(1, e.size(1));
  EXPECT_THROW(generate(model(), e, {}, small, o), ShapeError);
}

TEST(Llama, RightPaddedBatchedPrefillMatchesSingleSequences) {
  const Tensor e = prompt_embeds();  // [1, L, 64]
  const int64_t L = e.size(1), L1 = L - 5;
  // sequence 0: the whole prompt; sequence 1: its first L1 tokens, right-padded
  Tensor batch = Tensor::zeros({2, L, 64}, DType::F32);
  batch.select(0, 0).copy_from(e.select(0, 0));
  batch.select(0, 1).slice(0, 0, L1).copy_from(e.select(0, 0).slice(0, 0, L1));
  KVCache cache = model().make_cache(2, L + 2);
  LlamaForwardOptions o;
  o.n_valid = {int(L), int(L1)};
  const Tensor logits = model().forward(batch, cache, o);  // [2, L, V]
  EXPECT_EQ(cache.length(0), L);
  EXPECT_EQ(cache.length(1), L1);
  EXPECT_LT(rel_err(logits.select(0, 0).slice(0, L - 8, L), golden().logits_last.select(0, 0)), 1e-4);
  KVCache single = model().make_cache(1, L1 + 1);
  const Tensor ref = model().forward(e.slice(1, 0, L1), single);  // [1, L1, V]
  EXPECT_LT(rel_err(logits.select(0, 1).slice(0, L1 - 8, L1), ref.select(0, 0).slice(0, L1 - 8, L1)), 1e-4);

  // one batched decode step (each sequence continues at its own position) vs the single runs
  const int64_t* g = golden().greedy_ids.data<int64_t>();
  const Tensor next = model().embed(Tensor::from_vector<int64_t>({g[0], g[0]}, {2, 1}));  // [2, 1, 64]
  LlamaForwardOptions last;
  last.last_only = true;
  const Tensor step = model().forward(next, cache, last);  // [2, 1, V]
  const Tensor ref1 = model().forward(next.slice(0, 1, 2), single, last);
  EXPECT_LT(rel_err(step.slice(0, 1, 2), ref1), 1e-4);
  KVCache full = model().make_cache(1, L + 1);
  model().forward(e, full, last);
  const Tensor ref0 = model().forward(next.slice(0, 0, 1), full, last);
  EXPECT_LT(rel_err(step.slice(0, 0, 1), ref0), 1e-4);

  // batched last_only with padding picks each sequence's last valid row
  KVCache c2 = model().make_cache(2, L);
  const Tensor lo = model().forward(batch, c2, {o.n_valid, true});
  EXPECT_LT(rel_err(lo.slice(0, 1, 2), ref.slice(1, L1 - 1, L1)), 1e-4);
}

TEST(Llama, MissingOrMisshapedTensorIsAWeightErrorNamingIt) {
  LlamaConfig cfg = config().llava().text_config;
  try {
    LlamaModel::load(ckpt(), "", cfg);  // plain LlamaForCausalLM names are not in a llava checkpoint
    FAIL() << "no error";
  } catch (const WeightError& e) {
    EXPECT_NE(std::string(e.what()).find("model.embed_tokens.weight"), std::string::npos) << e.what();
  }
  cfg.num_hidden_layers = 3;
  try {
    LlamaModel::load(ckpt(), "language_model.", cfg);
    FAIL() << "no error";
  } catch (const WeightError& e) {
    EXPECT_NE(std::string(e.what()).find("language_model.model.layers.2.input_layernorm.weight"), std::string::npos)
        << e.what();
  }
  cfg = config().llava().text_config;
  cfg.intermediate_size = 128;
  try {
    LlamaModel::load(ckpt(), "language_model.", cfg);
    FAIL() << "no error";
  } catch (const WeightError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("language_model.model.layers.0.mlp.gate_proj.weight"), std::string::npos) << m;
    EXPECT_NE(m.find("160"), std::string::npos) << m;  // the found shape
  }
  cfg = config().llava().text_config;
  cfg.attention_bias = true;
  EXPECT_THROW(LlamaModel::load(ckpt(), "language_model.", cfg), WeightError);
  cfg = config().llava().text_config;
  EXPECT_THROW(LlamaModel::load(ckpt(), "language_model.", cfg, Device::cpu(), DType::BF16), UnsupportedError);
}

TEST(Llama, TiedEmbeddingsUseTheEmbeddingTable) {
  LlamaConfig cfg = config().llava().text_config;
  cfg.tie_word_embeddings = true;
  const LlamaModel m = LlamaModel::load(ckpt(), "language_model.", cfg);
  KVCache cache = m.make_cache(1, 4);
  const Tensor e = m.embed(Tensor::from_vector<int64_t>({1, 3148, 1001}, {1, 3}));
  const Tensor logits = m.forward(e, cache);
  ASSERT_EQ(logits.shape(), (Shape{1, 3, 32064}));
  for (float v : logits.to_floats()) ASSERT_TRUE(std::isfinite(v));
  EXPECT_GT(rel_err(logits, [&] {
              KVCache c = model().make_cache(1, 4);
              return model().forward(e, c);
            }()),
            1e-2);  // a different head than lm_head.weight
}

TEST(Llava, MergeImageFeaturesReplacesImageTokensInOrder) {
  // ids: [5, I, I, 7] and [I, 8, 9, I] with I = 99 (outside a vocab of 10: must not be looked up)
  const Tensor ids = Tensor::from_vector<int64_t>({5, 99, 99, 7, 99, 8, 9, 99}, {2, 4});
  Tensor embeds = Tensor::zeros({2, 4, 3}, DType::F32);
  const Tensor feats = rand_tensor({4, 3}, 1);
  merge_image_features_(embeds, ids, feats.view({2, 2, 3}), 99);
  const auto f = feats.to_floats();
  const auto got = embeds.to_floats();
  auto row = [&](const std::vector<float>& v, int64_t r) { return std::vector<float>(v.begin() + r * 3, v.begin() + r * 3 + 3); };
  EXPECT_EQ(row(got, 1), row(f, 0));
  EXPECT_EQ(row(got, 2), row(f, 1));
  EXPECT_EQ(row(got, 4), row(f, 2));
  EXPECT_EQ(row(got, 7), row(f, 3));
  EXPECT_EQ(row(got, 0), std::vector<float>(3, 0.f));
  try {
    merge_image_features_(embeds, ids, feats.slice(0, 0, 3), 99);
    FAIL() << "no error";
  } catch (const ShapeError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("4 image tokens"), std::string::npos) << m;
    EXPECT_NE(m.find("3 image feature rows"), std::string::npos) << m;
  }
  EXPECT_EQ(count_image_tokens(ids, 99), 4);
}

TEST(Llava, InputEmbedsMatchEmbeddingOutsideImageTokens) {
  const Tensor e = prompt_embeds();
  const auto ids = golden().ids();
  const Tensor text = model().embed(golden().input_ids);
  const int64_t L = int64_t(ids.size());
  int64_t first_img = -1;
  for (int64_t i = 0; i < L; ++i)
    if (ids[size_t(i)] == 32000 && first_img < 0) first_img = i;
  ASSERT_GE(first_img, 1);
  EXPECT_EQ(max_abs_diff(e.slice(1, 0, first_img), text.slice(1, 0, first_img)), 0.0);
  EXPECT_EQ(max_abs_diff(e.slice(1, first_img, first_img + 576), golden().image_features), 0.0);
  EXPECT_EQ(max_abs_diff(e.slice(1, first_img + 576, L), text.slice(1, first_img + 576, L)), 0.0);
  // wrong feature count
  EXPECT_THROW(llava_input_embeds(model(), golden().input_ids, golden().image_features.slice(1, 0, 575), 32000),
               ShapeError);
}
