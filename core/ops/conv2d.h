#pragma once
// 2-D convolution (cross-correlation), as torch.nn.functional.conv2d:
//   conv2d(x [N, C, H, W], weight [O, C/groups, kh, kw], bias [O]?, stride, padding, dilation, groups)
//     -> y [N, O, OH, OW],  OH = (H + 2*pad_h - dil_h*(kh-1) - 1) / stride_h + 1  (same for W; must be >= 1)
// O must be divisible by groups; x/weight/bias share dtype and device; non-contiguous inputs are copied.
// CPU: f32 only (im2col in bounded chunks + OpenBLAS sgemm; 1x1 stride-1 unpadded convs skip im2col).
// CUDA: cuDNN (NCHW, f32 compute; f16/bf16 may use tensor cores; f32 uses FMA math, no TF32) when
// the build found cuDNN, else - or when cuDNN answers NOT_SUPPORTED - a direct kernel with f32
// accumulation. With cuDNN the bias is added after the convolution has been rounded to the output
// dtype, as PyTorch does; the direct kernel adds it before its single rounding.
#include <array>
#include <cstdint>

#include "core/tensor.h"

namespace mmattn {

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(), std::array<int, 2> stride = {1, 1},
              std::array<int, 2> padding = {0, 0}, std::array<int, 2> dilation = {1, 1}, int groups = 1);

// Which CUDA path the last conv2d on this thread took: "cudnn", "direct", or "none" before any.
const char* conv2d_cuda_backend();
// True when this build has cuDNN (the CUDA path then tries it first).
bool conv2d_has_cudnn();
// Tests and benchmarks: force the direct CUDA kernel even when cuDNN is available (per thread).
void conv2d_force_direct(bool force);

// Contiguous NCHW tensors; weight [o, c/groups, kh, kw].
struct Conv2dParams {
  const void* x = nullptr;
  const void* w = nullptr;
  const void* bias = nullptr;  // [o] or null
  void* y = nullptr;
  int64_t n = 0, c = 0, h = 0, w_in = 0;
  int64_t o = 0, kh = 0, kw = 0;
  int64_t oh = 0, ow = 0;
  int stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1, groups = 1;
  DType dtype = DType::F32;
  bool allow_cudnn = true;
};
void conv2d_cpu(const Conv2dParams& p);
// Returns the backend used ("cudnn" or "direct").
const char* conv2d_cuda(const Conv2dParams& p, StreamHandle s);

}  // namespace mmattn
