// Device tensors: host<->device copies (and HostReadback), the strided cast kernel, fill, the caching allocator, arena.
#include "core/arena.h"
#include "core/host_readback.h"
#include "core/ops/linear.h"
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

// Small host->device copies are staged in a pinned ring and queued without waiting: behind ~8
// large GEMMs (so that the device is far behind the host and the ring's regions are still being
// read when the host comes round to them), uploads of awkward sizes up to the 1 MiB staging limit,
// from one host buffer that is overwritten after every call, cycle the 8 MiB ring about four
// times; every device tensor must hold exactly what its call saw. Then one copy past the limit
// (the blocking path).
TEST(TensorCuda, StagedUploadsKeepTheirBytes) {
  MMATTN_REQUIRE_GPU();
  const Tensor a = Tensor::full({4096, 4096}, 0.5f, DType::F32, Device::cuda());
  std::vector<Tensor> slow;
  for (int i = 0; i < 8; ++i) slow.push_back(matmul(a, a));  // queued first
  std::vector<int32_t> host;
  std::vector<Tensor> dev;
  std::vector<std::pair<int64_t, int32_t>> want;  // (size, seed)
  const int64_t sizes[] = {1, 3, 17, 1000, 65537, 262143, 262144, 100003};  // int32 elements, <= 1 MiB
  int32_t seed = 1;
  for (int round = 0; round < 12; ++round)
    for (int64_t n : sizes) {
      host.assign(size_t(n), 0);
      for (int64_t i = 0; i < n; ++i) host[size_t(i)] = seed * 7919 + int32_t(i);
      dev.push_back(Tensor::from_vector<int32_t>(host, {n}).to(Device::cuda()));
      want.emplace_back(n, seed);
      std::fill(host.begin(), host.end(), -1);  // the caller's buffer is free once the call returns
      ++seed;
    }
  host.assign(262145, 0);  // 1 MiB + 4 bytes: the blocking copy
  for (int64_t i = 0; i < 262145; ++i) host[size_t(i)] = seed * 7919 + int32_t(i);
  dev.push_back(Tensor::from_vector<int32_t>(host, {262145}).to(Device::cuda()));
  want.emplace_back(262145, seed);
  for (size_t t = 0; t < dev.size(); ++t) {
    const auto [n, sd] = want[t];
    const Tensor h = dev[t].to(Device::cpu());
    const int32_t* p = h.data<int32_t>();
    int64_t bad = 0;
    for (int64_t i = 0; i < n; ++i) bad += p[i] != sd * 7919 + int32_t(i);
    ASSERT_EQ(bad, 0) << "upload " << t << " of " << n << " elements";
  }
  EXPECT_EQ(slow.back().to_floats()[12345], 1024.f);
}

TEST(TensorCuda, HostReadbackSeesTheBytesOfItsPlaceInTheStream) {
  MMATTN_REQUIRE_GPU();
  const Tensor a = Tensor::full({2048, 2048}, 0.5f, DType::F32, Device::cuda());
  Tensor v = Tensor::full({2}, 1.f, DType::F32, Device::cuda());
  HostReadback r(2 * sizeof(float));
  for (int round = 0; round < 3; ++round) {
    Tensor slow = matmul(a, a);  // queued before the copy: the copy waits for it
    v.fill_(float(round + 2));
    r.enqueue(v.data_ptr(), 2 * sizeof(float));
    v.fill_(-1.f);             // queued after the copy: not seen by it
    slow = matmul(slow, a);    // the host returns from enqueue without waiting for any of this
    const float* got = static_cast<const float*>(r.wait());
    EXPECT_EQ(got[0], float(round + 2));
    EXPECT_EQ(got[1], float(round + 2));
  }
  EXPECT_THROW(r.wait(), Error);                          // nothing queued
  EXPECT_THROW(r.enqueue(v.data_ptr(), 12), ShapeError);  // larger than the buffer
  r.enqueue(v.data_ptr(), 4);
  EXPECT_THROW(r.enqueue(v.data_ptr(), 4), Error);  // the previous copy not waited for
  EXPECT_EQ(*static_cast<const float*>(r.wait()), -1.f);
}
