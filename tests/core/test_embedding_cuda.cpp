// CUDA embedding against the CPU gather (exact), device and host ids, out-of-range ids.
#include <random>

#include "core/ops/embedding.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

class EmbeddingCuda : public ::testing::TestWithParam<DType> {};

namespace {
template <class I>
Tensor rand_ids(const Shape& shape, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> d(0, vocab - 1);
  std::vector<I> v(size_t(shape_numel(shape)));
  for (auto& x : v) x = I(d(rng));
  return Tensor::from_vector<I>(v, shape);
}
}  // namespace

TEST_P(EmbeddingCuda, MatchesCpu) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  uint64_t seed = 1;
  for (int64_t vocab : {1, 3, 1000})
    for (int64_t dim : {1, 3, 8, 17, 64, 4097}) {
      Tensor table = rand_tensor({vocab, dim}, seed++).to(dt);
      Tensor gtable = table.to(Device::cuda());
      for (int64_t n : {1, 3, 17, 1000}) {
        Tensor ids64 = rand_ids<int64_t>({n}, vocab, seed++);
        Tensor ids32 = rand_ids<int32_t>({n}, vocab, seed++);
        Tensor ref64 = embedding(ids64, table), ref32 = embedding(ids32, table);
        Tensor y = embedding(ids64.to(Device::cuda()), gtable);
        ASSERT_TRUE(y.is_cuda());
        EXPECT_EQ(y.dtype(), dt);
        EXPECT_EQ(max_abs_diff(y, ref64), 0) << vocab << "x" << dim << " n=" << n;
        EXPECT_EQ(max_abs_diff(embedding(ids32.to(Device::cuda()), gtable), ref32), 0);
        EXPECT_EQ(max_abs_diff(embedding(ids32, gtable), ref32), 0);  // host ids
      }
    }
  // table views at a row offset (row starts not 16-byte aligned for some dtypes), 2-D and strided ids
  Tensor table = rand_tensor({50, 12}, 77).to(dt);
  Tensor ids = rand_ids<int64_t>({3, 5}, 49, 78);
  Tensor y = embedding(ids.to(Device::cuda()), table.to(Device::cuda()).slice(0, 1, 50));
  EXPECT_EQ(y.shape(), (Shape{3, 5, 12}));
  EXPECT_EQ(max_abs_diff(y, embedding(ids, table.slice(0, 1, 50))), 0);
  Tensor big = rand_tensor({10, 13}, 79).to(dt);
  Tensor ids9 = rand_ids<int32_t>({4, 3}, 9, 80).transpose(0, 1);
  EXPECT_EQ(max_abs_diff(embedding(ids9.to(Device::cuda()), big.to(Device::cuda()).slice(0, 1, 10)),
                         embedding(ids9, big.slice(0, 1, 10))),
            0);
}

TEST_P(EmbeddingCuda, OutOfRangeDeviceIds) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  Tensor table = rand_tensor({10, 17}, 1).to(Device::cuda(), dt);
  Tensor ids = Tensor::from_vector<int64_t>({1, 2, 10, 3, -4, 12}, {6});
  for (DType it : {DType::I64, DType::I32}) {
    try {
      embedding(ids.to(Device::cuda(), it), table);
      FAIL();
    } catch (const ShapeError& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("id 10 at position 2"), std::string::npos) << m;  // the first bad one
      EXPECT_NE(m.find("V = 10"), std::string::npos) << m;
    }
    try {
      embedding(ids.to(it), table);  // host ids are checked on the host
      FAIL();
    } catch (const ShapeError& e) {
      EXPECT_NE(std::string(e.what()).find("id 10 at position 2"), std::string::npos) << e.what();
    }
    // unchecked (CUDA graph capture): bad ids give zero rows, good rows are right
    Tensor y = embedding(ids.to(Device::cuda(), it), table, /*check_ids=*/false).to(Device::cpu());
    Tensor t = table.to(Device::cpu());
    for (int64_t i : {2, 4, 5}) EXPECT_EQ(max_abs_diff(y.select(0, i), Tensor::zeros({17}, dt)), 0);
    EXPECT_EQ(max_abs_diff(y.select(0, 0), t.select(0, 1)), 0);
    EXPECT_EQ(max_abs_diff(y.select(0, 3), t.select(0, 3)), 0);
  }
  // device ids need a device table
  EXPECT_THROW(embedding(ids.to(Device::cuda()), table.to(Device::cpu())), ShapeError);
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, EmbeddingCuda, ::testing::Values(DType::F32, DType::F16, DType::BF16),
                         [](const auto& i) { return std::string(dtype_name(i.param)); });

// CUDA weighted rows against the CPU path (F32 there): selections are exact in every dtype; merges
// agree to f32 rounding (the same list order on both devices) plus one rounding to the dtype.
TEST_P(EmbeddingCuda, WeightedRowsMatchCpu) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  std::mt19937_64 rng(5);
  uint64_t seed = 100;
  for (int64_t n : {1, 3, 17, 577})
    for (int64_t d : {1, 3, 64, 1000, 4097}) {
      const Tensor x = rand_tensor({n, d}, seed++).to(dt);  // rounded to dt once
      const int64_t rows = 1 + int64_t(rng() % 70);
      std::vector<int64_t> off{0}, idx, sel_off{0}, sel_idx;
      std::vector<float> w, sel_w;
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t cnt = int64_t(rng() % 10);  // 0..9 entries (0: a zero row; 4 at a time + a tail)
        for (int64_t e = 0; e < cnt; ++e)
          idx.push_back(int64_t(rng() % uint64_t(n))), w.push_back(float(rng() % 1000) / 997.f);
        off.push_back(int64_t(idx.size()));
        sel_idx.push_back(int64_t(rng() % uint64_t(n))), sel_w.push_back(1.f), sel_off.push_back(r + 1);
      }
      const Tensor xf = x.to(DType::F32), xg = x.to(Device::cuda());
      const Tensor ref = weighted_rows(xf, off, idx, w);
      const Tensor y = weighted_rows(xg, off, idx, w);
      ASSERT_TRUE(y.is_cuda());
      EXPECT_EQ(y.dtype(), dt);
      EXPECT_EQ(y.shape(), (Shape{rows, d}));
      const double tol = dt == DType::F32 ? 1e-5 : dt == DType::F16 ? 8e-3 : 7e-2;  // |y| < 10: one ulp
      EXPECT_LE(max_abs_diff(y, ref.to(dt)), tol) << n << "x" << d << " rows " << rows;
      EXPECT_EQ(max_abs_diff(weighted_rows(xg, sel_off, sel_idx, sel_w), weighted_rows(xf, sel_off, sel_idx, sel_w)),
                0)
          << n << "x" << d;  // selection: exact
    }
  // a row-offset view of x (rows not 16-byte aligned)
  const Tensor x = rand_tensor({9, 5}, 7).to(dt);
  EXPECT_EQ(max_abs_diff(weighted_rows(x.to(Device::cuda()).slice(0, 1, 9), {0, 2}, {0, 7}, {1.f, 1.f}),
                         weighted_rows(x.to(DType::F32).slice(0, 1, 9), {0, 2}, {0, 7}, {1.f, 1.f}).to(dt)),
            0);
}
