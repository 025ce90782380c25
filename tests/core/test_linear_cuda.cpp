// CUDA linear/matmul (cuBLASLt) against the CPU reference on awkward sizes, every float dtype.
// Inputs are rounded to the GPU dtype first, so the CPU sees exactly the GPU's operands and the
// difference is f32 accumulation order plus one output rounding (bias included: the epilogue adds
// it in f32). Tolerance: tol_for(dt) (f32 1e-5, f16 2e-3, bf16 1e-2) on the norm-wise relative
// error; bf16 output rounding alone is ~2e-3, accumulation over K = 4096 adds far less.
#include <cmath>

#include "core/ops/activation.h"
#include "core/ops/elementwise.h"
#include "core/ops/linear.h"
#include "core/ops/norm.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

class LinearCuda : public ::testing::TestWithParam<DType> {};

TEST_P(LinearCuda, LinearMatchesCpu) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  uint64_t seed = 1;
  for (int64_t m : {1, 3, 17, 1000})
    for (int64_t k : {17, 64, 1000, 4096})
      for (int64_t n : {17, 64, 1000, 4096}) {
        if (m * k * n > int64_t(1) << 32) continue;  // keep the CPU reference quick
        Tensor x = round_to(rand_tensor({m, k}, seed++), dt);
        Tensor w = round_to(rand_tensor({n, k}, seed++, -0.1f, 0.1f), dt);
        Tensor b = round_to(rand_tensor({n}, seed++), dt);
        Tensor gx = x.to(Device::cuda(), dt), gw = w.to(Device::cuda(), dt), gb = b.to(Device::cuda(), dt);
        Tensor y = linear(gx, gw, gb);
        EXPECT_EQ(y.dtype(), dt);
        EXPECT_TRUE(y.is_cuda());
        EXPECT_LT(rel_err(y, linear(x, w, b)), tol_for(dt)) << m << "x" << k << "x" << n;
        EXPECT_LT(rel_err(linear(gx, gw), linear(x, w)), tol_for(dt)) << m << "x" << k << "x" << n << " no bias";
      }
}

TEST_P(LinearCuda, RepeatedCallsAndLeadingDims) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  Tensor x = round_to(rand_tensor({2, 7, 64}, 5), dt);
  Tensor w = round_to(rand_tensor({33, 64}, 6), dt);
  Tensor b = round_to(rand_tensor({33}, 7), dt);
  Tensor gx = x.to(Device::cuda(), dt), gw = w.to(Device::cuda(), dt), gb = b.to(Device::cuda(), dt);
  const Tensor want = linear(x, w, b);
  for (int rep = 0; rep < 3; ++rep) {  // the cached plan is reused; the bias pointer is refreshed
    Tensor y = linear(gx, gw, gb);
    EXPECT_EQ(y.shape(), (Shape{2, 7, 33}));
    EXPECT_LT(rel_err(y, want), tol_for(dt));
  }
  // a different bias buffer with the same shape key
  Tensor b2 = round_to(rand_tensor({33}, 8), dt);
  EXPECT_LT(rel_err(linear(gx, gw, b2.to(Device::cuda(), dt)), linear(x, w, b2)), tol_for(dt));
}

TEST_P(LinearCuda, MisalignedAndStridedInputs) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  // Row slices start at odd element offsets: pointers aligned to 2 or 4 bytes only.
  Tensor xbig = round_to(rand_tensor({20, 17}, 11), dt);
  Tensor x = xbig.slice(0, 3, 20);  // offset 51 elements, contiguous
  Tensor wbig = round_to(rand_tensor({10, 17}, 12), dt);
  Tensor w = wbig.slice(0, 1, 10);
  Tensor bbig = round_to(rand_tensor({10}, 13), dt);
  Tensor b = bbig.slice(0, 1, 10);
  Tensor gx = xbig.to(Device::cuda(), dt).slice(0, 3, 20);
  Tensor gw = wbig.to(Device::cuda(), dt).slice(0, 1, 10);
  Tensor gb = bbig.to(Device::cuda(), dt).slice(0, 1, 10);
  EXPECT_LT(rel_err(linear(gx, gw, gb), linear(x, w, b)), tol_for(dt));
  // transposed (non-contiguous) x
  Tensor xt = round_to(rand_tensor({17, 5}, 14), dt);
  EXPECT_LT(rel_err(linear(xt.to(Device::cuda(), dt).transpose(0, 1), gw, gb), linear(xt.transpose(0, 1), w, b)),
            tol_for(dt));
}

TEST_P(LinearCuda, MatmulMatchesCpu) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  uint64_t seed = 200;
  for (int64_t m : {1, 3, 17, 100})
    for (int64_t k : {17, 64, 128})
      for (int64_t n : {1, 17, 64, 300}) {
        Tensor a = round_to(rand_tensor({2, 3, m, k}, seed++), dt);
        Tensor b = round_to(rand_tensor({2, 3, k, n}, seed++), dt);
        Tensor bt = round_to(rand_tensor({2, 3, n, k}, seed++), dt);
        Tensor b2 = round_to(rand_tensor({k, n}, seed++), dt);
        Tensor ga = a.to(Device::cuda(), dt);
        EXPECT_LT(rel_err(matmul(ga, b.to(Device::cuda(), dt)), matmul(a, b)), tol_for(dt)) << m << " " << k << " " << n;
        EXPECT_LT(rel_err(matmul(ga, bt.to(Device::cuda(), dt), true), matmul(a, bt, true)), tol_for(dt));
        EXPECT_LT(rel_err(matmul(ga, b2.to(Device::cuda(), dt)), matmul(a, b2)), tol_for(dt));
      }
}

