// RoPE tables and the CPU apply against values worked out by hand / re-derived in double here.
#include <cmath>
#include <numbers>

#include "core/ops/rope.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

namespace {

std::vector<int64_t> iota_positions(int64_t t, int64_t start = 0) {
  std::vector<int64_t> p(static_cast<size_t>(t));
  for (int64_t i = 0; i < t; ++i) p[size_t(i)] = start + i;
  return p;
}

// Independent rotation in double from the table's cos/sin.
std::vector<double> naive_rope(const Tensor& x, const RopeTable& tab, RopeStyle style) {
  const auto xv = x.to_floats(), c = tab.cos.to_floats(), s = tab.sin.to_floats();
  const int64_t b = x.size(0), t = x.size(1), h = x.size(2), d = x.size(3), half = d / 2;
  std::vector<double> y(xv.size());
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t ti = 0; ti < t; ++ti)
      for (int64_t hi = 0; hi < h; ++hi) {
        const size_t base = size_t(((bi * t + ti) * h + hi) * d);
        for (int64_t i = 0; i < half; ++i) {
          const size_t i0 = base + size_t(style == RopeStyle::HalfSplit ? i : 2 * i);
          const size_t i1 = base + size_t(style == RopeStyle::HalfSplit ? i + half : 2 * i + 1);
          const double cc = c[size_t(ti * half + i)], ss = s[size_t(ti * half + i)];
          y[i0] = xv[i0] * cc - xv[i1] * ss;
          y[i1] = xv[i1] * cc + xv[i0] * ss;
        }
      }
  return y;
}

double max_diff(const Tensor& got, const std::vector<double>& want) {
  const auto g = got.to_floats();
  double m = 0;
  for (size_t i = 0; i < g.size(); ++i) m = std::max(m, std::fabs(g[i] - want[i]));
  return m;
}

