#pragma once
// Normalisations. All statistics are computed in f32.
//   layer_norm(x [..., D], weight [D]?, bias [D]?, eps)          torch.nn.LayerNorm
//   rms_norm(x [..., D], weight [D], eps)                          LlamaRMSNorm / T5LayerNorm:
//        y = weight * (x * rsqrt(mean(x^2) + eps)); on F16/BF16 the normalised value is rounded to
//        the input dtype before the weight multiply, as transformers does.
//   group_norm(x [N, C, *], groups, weight [C]?, bias [C]?, eps)  torch.nn.GroupNorm
// weight/bias must have the dtype of x (pass undefined tensors for none).
#include <cstdint>

#include "core/tensor.h"

namespace mmattn {

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps);
Tensor rms_norm(const Tensor& x, const Tensor& weight, float eps);
Tensor group_norm(const Tensor& x, int groups, const Tensor& weight, const Tensor& bias, float eps);

// Row-wise norms over contiguous [rows, cols].
struct RowNormParams {
  const void* x = nullptr;
  const void* weight = nullptr;  // may be null (layer_norm)
  const void* bias = nullptr;    // may be null
  void* y = nullptr;
  int64_t rows = 0, cols = 0;
  float eps = 1e-5f;
  DType dtype = DType::F32;
};
void layer_norm_cpu(const RowNormParams& p);
void layer_norm_cuda(const RowNormParams& p, StreamHandle s);
void rms_norm_cpu(const RowNormParams& p);
void rms_norm_cuda(const RowNormParams& p, StreamHandle s);

// x contiguous [n, channels, spatial]; groups divide channels.
struct GroupNormParams {
  const void* x = nullptr;
  const void* weight = nullptr;
  const void* bias = nullptr;
  void* y = nullptr;
  int64_t n = 0, channels = 0, spatial = 0;
  int groups = 1;
  float eps = 1e-5f;
  DType dtype = DType::F32;
};
void group_norm_cpu(const GroupNormParams& p);
void group_norm_cuda(const GroupNormParams& p, StreamHandle s);

}  // namespace mmattn