// matmul_f32: half inputs, F32 result without the output rounding, so the only difference from the
// CPU's f32 product of the same (rounded) operands is the accumulation order: 1e-5, not tol_for(dt).
TEST_P(LinearCuda, MatmulF32ResultMatchesCpu) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  uint64_t seed = 900;
  for (auto [m, k, n] : std::vector<std::array<int64_t, 3>>{{1, 17, 1}, {17, 64, 300}, {576, 4096, 576}}) {
    Tensor a = round_to(rand_tensor({m, k}, seed++), dt), bt = round_to(rand_tensor({n, k}, seed++), dt);
    const Tensor got = matmul_f32(a.to(Device::cuda(), dt), bt.to(Device::cuda(), dt), true);
    ASSERT_EQ(got.dtype(), DType::F32);
    EXPECT_LT(rel_err(got, matmul(a, bt, true)), 1e-5) << m << " " << k << " " << n;
    Tensor a3 = round_to(rand_tensor({2, m, k}, seed++), dt), b3 = round_to(rand_tensor({2, k, n}, seed++), dt);
    EXPECT_LT(rel_err(matmul_f32(a3.to(Device::cuda(), dt), b3.to(Device::cuda(), dt)), matmul(a3, b3)), 1e-5);
  }
}

// linear_residual: one cuBLASLt call reading the residual as C above the skinny kernels' rows, the
// composition (copy + linear_add_) at decode sizes; the residual is left as it was.
TEST_P(LinearCuda, LinearResidualMatchesCpu) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  uint64_t seed = 950;
  for (int64_t m : {1, 8, 9, 577}) {
    Tensor x = round_to(rand_tensor({m, 96}, seed++), dt), w = round_to(rand_tensor({40, 96}, seed++), dt);
    Tensor b = round_to(rand_tensor({40}, seed++), dt), r = round_to(rand_tensor({m, 40}, seed++), dt);
    const Tensor gr = r.to(Device::cuda(), dt);
    const Tensor got = linear_residual(gr, x.to(Device::cuda(), dt), w.to(Device::cuda(), dt), b.to(Device::cuda(), dt));
    EXPECT_LT(rel_err(got, add(r, linear(x, w, b))), tol_for(dt)) << m;
    EXPECT_EQ(max_abs_diff(gr.to(Device::cpu(), DType::F32), r), 0.0) << "residual written, m " << m;
  }
}

// Every element of `got` against `want`: |d| <= tol * (|want| + rms(want)) (the norm-wise error
// alone would hide a few wrong outputs among thousands).
double worst_elem_err(const Tensor& got, const Tensor& want) {
  const std::vector<float> g = got.to(Device::cpu()).to(DType::F32).to_floats();
  const std::vector<float> w = want.to(Device::cpu()).to(DType::F32).to_floats();
  double ss = 0;
  for (float v : w) ss += double(v) * v;
  const double rms = std::sqrt(ss / double(std::max<size_t>(w.size(), 1))) + 1e-30;
  double worst = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    const double e = std::fabs(double(g[i]) - w[i]) / (std::fabs(w[i]) + rms);
    if (!(e <= worst)) worst = std::isnan(e) ? INFINITY : e;  // a NaN output fails
  }
  return worst;
}

// Random operands of one decode-sized product [m, k] x [n, k]^T and of its fused forms (gate | up
// [m, 2k], norm weight [k], a residual y0 [m, n]), rounded to dt, on the CPU.
struct DecodeOperands {
  Tensor x, gu, w, b, nw, y0;
};
DecodeOperands decode_operands(int64_t m, int64_t k, int64_t n, DType dt, uint64_t& seed) {
  DecodeOperands o;
  o.x = round_to(rand_tensor({m, k}, seed++), dt);
  o.gu = round_to(rand_tensor({m, 2 * k}, seed++, -3.f, 3.f), dt);
  o.w = round_to(rand_tensor({n, k}, seed++, -0.1f, 0.1f), dt);
  o.b = round_to(rand_tensor({n}, seed++), dt);
  o.nw = round_to(rand_tensor({k}, seed++, 0.5f, 1.5f), dt);
  o.y0 = round_to(rand_tensor({m, n}, seed++), dt);
  return o;
}

// rms_norm_linear and swiglu_linear_add_ on the GPU against the CPU composition, element by element
// (the CPU reference rounds the intermediate to the dtype as the unfused GPU ops do).
void expect_fused_forms(const DecodeOperands& o, DType dt, double tol, const std::string& at) {
  const Device g = Device::cuda();
  const Tensor gw = o.w.to(g, dt), gb = o.b.to(g, dt);
  Tensor xn = round_to(rms_norm(o.x, o.nw, 1e-5f), dt);
  EXPECT_LT(worst_elem_err(rms_norm_linear(o.x.to(g, dt), o.nw.to(g, dt), 1e-5f, gw, gb), linear(xn, o.w, o.b)), tol)
      << at << " rms";
  Tensor gy = o.y0.to(g, dt), y = o.y0.clone();
  swiglu_linear_add_(gy, o.gu.to(g, dt), gw, gb);
  linear_add_(y, round_to(swiglu_fused(o.gu), dt), o.w, o.b);
  EXPECT_LT(worst_elem_err(gy, y), tol) << at << " swiglu";
}

