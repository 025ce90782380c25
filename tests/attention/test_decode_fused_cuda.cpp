// rms_norm_qkv_rope_attention (attention/decode_fused.h) on CUDA: the token's k / v rows bit for bit
// as rms_norm_linear_qkv_rope writes them, rows past the token's untouched, and the attention output
// against the CPU reference attention() over the same rounded q, K and V (and against the unfused
// GPU path), on awkward key counts (no old key, 1, 3, 17, one item and one key past it, 700, the
// kDecodeFusedMaxKeys - 1 limit), MHA / GQA / MQA, head dims 64 and 128, both m = 1 gemv shapes (n below and above
// ~8.4K rows), bf16 and f16, with and without a bias; repeated launches bit-identical (the queue
// slot's counters go back to zero); what is not fusable and bad arguments.
#include <cmath>
#include <string>

#include "attention/attention.h"
#include "attention/decode_fused.h"
#include "core/ops/linear.h"
#include "attention_cuda_util.h"

using namespace mmattn;
using namespace mmattn::test;

namespace {

struct Case {
  int64_t hq, hkv, d, k;
  bool bias;
};

// The layer's inputs for one token: x [1, 1, K], the norm weight, the q/k/v weight (and bias), the
// token's RoPE row, and a cache of cap rows whose rows [0, len) hold random keys / values and the rest
// NaN (an unwritten row that is read shows).
struct Inputs {
  Tensor x, nw, w, bias, cos, sin, kc, vc;
};

Inputs make_inputs(const Case& c, int64_t len, int64_t cap, DType dt, uint64_t seed) {
  Inputs in;
  const Device g = Device::cuda();
  const int64_t n = (c.hq + 2 * c.hkv) * c.d;
  in.x = rand_tensor({1, 1, c.k}, seed + 1).to(g, dt);
  in.nw = rand_tensor({c.k}, seed + 2, 0.8f, 1.2f).to(g, dt);
  in.w = rand_tensor({n, c.k}, seed + 3, -0.1f, 0.1f).to(g, dt);
  if (c.bias) in.bias = rand_tensor({n}, seed + 4, -0.5f, 0.5f).to(g, dt);
  const Tensor ang = rand_tensor({1, c.d / 2}, seed + 5, -3.f, 3.f);
  std::vector<float> co, si;
  for (float a : ang.to_floats()) co.push_back(std::cos(a)), si.push_back(std::sin(a));
  in.cos = Tensor::from_floats(co, {1, c.d / 2}).to(g);
  in.sin = Tensor::from_floats(si, {1, c.d / 2}).to(g);
  for (int which = 0; which < 2; ++which) {
    Tensor t = Tensor::full({1, cap, c.hkv, c.d}, NAN, DType::F32);
    if (len > 0) t.slice(1, 0, len).copy_from(rand_tensor({1, len, c.hkv, c.d}, seed + 6 + which, -2.f, 2.f));
    (which == 0 ? in.kc : in.vc) = t.to(g, dt);
  }
  return in;
}

std::string name(const Case& c, int64_t len, DType dt) {
  return "hq " + std::to_string(c.hq) + " hkv " + std::to_string(c.hkv) + " d " + std::to_string(c.d) + " k " +
         std::to_string(c.k) + (c.bias ? " bias" : "") + " len " + std::to_string(len) + " " + std::string(dtype_name(dt));
}

// One fused call on `in` against the unfused path and the CPU reference (see the file comment);
// returns its output.
Tensor check_fused(const Case& c, Inputs& in, int64_t len, int64_t cap, DType dt, const std::string& at) {
  EXPECT_TRUE(decode_attention_fusable(in.x, in.w, c.hq, c.hkv, c.d, len)) << at;
  // the unfused path: the product with RoPE into a copy of the cache, then attention()
  Tensor kr = in.kc.clone(), vr = in.vc.clone();
  Tensor q = Tensor::empty({1, c.hq * c.d}, dt, Device::cuda());
  Tensor k2 = kr.select(0, 0).slice(0, len, len + 1).view({1, c.hkv * c.d});
  Tensor v2 = vr.select(0, 0).slice(0, len, len + 1).view({1, c.hkv * c.d});
  rms_norm_linear_qkv_rope(in.x.view({1, c.k}), in.nw, 1e-5f, in.w, in.bias, in.cos, in.sin, c.hq, c.hkv, q, k2,
                           v2);
  AttentionOptions ao;
  ao.causal = true;
  ao.k_lens = Tensor::from_vector<int32_t>({int32_t(len + 1)}, {1}).to(Device::cuda());
  const Tensor plain = attention(q.view({1, 1, c.hq, c.d}), kr, vr, ao).out;

  const int64_t calls = decode_attention_fused_calls();
  const Tensor out = rms_norm_qkv_rope_attention(in.x, in.nw, 1e-5f, in.w, in.bias, in.cos, in.sin, c.hq, c.hkv,
                                                 in.kc, in.vc, len, 0.f);
  EXPECT_EQ(decode_attention_fused_calls(), calls + 1) << at;
  EXPECT_EQ(out.dtype(), dt) << at;
  EXPECT_EQ(out.shape(), (Shape{1, 1, c.hq * c.d})) << at;
  // the cache: the token's row as the product writes it, the rows before unchanged, after it NaN
  EXPECT_EQ(max_abs_diff(in.kc.slice(1, 0, len + 1), kr.slice(1, 0, len + 1)), 0.0) << at;
  EXPECT_EQ(max_abs_diff(in.vc.slice(1, 0, len + 1), vr.slice(1, 0, len + 1)), 0.0) << at;
  for (const Tensor* t : {&in.kc, &in.vc}) {
    int written = 0;
    for (float f : t->slice(1, len + 1, cap).to_floats()) written += !std::isnan(f);
    EXPECT_EQ(written, 0) << at << ": a row past the token's was written";
  }
  // the attention: the CPU reference on the same rounded values
  const Tensor ref = attention(q.view({1, 1, c.hq, c.d}).to(Device::cpu(), DType::F32),
                               kr.slice(1, 0, len + 1).to(Device::cpu(), DType::F32),
                               vr.slice(1, 0, len + 1).to(Device::cpu(), DType::F32), {})
                         .out.view({1, 1, c.hq * c.d});
  const double e = rel_err(out.to(Device::cpu(), DType::F32), ref);
  EXPECT_LT(e, out_tol(dt)) << at;
  EXPECT_LT(rel_err(plain.view({1, 1, c.hq * c.d}).to(Device::cpu(), DType::F32), ref), out_tol(dt)) << at;
  int bad = 0;
  for (float f : out.to_floats()) bad += !std::isfinite(f);
  EXPECT_EQ(bad, 0) << at;
  // again: the same bits (deterministic merge order; the launch's counters were reset)
  const Tensor again = rms_norm_qkv_rope_attention(in.x, in.nw, 1e-5f, in.w, in.bias, in.cos, in.sin, c.hq,
                                                   c.hkv, in.kc, in.vc, len, 0.f);
  EXPECT_EQ(max_abs_diff(again, out), 0.0) << at;
  return out;
}

}  // namespace

