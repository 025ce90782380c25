// CPU binary elementwise ops with broadcasting, by hand, and bad input.
#include "core/ops/elementwise.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

namespace {
void expect_values(const Tensor& y, const std::vector<float>& want) {
  const auto v = y.to_floats();
  ASSERT_EQ(v.size(), want.size());
  for (size_t i = 0; i < v.size(); ++i) EXPECT_FLOAT_EQ(v[i], want[i]) << "at " << i;
}
template <class F>
void expect_shape_error(F&& f, std::vector<std::string> needles) {
  try {
    f();
    ADD_FAILURE() << "no ShapeError";
  } catch (const ShapeError& e) {
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
  }
}
}  // namespace

TEST(Elementwise, SameShape) {
  Tensor a = Tensor::from_floats({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = Tensor::from_floats({10, 20, 30, 40, 50, 60}, {2, 3});
  expect_values(add(a, b), {11, 22, 33, 44, 55, 66});
  expect_values(mul(a, b), {10, 40, 90, 160, 250, 360});
  expect_values(add_scaled(a, b, -0.5f), {-4, -8, -12, -16, -20, -24});
  expect_values(scale(a, 2.f), {2, 4, 6, 8, 10, 12});
  EXPECT_EQ(add(a, b).shape(), a.shape());
}

TEST(Elementwise, Broadcasting) {
  Tensor a = Tensor::from_floats({1, 2, 3, 4, 5, 6}, {2, 3});
  expect_values(add(a, Tensor::from_floats({10, 20, 30}, {3})), {11, 22, 33, 14, 25, 36});     // bias [D]
  expect_values(add(a, Tensor::from_floats({10, 20, 30}, {1, 3})), {11, 22, 33, 14, 25, 36});  // [1, D]
  expect_values(mul(a, Tensor::from_floats({2, -1}, {2, 1})), {2, 4, 6, -4, -5, -6});         // per row [N, 1]
  expect_values(mul(a, Tensor::from_floats({3}, {1})), {3, 6, 9, 12, 15, 18});                 // scalar-like [1]
  expect_values(mul(a, Tensor::from_floats({3}, {})), {3, 6, 9, 12, 15, 18});                  // 0-dim
  // [B, 1, D] onto [B, N, D] (FLUX's gates): B = 2, N = 2, D = 2
  Tensor x = Tensor::from_floats({1, 2, 3, 4, 5, 6, 7, 8}, {2, 2, 2});
  Tensor g = Tensor::from_floats({1, 10, 100, 1000}, {2, 1, 2});
  expect_values(mul(x, g), {1, 20, 3, 40, 500, 6000, 700, 8000});
  // [2, 1] strided b (a column of a transposed tensor)
  Tensor bt = Tensor::from_floats({1, 2, 3, 4}, {2, 2}).transpose(0, 1).slice(1, 0, 1);  // [[1], [2]]
  expect_values(add(a, bt), {2, 3, 4, 6, 7, 8});
}

TEST(Elementwise, StridedA) {
  Tensor a = rand_tensor({4, 6}, 1).transpose(0, 1);  // [6, 4]
  Tensor b = rand_tensor({4}, 2);
  EXPECT_EQ(rel_err(add(a, b), add(a.contiguous(), b)), 0);
  EXPECT_EQ(rel_err(mul(a, b), mul(a.contiguous(), b)), 0);
  EXPECT_TRUE(add(a, b).is_contiguous());
}

TEST(Elementwise, InPlace) {
  Tensor a = Tensor::from_floats({1, 2, 3, 4, 5, 6}, {2, 3});
  const void* ptr = a.data_ptr();
  Tensor r = add_(a, Tensor::from_floats({1, 1, 1}, {3}));
  EXPECT_EQ(r.data_ptr(), ptr);
  expect_values(a, {2, 3, 4, 5, 6, 7});
  // into a strided view: only the viewed elements change
  Tensor big = Tensor::from_floats({1, 2, 3, 4, 5, 6}, {2, 3});
  add_(big.slice(1, 1, 3), Tensor::from_floats({10, 20}, {2}));
  expect_values(big, {1, 12, 23, 4, 15, 26});
  Tensor t = Tensor::from_floats({1, 2, 3, 4}, {2, 2});
  add_(t.transpose(0, 1), Tensor::from_floats({10, 20}, {2}));  // t^T += [10, 20]: column j of t^T is row j of t
  expect_values(t, {11, 12, 23, 24});
  add_(t, t);  // b == a
  expect_values(t, {22, 24, 46, 48});
}

TEST(Elementwise, EmptyTensor) {
  Tensor a = Tensor::zeros({0, 3}, DType::F32);
  EXPECT_EQ(add(a, Tensor::from_floats({1, 2, 3}, {3})).shape(), (Shape{0, 3}));
}

TEST(Elementwise, BadInputNamesTheArgument) {
  Tensor a = rand_tensor({2, 3}, 1);
  expect_shape_error([&] { add(a, rand_tensor({2}, 2)); }, {"'b'", "[2]", "[2, 3]"});
  expect_shape_error([&] { add(a, rand_tensor({3, 3}, 2)); }, {"'b'", "[3, 3]"});
  expect_shape_error([&] { add(a, rand_tensor({1, 2, 3}, 2)); }, {"'b'", "[1, 2, 3]"});  // b may not add dims
  expect_shape_error([&] { mul(a, rand_tensor({2, 3}, 2).to(DType::BF16)); }, {"'a'", "'b'", "F32", "BF16"});
  expect_shape_error([&] { add(a, Tensor()); }, {"'b'"});
  expect_shape_error([&] { add(Tensor::zeros({2}, DType::I32), Tensor::zeros({2}, DType::I32)); }, {"'a'"});
  expect_shape_error([&] { scale(Tensor::zeros({2}, DType::I32), 2.f); }, {"'x'"});
  expect_shape_error([&] { add(a.to(DType::BF16), a.to(DType::BF16)); }, {"F32"});  // CPU is f32-only
  Tensor bc = Tensor::from_floats({1, 2, 3}, {3}).unsqueeze(0).as_strided({2, 3}, {0, 1}, 0);  // broadcast view
  expect_shape_error([&] { add_(bc, a); }, {"'a'", "in place"});
  expect_shape_error([&] { add_(a, rand_tensor({4}, 3)); }, {"'b'"});
}