// The decode-sized kernel (gemv, <= 8 rows of bf16/f16) and the fused forms built on it, against
// the CPU composition on the same (rounded) operands, element by element. n / k cover partial warp
// tasks (n % 4 != 0), partial unrolled K steps (k = 1000, 2600), K == 8, and a second pass of the warps' grid stride
// (n = 12289: more row groups than one wave of warps); y starts random, so a row the kernel fails
// to write or overwrites instead of adding shows. K split over 2 or 4 warps per task (pick_split;
// with 132 SMs, for m <= 2): k = 4096 splits in 2 for every n (n = 12289 with a grid-stride second
// pass), k = 8200 (uneven slices) in 4 for n = 256, 1030 and in 2 for n = 4099; k <= 2600 does not split.
// n = 22016 is the gate_up width (three partial waves of the tensor-core kernel's blocks).
// At m = 1, n = 12289 and 22016 take the 2-row x 8-load shape (n >= ~8.4K with 132 SMs), the
// others 4 rows x 4 loads.
TEST_P(LinearCuda, DecodeKernelAndFusedForms) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  const double tol = dt == DType::F32 ? 1e-4 : dt == DType::F16 ? 4e-3 : 2e-2;
  const Device g = Device::cuda();
  uint64_t seed = 500;
  // the gemv kernels themselves (mode 1 would send the plain products to the Hopper skinny kernel)
  const SkinnyGemmModeGuard mode(0);
  for (int64_t m : {1, 2, 3, 4, 5, 6, 7, 8})
    for (int64_t k : {8, 264, 1000, 2600, 4096, 8200})
      for (int64_t n : {256, 257, 1030, 4099, 12289, 22016}) {
        if (n == 12289 && (k < 1000 || k > 4096)) continue;
        if (n == 22016 && k != 264) continue;
        if (k == 8200 && (n == 257 || m > 2)) continue;  // the split-4 shapes (m <= 2) only: CPU reference time
        const std::string at = std::to_string(m) + "x" + std::to_string(k) + "x" + std::to_string(n);
        const DecodeOperands o = decode_operands(m, k, n, dt, seed);
        Tensor gx = o.x.to(g, dt), gw = o.w.to(g, dt), gb = o.b.to(g, dt);
        EXPECT_LT(worst_elem_err(linear(gx, gw, gb), linear(o.x, o.w, o.b)), tol) << at;
        EXPECT_LT(worst_elem_err(linear(gx, gw), linear(o.x, o.w)), tol) << at << " no bias";

        Tensor gy = o.y0.to(g, dt), y = o.y0.clone();
        linear_add_(gy, gx, gw, gb);
        linear_add_(y, o.x, o.w, o.b);
        EXPECT_LT(worst_elem_err(gy, y), tol) << at << " linear_add_";
        expect_fused_forms(o, dt, tol, at);
      }
}

// A CUDA [rows, cols] tensor of dt filled with NaN: an output a kernel fails to write stays NaN.
Tensor nan_tensor(const Shape& shape, DType dt) {
  return Tensor::from_floats(std::vector<float>(size_t(shape[0] * shape[1]), NAN), shape).to(Device::cuda(), dt);
}

// A linear()-shaped product [m, 4096] x [4096, 4096]^T with placeholder (aligned) pointers: the
// probe for the *_supported checks of the opt-in kernels.
GemmParams product_probe(int64_t m, DType dt) {
  GemmParams p;
  p.a = p.b = p.c = reinterpret_cast<void*>(uintptr_t(256));
  p.m = m, p.n = 4096, p.k = 4096, p.trans_b = true, p.dtype = dt;
  return p;
}

// The Hopper skinny product (TMA + wgmma, m <= 128; gemm_sm90.cuh) element by element against the
// CPU: m padded to each instantiated width (8, 16, 32, 64, 128) and just past it, k with a partial
// last 64-column block (72, 1000) and K == 8, n with a partial row tile (200, 4099), tiles shared
// by several stream-K blocks (n small against the GPU, k up to 11008) and blocks spanning several
// tiles (n = 22016), bias and the residual add; shared tiles repeat bit for bit; mode 2 runs the
// fused decode forms unfused through it.
TEST_P(LinearCuda, SkinnyHopperProduct) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  if (dt == DType::F32) GTEST_SKIP() << "16-bit only";
  SkinnyGemmModeGuard mode(1);  // opt-in (linear.h)
  const GemmParams probe = product_probe(1, dt);
  if (!skinny_gemm_sm90_supported(probe)) GTEST_SKIP() << "needs an sm_90a build on a compute-capability 9.0 GPU";
  const double tol = dt == DType::F16 ? 4e-3 : 2e-2;
  const Device g = Device::cuda();
  uint64_t seed = 900;
  auto check = [&](int64_t m, int64_t k, int64_t n) {
    const std::string at = std::to_string(m) + "x" + std::to_string(k) + "x" + std::to_string(n);
    Tensor x = round_to(rand_tensor({m, k}, seed++), dt);
    Tensor w = round_to(rand_tensor({n, k}, seed++, -0.1f, 0.1f), dt);
    Tensor b = round_to(rand_tensor({n}, seed++), dt);
    Tensor y0 = round_to(rand_tensor({m, n}, seed++), dt);
    Tensor gx = x.to(g, dt), gw = w.to(g, dt), gb = b.to(g, dt);
    GemmParams p = probe;
    p.a = gx.data_ptr(), p.b = gw.data_ptr(), p.c = gx.data_ptr(), p.m = m, p.n = n, p.k = k;
    ASSERT_TRUE(skinny_gemm_sm90_supported(p)) << at;
    EXPECT_LT(worst_elem_err(linear(gx, gw, gb), linear(x, w, b)), tol) << at;
    EXPECT_LT(worst_elem_err(linear(gx, gw), linear(x, w)), tol) << at << " no bias";
    Tensor gy = y0.to(g, dt), y = y0.clone();
    linear_add_(gy, gx, gw, gb);
    linear_add_(y, x, w, b);
    EXPECT_LT(worst_elem_err(gy, y), tol) << at << " linear_add_";
  };
  for (int64_t m : {1, 2, 8, 9, 16, 17, 32, 33, 64, 65, 104, 128})
    for (int64_t k : {8, 72, 1000, 4096})
      for (int64_t n : {128, 200, 4099}) check(m, k, n);
  check(1, 11008, 256);   // 4 tiles of 172 k blocks over all blocks
  check(104, 11008, 4096);
  check(8, 4096, 22016);  // more row tiles than resident blocks

  // shared tiles are deterministic: the last block sums the partials in block order
  Tensor gx = round_to(rand_tensor({3, 11008}, 1), dt).to(g, dt);
  Tensor gw = round_to(rand_tensor({256, 11008}, 2, -0.1f, 0.1f), dt).to(g, dt);
  const std::vector<float> first = linear(gx, gw).to(Device::cpu()).to(DType::F32).to_floats();
  for (int rep = 0; rep < 3; ++rep)
    EXPECT_EQ(linear(gx, gw).to(Device::cpu()).to(DType::F32).to_floats(), first) << "repeat " << rep;

  // mode 2: the fused decode forms go unfused through the skinny product (same rounding as the gemv)
  set_skinny_gemm_mode(2);
  for (int64_t m : {1, 2})
    for (int64_t k : {1000, 4096})
      expect_fused_forms(decode_operands(m, k, 4099, dt, seed), dt, tol, std::to_string(m) + "x" + std::to_string(k) + " (mode 2)");
}

