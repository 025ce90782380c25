#pragma once
// Row reductions.
//   vector_norm(x [..., D], p) -> F32 [...]: (sum_i |x_i|^p)^(1/p) over the last dim, p = 1 or 2
//        (torch.linalg.vector_norm(x, ord=p, dim=-1)), accumulated in f32.
#include <cstdint>

#include "core/tensor.h"

namespace mmattn {

Tensor vector_norm(const Tensor& x, int p);

struct VectorNormParams {
  const void* x = nullptr;  // contiguous [rows, cols]
  float* y = nullptr;       // [rows]
  int64_t rows = 0, cols = 0;
  int p = 2;
  DType dtype = DType::F32;
};
void vector_norm_cpu(const VectorNormParams& p);
void vector_norm_cuda(const VectorNormParams& p, StreamHandle s);

}  // namespace mmattn
