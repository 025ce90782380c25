// Llama decoder on CUDA in bf16 against the transformers goldens of tests/golden/tiny_llava (f32
// reference). Tolerance: logits rel < 3e-2 (bf16 weights are exact, but every activation is rounded
// to bf16 between ops, as transformers does in bf16: ~8 bits of mantissa over 2 layers). Greedy ids:
// the tiny random model's greedy path ([20731, 18422, 25790] repeating) is robust, so all 32 must match.
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "core/checkpoint.h"
#include "core/hf_config.h"
#include "attention/decode_fused.h"
#include "core/ops/linear.h"
#include "core/safetensors.h"
#include "language/llama.h"
#include "language/llava.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

namespace {

struct Fixture {
  Checkpoint g{golden_dir() + "/tiny_llava_golden.safetensors"};
  Checkpoint ckpt{golden_dir() + "/tiny_llava"};
  ModelConfig cfg = read_model_config(golden_dir() + "/tiny_llava");
  Tensor input_ids = g.load("input_ids", Device::cpu(), DType::I64);
  Tensor image_features = g.load("image_features", Device::cpu(), DType::F32);
  Tensor logits_last = g.load("logits_last", Device::cpu(), DType::F32);
  Tensor greedy_ids = g.load("greedy_ids", Device::cpu(), DType::I64);
  LlamaModel load(bool bf16_inv_freq) const {
    LlamaModel m = LlamaModel::load(ckpt, "language_model.", cfg.llava().text_config, Device::cuda(), DType::BF16);
    m.set_rope_bf16_inv_freq(bf16_inv_freq);
    return m;
  }
};

}  // namespace

TEST(LlamaCuda, Bf16PrefillAndGreedyMatchTransformers) {
  MMATTN_REQUIRE_GPU();
  const Fixture f;
  const LlamaModel m = f.load(false);
  EXPECT_EQ(m.attn_head_dim(), 64);
  const Tensor e = llava_input_embeds(m, f.input_ids, f.image_features, f.cfg.llava().image_token_index);
  ASSERT_TRUE(e.is_cuda());
  ASSERT_EQ(e.dtype(), DType::BF16);
  const int64_t L = e.size(1);

  KVCache cache = m.make_cache(1, L);
  const Tensor logits = m.forward(e, cache);  // F32 [1, L, V] on CUDA
  ASSERT_TRUE(logits.is_cuda());
  const double err = rel_err(logits.slice(1, L - 8, L), f.logits_last);
  std::printf("cuda bf16 prefill logits_last rel err %.3g\n", err);
  EXPECT_LT(err, 3e-2);

  // chunked prefill (several new rows over a cache, prefill kernel) and the CPU-chunk equivalence
  KVCache c2 = m.make_cache(1, L);
  m.forward(e.slice(1, 0, 300), c2);
  const Tensor tail = m.forward(e.slice(1, 300, L), c2);
  const double err2 = rel_err(tail.slice(1, L - 308, L - 300), f.logits_last);
  std::printf("cuda bf16 chunked prefill logits_last rel err %.3g\n", err2);
  EXPECT_LT(err2, 3e-2);

  // greedy decode (split-KV decode kernel, Lq = 1)
  KVCache c3 = m.make_cache(1, L + 32);
  GenerationOptions o;
  o.max_new_tokens = 32;
  o.min_new_tokens = 32;
  o.eos_token_ids = m.eos_token_ids();
  const int64_t* p = f.input_ids.data<int64_t>();
  const GenerationResult r = generate(m, e, std::vector<int64_t>(p, p + L), c3, o);
  ASSERT_EQ(r.tokens.size(), 32u);
  const int64_t* want = f.greedy_ids.data<int64_t>();
  int match = 0;
  while (match < 32 && r.tokens[size_t(match)] == want[match]) ++match;
  std::printf("cuda bf16 greedy: first %d of 32 tokens match\n", match);
  EXPECT_EQ(match, 32);

  // f32 RoPE frequencies (the default) stay within the bf16 tolerance too
  const LlamaModel plain = f.load(false);
  KVCache c4 = plain.make_cache(1, L);
  LlamaForwardOptions last;
  last.last_only = true;
  const double err3 = rel_err(plain.forward(e, c4, last), f.logits_last.slice(1, 7, 8));
  std::printf("cuda bf16 last logits rel err with f32 inv_freq %.3g\n", err3);
  EXPECT_LT(err3, 3e-2);
}