// The cluster product (gemm_cluster_cuda.cuh; sm_90+) element by element against the CPU: m at
// and past each instantiated width (32, 64, 128; m < 9 only through the direct call),
// k with a partial last 64-column stage (72, 1000) and K == 8, n with a partial 128-row tile (100,
// 200, 4099) and n % 4 != 0 (scalar stores), every forced split 1-8 (k = 1000: 16 stages, so split 8
// gives blocks of 2 stages and split 7 an empty last block) and the chosen one; bias, no bias, and
// the accumulating form (y starts random: an output the kernel fails to write, or overwrites
// instead of adding to, shows; direct outputs start as NaN). Then the routing when enabled (opt-in):
// linear / linear_add_ / the fused forms at 9 <= m <= 128 take it (linear()'s result equals the
// direct call's bit for bit), and a split tile repeats bit for bit.
TEST_P(LinearCuda, ClusterProduct) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  if (dt == DType::F32) GTEST_SKIP() << "16-bit only";
  const GemmParams probe = product_probe(64, dt);
  if (!cluster_gemm_supported(probe)) GTEST_SKIP() << "needs a compute-capability 9.0+ GPU and an sm_90 build";
  const double tol = dt == DType::F16 ? 4e-3 : 2e-2;
  const Device g = Device::cuda();
  uint64_t seed = 1300;
  // both kernels: the block ring (1) and, where the build and device have it, the streaming one (2)
  std::vector<int> kinds{1};
  if (cluster_gemm_streaming_available()) kinds.push_back(2);
  auto check = [&](int64_t m, int64_t k, int64_t n, std::initializer_list<int> splits) {
    const DecodeOperands o = decode_operands(m, k, n, dt, seed);
    Tensor gx = o.x.to(g, dt), gw = o.w.to(g, dt), gb = o.b.to(g, dt);
    const Tensor want = linear(o.x, o.w, o.b), want_nb = linear(o.x, o.w);
    Tensor want_acc = o.y0.clone();
    linear_add_(want_acc, o.x, o.w, o.b);
    for (int kind : kinds)
    for (int split : splits) {
      const std::string at = std::to_string(m) + "x" + std::to_string(k) + "x" + std::to_string(n) + " split " +
                             std::to_string(split) + " kernel " + std::to_string(kind);
      GemmParams p = probe;
      p.a = gx.data_ptr(), p.b = gw.data_ptr(), p.m = m, p.n = n, p.k = k;
      ASSERT_TRUE(cluster_gemm_supported(p)) << at;
      Tensor y = nan_tensor({m, n}, dt);  // an output the kernel fails to write stays NaN
      p.c = y.data_ptr(), p.bias = gb.data_ptr();
      cluster_gemm_cuda(p, current_stream(), split, kind);
      EXPECT_LT(worst_elem_err(y, want), tol) << at;
      y = nan_tensor({m, n}, dt);
      p.c = y.data_ptr(), p.bias = nullptr;
      cluster_gemm_cuda(p, current_stream(), split, kind);
      EXPECT_LT(worst_elem_err(y, want_nb), tol) << at << " no bias";
      Tensor gy = o.y0.to(g, dt);
      p.c = gy.data_ptr(), p.bias = gb.data_ptr(), p.accumulate = true;
      cluster_gemm_cuda(p, current_stream(), split, kind);
      EXPECT_LT(worst_elem_err(gy, want_acc), tol) << at << " accumulate";
    }
  };
  for (int64_t m : {1, 9, 32, 33, 64, 65, 96, 97, 104, 112, 113, 128})
    for (int64_t k : {8, 72, 1000})
      for (int64_t n : {100, 200, 4099}) check(m, k, n, {0, 1, 3});
  for (int split = 1; split <= 8; ++split) check(104, 1000, 258, {split});
  check(104, 4096, 4096, {0, 4, 8});
  check(17, 11008, 4096, {0, 4});
  check(128, 4096, 22016, {0});
  // more row tiles than the device holds at once (313: several waves), uneven K ranges and, at k 72
  // split 3, blocks with none
  check(33, 1000, 40000, {1, 3});
  check(65, 72, 40000, {3});

  // routing of every 9-128-row product (kClusterGemmAll): linear, linear_add_ and the fused forms
  // (unfused above 2 rows)
  const SkinnyGemmModeGuard skinny(0);  // (the other opt-in path would take these products first)
  struct Enabled {
    int was = cluster_gemm_route();
    Enabled() { set_cluster_gemm_route(kClusterGemmAll); }
    ~Enabled() { set_cluster_gemm_route(was); }
  } enabled;
  for (int64_t m : {9, 104, 128}) {
    const DecodeOperands o = decode_operands(m, 1000, 4099, dt, seed);
    const std::string at = std::to_string(m) + " rows (routing)";
    Tensor gx = o.x.to(g, dt), gw = o.w.to(g, dt), gb = o.b.to(g, dt);
    EXPECT_LT(worst_elem_err(linear(gx, gw, gb), linear(o.x, o.w, o.b)), tol) << at;
    Tensor gy = o.y0.to(g, dt), y = o.y0.clone();
    linear_add_(gy, gx, gw, gb);
    linear_add_(y, o.x, o.w, o.b);
    EXPECT_LT(worst_elem_err(gy, y), tol) << at << " linear_add_";
    expect_fused_forms(o, dt, tol, at);
  }
  // a split tile is deterministic: the partials are summed in rank order
  Tensor gx = round_to(rand_tensor({104, 4096}, 1), dt).to(g, dt);
  Tensor gw = round_to(rand_tensor({4096, 4096}, 2, -0.1f, 0.1f), dt).to(g, dt);
  const std::vector<float> first = linear(gx, gw).to(Device::cpu()).to(DType::F32).to_floats();
  for (int rep = 0; rep < 3; ++rep)
    EXPECT_EQ(linear(gx, gw).to(Device::cpu()).to(DType::F32).to_floats(), first) << "repeat " << rep;
  // and linear() did take the cluster product: the direct call's result, bit for bit
  GemmParams p = probe;
  Tensor direct = Tensor::empty({104, 4096}, dt, g);
  p.a = gx.data_ptr(), p.b = gw.data_ptr(), p.c = direct.data_ptr(), p.m = 104;
  cluster_gemm_cuda(p, current_stream());
  EXPECT_EQ(direct.to(Device::cpu()).to(DType::F32).to_floats(), first) << "linear() routed elsewhere";

  // the default route: only 9-128 rows with k >= kClusterGemmLongKMin, where the streaming kernel runs
  set_cluster_gemm_route(kClusterGemmLongK);
  GemmParams q = p;
  q.k = kClusterGemmLongKMin;
  EXPECT_EQ(cluster_gemm_routes(q), cluster_gemm_streaming_available());
  for (int64_t m : {int64_t(8), kClusterGemmMaxRows + 1}) {
    q.m = m;
    EXPECT_FALSE(cluster_gemm_routes(q)) << m << " rows";
  }
  q.m = 104, q.k = kClusterGemmLongKMin - 8;
  EXPECT_FALSE(cluster_gemm_routes(q)) << "short k";
  if (cluster_gemm_streaming_available()) {  // and linear() takes it: the direct call's result, bit for bit
    Tensor lx = round_to(rand_tensor({104, kClusterGemmLongKMin}, 3), dt).to(g, dt);
    Tensor lw = round_to(rand_tensor({300, kClusterGemmLongKMin}, 4, -0.1f, 0.1f), dt).to(g, dt);
    const std::vector<float> routed = linear(lx, lw).to(Device::cpu()).to(DType::F32).to_floats();
    Tensor ld = Tensor::empty({104, 300}, dt, g);
    q = p;
    q.a = lx.data_ptr(), q.b = lw.data_ptr(), q.c = ld.data_ptr(), q.n = 300, q.k = kClusterGemmLongKMin;
    cluster_gemm_cuda(q, current_stream());
    EXPECT_EQ(ld.to(Device::cpu()).to(DType::F32).to_floats(), routed) << "the default route did not take it";
  }
  set_cluster_gemm_route(kClusterGemmNone);
  EXPECT_FALSE(cluster_gemm_routes(p));
  EXPECT_THROW(set_cluster_gemm_route(3), ConfigError);
}

