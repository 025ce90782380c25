// CUDA RoPE against the CPU reference (tol_for(dt)) and, for f16/bf16, against a CPU emulation of
// the reference implementations' rounding (transformers for HalfSplit, diffusers for Interleaved),
// which the kernel must reproduce exactly.
#include "core/ops/rope.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

namespace {

float round_dt(float v, DType dt) {
  switch (dt) {
    case DType::F16: return f16_to_f32(f32_to_f16(v));
    case DType::BF16: return bf16_to_f32(f32_to_bf16(v));
    default: return v;
  }
}

// x f32 CPU holding dt-representable values; returns the emulated reference output (f32 values).
std::vector<float> emulate(const Tensor& x, const RopeTable& tab, RopeStyle style, DType dt) {
  const auto xv = x.to_floats(), c = tab.cos.to_floats(), s = tab.sin.to_floats();
  const int64_t t = x.size(1), h = x.size(2), d = x.size(3), half = d / 2;
  std::vector<float> y(xv.size());
  for (size_t row = 0; row < xv.size() / size_t(d); ++row) {
    const int64_t ti = int64_t(row / size_t(h)) % t;
    const size_t base = row * size_t(d);
    for (int64_t i = 0; i < half; ++i) {
      const size_t i0 = base + size_t(style == RopeStyle::HalfSplit ? i : 2 * i);
      const size_t i1 = base + size_t(style == RopeStyle::HalfSplit ? i + half : 2 * i + 1);
      float cc = c[size_t(ti * half + i)], ss = s[size_t(ti * half + i)];
      const float x0 = xv[i0], x1 = xv[i1];
      if (style == RopeStyle::HalfSplit) {
        cc = round_dt(cc, dt);
        ss = round_dt(ss, dt);
        y[i0] = round_dt(round_dt(x0 * cc, dt) + round_dt(-x1 * ss, dt), dt);
        y[i1] = round_dt(round_dt(x1 * cc, dt) + round_dt(x0 * ss, dt), dt);
      } else {
        const float a = x0 * cc, b = -x1 * ss, e = x1 * cc, f = x0 * ss;
        y[i0] = round_dt(a + b, dt);
        y[i1] = round_dt(e + f, dt);
      }
    }
  }
  return y;
}

}  // namespace

class RopeCuda : public ::testing::TestWithParam<DType> {};

TEST_P(RopeCuda, MatchesCpuAndReferenceRounding) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  uint64_t seed = 1;
  for (int64_t t : {1, 3, 17, 1000})
    for (int64_t d : {64, 128}) {
      std::vector<int64_t> pos(static_cast<size_t>(t));
      for (int64_t i = 0; i < t; ++i) pos[size_t(i)] = 3 * i + 1;
      RopeTable tab = rope_table_llama(pos, d, 10000.0);
      Tensor x = round_to(rand_tensor({2, t, 3, d}, seed++, -3.f, 3.f), dt);
      Tensor gx = x.to(Device::cuda(), dt);
      for (RopeStyle st : {RopeStyle::HalfSplit, RopeStyle::Interleaved}) {
        Tensor y = apply_rope(gx, tab, st);
        EXPECT_EQ(y.dtype(), dt);
        EXPECT_LT(rel_err(y, apply_rope(x, tab, st)), tol_for(dt)) << "t=" << t << " d=" << d;
        const auto got = y.to_floats();
        const auto want = emulate(x, tab, st, dt);
        size_t mismatches = 0;
        for (size_t i = 0; i < got.size(); ++i) mismatches += got[i] != want[i];
        EXPECT_EQ(mismatches, 0u) << "t=" << t << " d=" << d << " style=" << rope_style_name(st);
      }
    }
}

TEST_P(RopeCuda, InPlaceStridedAndAxesTable) {
  MMATTN_REQUIRE_GPU();
  const DType dt = GetParam();
  // FLUX-like: 3 axes, ids (0, row, col), Interleaved, q slice of a fused [B, T, 3, H, D]
  const int64_t t = 17 * 3;
  std::vector<float> idv;
  for (int64_t i = 0; i < t; ++i) {
    idv.push_back(0.f);
    idv.push_back(float(i / 3));
    idv.push_back(float(i % 3));
  }
  RopeTable tab = rope_table_axes(Tensor::from_floats(idv, {t, 3}), {16, 56, 56}, 10000.0);
  Tensor qkv = round_to(rand_tensor({1, t, 3, 2, 128}, 7), dt);
  Tensor gqkv = qkv.to(Device::cuda(), dt);
  Tensor gq = gqkv.select(2, 0);
  apply_rope_(gq, tab, RopeStyle::Interleaved);
  EXPECT_LT(rel_err(gqkv.select(2, 0), apply_rope(qkv.select(2, 0), tab, RopeStyle::Interleaved)), tol_for(dt));
  EXPECT_EQ(gqkv.select(2, 1).to_floats(), qkv.select(2, 1).to_floats());  // k untouched
  // the table's device copy is cached: a second use sees the same buffers
  auto [c1, s1] = tab.on(Device::cuda());
  auto [c2, s2] = tab.on(Device::cuda());
  EXPECT_EQ(c1.data_ptr(), c2.data_ptr());
  EXPECT_EQ(s1.data_ptr(), s2.data_ptr());
}

INSTANTIATE_TEST_SUITE_P(AllDtypes, RopeCuda, ::testing::Values(DType::F32, DType::F16, DType::BF16),
                         [](const auto& i) { return std::string(dtype_name(i.param)); });