void expect_shape_error(const std::function<void()>& f, const std::vector<std::string>& needles) {
  try {
    f();
    ADD_FAILURE() << "no ShapeError";
  } catch (const ShapeError& e) {
    for (const auto& s : needles) EXPECT_NE(std::string(e.what()).find(s), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(Rope, PositionZeroIsIdentity) {
  Tensor x = rand_tensor({2, 1, 3, 8}, 1);
  RopeTable tab = rope_table_llama({0}, 8, 10000.0);
  for (RopeStyle st : {RopeStyle::HalfSplit, RopeStyle::Interleaved})
    EXPECT_EQ(apply_rope(x, tab, st).to_floats(), x.to_floats());
  Tensor ids = Tensor::zeros({1, 3}, DType::I64);
  RopeTable ftab = rope_table_axes(ids, {2, 2, 4}, 10000.0);
  EXPECT_EQ(apply_rope(x, ftab, RopeStyle::Interleaved).to_floats(), x.to_floats());
}

TEST(Rope, HandComputedFourDims) {
  // head_dim 4, theta 100: inv_freq = [1, 100^(-1/2) = 0.1]; position 2 -> angles [2, 0.2]
  RopeTable tab = rope_table_llama({2}, 4, 100.0);
  ASSERT_EQ(tab.inv_freq.size(), 2u);
  EXPECT_FLOAT_EQ(float(tab.inv_freq[0]), 1.f);
  EXPECT_FLOAT_EQ(float(tab.inv_freq[1]), 0.1f);
  Tensor x = Tensor::from_floats({1, 2, 3, 4}, {1, 1, 1, 4});
  const double c0 = std::cos(2.0), s0 = std::sin(2.0), c1 = std::cos(0.2), s1 = std::sin(0.2);
  // HalfSplit: pairs (0, 2) with angle 2 and (1, 3) with angle 0.2
  auto y = apply_rope(x, tab, RopeStyle::HalfSplit).to_floats();
  EXPECT_NEAR(y[0], 1 * c0 - 3 * s0, 1e-6);
  EXPECT_NEAR(y[2], 3 * c0 + 1 * s0, 1e-6);
  EXPECT_NEAR(y[1], 2 * c1 - 4 * s1, 1e-6);
  EXPECT_NEAR(y[3], 4 * c1 + 2 * s1, 1e-6);
  // Interleaved: pairs (0, 1) with angle 2 and (2, 3) with angle 0.2
  y = apply_rope(x, tab, RopeStyle::Interleaved).to_floats();
  EXPECT_NEAR(y[0], 1 * c0 - 2 * s0, 1e-6);
  EXPECT_NEAR(y[1], 2 * c0 + 1 * s0, 1e-6);
  EXPECT_NEAR(y[2], 3 * c1 - 4 * s1, 1e-6);
  EXPECT_NEAR(y[3], 4 * c1 + 3 * s1, 1e-6);
}

TEST(Rope, PreservesNormAndMatchesNaive) {
  uint64_t seed = 10;
  for (int64_t t : {1, 3, 17})
    for (int64_t d : {2, 8, 64}) {
      Tensor x = rand_tensor({2, t, 3, d}, seed++);
      RopeTable tab = rope_table_llama(iota_positions(t, 5), d, 10000.0);
      for (RopeStyle st : {RopeStyle::HalfSplit, RopeStyle::Interleaved}) {
        Tensor y = apply_rope(x, tab, st);
        EXPECT_LT(max_diff(y, naive_rope(x, tab, st)), 1e-6);
        const auto xv = x.to_floats(), yv = y.to_floats();
        for (size_t r = 0; r < xv.size(); r += size_t(d)) {
          double nx = 0, ny = 0;
          for (int64_t i = 0; i < d; ++i) {
            nx += double(xv[r + size_t(i)]) * xv[r + size_t(i)];
            ny += double(yv[r + size_t(i)]) * yv[r + size_t(i)];
          }
          EXPECT_NEAR(std::sqrt(ny), std::sqrt(nx), 1e-5 * std::sqrt(nx));
        }
      }
    }
}

TEST(Rope, InPlaceOnStridedView) {
  // q/k/v fused as [B, T, 3, H, D]; rotate the q slice in place
  Tensor qkv = rand_tensor({2, 5, 3, 4, 16}, 3);
  Tensor before = qkv.clone();
  Tensor q = qkv.select(2, 0);  // [2, 5, 4, 16], strided
  RopeTable tab = rope_table_llama(iota_positions(5), 16, 10000.0);
  Tensor want = apply_rope(q.contiguous(), tab, RopeStyle::HalfSplit);
  EXPECT_LT(rel_err(apply_rope(q, tab, RopeStyle::HalfSplit), want), 1e-7);
  apply_rope_(q, tab, RopeStyle::HalfSplit);
  EXPECT_LT(rel_err(qkv.select(2, 0), want), 1e-7);
  EXPECT_EQ(qkv.select(2, 1).contiguous().to_floats(), before.select(2, 1).contiguous().to_floats());  // k untouched
  EXPECT_EQ(qkv.select(2, 2).contiguous().to_floats(), before.select(2, 2).contiguous().to_floats());
}

TEST(Rope, LlamaTableDefault) {
  RopeTable tab = rope_table_llama({0, 1, 7, 1000}, 128, 10000.0);
  EXPECT_EQ(tab.cos.shape(), (Shape{4, 64}));
  EXPECT_EQ(tab.head_dim, 128);
  const auto c = tab.cos.to_floats(), s = tab.sin.to_floats();
  for (int64_t i = 0; i < 64; ++i) {
    const double inv = std::pow(10000.0, -double(2 * i) / 128.0);
    EXPECT_NEAR(tab.inv_freq[size_t(i)], inv, 2e-7 * inv);
    EXPECT_FLOAT_EQ(c[size_t(i)], 1.f);
    EXPECT_FLOAT_EQ(s[size_t(i)], 0.f);
    // position 7: the f32 angle differs from the exact one by a few ulp of 7*inv
    EXPECT_NEAR(c[size_t(2 * 64 + i)], std::cos(7 * inv), 2e-6);
    EXPECT_NEAR(s[size_t(2 * 64 + i)], std::sin(7 * inv), 2e-6);
    EXPECT_NEAR(c[size_t(3 * 64 + i)], std::cos(1000 * inv), 1e-4);
  }
  // the tensor overload gives the same table
  RopeTable t2 = rope_table_llama(Tensor::from_vector<int32_t>({0, 1, 7, 1000}, {4}), 128, 10000.0);
  EXPECT_EQ(t2.cos.to_floats(), c);
}

// Tables read their rows from a per-thread memo of positions (-32768, 32768): every row must equal the
// direct computation (f32 angle, cos / sin in double, rounded to f32) bit for bit, whatever the
// order of the requests: repeats, descending and negative positions (PDrop's position deltas),
// positions past the memo, a second inverse-frequency vector, and rows filled by an earlier table.
TEST(Rope, LlamaTableRowsAreExactInAnyOrder) {
  auto expect_direct = [](const std::vector<int64_t>& pos, double theta) {
    const RopeTable t = rope_table_llama(pos, 64, theta);
    const std::vector<float> c = t.cos.to_floats(), s = t.sin.to_floats();
    for (size_t r = 0; r < pos.size(); ++r)
      for (size_t i = 0; i < 32; ++i) {
        const float ang = float(pos[r]) * t.inv_freq[i];
        ASSERT_EQ(c[r * 32 + i], float(std::cos(double(ang)))) << "position " << pos[r] << " col " << i;
        ASSERT_EQ(s[r * 32 + i], float(std::sin(double(ang)))) << "position " << pos[r] << " col " << i;
      }
  };
  expect_direct({5, 3, 3, 0}, 10000.0);                 // fills rows 0..5
  expect_direct({0, 1, 2, 3, 4, 5, 6, 700}, 10000.0);   // reads them, extends to 700
  expect_direct({-3, -1, 0, 40000, 32767, 32768, -40000}, 10000.0);  // negative and past the memo
  expect_direct({-1, -7, -2}, 10000.0);                 // negative rows again, extended
  expect_direct({9, 2, 700}, 500000.0);                 // another inv_freq vector
  expect_direct({699, 5}, 10000.0);                     // the first vector's rows again
  // dynamic scaling (inv_freq follows the sequence length): computed directly, same values
  RopeScaling dyn;
  dyn.type = RopeScalingType::Dynamic;
  dyn.factor = 2.0;
  dyn.original_max_position_embeddings = 16;
  for (const std::vector<int64_t>& pos : {std::vector<int64_t>{0, 3, 40}, std::vector<int64_t>{41}}) {
    const RopeTable t = rope_table_llama(pos, 64, 10000.0, dyn);
    const std::vector<float> c = t.cos.to_floats();
    for (size_t r = 0; r < pos.size(); ++r)
      for (size_t i = 0; i < 32; ++i) {
        const float ang = float(pos[r]) * t.inv_freq[i];
        ASSERT_EQ(c[r * 32 + i], float(std::cos(double(ang)))) << pos[r];
      }
  }
}

TEST(Rope, Llama3ScalingValues) {
  // Llama 3.1: theta 500000, factor 8, low 1, high 4, original 8192 -> wavelength bands
  // < 2048: unchanged; > 8192: divided by 8; in between: smooth = (8192 / wavelen - 1) / 3,
  // inv' = (1 - smooth) * inv / 8 + smooth * inv.
  RopeScaling sc;
  sc.type = RopeScalingType::Llama3;
  sc.factor = 8;
  sc.low_freq_factor = 1;
  sc.high_freq_factor = 4;
  sc.original_max_position_embeddings = 8192;
  RopeTable tab = rope_table_llama({0, 3}, 128, 500000.0, sc);
  int seen[3] = {0, 0, 0};
  for (int64_t i = 0; i < 64; ++i) {
    const double inv = std::pow(500000.0, -double(2 * i) / 128.0);
    const double wavelen = 2 * std::numbers::pi / inv;
    double want;
    if (wavelen < 2048) {
      want = inv;
      seen[0]++;
    } else if (wavelen > 8192) {
      want = inv / 8;
      seen[2]++;
    } else {
      const double smooth = (8192 / wavelen - 1) / 3;
      want = (1 - smooth) * inv / 8 + smooth * inv;
      seen[1]++;
    }
    EXPECT_NEAR(tab.inv_freq[size_t(i)], want, 1e-5 * want) << "i=" << i << " wavelen=" << wavelen;
    EXPECT_NEAR(tab.cos.to_floats()[size_t(64 + i)], std::cos(3 * want), 1e-6);
  }
  EXPECT_GT(seen[0], 0);
  EXPECT_GT(seen[1], 0);
  EXPECT_GT(seen[2], 0);
  // known endpoints: i = 0 keeps 1; the lowest frequency is divided by 8
  EXPECT_FLOAT_EQ(float(tab.inv_freq[0]), 1.f);
  EXPECT_NEAR(tab.inv_freq[63], std::pow(500000.0, -126.0 / 128.0) / 8, 1e-6 * tab.inv_freq[63]);
}

TEST(Rope, LinearAndDynamicScaling) {
  RopeScaling lin;
  lin.type = RopeScalingType::Linear;
  lin.factor = 4;
  RopeTable a = rope_table_llama({8}, 16, 10000.0, lin);
  RopeTable b = rope_table_llama({2}, 16, 10000.0);  // position / factor
  EXPECT_LT(max_abs_diff(a.cos, b.cos), 1e-6);
  EXPECT_LT(max_abs_diff(a.sin, b.sin), 1e-6);
  RopeScaling dyn;
  dyn.type = RopeScalingType::Dynamic;
  dyn.factor = 2;
  dyn.original_max_position_embeddings = 16;
  // within the original length: the default table
  EXPECT_EQ(rope_table_llama(iota_positions(16), 8, 10000.0, dyn).cos.to_floats(),
            rope_table_llama(iota_positions(16), 8, 10000.0).cos.to_floats());
  // beyond: base = theta * (2 * 32 / 16 - 1)^(8 / 6)
  RopeTable d = rope_table_llama(iota_positions(32), 8, 10000.0, dyn);
  const double base = 10000.0 * std::pow(3.0, 8.0 / 6.0);
  for (int64_t i = 0; i < 4; ++i) {
    const double want = std::pow(base, -double(2 * i) / 8.0);
    EXPECT_NEAR(d.inv_freq[size_t(i)], want, 1e-5 * want);
  }
}

TEST(Rope, AxesTableAsFlux) {
  // FLUX: axes_dim (16, 56, 56), theta 10000; ids [T, 3] = (0, row, col)
  Tensor ids = Tensor::from_floats({0, 0, 0, 0, 3, 5, 0, 63, 17}, {3, 3});
  RopeTable tab = rope_table_axes(ids, {16, 56, 56}, 10000.0);
  EXPECT_EQ(tab.head_dim, 128);
  EXPECT_EQ(tab.cos.shape(), (Shape{3, 64}));
  const auto c = tab.cos.to_floats(), s = tab.sin.to_floats();
  const double pos[3][3] = {{0, 0, 0}, {0, 3, 5}, {0, 63, 17}};
  const int dims[3] = {16, 56, 56};
  for (int t = 0; t < 3; ++t) {
    int col = 0;
    for (int a = 0; a < 3; ++a)
      for (int j = 0; j < dims[a] / 2; ++j, ++col) {
        const double ang = pos[t][a] * (1.0 / std::pow(10000.0, double(2 * j) / dims[a]));
        EXPECT_EQ(c[size_t(t * 64 + col)], float(std::cos(ang))) << t << " " << a << " " << j;
        EXPECT_EQ(s[size_t(t * 64 + col)], float(std::sin(ang))) << t << " " << a << " " << j;
      }
  }
  // integer ids give the same table
  Tensor iids = Tensor::from_vector<int64_t>({0, 0, 0, 0, 3, 5, 0, 63, 17}, {3, 3});
  EXPECT_EQ(rope_table_axes(iids, {16, 56, 56}, 10000.0).cos.to_floats(), c);
}

TEST(Rope, Names) {
  RopeScalingType t;
  EXPECT_TRUE(parse_rope_scaling_type("llama3", &t));
  EXPECT_EQ(t, RopeScalingType::Llama3);
  EXPECT_TRUE(parse_rope_scaling_type("default", &t));
  EXPECT_EQ(t, RopeScalingType::None);
  EXPECT_FALSE(parse_rope_scaling_type("yarn", &t));
  EXPECT_EQ(rope_scaling_type_name(RopeScalingType::Dynamic), "dynamic");
  RopeStyle st;
  EXPECT_TRUE(parse_rope_style("interleaved", &st));
  EXPECT_EQ(st, RopeStyle::Interleaved);
  EXPECT_EQ(rope_style_name(RopeStyle::HalfSplit), "half_split");
}

TEST(Rope, BadInputNamesTheArgument) {
  RopeTable tab = rope_table_llama(iota_positions(4), 8, 10000.0);
  expect_shape_error([&] { apply_rope(rand_tensor({1, 5, 2, 8}, 1), tab, RopeStyle::HalfSplit); },
                     {"'table'", "'x'", "[1, 5, 2, 8]", "T = 5"});
  expect_shape_error([&] { apply_rope(rand_tensor({1, 4, 2, 16}, 1), tab, RopeStyle::HalfSplit); },
                     {"'table'", "head_dim 8", "D = 16"});
  expect_shape_error([&] { apply_rope(rand_tensor({4, 2, 8}, 1), tab, RopeStyle::HalfSplit); }, {"'x'"});
  expect_shape_error([&] { apply_rope(rand_tensor({1, 4, 2, 8}, 1).to(DType::BF16), tab, RopeStyle::HalfSplit); },
                     {"'x'", "F32"});
  expect_shape_error([&] { apply_rope(rand_tensor({1, 4, 2, 8}, 1), RopeTable(), RopeStyle::HalfSplit); },
                     {"'table'"});
  expect_shape_error([&] { rope_table_llama({0}, 7, 10000.0); }, {"head_dim"});
  expect_shape_error([&] { rope_table_axes(Tensor::zeros({3, 2}, DType::F32), {16, 56, 56}, 10000.0); },
                     {"'ids'", "'axes_dim'"});
  expect_shape_error([&] { rope_table_llama(Tensor::zeros({3}, DType::F32), 8, 10000.0); }, {"'positions'"});
  Tensor xt = rand_tensor({1, 4, 8, 2}, 1).transpose(2, 3);  // last dim strided
  expect_shape_error([&] { apply_rope_(xt, tab, RopeStyle::HalfSplit); }, {"'x'", "stride"});
  // the out-of-place version copies instead
  EXPECT_LT(rel_err(apply_rope(xt, tab, RopeStyle::HalfSplit), apply_rope(xt.contiguous(), tab, RopeStyle::HalfSplit)),
            1e-7);
}