TEST_P(LinearCuda, EmptyDims) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  Tensor gw = rand_tensor({4, 3}, 1).to(Device::cuda(), dt);
  Tensor gb = Tensor::from_floats({1, 2, 3, 4}, {4}).to(Device::cuda(), dt);
  EXPECT_EQ(linear(Tensor::empty({0, 3}, dt, Device::cuda()), gw, gb).shape(), (Shape{0, 4}));
  Tensor y = linear(Tensor::empty({2, 0}, dt, Device::cuda()), Tensor::empty({4, 0}, dt, Device::cuda()), gb);
  EXPECT_EQ(y.to_floats(), (std::vector<float>{1, 2, 3, 4, 1, 2, 3, 4}));
}

TEST(LinearCudaTf32, OptInIsCloseButNotRequired) {
  MMATTN_REQUIRE_GPU();
  Tensor x = rand_tensor({64, 256}, 1), w = rand_tensor({128, 256}, 2);
  Tensor gx = x.to(Device::cuda()), gw = w.to(Device::cuda());
  set_matmul_allow_tf32(true);
  const double err = rel_err(linear(gx, gw), linear(x, w));
  set_matmul_allow_tf32(false);
  EXPECT_LT(err, 5e-3);  // TF32 has a 10-bit mantissa
  EXPECT_LT(rel_err(linear(gx, gw), linear(x, w)), 1e-5);
}

