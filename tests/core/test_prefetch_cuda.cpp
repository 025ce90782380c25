// prefetch_l2 on the GPU: a hint that never changes values, on awkward sizes and offsets, and it keeps
// the stream's order for programmatic launches: a product (which lets its successor launch at
// entry), then the prefetch, then a row norm of the product's output (a programmatic dependent of
// the prefetch) must see the finished product.
#include "core/ops/linear.h"
#include "core/ops/norm.h"
#include "core/ops/prefetch.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

TEST(PrefetchCuda, HintOnlyAndOrdered) {
  MMATTN_REQUIRE_GPU();
  const Tensor big = Tensor::full({10 << 20}, 1.f, DType::F32, Device::cuda());  // 40 MB
  for (int64_t n : {int64_t(1), int64_t(17), int64_t(4099), int64_t(10 << 20)}) {
    prefetch_l2(big.slice(0, 0, n));
    prefetch_l2(big.slice(0, 3, 3 + n / 2));     // an odd offset
    prefetch_l2(big.slice(0, 0, n), 100);       // the first 100 bytes
    prefetch_l2(big.slice(0, 0, n), int64_t(1) << 40);
  }
  prefetch_l2(big.view({-1, 2}).slice(1, 0, 1));  // strided: nothing
  prefetch_l2(Tensor::zeros({0}, DType::F32, Device::cuda()));
  prefetch_l2(Tensor::zeros({5}, DType::F32));  // CPU: nothing
  EXPECT_EQ(big.to_floats()[(10 << 20) - 1], 1.f);

  const Tensor w = rand_tensor({4096, 4096}, 5, -0.05f, 0.05f).to(Device::cuda(), DType::BF16);
  const Tensor nw = rand_tensor({4096}, 6, 0.5f, 1.5f).to(Device::cuda(), DType::BF16);
  for (int round = 0; round < 4; ++round) {
    const Tensor x = rand_tensor({1, 4096}, 10 + uint64_t(round)).to(Device::cuda(), DType::BF16);
    const Tensor y = linear(x, w);
    prefetch_l2(big);
    const Tensor got = rms_norm(y, nw, 1e-5f);
    const Tensor want = rms_norm(y.to(Device::cpu(), DType::F32), nw.to(Device::cpu(), DType::F32), 1e-5f);
    EXPECT_LT(rel_err(got.to(Device::cpu(), DType::F32), want), 1e-2) << "round " << round;  // a stale y: O(1)
  }
}
