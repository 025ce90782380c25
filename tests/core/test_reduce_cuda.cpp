// vector_norm and argmax on the GPU against the CPU reference: awkward row lengths, every float dtype.
#include <cmath>
#include <limits>

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

TEST(ArgmaxCuda, MatchesCpuWithTiesAndNaN) {
  MMATTN_REQUIRE_GPU();
  uint64_t seed = 11;
  for (DType dt : {DType::F32, DType::F16, DType::BF16})
    for (int64_t cols : {1, 2, 31, 1025, 4097, 32064}) {
      // few distinct values (ties everywhere in f16/bf16), a NaN and a -inf in some rows
      Tensor x = round_to(rand_tensor({5, cols}, seed++, -4.f, 4.f), dt);
      float* v = x.data<float>();
      for (int64_t i = 0; i < x.numel(); ++i) v[i] = std::round(v[i] * 2.f) / 2.f;
      v[cols / 2] = std::numeric_limits<float>::quiet_NaN();
      v[cols + (cols - 1)] = -std::numeric_limits<float>::infinity();
      if (cols > 1) v[2 * cols] = v[2 * cols + cols - 1] = 100.f;  // a tie of the largest: the first wins
      const Tensor xd = x.to(Device::cuda(), dt);
      const Tensor ref = argmax(xd.to(Device::cpu()));
      const Tensor got = argmax(xd).to(Device::cpu());
      for (int64_t r = 0; r < 5; ++r)
        EXPECT_EQ(got.data<int64_t>()[r], ref.data<int64_t>()[r]) << dtype_name(dt) << " cols " << cols << " row " << r;
    }
  EXPECT_EQ(argmax(Tensor::from_vector<float>({std::numeric_limits<float>::quiet_NaN()}, {1, 1}).to(Device::cuda()))
                .to(Device::cpu())
                .data<int64_t>()[0],
            0);
}
