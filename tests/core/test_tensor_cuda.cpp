// Device tensors: host<->device copies, the strided cast kernel, fill, the caching allocator, arena.
#include "core/arena.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

TEST(TensorCuda, StridedCastCopyMatchesCpu) {
  MMATTN_REQUIRE_GPU();
  uint64_t seed = 7;
  for (Shape shape : {Shape{1}, Shape{3, 17}, Shape{5, 7, 9, 2}, Shape{1000, 33}}) {
    Tensor a = rand_tensor(shape, seed++, -100.f, 100.f);
    for (DType src : {DType::F32, DType::F16, DType::BF16, DType::I32})
      for (DType dst : {DType::F32, DType::F16, DType::BF16, DType::I64, DType::U8}) {
        Tensor cpu = a.to(src);
        Tensor g = cpu.to(Device::cuda());
        Tensor gt = g.dim() > 1 ? g.transpose(0, -1) : g;
        Tensor ct = cpu.dim() > 1 ? cpu.transpose(0, -1) : cpu;
        Tensor got = gt.to(dst).contiguous();
        EXPECT_TRUE(got.is_cuda());
        EXPECT_EQ(max_abs_diff(got, ct.to(dst)), 0.0) << dtype_name(src) << "->" << dtype_name(dst);
      }
  }
}

TEST(TensorCuda, FillAndAllocatorReuse) {
  MMATTN_REQUIRE_GPU();
  for (DType dt : {DType::F32, DType::F16, DType::BF16, DType::I32, DType::I64, DType::U8}) {
    Tensor t = Tensor::full({1001}, 3.f, dt, Device::cuda());
    for (float v : t.to_floats()) ASSERT_EQ(v, 3.f);
  }
  synchronize();
  const auto before = cuda_allocator_stats();
  { Tensor t = Tensor::empty({1 << 20}, DType::F32, Device::cuda()); }
  { Tensor t = Tensor::empty({1 << 20}, DType::F32, Device::cuda()); }  // reuses the cached block
  const auto after = cuda_allocator_stats();
  EXPECT_LE(after.num_cuda_mallocs, before.num_cuda_mallocs + 1);
  EXPECT_GE(after.peak_allocated_bytes, size_t(4) << 20);
  cuda_empty_cache();
}

TEST(TensorCuda, ArenaOnDevice) {
  MMATTN_REQUIRE_GPU();
  Arena arena(1 << 20, Device::cuda());
  Tensor a = arena.alloc({17, 3}, DType::BF16);
  a.fill_(1.5f);
  EXPECT_EQ(a.to_floats()[50], 1.5f);
}
