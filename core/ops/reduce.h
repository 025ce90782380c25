#pragma once
// Row reductions.
//   vector_norm(x [..., D], p) -> F32 [...]: (sum_i |x_i|^p)^(1/p) over the last dim, p = 1 or 2
//        (torch.linalg.vector_norm(x, ord=p, dim=-1)), accumulated in f32.
//   argmax(x [..., V]) -> I64 [...]: the index of each row's largest value, the first one on ties
//        (std::max_element's and torch.argmax's choice; -0 equals +0). NaN ranks below every
//        number (a row of NaNs gives 0). Greedy decoding on the device (the token id never leaves
//        it: pipelines/llava.cpp).
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

Tensor argmax(const Tensor& x);

struct ArgmaxParams {
  const void* x = nullptr;  // contiguous [rows, cols], cols >= 1
  int64_t* y = nullptr;     // [rows]
  int64_t rows = 0, cols = 0;
  DType dtype = DType::F32;
};
void argmax_cpu(const ArgmaxParams& p);
void argmax_cuda(const ArgmaxParams& p, StreamHandle s);

}  // namespace mmattn
