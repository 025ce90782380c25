// vector_norm, argmax and the selections on the GPU against the CPU reference: awkward row lengths,
// every float dtype, ties and NaN.
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

// The selections a pruner queues on the device, against the CPU: awkward lengths, heavy ties (few
// distinct values), NaN / -inf / -0, every k edge; lengths past kSelectDeviceItems take the host.
TEST(SelectionCuda, MatchesCpu) {
  MMATTN_REQUIRE_GPU();
  auto ids = [](const Tensor& t) { return host_values<int64_t>(t); };
  uint64_t seed = 41;
  for (int64_t n : {1, 2, 31, 33, 576, 1000, 4096, 5000}) {
    for (int distinct : {3, 0}) {  // 0: continuous values
      Tensor s = rand_tensor({n}, seed++, -2.f, 2.f);
      float* p = s.data<float>();
      for (int64_t i = 0; i < n; ++i) {
        if (distinct) p[i] = std::floor(p[i] * float(distinct) / 2.f);
        if (i % 97 == 5) p[i] = std::numeric_limits<float>::quiet_NaN();
        if (i % 89 == 7) p[i] = -std::numeric_limits<float>::infinity();
        if (i % 83 == 9) p[i] = -0.f;
      }
      const Tensor sd = s.to(Device::cuda());
      for (int64_t k : {int64_t(1), int64_t(2), int64_t(64), n / 2, n - 1, n}) {
        if (k < 1) continue;
        EXPECT_EQ(ids(top_k_indices(sd, k)), ids(top_k_indices(s, k))) << "n " << n << " k " << k;
      }
    }
    // column means: rows summed in order (bit for bit), then one division
    for (int64_t rows : {1, 3, 16}) {
      const Tensor x = rand_tensor({rows, n}, seed++, 0.f, 1.f);
      const float div = float(rows) + 0.5f;  // not a power of two: the division's rounding shows
      const std::vector<float> want = column_sum(x, div).to_floats(), got = column_sum(x.to(Device::cuda()), div).to_floats();
      ASSERT_EQ(got.size(), want.size());
      for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got[i], want[i]) << "rows " << rows << " col " << i;
    }
    // sort: duplicates and negatives
    std::vector<int64_t> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) v[size_t(i)] = ((i * 7919) % 613) - 3;
    const Tensor vh = Tensor::from_vector<int64_t>(v, {n});
    EXPECT_EQ(ids(sort_ascending(vh.to(Device::cuda()))), ids(sort_ascending(vh))) << "n " << n;
  }
  // a column view (strided) is taken as its values
  const Tensor x = rand_tensor({4, 10}, 99, 0.f, 1.f);
  EXPECT_EQ(column_sum(x.to(Device::cuda()).slice(1, 2, 9)).to_floats(), column_sum(x.slice(1, 2, 9)).to_floats());
}