TEST(LinearCudaErrors, DeviceMismatchNamesArguments) {
  MMATTN_REQUIRE_GPU();
  Tensor x = rand_tensor({2, 5}, 1).to(Device::cuda());
  try {
    linear(x, rand_tensor({4, 5}, 2));
    FAIL();
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("'weight'"), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, LinearCuda, ::testing::Values(DType::F32, DType::F16, DType::BF16),
                         [](const auto& i) { return std::string(dtype_name(i.param)); });

// linear_qkv_rope: the cluster product with RoPE in its epilogue and its sections written to their own
// strided rows equals, bit for bit, the same product (same kernel and split) followed by apply_rope_'s
// rotation (emulated here in f32 with the same roundings: cos / sin, each product and the sum rounded to
// the dtype). Output rows carry padding that must stay untouched.
// linear_qkv_rope's three destinations: outs[s] the first cols[s] columns of a NaN-filled buffer
// bufs[s] [m, cols[s] + pad] (padded rows, as a KV cache's).
struct QkvSections {
  Tensor bufs[3], outs[3];
  int64_t cols[3] = {};
  int64_t pad = 8;
};
QkvSections qkv_sections(int64_t m, int64_t hq, int64_t hkv, int64_t d, DType dt) {
  QkvSections q;
  const int64_t heads[3] = {hq, hkv, hkv};
  for (int s = 0; s < 3; ++s) {
    q.cols[s] = heads[s] * d;
    q.bufs[s] = nan_tensor({m, q.cols[s] + q.pad}, dt);
    q.outs[s] = q.bufs[s].slice(1, 0, q.cols[s]);
  }
  return q;
}

// linear_qkv_rope's outputs (sections of qkv_sections) against yv, the plain product's values [m, n]
// (same kernel), with its first `rotated` heads (q and k) rotated by cos / sin [m, d / 2] with
// apply_rope_'s roundings, bit for bit; the padding must stay NaN.
void expect_qkv_rope_sections(const std::vector<float>& yv, const Tensor& cos, const Tensor& sin, const QkvSections& sec,
                              int64_t m, int64_t d, int64_t rotated, DType dt, const std::string& at) {
  const Tensor (&bufs)[3] = sec.bufs;
  const int64_t (&cols)[3] = sec.cols;
  const int64_t pad = sec.pad;
  const int64_t n = cols[0] + cols[1] + cols[2], half = d / 2;
  auto rnd = [&](const std::vector<float>& v) {
    return Tensor::from_floats(v, {int64_t(v.size())}).to(dt).to(DType::F32).to_floats();
  };
  const std::vector<float> cv = round_to(cos, dt).to_floats(), sv = round_to(sin, dt).to_floats();
  std::vector<size_t> at0;  // index of each rotated pair's first element in y
  std::vector<float> pr[4];  // x0 c, -x1 s, x1 c, x0 s
  for (int64_t r = 0; r < m; ++r)
    for (int64_t h = 0; h < rotated; ++h)
      for (int64_t i = 0; i < half; ++i) {
        const size_t i0 = size_t(r * n + h * d + i);
        const float c = cv[size_t(r * half + i)], s = sv[size_t(r * half + i)], x0 = yv[i0], x1 = yv[i0 + size_t(half)];
        at0.push_back(i0);
        pr[0].push_back(x0 * c), pr[1].push_back(-x1 * s), pr[2].push_back(x1 * c), pr[3].push_back(x0 * s);
      }
  for (auto& v : pr) v = rnd(v);
  std::vector<float> s0(at0.size()), s1(at0.size());
  for (size_t j = 0; j < at0.size(); ++j) s0[j] = pr[0][j] + pr[1][j], s1[j] = pr[2][j] + pr[3][j];
  s0 = rnd(s0), s1 = rnd(s1);
  std::vector<float> want(yv);
  for (size_t j = 0; j < at0.size(); ++j) want[at0[j]] = s0[j], want[at0[j] + size_t(half)] = s1[j];
  int64_t off = 0;
  for (int s = 0; s < 3; ++s) {
    const std::vector<float> got = bufs[s].to(Device::cpu()).to(DType::F32).to_floats();
    int64_t bad = 0, pad_bad = 0;
    for (int64_t r = 0; r < m; ++r) {
      for (int64_t c = 0; c < cols[s]; ++c) bad += got[size_t(r * (cols[s] + pad) + c)] != want[size_t(r * n + off + c)];
      for (int64_t c = cols[s]; c < cols[s] + pad; ++c) pad_bad += !std::isnan(got[size_t(r * (cols[s] + pad) + c)]);
    }
    EXPECT_EQ(bad, 0) << at << " section " << s;
    EXPECT_EQ(pad_bad, 0) << at << " section " << s << " padding";
    off += cols[s];
  }
}

TEST_P(LinearCuda, QkvRopeMatchesProductThenRope) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  if (dt == DType::F32) GTEST_SKIP() << "16-bit only";
  const Device g = Device::cuda();
  uint64_t seed = 2100;
  struct Case { int64_t m, k, d, hq, hkv; bool bias; };
  const Case cases[] = {{9, 64, 128, 1, 1, false}, {104, 1000, 128, 4, 2, true}, {33, 256, 64, 3, 1, true},
                        {128, 72, 16, 4, 4, false}, {65, 4096, 128, 32, 32, false}};
  bool any = false;
  for (const Case& cs : cases) {
    const int64_t n = (cs.hq + 2 * cs.hkv) * cs.d, half = cs.d / 2;
    const Tensor x = round_to(rand_tensor({cs.m, cs.k}, ++seed), dt), w = round_to(rand_tensor({n, cs.k}, ++seed, -0.1f, 0.1f), dt);
    const Tensor b = round_to(rand_tensor({n}, ++seed), dt);
    const Tensor cs_t = rand_tensor({cs.m, half}, ++seed), sn_t = rand_tensor({cs.m, half}, ++seed);
    Tensor gx = x.to(g, dt), gw = w.to(g, dt), gb = b.to(g, dt), gcos = cs_t.to(g), gsin = sn_t.to(g);
    if (!linear_qkv_rope_fusable(gx, gw, cs.d)) continue;
    any = true;
    for (int kind : {1, 2}) {
      if (kind == 2 && !cluster_gemm_streaming_available()) continue;
      for (int split : {1, 3}) {
        const std::string at = std::to_string(cs.m) + "x" + std::to_string(cs.k) + " d " + std::to_string(cs.d) +
                               " heads " + std::to_string(cs.hq) + "/" + std::to_string(cs.hkv) + " split " +
                               std::to_string(split) + " kernel " + std::to_string(kind);
        // the plain product, same kernel and split
        Tensor y = Tensor::empty({cs.m, n}, dt, g);
        GemmParams p = product_probe(cs.m, dt);
        p.a = gx.data_ptr(), p.b = gw.data_ptr(), p.c = y.data_ptr(), p.bias = cs.bias ? gb.data_ptr() : nullptr;
        p.m = cs.m, p.n = n, p.k = cs.k;
        cluster_gemm_cuda(p, current_stream(), split, kind);
        const std::vector<float> yv = y.to(Device::cpu()).to(DType::F32).to_floats();
        // the fused form into padded rows (NaN padding must survive)
        QkvSections sec = qkv_sections(cs.m, cs.hq, cs.hkv, cs.d, dt);
        linear_qkv_rope(gx, gw, cs.bias ? gb : Tensor(), gcos, gsin, cs.hq, cs.hkv, sec.outs[0], sec.outs[1], sec.outs[2],
                        split, kind);
        expect_qkv_rope_sections(yv, cs_t, sn_t, sec, cs.m, cs.d, cs.hq + cs.hkv, dt, at);
      }
    }
  }
  if (!any) GTEST_SKIP() << "linear_qkv_rope is not fusable on this build / device";
  // bad input names the argument
  const Tensor gx = round_to(rand_tensor({16, 64}, 1), dt).to(g, dt), gw = round_to(rand_tensor({3 * 128, 64}, 2), dt).to(g, dt);
  if (linear_qkv_rope_fusable(gx, gw, 128)) {
    Tensor q = Tensor::empty({16, 128}, dt, g), k = Tensor::empty({16, 128}, dt, g), v = Tensor::empty({16, 64}, dt, g);
    const Tensor c = Tensor::zeros({16, 64}, DType::F32, g);
    try {
      linear_qkv_rope(gx, gw, Tensor(), c, c, 1, 1, q, k, v);
      ADD_FAILURE() << "no error for a mis-shaped v_out";
    } catch (const ShapeError& e) {
      EXPECT_NE(std::string(e.what()).find("v_out"), std::string::npos) << e.what();
    }
  }
}

