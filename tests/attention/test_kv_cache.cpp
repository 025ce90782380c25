// KVCache on the CPU: append/advance offsets, padded steps, positions through truncate and
// compact, the lengths attention sees during a step, and errors that name the problem.
#include <functional>

#include "attention/attention.h"
#include "attention/kv_cache.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Row (b, slot) of layer l's K as floats.
std::vector<float> krow(const KVCache& c, int l, int64_t b, int64_t slot) {
  return c.k(l).select(0, b).select(0, slot).contiguous().to_floats();
}
std::vector<float> vrow(const KVCache& c, int l, int64_t b, int64_t slot) {
  return c.v(l).select(0, b).select(0, slot).contiguous().to_floats();
}
std::vector<float> row_of(const Tensor& t, int64_t b, int64_t i) { return t.select(0, b).select(0, i).contiguous().to_floats(); }

::testing::AssertionResult has(const std::string& msg, const std::string& part) {
  return msg.find(part) != std::string::npos ? ::testing::AssertionSuccess()
                                             : ::testing::AssertionFailure() << "'" << msg << "' lacks '" << part << "'";
}

std::vector<int32_t> lens_of(const KVCache& c) {
  auto f = c.lens_tensor(0).to_floats();
  return std::vector<int32_t>(f.begin(), f.end());
}

}  // namespace

