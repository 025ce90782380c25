// CUDA binary elementwise ops against the CPU reference: flat vectorised, bias-periodic and
// general strided paths, awkward sizes, misaligned views, in place; every float dtype.
#include <functional>

#include "core/ops/elementwise.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

class ElementwiseCuda : public ::testing::TestWithParam<DType> {};

namespace {
using ViewFn = std::function<Tensor(const Tensor&)>;
Tensor same(const Tensor& t) { return t; }

// a and b are f32 CPU tensors; the views are taken after the move to the GPU (a view moved with
// .to() would arrive contiguous), so strided and misaligned GPU operands are really exercised.
void check_all_ops(const Tensor& a0, const Tensor& b0, DType dt, const std::string& what, const ViewFn& va = same,
                   const ViewFn& vb = same) {
  Tensor a = va(a0), b = vb(b0);
  Tensor ga = va(a0.to(Device::cuda(), dt)), gb = vb(b0.to(Device::cuda(), dt));
  EXPECT_EQ(ga.strides(), a.strides()) << what;
  EXPECT_LT(rel_err(add(ga, gb), add(a, b)), tol_for(dt)) << "add " << what;
  EXPECT_LT(rel_err(mul(ga, gb), mul(a, b)), tol_for(dt)) << "mul " << what;
  EXPECT_LT(rel_err(add_scaled(ga, gb, -0.375f), add_scaled(a, b, -0.375f)), tol_for(dt)) << "add_scaled " << what;
  EXPECT_LT(rel_err(scale(ga, 1.5f), scale(a, 1.5f)), tol_for(dt)) << "scale " << what;
  Tensor y = add(ga, gb);
  EXPECT_TRUE(y.is_cuda());
  EXPECT_EQ(y.dtype(), dt);
  EXPECT_EQ(y.shape(), a.shape());
}
}  // namespace

TEST_P(ElementwiseCuda, BroadcastCasesMatchCpu) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  const std::vector<std::pair<Shape, Shape>> cases = {
      {{1}, {1}},           {{3}, {3}},           {{17}, {17}},           {{4097}, {4097}},
      {{1000, 17}, {17}},   {{17, 1000}, {1000}}, {{1000, 64}, {64}},     {{3, 4097}, {4097}},
      {{7, 4097}, {1}},     {{5, 8}, {}},         {{3, 17}, {3, 1}},      {{1000, 64}, {1000, 1}},
      {{2, 5, 17}, {2, 1, 17}}, {{2, 5, 16}, {2, 1, 16}}, {{1, 300, 64}, {1, 1, 64}},
      {{2, 3, 4, 5}, {3, 1, 5}}, {{4, 1, 3}, {1, 1}},  {{100003}, {100003}},
  };
  uint64_t seed = 1;
  for (const auto& [sa, sb] : cases) {
    Tensor a = round_to(rand_tensor(sa, seed++, -3.f, 3.f), dt);
    Tensor b = round_to(rand_tensor(sb, seed++, -3.f, 3.f), dt);
    check_all_ops(a, b, dt, shape_str(sa) + " <- " + shape_str(sb));
  }
}

TEST_P(ElementwiseCuda, StridedAndMisalignedMatchCpu) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  Tensor a = round_to(rand_tensor({33, 17}, 1), dt);
  Tensor b = round_to(rand_tensor({33}, 2), dt);
  check_all_ops(a, b, dt, "transposed a", [](const Tensor& t) { return t.transpose(0, 1); });  // [17, 33]
  // views one element in: not 16-byte aligned
  Tensor v = round_to(rand_tensor({4098}, 3), dt);
  Tensor w = round_to(rand_tensor({4098}, 4), dt);
  check_all_ops(v, w, dt, "misaligned a", [](const Tensor& t) { return t.slice(0, 1, 4098); },
                [](const Tensor& t) { return t.slice(0, 0, 4097); });
  check_all_ops(v, w, dt, "misaligned b", [](const Tensor& t) { return t.slice(0, 0, 4096); },
                [](const Tensor& t) { return t.slice(0, 2, 4098); });
  Tensor m = round_to(rand_tensor({20, 65}, 5), dt);
  check_all_ops(m, round_to(rand_tensor({64}, 6), dt), dt, "row-strided a",
                [](const Tensor& t) { return t.slice(1, 1, 65); });
  // b strided with broadcasting: a column of a transposed tensor, [20, 1]
  Tensor c = round_to(rand_tensor({9, 20}, 7), dt);
  check_all_ops(m, c, dt, "strided column b", same,
                [](const Tensor& t) { return t.transpose(0, 1).slice(1, 3, 4); });
  // [B, 1, D] gate onto a strided [B, N, D] (not coalescable to the flat case)
  Tensor x = round_to(rand_tensor({3, 40, 24}, 8), dt);
  Tensor g = round_to(rand_tensor({3, 1, 24}, 9), dt);
  check_all_ops(x, g, dt, "gate onto sliced x", [](const Tensor& t) { return t.slice(1, 0, 40, 3); });
}

TEST_P(ElementwiseCuda, InPlaceMatchesCpu) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  for (const auto& [sa, sb] : std::vector<std::pair<Shape, Shape>>{
           {{3}, {3}}, {{17, 1000}, {17, 1000}}, {{1000, 64}, {64}}, {{4097}, {1}}, {{5, 7, 3}, {5, 1, 3}}}) {
    Tensor a = round_to(rand_tensor(sa, 11, -2.f, 2.f), dt);
    Tensor b = round_to(rand_tensor(sb, 12, -2.f, 2.f), dt);
    Tensor ga = a.to(Device::cuda(), dt);
    const void* ptr = ga.data_ptr();
    Tensor r = add_(ga, b.to(Device::cuda(), dt));
    EXPECT_EQ(r.data_ptr(), ptr);
    EXPECT_LT(rel_err(ga, add(a, b)), tol_for(dt)) << shape_str(sa);
  }
  // into a strided view: the untouched columns stay as they were
  Tensor a = round_to(rand_tensor({6, 10}, 13), dt);
  Tensor b = round_to(rand_tensor({5}, 14), dt);
  Tensor ga = a.to(Device::cuda(), dt);
  add_(ga.slice(1, 2, 7), b.to(Device::cuda(), dt));
  Tensor ca = a.clone();
  add_(ca.slice(1, 2, 7), b);
  EXPECT_LT(rel_err(ga, ca), tol_for(dt));
  EXPECT_EQ(rel_err(ga.slice(1, 0, 2), a.slice(1, 0, 2)), 0);
  EXPECT_EQ(rel_err(ga.slice(1, 7, 10), a.slice(1, 7, 10)), 0);
}

TEST_P(ElementwiseCuda, BadInput) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  Tensor a = rand_tensor({2, 3}, 1).to(Device::cuda(), dt);
  EXPECT_THROW(add(a, rand_tensor({3}, 2).to(dt)), ShapeError);  // b on the CPU
  EXPECT_THROW(add(a, rand_tensor({2}, 2).to(Device::cuda(), dt)), ShapeError);
  EXPECT_THROW(add(a, a.to(dt == DType::F32 ? DType::F16 : DType::F32)), ShapeError);
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, ElementwiseCuda, ::testing::Values(DType::F32, DType::F16, DType::BF16),
                         [](const auto& i) { return std::string(dtype_name(i.param)); });
