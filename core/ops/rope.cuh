#pragma once
// The rotation of one RoPE pair on the device, shared by the RoPE kernel (core/ops/rope_cuda.cu)
// and the fused RoPE + KV append (attention/kv_cache_cuda.cu), so both round alike.
#include "core/cuda_types.cuh"
#include "core/ops/rope.h"

namespace mmattn {

template <class T>
__device__ __forceinline__ float rope_round(float v) {
  return to_f32(from_f32<T>(v));
}

// (x0, x1) -> (y0, y1) for the pair's cos c / sin s (f32 table values). f32 math uses
// __fmul_rn/__fadd_rn so that no FMA is contracted (PyTorch's separate mul/add kernels).
template <class T, RopeStyle S>
__device__ __forceinline__ void rope_pair(float x0, float x1, float c, float s, float& y0, float& y1) {
  if (S == RopeStyle::HalfSplit) {
    // transformers: cos/sin cast to x's dtype; q*cos, rotate_half(q)*sin and their sum each rounded
    c = rope_round<T>(c);
    s = rope_round<T>(s);
    y0 = __fadd_rn(rope_round<T>(__fmul_rn(x0, c)), rope_round<T>(__fmul_rn(-x1, s)));
    y1 = __fadd_rn(rope_round<T>(__fmul_rn(x1, c)), rope_round<T>(__fmul_rn(x0, s)));
  } else {
    // diffusers: (x.float() * cos + x_rotated.float() * sin).to(x.dtype)
    y0 = __fadd_rn(__fmul_rn(x0, c), __fmul_rn(-x1, s));
    y1 = __fadd_rn(__fmul_rn(x1, c), __fmul_rn(x0, s));
  }
}

}  // namespace mmattn
