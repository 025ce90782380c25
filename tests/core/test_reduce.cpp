// vector_norm on the CPU: hand-computed values, leading dims, empty rows, errors.
#include "core/ops/reduce.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

TEST(VectorNorm, HandValues) {
  Tensor x = Tensor::from_vector<float>({3, -4, 0, 1, -1, 2}, {2, 3});
  EXPECT_EQ(vector_norm(x, 2).to_floats(), (std::vector<float>{5.f, std::sqrt(6.f)}));
  EXPECT_EQ(vector_norm(x, 1).to_floats(), (std::vector<float>{7.f, 4.f}));
  Tensor y = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6, 7, 8}, {2, 2, 2});
  EXPECT_EQ(vector_norm(y, 1).shape(), (Shape{2, 2}));
  EXPECT_EQ(vector_norm(y, 1).to_floats(), (std::vector<float>{3, 7, 11, 15}));
  EXPECT_EQ(vector_norm(Tensor::zeros({2, 0}, DType::F32), 2).to_floats(), (std::vector<float>{0, 0}));
  EXPECT_EQ(vector_norm(x.to(DType::BF16), 1).to_floats(), (std::vector<float>{7.f, 4.f}));
  EXPECT_THROW(vector_norm(x, 3), UnsupportedError);
}
