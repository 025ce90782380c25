// vector_norm on the GPU against the CPU reference: awkward row lengths, every float dtype.
#include "core/ops/reduce.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

TEST(VectorNormCuda, MatchesCpu) {
  MMATTN_REQUIRE_GPU();
  uint64_t seed = 3;
  for (DType dt : {DType::F32, DType::F16, DType::BF16})
    for (int64_t cols : {1, 31, 255, 257, 4096, 5001})
      for (int p : {1, 2}) {
        Tensor x = round_to(rand_tensor({7, cols}, seed++, -3.f, 3.f), dt);
        const Tensor ref = vector_norm(x, p);
        const Tensor got = vector_norm(x.to(Device::cuda(), dt), p);
        EXPECT_LT(rel_err(got.to(Device::cpu()), ref), 1e-5) << dtype_name(dt) << " cols " << cols << " p " << p;
      }
}
