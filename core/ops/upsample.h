#pragma once
// Nearest-neighbour 2-D upsampling, PyTorch's mode="nearest" (not "nearest-exact").
//   upsample_nearest2d(x [N, C, H, W], scale_factor)   -> [N, C, H*s, W*s]
//        F.interpolate(x, scale_factor=s, mode="nearest") (the VAE decoder's Upsample2D)
//   upsample_nearest2d(x [N, C, H, W], out_h, out_w)   -> [N, C, out_h, out_w]
//        F.interpolate(x, size=(out_h, out_w), mode="nearest")
// Source index per axis, as PyTorch computes it (f32 math): out == in: src = dst; out == 2 in:
// src = dst / 2; else src = min(floor(dst * scale), in - 1) with scale = float(1.0 / s) when a
// scale factor is given and float(in) / float(out) when a size is. Works for any dtype (a
// gather: exact), CPU and CUDA; x any strides, y contiguous.
#include <cstdint>

#include "core/tensor.h"

namespace mmattn {

Tensor upsample_nearest2d(const Tensor& x, int scale_factor);
Tensor upsample_nearest2d(const Tensor& x, int64_t out_h, int64_t out_w);

// x contiguous [planes, in_h, in_w] -> y contiguous [planes, out_h, out_w].
struct UpsampleNearestParams {
  const void* x = nullptr;
  void* y = nullptr;
  int64_t planes = 0, in_h = 0, in_w = 0, out_h = 0, out_w = 0;
  float scale_h = 0.f, scale_w = 0.f;  // the `scale` of the rule above, per axis
  int elem_size = 4;                   // bytes: 1, 2, 4 or 8
};
void upsample_nearest2d_cpu(const UpsampleNearestParams& p);
void upsample_nearest2d_cuda(const UpsampleNearestParams& p, StreamHandle s);

}  // namespace mmattn
