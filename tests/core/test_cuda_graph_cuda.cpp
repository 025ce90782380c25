// CapturedGraph (core/cuda_graph.h): replays equal the eager ops for new inputs, the outputs are
// rewritten in place, the graph's private pool survives cuda_empty_cache() and other allocations,
// a host<->device copy under capture is refused, and the pool goes back to the driver with the graph.
#include <memory>

#include "core/cuda_graph.h"
#include "core/device.h"
#include "core/ops/elementwise.h"
#include "core/ops/linear.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

namespace {
// A chain with temporaries freed and reused along the way (odd sizes): ((x + y) * x) @ w^T + x * 3.
Tensor chain(const Tensor& x, const Tensor& y, const Tensor& w) {
  Tensor t = mul(add(x, y), x);
  Tensor u = linear(t, w);
  return add(u, scale(x, 3.f));
}
}  // namespace

TEST(CudaGraphCuda, ReplaysMatchEagerForNewInputs) {
  MMATTN_REQUIRE_GPU();
  const Shape shape{37, 72};
  const Tensor w = rand_tensor({72, 72}, 3, -0.2f, 0.2f).to(Device::cuda(), DType::BF16);
  const Tensor y = rand_tensor(shape, 2, -1.f, 1.f).to(Device::cuda(), DType::BF16);
  Tensor in = Tensor::empty(shape, DType::BF16, Device::cuda());
  in.copy_from(rand_tensor(shape, 1, -1.f, 1.f).to(Device::cuda(), DType::BF16));
  CapturedGraph g([&] { return std::vector<Tensor>{chain(in, y, w)}; });
  EXPECT_GE(g.num_nodes(), 4u);
  ASSERT_EQ(g.outputs().size(), 1u);
  const Tensor out = g.outputs()[0];
  for (uint64_t seed : {11, 12, 13}) {
    const Tensor x = rand_tensor(shape, seed, -1.f, 1.f).to(Device::cuda(), DType::BF16);
    in.copy_from(x);
    const Tensor got = g.replay()[0].clone();
    EXPECT_EQ(g.replay()[0].data_ptr(), out.data_ptr()) << "outputs are rewritten in place";
    EXPECT_EQ(max_abs_diff(got, chain(x, y, w)), 0.0) << "seed " << seed;
  }
}

TEST(CudaGraphCuda, PrivatePoolOutlivesEmptyCacheAndOtherAllocations) {
  MMATTN_REQUIRE_GPU();
  const Shape shape{129, 64};
  const Tensor w = rand_tensor({64, 64}, 5, -0.2f, 0.2f).to(Device::cuda(), DType::BF16);
  const Tensor y = rand_tensor(shape, 6, -1.f, 1.f).to(Device::cuda(), DType::BF16);
  const Tensor x = rand_tensor(shape, 7, -1.f, 1.f).to(Device::cuda(), DType::BF16);
  const Tensor want = chain(x, y, w);
  auto g = std::make_unique<CapturedGraph>([&] { return std::vector<Tensor>{chain(x, y, w)}; });
  const size_t reserved_with_graph = cuda_allocator_stats().reserved_bytes;
  cuda_empty_cache();  // must keep the graph's temporaries
  std::vector<Tensor> filler;  // new blocks everywhere the freed cache was, written with garbage
  for (int i = 0; i < 16; ++i) filler.push_back(Tensor::full({int64_t(1) << 14}, -7.f, DType::F32, Device::cuda()));
  for (int rep = 0; rep < 3; ++rep) EXPECT_EQ(max_abs_diff(g->replay()[0], want), 0.0) << "replay " << rep;
  for (const Tensor& f : filler)
    for (float v : f.slice(0, 0, 4).to_floats()) ASSERT_EQ(v, -7.f) << "a replay wrote outside its pool";
  filler.clear();
  cuda_empty_cache();
  const size_t before = cuda_allocator_stats().reserved_bytes;
  g.reset();  // the pool goes back to the driver
  EXPECT_LT(cuda_allocator_stats().reserved_bytes, before);
  EXPECT_LE(cuda_allocator_stats().reserved_bytes, reserved_with_graph);
}

TEST(CudaGraphCuda, HostCopyUnderCaptureIsRefused) {
  MMATTN_REQUIRE_GPU();
  const Tensor x = Tensor::full({17}, 1.f, DType::F32, Device::cuda());
  EXPECT_THROW(CapturedGraph([&] { return std::vector<Tensor>{add(x, Tensor::full({17}, 2.f, DType::F32).to(Device::cuda()))}; }),
               CudaError);
  EXPECT_THROW(CapturedGraph([&] {
                 (void)add(x, x).to_floats();  // a read of a device value on the host
                 return std::vector<Tensor>{};
               }),
               CudaError);
  // the current stream is still usable
  const std::vector<float> v = add(x, x).to_floats();
  EXPECT_EQ(v[16], 2.f);
}

// A replay on a stream that is destroyed afterwards (a worker's stream, a probe's private stream)
// must not leave the next replay waiting on the dead handle: it waits on the graph's own event.
TEST(CudaGraphCuda, ReplayAfterTheLastReplaysStreamIsDestroyed) {
  MMATTN_REQUIRE_GPU();
  const Shape shape{65, 40};
  const Tensor w = rand_tensor({40, 40}, 8, -0.2f, 0.2f).to(Device::cuda(), DType::BF16);
  const Tensor y = rand_tensor(shape, 9, -1.f, 1.f).to(Device::cuda(), DType::BF16);
  Tensor in = Tensor::empty(shape, DType::BF16, Device::cuda());
  in.copy_from(rand_tensor(shape, 10, -1.f, 1.f).to(Device::cuda(), DType::BF16));
  CapturedGraph g([&] { return std::vector<Tensor>{chain(in, y, w)}; });
  const Tensor x1 = rand_tensor(shape, 21, -1.f, 1.f).to(Device::cuda(), DType::BF16);
  const Tensor x2 = rand_tensor(shape, 22, -1.f, 1.f).to(Device::cuda(), DType::BF16);
  const Tensor want1 = chain(x1, y, w);
  synchronize();
  {
    auto other = std::make_unique<Stream>();
    StreamGuard guard(other->get());
    in.copy_from(x1);
    EXPECT_EQ(max_abs_diff(g.replay()[0], want1), 0.0);
    synchronize();
  }  // `other` is destroyed here
  in.copy_from(x2);
  const Tensor second = g.replay()[0].clone();
  EXPECT_EQ(max_abs_diff(second, chain(x2, y, w)), 0.0);
}