TEST(DecodeFusedCuda, MatchesProductThenAttention) {
  MMATTN_REQUIRE_GPU();
  const std::vector<Case> cases = {
      {2, 1, 128, 256, false},  // MQA, the 4x4 gemv shape
      {4, 4, 64, 520, true},    // MHA, head dim 64, k not a multiple of 64
      {8, 2, 128, 264, false},  // GQA 4:1
      {32, 32, 128, 512, false}, // the 7B layout (n = 12288: the 2x8 gemv shape)
      {128, 4, 64, 256, true},  // GQA 32:1, the 2x8 shape at head dim 64 (n = 8704)
  };
  const std::vector<int64_t> lens = {0, 1, 3, 17, 127, 128, 129, 700};
  uint64_t seed = 100;
  int runs = 0;
  for (DType dt : {DType::BF16, DType::F16})
    for (const Case& c : cases)
      for (int64_t len : lens) {
        const std::string at = name(c, len, dt);
        seed += 10;
        const int64_t cap = len + 3;
        Inputs in = make_inputs(c, len, cap, dt, seed);
        (void)check_fused(c, in, len, cap, dt, at);
        ++runs;
      }
  EXPECT_EQ(runs, 2 * int(cases.size() * lens.size()));
}

// The longest cache it takes (kDecodeFusedMaxKeys - 1 old keys) and many launches back to back.
TEST(DecodeFusedCuda, LongestCacheAndBackToBackLaunches) {
  MMATTN_REQUIRE_GPU();
  const Case c{8, 8, 128, 256, false};
  const int64_t len = kDecodeFusedMaxKeys - 1;
  Inputs in = make_inputs(c, len, len + 1, DType::BF16, 900);
  ASSERT_TRUE(decode_attention_fusable(in.x, in.w, c.hq, c.hkv, c.d, len));
  EXPECT_FALSE(decode_attention_fusable(in.x, in.w, c.hq, c.hkv, c.d, len + 1));
  const Tensor first = check_fused(c, in, len, len + 1, DType::BF16, "the longest cache");
  for (int i = 0; i < 100; ++i) {
    const Tensor o = rms_norm_qkv_rope_attention(in.x, in.nw, 1e-5f, in.w, Tensor(), in.cos, in.sin, c.hq, c.hkv,
                                                 in.kc, in.vc, len, 0.f);
    if (i % 25 == 24) ASSERT_EQ(max_abs_diff(o, first), 0.0) << "launch " << i;
  }
}