// The decode-sized form (m = 1, the gemv with paired rows, with and without the norm inside the
// kernel): bit for bit the same gemv's plain product (linear, rms_norm_linear) rotated as
// apply_rope_ rounds; n from 256 (d 16) to a 7B layer's 12288 (both m = 1 task shapes), k up to
// 8200 (K split over warps); m = 2 is not taken (the caller appends separately).
TEST_P(LinearCuda, QkvRopeDecodeRowsMatchProductThenRope) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  if (dt == DType::F32) GTEST_SKIP() << "16-bit only";
  const SkinnyGemmModeGuard mode(0);  // the gemv kernels on both sides
  const Device g = Device::cuda();
  uint64_t seed = 2300;
  struct Case { int64_t k, d, hq, hkv; };
  const Case cases[] = {{4096, 128, 32, 32}, {1000, 64, 3, 1}, {264, 128, 4, 2}, {72, 16, 8, 4}, {8200, 128, 2, 1}};
  for (const Case& cs : cases)
    for (int64_t m : {1, 2})
      for (bool norm : {false, true})
        for (bool bias : {false, true}) {
          const int64_t n = (cs.hq + 2 * cs.hkv) * cs.d, half = cs.d / 2;
          const std::string at = std::to_string(m) + "x" + std::to_string(cs.k) + " d " + std::to_string(cs.d) +
                                 " heads " + std::to_string(cs.hq) + "/" + std::to_string(cs.hkv) +
                                 (norm ? " norm" : "") + (bias ? " bias" : "");
          const Tensor x = round_to(rand_tensor({1, m, cs.k}, ++seed), dt), w = round_to(rand_tensor({n, cs.k}, ++seed, -0.1f, 0.1f), dt);
          const Tensor b = round_to(rand_tensor({n}, ++seed), dt), nw = round_to(rand_tensor({cs.k}, ++seed, 0.5f, 1.5f), dt);
          const Tensor cs_t = rand_tensor({m, half}, ++seed), sn_t = rand_tensor({m, half}, ++seed);
          Tensor gx = x.to(g, dt), gw = w.to(g, dt), gb = b.to(g, dt), gnw = nw.to(g, dt), gcos = cs_t.to(g), gsin = sn_t.to(g);
          if (m > kGemvPairedMaxRows) {
            EXPECT_FALSE(linear_qkv_rope_fusable(gx, gw, cs.d)) << at;
            continue;
          }
          ASSERT_TRUE(linear_qkv_rope_fusable(gx, gw, cs.d)) << at;
          const Tensor gbias = bias ? gb : Tensor();
          const Tensor y = norm ? rms_norm_linear(gx, gnw, 1e-5f, gw, gbias) : linear(gx, gw, gbias);
          const std::vector<float> yv = y.to(Device::cpu()).to(DType::F32).to_floats();
          QkvSections sec = qkv_sections(m, cs.hq, cs.hkv, cs.d, dt);
          const int64_t calls = linear_qkv_rope_calls();
          if (norm)
            rms_norm_linear_qkv_rope(gx, gnw, 1e-5f, gw, gbias, gcos, gsin, cs.hq, cs.hkv, sec.outs[0], sec.outs[1],
                                     sec.outs[2]);
          else
            linear_qkv_rope(gx, gw, gbias, gcos, gsin, cs.hq, cs.hkv, sec.outs[0], sec.outs[1], sec.outs[2]);
          EXPECT_EQ(linear_qkv_rope_calls(), calls + 1) << at;
          expect_qkv_rope_sections(yv, cs_t, sn_t, sec, m, cs.d, cs.hq + cs.hkv, dt, at);
        }
}

