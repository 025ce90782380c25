// concat / split / chunk by hand, and bad input.
#include "core/ops/concat.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

TEST(Concat, ByHand) {
  Tensor a = Tensor::from_floats({1, 2, 3, 4}, {2, 2});
  Tensor b = Tensor::from_floats({5, 6}, {1, 2});
  Tensor c = Tensor::from_floats({7, 8, 9, 10, 11, 12}, {2, 3});
  Tensor y0 = concat({a, b}, 0);
  EXPECT_EQ(y0.shape(), (Shape{3, 2}));
  EXPECT_EQ(y0.to_floats(), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  Tensor y1 = concat({a, c}, -1);
  EXPECT_EQ(y1.shape(), (Shape{2, 5}));
  EXPECT_EQ(y1.to_floats(), (std::vector<float>{1, 2, 7, 8, 9, 3, 4, 10, 11, 12}));
  EXPECT_EQ(rel_err(concat({a}, 1), a), 0);
}

TEST(Concat, StridedEmptyAndOtherDtypes) {
  Tensor a = Tensor::from_floats({1, 2, 3, 4}, {2, 2});
  Tensor e = Tensor::empty({2, 0}, DType::F32);  // (Tensor::zeros({2, 0}) recursed in fill_: see report)
  EXPECT_EQ(concat({e, a.transpose(0, 1), e}, 1).to_floats(), (std::vector<float>{1, 3, 2, 4}));
  Tensor i = Tensor::from_vector<int64_t>({1, 2}, {2});
  Tensor y = concat({i, i}, 0);
  EXPECT_EQ(y.dtype(), DType::I64);
  EXPECT_EQ(y.to_floats(), (std::vector<float>{1, 2, 1, 2}));
}

TEST(Concat, SplitAndChunkAreViewsThatConcatBack) {
  Tensor x = rand_tensor({3, 7}, 1);
  auto parts = split(x, 3, 1);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[0].shape(), (Shape{3, 3}));
  EXPECT_EQ(parts[2].shape(), (Shape{3, 1}));
  EXPECT_EQ(parts[1].storage(), x.storage());
  EXPECT_EQ(rel_err(concat(parts, 1), x), 0);
  auto s = split_with_sizes(x, {1, 2}, 0);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[1].shape(), (Shape{2, 7}));
  EXPECT_EQ(rel_err(concat(s, 0), x), 0);
  // torch.chunk: ceil(7 / 3) = 3 -> sizes 3, 3, 1; ceil(7 / 6) = 2 -> 2, 2, 2, 1 (only 4 chunks)
  auto c = chunk(x, 3, -1);
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[2].size(1), 1);
  EXPECT_EQ(chunk(x, 6, 1).size(), 4u);
  EXPECT_EQ(chunk(x, 2, 1)[0].size(1), 4);
  EXPECT_EQ(chunk(Tensor::zeros({0}, DType::F32), 3, 0).size(), 3u);
}

TEST(Concat, BadInputNamesTheTensor) {
  Tensor a = rand_tensor({2, 3}, 1);
  try {
    concat({a, a, rand_tensor({3, 3}, 2)}, 1);
    FAIL();
  } catch (const ShapeError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("tensor 2"), std::string::npos) << m;
    EXPECT_NE(m.find("[3, 3]"), std::string::npos) << m;
    EXPECT_NE(m.find("[2, 3]"), std::string::npos) << m;
  }
  try {
    concat({a, a.to(DType::BF16)}, 0);
    FAIL();
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("tensor 1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(concat({a, rand_tensor({2, 3, 1}, 3)}, 0), ShapeError);  // rank
  EXPECT_THROW(concat({}, 0), ShapeError);
  EXPECT_THROW(concat({a, Tensor()}, 0), ShapeError);
  EXPECT_THROW(concat({a}, 2), ShapeError);
  EXPECT_THROW(split_with_sizes(a, {1, 1}, 1), ShapeError);
  EXPECT_THROW(split(a, 0, 1), ShapeError);
  EXPECT_THROW(chunk(a, 0, 1), ShapeError);
}