TEST(DecodeFusedCuda, NotFusable) {
  MMATTN_REQUIRE_GPU();
  const Case c{2, 1, 128, 256, false};
  Inputs in = make_inputs(c, 10, 16, DType::BF16, 50);
  EXPECT_TRUE(decode_attention_fusable(in.x, in.w, 2, 1, 128, 10));
  EXPECT_FALSE(decode_attention_fusable(in.x.to(Device::cpu()), in.w.to(Device::cpu()), 2, 1, 128, 10));
  EXPECT_FALSE(decode_attention_fusable(in.x.to(DType::F32), in.w.to(DType::F32), 2, 1, 128, 10));
  EXPECT_FALSE(decode_attention_fusable(in.x, in.w, 4, 1, 64, 10)) << "head dim 64 with the weight of 128";
  EXPECT_FALSE(decode_attention_fusable(in.x, in.w, 3, 1, 128, 10)) << "hq + 2 hkv != the weight's heads";
  const Tensor two = rand_tensor({1, 2, 256}, 3).to(Device::cuda(), DType::BF16);
  EXPECT_FALSE(decode_attention_fusable(two, in.w, 2, 1, 128, 10)) << "two rows";
  const Tensor w96 = rand_tensor({4 * 96, 256}, 3).to(Device::cuda(), DType::BF16);
  EXPECT_FALSE(decode_attention_fusable(in.x, w96, 2, 1, 96, 10)) << "head dim 96";
  set_decode_attention_fused(false);
  EXPECT_FALSE(decode_attention_fusable(in.x, in.w, 2, 1, 128, 10));
  set_decode_attention_fused(true);
  const bool paired = gemv_paired_outputs();
  set_gemv_paired_outputs(false);
  EXPECT_FALSE(decode_attention_fusable(in.x, in.w, 2, 1, 128, 10));
  set_gemv_paired_outputs(paired);
}

TEST(DecodeFusedCuda, BadArgumentsNameThemselves) {
  MMATTN_REQUIRE_GPU();
  const Case c{2, 1, 128, 256, false};
  Inputs in = make_inputs(c, 10, 16, DType::BF16, 60);
  auto expect_error = [&](const std::string& arg, auto&& call) {
    try {
      call();
      ADD_FAILURE() << "no error for a bad '" << arg << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(arg), std::string::npos) << e.what();
    }
  };
  const Tensor k_bad = Tensor::empty({1, 16, 2, 128}, DType::BF16, Device::cuda());
  expect_error("k_cache", [&] {
    rms_norm_qkv_rope_attention(in.x, in.nw, 1e-5f, in.w, Tensor(), in.cos, in.sin, 2, 1, k_bad, in.vc, 10, 0.f);
  });
  expect_error("k_cache", [&] {  // no room for the token's row
    rms_norm_qkv_rope_attention(in.x, in.nw, 1e-5f, in.w, Tensor(), in.cos, in.sin, 2, 1, in.kc, in.vc, 16, 0.f);
  });
  expect_error("cos", [&] {
    rms_norm_qkv_rope_attention(in.x, in.nw, 1e-5f, in.w, Tensor(), in.sin.view({64, 1}), in.sin, 2, 1, in.kc, in.vc,
                                10, 0.f);
  });
  expect_error("norm_weight", [&] {
    rms_norm_qkv_rope_attention(in.x, in.nw.slice(0, 0, 128), 1e-5f, in.w, Tensor(), in.cos, in.sin, 2, 1, in.kc,
                                in.vc, 10, 0.f);
  });
  expect_error("not fusable", [&] {
    rms_norm_qkv_rope_attention(in.x.to(Device::cpu()), in.nw, 1e-5f, in.w, Tensor(), in.cos, in.sin, 2, 1, in.kc,
                                in.vc, 10, 0.f);
  });
}
