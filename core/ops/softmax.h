#pragma once
// Softmax over one dimension, numerically stable (max-subtracted), statistics in f32.
//   softmax(x [...], dim, scale)      y = exp(s*x - max(s*x)) / sum(exp(s*x - max(s*x)))   softmax(x * scale)
//   log_softmax(x [...], dim, scale)  y = s*x - max(s*x) - log(sum(exp(s*x - max(s*x))))
//   x: any shape and strides; y: the shape and dtype of x, contiguous. dim may be negative.
//   A row that is all -inf gives NaN, as in PyTorch. CUDA: F32/F16/BF16; CPU: F32.
#include <cstdint>

#include "core/tensor.h"

namespace mmattn {

Tensor softmax(const Tensor& x, int dim = -1, float scale = 1.f);
Tensor log_softmax(const Tensor& x, int dim = -1, float scale = 1.f);

// Row-wise over contiguous [rows, cols].
struct SoftmaxParams {
  const void* x = nullptr;
  void* y = nullptr;
  int64_t rows = 0, cols = 0;
  float scale = 1.f;
  bool log = false;
  DType dtype = DType::F32;
};
void softmax_cpu(const SoftmaxParams& p);
void softmax_cuda(const SoftmaxParams& p, StreamHandle s);

}  // namespace mmattn