// The CPU's swiglu_fused(rms_norm_linear(x, nw, 1e-5, w, b)) with every intermediate rounded to dt
// where the GPU's kernels round: x * inv and its product with nw (norm), the product (+ bias), silu(g),
// and the gated output. (Without the intermediate roundings bf16 outputs of ~1e2 differ by up to
// ~3% of the element-wise scale: the silu and norm roundings alone, measured on the H100.)
Tensor swiglu_rounded_like_gpu(const Tensor& x, const Tensor& nw, const Tensor& w, const Tensor& b, DType dt) {
  const int64_t k = x.size(-1), rows = x.numel() / k, f = w.size(0) / 2;
  const std::vector<float> xv = x.to_floats(), nv = nw.to_floats();
  std::vector<float> xn(xv.size());
  for (int64_t r = 0; r < rows; ++r) {
    float ss = 0.f;
    for (int64_t i = 0; i < k; ++i) ss += xv[size_t(r * k + i)] * xv[size_t(r * k + i)];
    const float inv = 1.f / std::sqrt(ss / float(k) + 1e-5f);
    for (int64_t i = 0; i < k; ++i) xn[size_t(r * k + i)] = xv[size_t(r * k + i)] * inv;
  }
  const Tensor xs = round_to(mul(round_to(Tensor::from_floats(xn, x.shape()), dt), nw), dt);
  const Tensor gu = round_to(linear(xs, w, b), dt);
  const Tensor g = gu.slice(-1, 0, f).contiguous(), u = gu.slice(-1, f, 2 * f).contiguous();
  return round_to(mul(round_to(silu(g), dt), u), dt);
}

// rms_norm_linear_swiglu: at decode sizes (the gemv pairing gate row j with up row j) bit for bit the
// unfused composition on the same kernels, and close to the CPU's; past them the composition itself.
TEST_P(LinearCuda, RmsNormLinearSwigluMatchesComposition) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  const double tol = dt == DType::F32 ? 1e-4 : dt == DType::F16 ? 4e-3 : 2e-2;
  const SkinnyGemmModeGuard mode(0);
  const Device g = Device::cuda();
  uint64_t seed = 2500;
  for (int64_t m : {1, 2, 3, 9})
    for (int64_t k : {72, 1000, 4096})
      for (int64_t f : {128, 129, 2050, 11008})
        for (bool bias : {false, true}) {
          if (f == 11008 && (k != 1000 || m > 3)) continue;  // (CPU reference time)
          const std::string at = std::to_string(m) + "x" + std::to_string(k) + " f " + std::to_string(f) + (bias ? " bias" : "");
          const Tensor x = round_to(rand_tensor({1, m, k}, ++seed), dt), w = round_to(rand_tensor({2 * f, k}, ++seed, -0.1f, 0.1f), dt);
          const Tensor b = round_to(rand_tensor({2 * f}, ++seed), dt), nw = round_to(rand_tensor({k}, ++seed, 0.5f, 1.5f), dt);
          const Tensor gx = x.to(g, dt), gw = w.to(g, dt), gnw = nw.to(g, dt), gb = bias ? b.to(g, dt) : Tensor();
          const Tensor got = rms_norm_linear_swiglu(gx, gnw, 1e-5f, gw, gb);
          ASSERT_EQ(got.shape(), (Shape{1, m, f})) << at;
          const Tensor want_gpu = swiglu_fused(rms_norm_linear(gx, gnw, 1e-5f, gw, gb));
          EXPECT_EQ(max_abs_diff(got, want_gpu), 0.0) << at << " against the unfused kernels";
          EXPECT_LT(worst_elem_err(got, swiglu_rounded_like_gpu(x, nw, w, bias ? b : Tensor(), dt)), tol) << at << " against the CPU";
        }
}

// The m = 1 products with a staged input (the norm before q/k/v and gate/up) take their task groups
// after the first from a per-launch queue (a per-stream ring of 64, put back to zero by each
// launch's last block): 150 launches in a row of shapes with ~3 and ~5 groups per block, each equal
// to the first bit for bit (a queue left non-zero would skip groups: their rows would differ or be
// NaN, which compares unequal here).
TEST(LinearCudaQueue, RepeatedStagedProductsAreIdentical) {
  MMATTN_REQUIRE_GPU();
  const DType dt = DType::BF16;
  const SkinnyGemmModeGuard mode(0);
  const Device g = Device::cuda();
  const int64_t k = 4096, f = 11008, n = 12288;
  const Tensor x = rand_tensor({1, 1, k}, 1).to(g, dt), nw = rand_tensor({k}, 2, 0.5f, 1.5f).to(g, dt);
  const Tensor wgu = rand_tensor({2 * f, k}, 3, -0.05f, 0.05f).to(g, dt);
  const Tensor wqkv = rand_tensor({n, k}, 4, -0.05f, 0.05f).to(g, dt);
  auto differing = [](const Tensor& a, const Tensor& b) {
    const auto u = a.to_floats(), v = b.to_floats();
    int64_t d = 0;
    for (size_t i = 0; i < u.size(); ++i) d += !(u[i] == v[i]);
    return d + int64_t(u.size() != v.size());
  };
  const Tensor gu0 = rms_norm_linear_swiglu(x, nw, 1e-5f, wgu), qkv0 = rms_norm_linear(x, nw, 1e-5f, wqkv);
  ASSERT_EQ(differing(gu0, gu0), 0) << "NaN in the first gate/up result";
  ASSERT_EQ(differing(qkv0, qkv0), 0) << "NaN in the first q/k/v result";
  for (int i = 0; i < 150; ++i) {
    ASSERT_EQ(differing(rms_norm_linear_swiglu(x, nw, 1e-5f, wgu), gu0), 0) << "gate/up launch " << i;
    ASSERT_EQ(differing(rms_norm_linear(x, nw, 1e-5f, wqkv), qkv0), 0) << "q/k/v launch " << i;
  }
}