TEST(LlamaCuda, Bf16BatchedPaddedPrefillMatchesSingle) {
  MMATTN_REQUIRE_GPU();
  const Fixture f;
  const LlamaModel m = f.load(false);
  const Tensor e = llava_input_embeds(m, f.input_ids, f.image_features, f.cfg.llava().image_token_index);
  const int64_t L = e.size(1), L1 = L - 5;
  Tensor batch = Tensor::zeros({2, L, m.hidden_size()}, DType::BF16, Device::cuda());
  batch.select(0, 0).copy_from(e.select(0, 0));
  batch.select(0, 1).slice(0, 0, L1).copy_from(e.select(0, 0).slice(0, 0, L1));
  KVCache cache = m.make_cache(2, L);
  LlamaForwardOptions o;
  o.n_valid = {int(L), int(L1)};
  o.last_only = true;
  const Tensor lo = m.forward(batch, cache, o);  // [2, 1, V]
  KVCache single = m.make_cache(1, L1);
  const Tensor ref = m.forward(e.slice(1, 0, L1), single, {{}, true});
  EXPECT_LT(rel_err(lo.slice(0, 1, 2), ref), 1e-2);
  EXPECT_LT(rel_err(lo.slice(0, 0, 1), f.logits_last.slice(1, 7, 8)), 3e-2);
}

namespace {

// A random two-layer Llama with head_dim 128 (GQA 2:1, hidden 256), written as a checkpoint and
// loaded in bf16 on CUDA.
LlamaModel random_llama_d128() {
  namespace fs = std::filesystem;
  LlamaConfig cfg;
  cfg.vocab_size = 96, cfg.hidden_size = 256, cfg.intermediate_size = 512, cfg.num_hidden_layers = 2;
  cfg.num_attention_heads = 2, cfg.num_key_value_heads = 1, cfg.head_dim = 128, cfg.rms_norm_eps = 1e-5;
  const int64_t H = 256, F = 512, D = 128, V = 96;
  std::vector<std::pair<std::string, Tensor>> w;
  uint64_t seed = 700;
  auto add = [&](const std::string& name, const Shape& shape, float lo, float hi) {
    w.emplace_back(name, round_to(rand_tensor(shape, ++seed, lo, hi), DType::BF16));
  };
  add("model.embed_tokens.weight", {V, H}, -1.f, 1.f);
  add("model.norm.weight", {H}, 0.8f, 1.2f);
  add("lm_head.weight", {V, H}, -0.1f, 0.1f);
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {H}, 0.8f, 1.2f);
    add(p + "post_attention_layernorm.weight", {H}, 0.8f, 1.2f);
    add(p + "self_attn.q_proj.weight", {2 * D, H}, -0.1f, 0.1f);
    add(p + "self_attn.k_proj.weight", {D, H}, -0.1f, 0.1f);
    add(p + "self_attn.v_proj.weight", {D, H}, -0.1f, 0.1f);
    add(p + "self_attn.o_proj.weight", {H, 2 * D}, -0.1f, 0.1f);
    add(p + "mlp.gate_proj.weight", {F, H}, -0.1f, 0.1f);
    add(p + "mlp.up_proj.weight", {F, H}, -0.1f, 0.1f);
    add(p + "mlp.down_proj.weight", {H, F}, -0.1f, 0.1f);
  }
  const fs::path dir = fs::temp_directory_path() / ("mmattn_llama_d128_" + std::to_string(getpid()));
  fs::create_directories(dir);
  save_safetensors((dir / "model.safetensors").string(), w);
  LlamaModel m = LlamaModel::load(Checkpoint(dir.string()), "", cfg, Device::cuda(), DType::BF16);
  fs::remove_all(dir);
  return m;
}

}  // namespace

