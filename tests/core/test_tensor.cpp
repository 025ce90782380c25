// Tensor views, copies, dtype conversion, arena, progress/log helpers (CPU).
#include "core/arena.h"
#include "core/progress.h"
#include "core/log.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

TEST(Tensor, ViewsShareStorageAndIndexCorrectly) {
  std::vector<float> v(24);
  for (int i = 0; i < 24; ++i) v[i] = float(i);
  Tensor t = Tensor::from_floats(v, {2, 3, 4});
  EXPECT_TRUE(t.is_contiguous());
  Tensor p = t.permute({2, 0, 1});  // [4, 2, 3]
  EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
  EXPECT_FALSE(p.is_contiguous());
  auto pc = p.contiguous().to_floats();
  // p[k][i][j] = t[i][j][k] = 12 i + 4 j + k
  EXPECT_EQ(pc[1 * 6 + 1 * 3 + 2], 12 + 8 + 1);
  Tensor s = t.slice(2, 1, 4, 2);  // k in {1, 3}
  EXPECT_EQ(s.shape(), (Shape{2, 3, 2}));
  EXPECT_EQ(s.to_floats()[3], 4 + 3);
  EXPECT_EQ(t.select(1, 2).to_floats()[0], 8);
  EXPECT_EQ(t.view({6, -1}).shape(), (Shape{6, 4}));
  EXPECT_EQ(t.unsqueeze(0).squeeze(0).shape(), t.shape());
  EXPECT_EQ(t.transpose(0, 2).reshape({-1}).numel(), 24);
  EXPECT_THROW(p.view({24}), ShapeError);
  EXPECT_THROW(t.view({5, -1}), ShapeError);
  EXPECT_THROW(t.slice(0, 3, 1), ShapeError);
  EXPECT_THROW(t.select(1, 3), ShapeError);
  EXPECT_THROW(t.permute({0, 0, 1}), ShapeError);
}

TEST(Tensor, DtypeConversionRoundTrips) {
  Tensor f = Tensor::from_floats({1.f, -2.5f, 65504.f, 1e-8f, 3.14159f, 255.f}, {6});
  for (DType dt : {DType::F16, DType::BF16, DType::F32}) {
    auto back = f.to(dt).to(DType::F32).to_floats();
    EXPECT_NEAR(back[0], 1.f, 0);
    EXPECT_NEAR(back[1], -2.5f, 0);
    EXPECT_NEAR(back[4], 3.14159f, dt == DType::F32 ? 0 : 2e-2);
  }
  EXPECT_EQ(f.to(DType::F16).to_floats()[2], 65504.f);
  EXPECT_EQ(f.to(DType::I32).to_floats()[5], 255.f);
  EXPECT_EQ(f.to(DType::U8).to_floats()[1], 0.f);  // saturates
  EXPECT_EQ(f.to(DType::I64).to_floats()[1], -2.f);
  // f16 subnormals and bf16 rounding to nearest even
  EXPECT_EQ(f16_to_f32(f32_to_f16(5.960464477539063e-08f)), 5.960464477539063e-08f);
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3f80);  // tie -> even
  EXPECT_EQ(f32_to_bf16(1.01171875f), 0x3f82);  // tie -> even (up)
  EXPECT_TRUE(std::isinf(f16_to_f32(f32_to_f16(70000.f))));
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

TEST(Tensor, CopyFromStridedAndFill) {
  Tensor a = rand_tensor({3, 5}, 1);
  Tensor b = Tensor::zeros({5, 3}, DType::BF16);
  b.copy_from(a.transpose(0, 1));
  EXPECT_LT(rel_err(b, a.transpose(0, 1)), 5e-3);
  Tensor c = Tensor::full({2, 2}, 7.f, DType::I64);
  EXPECT_EQ(c.to_floats(), (std::vector<float>{7, 7, 7, 7}));
  EXPECT_THROW(b.copy_from(a), ShapeError);
  EXPECT_THROW(Tensor().data_ptr(), ShapeError);
  EXPECT_THROW(a.data<int32_t>(), ShapeError);
}

TEST(Tensor, EmptyTensorsAreFine) {
  Tensor z = Tensor::zeros({2, 0, 3}, DType::F32);  // once recursed forever in fill_
  EXPECT_EQ(z.numel(), 0);
  EXPECT_TRUE(z.is_contiguous());
  EXPECT_EQ(z.clone().shape(), (Shape{2, 0, 3}));
  EXPECT_TRUE(z.to_floats().empty());
}

TEST(Tensor, CudaWithoutDeviceIsAClearError) {
  if (cuda_available()) GTEST_SKIP() << "has a device";
  try {
    Tensor::empty({2}, DType::F32, Device::cuda());
    FAIL();
  } catch (const CudaError& e) {
    EXPECT_NE(std::string(e.what()).find("CUDA"), std::string::npos);
  }
}

TEST(Arena, BumpAllocatesAlignedAndRefusesResetWhileInUse) {
  Arena arena(4096, Device::cpu());
  {
    Tensor a = arena.alloc({3}, DType::F32);
    Tensor b = arena.alloc({10}, DType::BF16);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data_ptr()) - reinterpret_cast<uintptr_t>(a.data_ptr()), 256u);
    EXPECT_THROW(arena.alloc({4096}, DType::F32), Error);
    EXPECT_THROW(arena.reset(), Error);
  }
  arena.reset();
  EXPECT_EQ(arena.used(), 0u);
  EXPECT_GE(arena.peak(), 256u + 20u);
}

TEST(Progress, RendersRateAndEta) {
  ProgressBar bar(10, "eval", /*quiet=*/true);
  EXPECT_FALSE(bar.enabled());
  bar.update(5);
  const std::string s = bar.render(10);
  EXPECT_NE(s.find(" 50% |#####     | 5/10"), std::string::npos) << s;
  EXPECT_NE(s.find("ETA"), std::string::npos);
  EXPECT_EQ(format_duration(3725), "1:02:05");
  EXPECT_EQ(format_duration(65), "01:05");
}

TEST(Log, ParsesLevels) {
  LogLevel l;
  EXPECT_TRUE(parse_log_level("warn", &l));
  EXPECT_EQ(l, LogLevel::Warn);
  EXPECT_FALSE(parse_log_level("loud", &l));
  EXPECT_EQ(parse_device("cuda:1").index, 1);
  EXPECT_THROW(parse_device("tpu"), ConfigError);
}
