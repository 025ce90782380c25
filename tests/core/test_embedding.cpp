// CPU embedding by hand, and bad input (out-of-range ids never read out of bounds).
#include <functional>

#include "core/ops/embedding.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

namespace {
Tensor table_3x2() { return Tensor::from_floats({0, 1, 10, 11, 20, 21}, {3, 2}); }
}  // namespace

TEST(Embedding, ByHand) {
  Tensor ids = Tensor::from_vector<int64_t>({2, 0, 1, 1, 2, 2}, {2, 3});
  Tensor y = embedding(ids, table_3x2());
  EXPECT_EQ(y.shape(), (Shape{2, 3, 2}));
  EXPECT_EQ(y.to_floats(), (std::vector<float>{20, 21, 0, 1, 10, 11, 10, 11, 20, 21, 20, 21}));
  Tensor y32 = embedding(Tensor::from_vector<int32_t>({1, 2}, {2}), table_3x2());
  EXPECT_EQ(y32.shape(), (Shape{2, 2}));
  EXPECT_EQ(y32.to_floats(), (std::vector<float>{10, 11, 20, 21}));
}

TEST(Embedding, AnyTableDtypeIsExact) {
  // a gather: bf16 / f16 rows come back bit for bit
  for (DType dt : {DType::BF16, DType::F16}) {
    Tensor t = table_3x2().to(dt);
    Tensor y = embedding(Tensor::from_vector<int32_t>({2, 1}, {2}), t);
    EXPECT_EQ(y.dtype(), dt);
    EXPECT_EQ(y.to_floats(), (std::vector<float>{20, 21, 10, 11}));
  }
}

TEST(Embedding, StridedIdsAndEmpty) {
  Tensor ids = Tensor::from_vector<int64_t>({0, 1, 2, 0}, {2, 2}).transpose(0, 1);  // [[0, 2], [1, 0]]
  EXPECT_EQ(embedding(ids, table_3x2()).to_floats(), (std::vector<float>{0, 1, 20, 21, 10, 11, 0, 1}));
  EXPECT_EQ(embedding(Tensor::zeros({0}, DType::I64), table_3x2()).shape(), (Shape{0, 2}));
}

TEST(Embedding, OutOfRangeIdNamesIdAndVocab) {
  for (int64_t bad : {3, -1, 1000000}) {
    try {
      embedding(Tensor::from_vector<int64_t>({0, 1, bad, 5}, {4}), table_3x2());
      FAIL() << bad;
    } catch (const ShapeError& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("id " + std::to_string(bad) + " at position 2"), std::string::npos) << m;
      EXPECT_NE(m.find("V = 3"), std::string::npos) << m;
    }
  }
}

TEST(Embedding, BadInput) {
  EXPECT_THROW(embedding(Tensor::from_floats({0, 1}, {2}), table_3x2()), ShapeError);  // float ids
  EXPECT_THROW(embedding(Tensor::from_vector<int64_t>({0}, {1}), Tensor::from_floats({1, 2, 3}, {3})), ShapeError);
  EXPECT_THROW(embedding(Tensor(), table_3x2()), ShapeError);
  EXPECT_THROW(embedding(Tensor::from_vector<int64_t>({0}, {1}), Tensor()), ShapeError);
}

TEST(WeightedRows, ByHand) {
  // rows: x[2]; 0.5 x[0] + 0.25 x[1] + 0.25 x[1]; nothing (zeros); x[0]
  const Tensor y = weighted_rows(table_3x2(), {0, 1, 4, 4, 5}, {2, 0, 1, 1, 0}, {1.f, 0.5f, 0.25f, 0.25f, 1.f});
  EXPECT_EQ(y.shape(), (Shape{4, 2}));
  EXPECT_EQ(y.to_floats(), (std::vector<float>{20, 21, 5, 6, 0, 0, 0, 1}));
  // a strided row view of x (every other column is skipped by slicing rows, not columns)
  const Tensor x = Tensor::from_floats({0, 1, 2, 3, 4, 5, 6, 7}, {4, 2}).slice(0, 1, 4);
  EXPECT_EQ(weighted_rows(x, {0, 1}, {2}, {2.f}).to_floats(), (std::vector<float>{12, 14}));
  EXPECT_EQ(weighted_rows(table_3x2(), {0}, {}, {}).shape(), (Shape{0, 2}));
}

TEST(WeightedRows, BadListsNameTheProblem) {
  const auto msg = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const ShapeError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(msg([] { weighted_rows(table_3x2(), {0, 1}, {3}, {1.f}); }).find("index 3 (entry 0) is outside the 3 rows"),
            std::string::npos);
  EXPECT_NE(msg([] { weighted_rows(table_3x2(), {0, 2}, {1}, {1.f}); }).find("must run from 0 to the 1 entries"),
            std::string::npos);
  EXPECT_NE(msg([] { weighted_rows(table_3x2(), {0, 1}, {1}, {}); }).find("(0 weights)"), std::string::npos);
  EXPECT_NE(msg([] { weighted_rows(table_3x2(), {0, 2, 1, 2}, {0, 1}, {1.f, 1.f}); }).find("decrease at row 1"),
            std::string::npos);
  EXPECT_THROW(weighted_rows(Tensor::from_floats({1, 2}, {2}), {0}, {}, {}), ShapeError);         // not 2-D
  EXPECT_THROW(weighted_rows(table_3x2().to(DType::BF16), {0}, {}, {}), ShapeError);              // CPU is F32
}