// A prefill of one sequence at 9-128 rows with head_dim 128 takes linear_qkv_rope (RoPE in the q/k/v
// projection's epilogue, k and v written straight into the cache: no separate append) where this
// build and device have it. A random two-layer Llama of that shape (GQA 2:1, written as a checkpoint
// here) gives the same logits with it as with the cluster route off (cuBLASLt and the separate RoPE +
// append), in the prefill and in the decode step after it (which reads the cache it wrote). The decode
// step (one row) takes it through the gemv, and the gated activation out of the gate/up gemv: the
// same logits, bit for bit, as with those paired epilogues off.
TEST(LlamaCuda, QkvRopeIntoCacheMatchesSeparateAppend) {
  MMATTN_REQUIRE_GPU();
  const LlamaModel m = random_llama_d128();
  const int64_t H = 256, D = 128;

  const int64_t n = 100;
  const Tensor e = round_to(rand_tensor({1, n, H}, 9), DType::BF16).to(Device::cuda(), DType::BF16);
  const Tensor e1 = round_to(rand_tensor({1, 1, H}, 10), DType::BF16).to(Device::cuda(), DType::BF16);
  if (!linear_qkv_rope_fusable(e.select(0, 0), Tensor::empty({4 * D, H}, DType::BF16, Device::cuda()), D))
    GTEST_SKIP() << "linear_qkv_rope is not fusable on this build / device";
  // route: the prefill's (cluster product or cuBLASLt); paired: the decode step's gemv with RoPE and
  // the cache rows in its epilogue (and the gated activation out of gate/up) or the separate kernels
  auto run = [&](int route, bool paired) {
    const int was = cluster_gemm_route();
    const bool paired_was = gemv_paired_outputs();
    set_cluster_gemm_route(route);
    set_gemv_paired_outputs(paired);
    set_decode_attention_fused(false);  // (its own test below: it sums the attention in another order)
    KVCache cache = m.make_cache(1, n + 1);
    const Tensor prefill = m.forward(e, cache);
    const Tensor step = m.forward(e1, cache);
    set_cluster_gemm_route(was);
    set_gemv_paired_outputs(paired_was);
    set_decode_attention_fused(true);
    return std::make_pair(prefill, step);
  };
  int64_t calls = linear_qkv_rope_calls();
  const auto fused = run(kClusterGemmLongK, true);
  EXPECT_EQ(linear_qkv_rope_calls() - calls, 4) << "the prefill's and the step's two layers did not take linear_qkv_rope";
  calls = linear_qkv_rope_calls();
  const auto plain = run(kClusterGemmNone, false);
  EXPECT_EQ(linear_qkv_rope_calls() - calls, 0) << "the cluster route and the paired gemv off still took linear_qkv_rope";
  const double e_pre = rel_err(fused.first, plain.first), e_step = rel_err(fused.second, plain.second);
  std::printf("qkv + RoPE into the cache vs separate append: prefill rel err %.3g, next step %.3g\n", e_pre, e_step);
  EXPECT_LT(e_pre, 2e-2);
  EXPECT_LT(e_step, 2e-2);
  // the decode step alone: the same prefill, the step with and without the paired epilogues, bit for bit
  calls = linear_qkv_rope_calls();
  const auto unpaired = run(kClusterGemmLongK, false);
  EXPECT_EQ(linear_qkv_rope_calls() - calls, 2) << "the paired gemv off still took linear_qkv_rope in the step";
  EXPECT_EQ(max_abs_diff(unpaired.first, fused.first), 0.0);
  EXPECT_EQ(max_abs_diff(unpaired.second, fused.second), 0.0) << "the paired decode step changed the logits";
}

// A decode step's attention half in one kernel (attention/decode_fused.h): the random head_dim-128
// Llama's decode steps after a prefill give the same logits as with it off (the product, then the
// decode attention kernel), within bf16 rounding, and the same greedy tokens; each step takes it in
// both layers.
TEST(LlamaCuda, FusedDecodeAttentionMatchesUnfused) {
  MMATTN_REQUIRE_GPU();
  const LlamaModel m = random_llama_d128();
  const int64_t n = 100, H = 256, steps = 6;
  const Tensor e = round_to(rand_tensor({1, n, H}, 19), DType::BF16).to(Device::cuda(), DType::BF16);
  if (!decode_attention_fusable(e.slice(1, 0, 1), Tensor::empty({4 * 128, H}, DType::BF16, Device::cuda()), 2, 1, 128,
                                n))
    GTEST_SKIP() << "the fused decode attention is not available on this build / device";
  auto run = [&](bool fused) {
    set_decode_attention_fused(fused);
    KVCache cache = m.make_cache(1, n + steps);
    std::vector<Tensor> logits{m.forward(e, cache)};
    for (int64_t s = 0; s < steps; ++s) {
      const Tensor x = round_to(rand_tensor({1, 1, H}, 30 + uint64_t(s)), DType::BF16).to(Device::cuda(), DType::BF16);
      const int64_t calls = decode_attention_fused_calls();
      logits.push_back(m.forward(x, cache));
      EXPECT_EQ(decode_attention_fused_calls() - calls, fused ? 2 : 0) << "step " << s;
    }
    set_decode_attention_fused(true);
    return logits;
  };
  const auto fused = run(true), plain = run(false);
  EXPECT_EQ(max_abs_diff(fused[0], plain[0]), 0.0) << "the prefill changed";
  for (int64_t s = 1; s <= steps; ++s) {
    const double err = rel_err(fused[size_t(s)], plain[size_t(s)]);
    EXPECT_LT(err, 2e-2) << "step " << s;
    const auto a = fused[size_t(s)].to_floats(), b = plain[size_t(s)].to_floats();
    EXPECT_EQ(std::max_element(a.begin(), a.end()) - a.begin(), std::max_element(b.begin(), b.end()) - b.begin())
        << "step " << s << ": greedy token";
  }
}
