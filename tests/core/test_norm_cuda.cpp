// CUDA norms against the CPU reference on awkward sizes, every float dtype.
#include <cmath>

#include "core/ops/norm.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

class NormCuda : public ::testing::TestWithParam<DType> {};

namespace {

// Fills a freed block of the output's size with NaN, so that the op's output (which the caching
// allocator is likely to place there) shows any element the kernel did not write.
void poison_next(const Shape& shape, DType dt) { Tensor::full(shape, NAN, dt, Device::cuda()); }

void check_row_norms(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& gx, const Tensor& gw,
                     const Tensor& gb, DType dt, const std::string& what) {
  poison_next(gx.shape(), dt);
  EXPECT_LT(rel_err(layer_norm(gx, gw, gb, 1e-5f), layer_norm(x, w, b, 1e-5f)), tol_for(dt)) << what;
  poison_next(gx.shape(), dt);
  EXPECT_LT(rel_err(layer_norm(gx, Tensor(), Tensor(), 1e-6f), layer_norm(x, Tensor(), Tensor(), 1e-6f)), tol_for(dt))
      << what << " (no affine)";
  poison_next(gx.shape(), dt);
  EXPECT_LT(rel_err(layer_norm(gx, gw, Tensor(), 1e-5f), layer_norm(x, w, Tensor(), 1e-5f)), tol_for(dt))
      << what << " (weight only)";
  poison_next(gx.shape(), dt);
  EXPECT_LT(rel_err(rms_norm(gx, gw, 1e-6f), rms_norm(x, w, 1e-6f)), tol_for(dt)) << what << " (rms)";
}

}  // namespace

TEST_P(NormCuda, RowNormsMatchCpu) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  uint64_t seed = 1;
  // cols cover: up to 32 lanes per row, several rows per block (1 .. 1000 for 16-bit types), a block
  // per row (1023 and 4097 scalar, 4096, 13000, 16384, 20000), and rows too long for registers
  // (9001 scalar, 40000), which re-read global memory
  std::vector<std::pair<int64_t, int64_t>> sizes;
  for (int64_t rows : {1, 3, 17, 1000})
    for (int64_t cols : {1, 3, 8, 17, 64, 72, 1000, 1023, 4096, 4097}) sizes.push_back({rows, cols});
  for (int64_t rows : {1, 3, 17, 130})
    for (int64_t cols : {9001, 13000, 16384, 20000, 40000}) sizes.push_back({rows, cols});
  for (auto [rows, cols] : sizes) {
    Tensor x = round_to(rand_tensor({rows, cols}, seed++, -2.f, 3.f), dt);
    Tensor w = round_to(rand_tensor({cols}, seed++), dt);
    Tensor b = round_to(rand_tensor({cols}, seed++), dt);
    Tensor gx = x.to(Device::cuda(), dt), gw = w.to(Device::cuda(), dt), gb = b.to(Device::cuda(), dt);
    check_row_norms(x, w, b, gx, gw, gb, dt, str_cat(rows, "x", cols));
  }
}

TEST_P(NormCuda, RowNormsOnUnalignedViews) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  uint64_t seed = 500;
  // x, weight and bias start one element into their storage: the kernels must not assume
  // 16-byte alignment even when the row length would allow vector accesses
  for (auto [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{5, 64}, {33, 1024}, {7, 4096}, {3, 16384}}) {
    Tensor xs = round_to(rand_tensor({rows * cols + 1}, seed++, -2.f, 3.f), dt);
    Tensor ws = round_to(rand_tensor({cols + 1}, seed++), dt);
    Tensor bs = round_to(rand_tensor({cols + 1}, seed++), dt);
    Tensor gxs = xs.to(Device::cuda(), dt), gws = ws.to(Device::cuda(), dt), gbs = bs.to(Device::cuda(), dt);
    Tensor x = xs.slice(0, 1, rows * cols + 1).view({rows, cols}), w = ws.slice(0, 1, cols + 1),
           b = bs.slice(0, 1, cols + 1);
    Tensor gx = gxs.slice(0, 1, rows * cols + 1).view({rows, cols}), gw = gws.slice(0, 1, cols + 1),
           gb = gbs.slice(0, 1, cols + 1);
    check_row_norms(x, w, b, gx, gw, gb, dt, str_cat("unaligned ", rows, "x", cols));
    // aligned x, unaligned weight
    Tensor xa = round_to(rand_tensor({rows, cols}, seed++, -2.f, 3.f), dt);
    check_row_norms(xa, w, b, xa.to(Device::cuda(), dt), gw, gb, dt, str_cat("unaligned weight ", rows, "x", cols));
  }
}

TEST_P(NormCuda, GroupNormMatchesCpu) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  uint64_t seed = 100;
  // {n, c, h, w, groups}: odd spatial sizes (a vector then spans two channels: 7x9 with 16 channels
  // per group, 1x1), one channel per group, and groups large enough to be split over many blocks
  for (auto [n, c, h, w, g] : std::vector<std::array<int64_t, 5>>{{1, 4, 3, 5, 2},
                                                                   {2, 32, 17, 9, 32},
                                                                   {1, 64, 33, 31, 8},
                                                                   {1, 64, 7, 9, 4},
                                                                   {2, 6, 5, 1, 3},
                                                                   {4, 64, 1, 1, 8},
                                                                   {3, 24, 1, 1, 3},
                                                                   {1, 512, 64, 64, 32},
                                                                   {2, 96, 45, 37, 32},
                                                                   {1, 32, 256, 256, 1}}) {
    Tensor x = round_to(rand_tensor({n, c, h, w}, seed++, -1.f, 2.f), dt);
    Tensor wt = round_to(rand_tensor({c}, seed++), dt);
    Tensor b = round_to(rand_tensor({c}, seed++), dt);
    Tensor gx = x.to(Device::cuda(), dt), gw = wt.to(Device::cuda(), dt), gb = b.to(Device::cuda(), dt);
    const std::string what = str_cat(n, "x", c, "x", h, "x", w, " groups ", g);
    poison_next(x.shape(), dt);
    EXPECT_LT(rel_err(group_norm(gx, int(g), gw, gb, 1e-6f), group_norm(x, int(g), wt, b, 1e-6f)), tol_for(dt)) << what;
    poison_next(x.shape(), dt);
    EXPECT_LT(rel_err(group_norm(gx, int(g), Tensor(), Tensor(), 1e-5f), group_norm(x, int(g), Tensor(), Tensor(), 1e-5f)),
              tol_for(dt))
        << what << " (no affine)";
  }
}

TEST_P(NormCuda, GroupNormLargeMean) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  // values in [50, 51): the variance is tiny next to mean^2, where a one-pass E[x^2] - mean^2 in
  // f32 would lose every digit
  Tensor x = round_to(rand_tensor({2, 64, 40, 40}, 900, 50.f, 51.f), dt);
  Tensor wt = round_to(rand_tensor({64}, 901), dt);
  Tensor b = round_to(rand_tensor({64}, 902), dt);
  Tensor y = group_norm(x.to(Device::cuda(), dt), 8, wt.to(Device::cuda(), dt), b.to(Device::cuda(), dt), 1e-6f);
  EXPECT_LT(rel_err(y, group_norm(x, 8, wt, b, 1e-6f)), tol_for(dt));
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, NormCuda, ::testing::Values(DType::F32, DType::F16, DType::BF16),
                         [](const auto& i) { return std::string(dtype_name(i.param)); });