TEST(KVCache, AppendAdvanceWritesAtTheLengths) {
  const int L = 2;
  const int64_t B = 2, cap = 10, H = 2, D = 8;
  KVCache c(L, B, cap, H, D, DType::F32);
  EXPECT_EQ(c.bytes(), size_t(L * 2 * B * cap * H * D * 4));
  // prefill: 4 tokens for sequence 0, 2 for sequence 1 (padded to 4)
  Tensor k0 = rand_tensor({B, 4, H, D}, 1), v0 = rand_tensor({B, 4, H, D}, 2);
  Tensor k1 = rand_tensor({B, 4, H, D}, 3), v1 = rand_tensor({B, 4, H, D}, 4);
  c.append(0, k0, v0, {4, 2});
  EXPECT_TRUE(c.step_open());
  EXPECT_EQ(lens_of(c), (std::vector<int32_t>{4, 2}));  // attention in the step sees the new rows
  EXPECT_EQ(c.lengths(), (std::vector<int64_t>{0, 0}));
  c.append(1, k1, v1, {4, 2});
  c.advance();
  EXPECT_FALSE(c.step_open());
  EXPECT_EQ(c.lengths(), (std::vector<int64_t>{4, 2}));
  for (int64_t i = 0; i < 4; ++i) {
    EXPECT_EQ(krow(c, 0, 0, i), row_of(k0, 0, i));
    EXPECT_EQ(vrow(c, 1, 0, i), row_of(v1, 0, i));
  }
  for (int64_t i = 0; i < 2; ++i) EXPECT_EQ(krow(c, 1, 1, i), row_of(k1, 1, i));
  EXPECT_EQ(krow(c, 0, 1, 2), std::vector<float>(size_t(H * D), 0.f));  // padding not written
  EXPECT_EQ(c.positions(0), (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(c.positions(1), (std::vector<int32_t>{0, 1}));

  // decode step: one token each, written at different offsets (4 and 2) from a strided input
  Tensor kv = rand_tensor({B, 1, 2, H, D}, 5);  // fused [B, 1, {k,v}, H, D]
  for (int l = 0; l < L; ++l) c.append(l, kv.select(2, 0), kv.select(2, 1));
  c.advance();
  EXPECT_EQ(c.lengths(), (std::vector<int64_t>{5, 3}));
  EXPECT_EQ(krow(c, 1, 0, 4), row_of(kv.select(2, 0), 0, 0));
  EXPECT_EQ(vrow(c, 0, 1, 2), row_of(kv.select(2, 1), 1, 0));
  EXPECT_EQ(c.next_position(0), 5);
  EXPECT_EQ(lens_of(c), (std::vector<int32_t>{5, 3}));
}

TEST(KVCache, CompactKeepsRowsAndPositions) {
  const int L = 3;
  const int64_t B = 2, cap = 12, H = 2, D = 4;
  KVCache c(L, B, cap, H, D, DType::F32);
  std::vector<Tensor> ks, vs;
  for (int l = 0; l < L; ++l) {
    ks.push_back(rand_tensor({B, 8, H, D}, 10 + l));
    vs.push_back(rand_tensor({B, 8, H, D}, 20 + l));
    c.append(l, ks[size_t(l)], vs[size_t(l)], {8, 5}, {{10, 11, 12, 13, 14, 15, 16, 17}, {0, 1, 2, 3, 4}});
  }
  c.advance();
  EXPECT_EQ(c.positions(0), (std::vector<int32_t>{10, 11, 12, 13, 14, 15, 16, 17}));
  EXPECT_EQ(c.next_position(0), 18);

  // FastV-style pruning of sequence 0: keep slots 0, 2, 3, 7 (every layer)
  const std::vector<int64_t> keep = {0, 2, 3, 7};
  c.compact(0, keep);
  EXPECT_EQ(c.lengths(), (std::vector<int64_t>{4, 5}));
  EXPECT_EQ(c.positions(0), (std::vector<int32_t>{10, 12, 13, 17}));
  EXPECT_EQ(c.next_position(0), 18);  // max position + 1, not the length
  for (int l = 0; l < L; ++l)
    for (size_t i = 0; i < keep.size(); ++i) {
      EXPECT_EQ(krow(c, l, 0, int64_t(i)), row_of(ks[size_t(l)], 0, keep[i])) << "layer " << l << " row " << i;
      EXPECT_EQ(vrow(c, l, 0, int64_t(i)), row_of(vs[size_t(l)], 0, keep[i])) << "layer " << l << " row " << i;
    }
  // sequence 1 untouched
  for (int64_t i = 0; i < 5; ++i) EXPECT_EQ(krow(c, 2, 1, i), row_of(ks[2], 1, i));
  EXPECT_EQ(c.positions().to_floats()[size_t(4)], -1.f);  // slot 4 of sequence 0 is free again
  EXPECT_EQ(lens_of(c), (std::vector<int32_t>{4, 5}));

  // the next token goes to slot 4 with position 18
  Tensor kn = rand_tensor({B, 1, H, D}, 30), vn = rand_tensor({B, 1, H, D}, 31);
  for (int l = 0; l < L; ++l) c.append(l, kn, vn, {1, 0});
  c.advance();
  EXPECT_EQ(c.positions(0), (std::vector<int32_t>{10, 12, 13, 17, 18}));
  EXPECT_EQ(c.lengths(), (std::vector<int64_t>{5, 5}));
  EXPECT_EQ(krow(c, 1, 0, 4), row_of(kn, 0, 0));

  // keep everything / nothing
  c.compact(1, {0, 1, 2, 3, 4});
  EXPECT_EQ(c.positions(1), (std::vector<int32_t>{0, 1, 2, 3, 4}));
  c.compact(1, {});
  EXPECT_EQ(c.length(1), 0);
  EXPECT_EQ(c.next_position(1), 0);
}

TEST(KVCache, TruncateAndReset) {
  KVCache c(1, 1, 8, 1, 8, DType::F32);
  c.append(0, rand_tensor({1, 6, 1, 8}, 1), rand_tensor({1, 6, 1, 8}, 2));
  c.advance();
  c.truncate(0, 3);
  EXPECT_EQ(c.length(0), 3);
  EXPECT_EQ(c.positions(0), (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(c.next_position(0), 3);
  c.reset(0);
  EXPECT_EQ(c.length(0), 0);
  EXPECT_EQ(lens_of(c), (std::vector<int32_t>{0}));
  c.append(0, rand_tensor({1, 8, 1, 8}, 3), rand_tensor({1, 8, 1, 8}, 4));
  c.advance();
  EXPECT_EQ(c.length(0), 8);  // full capacity is usable
  c.reset_all();
  EXPECT_EQ(c.length(0), 0);
}

TEST(KVCache, AttentionOverTheCacheEqualsAttentionOverTheTokens) {
  // The cache's views (capacity > length, per-sequence lengths) with k_lens = lens_tensor() give
  // the same result as attention over the plain per-sequence tensors.
  const int64_t B = 2, cap = 40, Hq = 4, H = 2, D = 64;
  KVCache c(1, B, cap, H, D, DType::F32);
  Tensor k = rand_tensor({B, 30, H, D}, 1), v = rand_tensor({B, 30, H, D}, 2);
  c.append(0, k, v, {30, 17});
  c.advance();
  // one decode step with causal attention inside the step
  Tensor kn = rand_tensor({B, 1, H, D}, 3), vn = rand_tensor({B, 1, H, D}, 4), q = rand_tensor({B, 1, Hq, D}, 5);
  c.append(0, kn, vn);
  AttentionOptions opt;
  opt.causal = true;
  opt.k_lens = c.lens_tensor(0);
  opt.return_lse = true;
  AttentionResult r = attention(q, c.k(0), c.v(0), opt);
  c.advance();
  for (int64_t b = 0; b < B; ++b) {
    const int64_t len = b == 0 ? 30 : 17;
    Tensor kb = Tensor::empty({1, len + 1, H, D}, DType::F32), vb = Tensor::empty({1, len + 1, H, D}, DType::F32);
    kb.slice(1, 0, len).copy_from(k.slice(0, b, b + 1).slice(1, 0, len));
    kb.slice(1, len, len + 1).copy_from(kn.slice(0, b, b + 1));
    vb.slice(1, 0, len).copy_from(v.slice(0, b, b + 1).slice(1, 0, len));
    vb.slice(1, len, len + 1).copy_from(vn.slice(0, b, b + 1));
    AttentionOptions o1;
    o1.return_lse = true;
    AttentionResult want = attention(q.slice(0, b, b + 1), kb, vb, o1);
    EXPECT_LT(rel_err(r.out.slice(0, b, b + 1), want.out), 1e-6) << "sequence " << b;
    EXPECT_NEAR(r.lse.slice(0, b, b + 1).to_floats()[0], want.lse.to_floats()[0], 1e-5);
  }
}

TEST(KVCache, ErrorsNameTheProblem) {
  KVCache c(2, 2, 5, 2, 8, DType::F32);
  Tensor k = rand_tensor({2, 3, 2, 8}, 1), v = rand_tensor({2, 3, 2, 8}, 2);
  EXPECT_TRUE(has(error_of([&] { KVCache(0, 1, 1, 1, 1, DType::F32); }), "layers 0"));
  EXPECT_TRUE(has(error_of([&] { KVCache(1, 1, 1, 1, 1, DType::I32); }), "dtype"));
  EXPECT_TRUE(has(error_of([&] { c.append(2, k, v); }), "layer 2 is outside [0, 2)"));
  EXPECT_TRUE(has(error_of([&] { c.append(0, rand_tensor({2, 3, 1, 8}, 1), v); }), "'k_new' must be [2, n, 2, 8]"));
  EXPECT_TRUE(has(error_of([&] { c.append(0, k, rand_tensor({2, 2, 2, 8}, 1)); }), "differ"));
  EXPECT_TRUE(has(error_of([&] { c.append(0, k.to(DType::BF16), v); }), "the cache holds F32"));
  EXPECT_TRUE(has(error_of([&] { c.append(0, k, v, {3}); }), "n_valid has 1 entries for batch 2"));
  EXPECT_TRUE(has(error_of([&] { c.append(0, k, v, {4, 1}); }), "n_valid[0] = 4 is outside [0, 3]"));
  EXPECT_TRUE(has(error_of([&] { c.advance(); }), "no layer was appended"));
  c.append(0, k, v);
  EXPECT_TRUE(has(error_of([&] { c.append(0, k, v); }), "layer 0 was already appended"));
  EXPECT_TRUE(has(error_of([&] { c.advance(); }), "only 1 of 2 layers"));
  EXPECT_TRUE(has(error_of([&] { c.truncate(0, 0); }), "a step is open"));
  EXPECT_TRUE(has(error_of([&] { c.append(1, k, v, {}, {{1, 2, 3}}); }), "positions has 1 sequences for batch 2"));
  EXPECT_TRUE(has(error_of([&] { c.append(1, k, v, {}, {{1, 2, 3}, {1}}); }),
                  "positions[1] has 1 entries for 3 new tokens"));
  c.append(1, k, v);
  c.advance();
  // capacity 5: 3 + 3 overflows
  EXPECT_TRUE(has(error_of([&] { c.append(0, k, v); }), "sequence 0 holds 3 tokens; 3 more exceed the capacity 5"));
  EXPECT_FALSE(c.step_open());  // a failed append leaves no step open
  EXPECT_TRUE(has(error_of([&] { c.truncate(1, 4); }), "length 4 for sequence 1 is outside [0, 3]"));
  EXPECT_TRUE(has(error_of([&] { c.truncate(2, 0); }), "sequence index 2 is outside [0, 2)"));
  EXPECT_TRUE(has(error_of([&] { c.compact(0, {0, 3}); }), "keep[1] = 3 is outside [0, 3)"));
  EXPECT_TRUE(has(error_of([&] { c.compact(0, {1, 1}); }), "strictly increasing"));
  EXPECT_TRUE(has(error_of([&] { c.compact(0, {0}, 2); }), "layer 2 is outside [0, 2)"));
  EXPECT_TRUE(has(error_of([&] { c.k(-1); }), "layer -1"));
}

TEST(KVCache, LayersOfOneStepMayAppendDifferentRows) {
  // FastV-style in-layer pruning during prefill: layer 0 keeps 6 tokens, layers 1 and 2 keep 3 of them.
  const int L = 3;
  const int64_t B = 2, cap = 10, H = 1, D = 4;
  KVCache c(L, B, cap, H, D, DType::F32);
  Tensor k6 = rand_tensor({B, 6, H, D}, 1), v6 = rand_tensor({B, 6, H, D}, 2);
  Tensor k3 = rand_tensor({B, 3, H, D}, 3), v3 = rand_tensor({B, 3, H, D}, 4);
  c.append(0, k6, v6, {6, 4});
  EXPECT_EQ(lens_of(c), (std::vector<int32_t>{6, 4}));
  c.append(1, k3, v3, {3, 2}, {{0, 2, 5}, {1, 3}});
  auto lens1 = c.lens_tensor(1).to_floats();
  EXPECT_EQ(lens1, (std::vector<float>{3, 2}));  // layer 1 sees its own new rows
  c.append(2, k3, v3, {3, 2}, {{0, 2, 5}, {1, 3}});
  c.advance();
  EXPECT_EQ(c.lengths(), (std::vector<int64_t>{6, 4}));  // the longest layer
  EXPECT_EQ(c.layer_length(0, 0), 6);
  EXPECT_EQ(c.layer_length(2, 1), 2);
  EXPECT_EQ(c.positions(0, 2), (std::vector<int32_t>{0, 2, 5}));
  EXPECT_EQ(c.positions(1, 0), (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(c.next_position(0), 6);
  EXPECT_EQ(c.next_position(1), 4);
  EXPECT_EQ(c.used_bytes(), size_t((6 + 4 + 2 * (3 + 2)) * 2 * H * D * 4));
  // a decode token lands after each layer's own length, at position next_position
  Tensor kn = rand_tensor({B, 1, H, D}, 5), vn = rand_tensor({B, 1, H, D}, 6);
  for (int l = 0; l < L; ++l) c.append(l, kn, vn);
  EXPECT_EQ(c.lens_tensor(2).to_floats(), (std::vector<float>{4, 3}));
  c.advance();
  EXPECT_EQ(krow(c, 0, 0, 6), row_of(kn, 0, 0));
  EXPECT_EQ(krow(c, 2, 0, 3), row_of(kn, 0, 0));
  EXPECT_EQ(krow(c, 2, 1, 2), row_of(kn, 1, 0));
  EXPECT_EQ(krow(c, 1, 0, 1), row_of(k3, 0, 1));
  EXPECT_EQ(c.positions(0, 2), (std::vector<int32_t>{0, 2, 5, 6}));
  // compact the deep layers only (PDrop's later stage)
  c.compact(0, {1, 3}, 1);
  EXPECT_EQ(c.positions(0, 1), (std::vector<int32_t>{2, 6}));
  EXPECT_EQ(c.layer_length(0, 0), 7);
  EXPECT_EQ(krow(c, 2, 0, 1), row_of(kn, 0, 0));
  EXPECT_TRUE(has(error_of([&] { c.compact(0, {0}, 0); }), "holds 7 tokens in layer 0 but 2 in layer 1"));
  c.truncate(0, 1);
  EXPECT_EQ(c.layer_length(0, 0), 1);
  EXPECT_EQ(c.layer_length(2, 0), 1);
}

TEST(KVCache, AppendRopeChecksItsTables) {
  KVCache c(1, 1, 8, 2, 4, DType::F32);
  Tensor q = Tensor::zeros({1, 3, 4, 4}, DType::F32);
  const Tensor k = Tensor::zeros({1, 3, 2, 4}, DType::F32), v = k;
  const Tensor cos = Tensor::zeros({3, 2}, DType::F32), bad = Tensor::zeros({2, 2}, DType::F32);
  EXPECT_TRUE(has(error_of([&] { c.append_rope(0, q, k, v, bad, cos); }), "'cos' must be contiguous F32 [3, 2]"));
  EXPECT_TRUE(has(error_of([&] { c.append_rope(0, q, k, v, cos, bad); }), "'sin' must be contiguous F32 [3, 2]"));
  Tensor q2 = Tensor::zeros({1, 2, 4, 4}, DType::F32);
  EXPECT_TRUE(has(error_of([&] { c.append_rope(0, q2, k, v, cos, cos); }), "'q' must be [1, 3, Hq, 4]"));
  // zero angles (cos 1, sin 0): the rotation is the identity; rows land as append() puts them
  const Tensor one = Tensor::full({3, 2}, 1.f, DType::F32);
  Tensor qr = rand_tensor({1, 3, 4, 4}, 1), q0 = qr.clone();
  const Tensor kr = rand_tensor({1, 3, 2, 4}, 2);
  c.append_rope(0, qr, kr, kr, one, cos, {2});
  EXPECT_EQ(max_abs_diff(qr, q0), 0.0);
  EXPECT_EQ(krow(c, 0, 0, 1), row_of(kr, 0, 1));
  EXPECT_EQ(c.layer_length(0, 0), 0);  // committed at advance()
  c.advance();
  EXPECT_EQ(c.length(0), 2);
}

// A producer that writes a step's rows itself (linear_qkv_rope): next_rows_k / next_rows_v are views of
// the rows the next append would write, and append_written() keeps the books as append() does.
TEST(KVCache, RowsWrittenInPlaceKeepTheBooksOfAnAppend) {
  const int L = 2;
  const int64_t cap = 9, H = 2, D = 8;
  KVCache a(L, 1, cap, H, D, DType::F32), b(L, 1, cap, H, D, DType::F32);
  uint64_t seed = 40;
  for (int64_t n : {int64_t(4), int64_t(3)}) {  // two steps: the second lands after the first's rows
    for (int l = 0; l < L; ++l) {
      const Tensor k = rand_tensor({1, n, H, D}, ++seed), v = rand_tensor({1, n, H, D}, ++seed);
      std::vector<std::vector<int32_t>> p{std::vector<int32_t>(size_t(n))};
      for (int64_t i = 0; i < n; ++i) p[0][size_t(i)] = int32_t(7 + 3 * i + n);  // positions given, not 0, 1, ...
      a.append(l, k, v, {}, p);
      Tensor kr = b.next_rows_k(l, n), vr = b.next_rows_v(l, n);
      ASSERT_EQ(kr.shape(), (Shape{n, H * D}));
      kr.copy_from(k.view({n, H * D}));
      vr.copy_from(v.view({n, H * D}));
      b.append_written(l, n, p);
      EXPECT_EQ(lens_of(b), lens_of(a));
    }
    a.advance();
    b.advance();
    EXPECT_EQ(b.lengths(), a.lengths());
    for (int l = 0; l < L; ++l) {
      EXPECT_EQ(b.positions(0, l), a.positions(0, l));
      EXPECT_EQ(b.k(l).to_floats(), a.k(l).to_floats());
      EXPECT_EQ(b.v(l).to_floats(), a.v(l).to_floats());
    }
  }
  EXPECT_TRUE(has(error_of([&] { (void)b.next_rows_k(0, 3); }), "capacity 9"));  // 7 held + 3 > 9
  b.append_written(0, 2);
  EXPECT_TRUE(has(error_of([&] { (void)b.next_rows_v(0, 1); }), "already appended"));
  KVCache two(L, 2, cap, H, D, DType::F32);
  EXPECT_TRUE(has(error_of([&] { (void)two.next_rows_k(0, 1); }), "batch 1 only"));
}
