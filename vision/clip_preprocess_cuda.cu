// CLIP preprocessing on the GPU (vision/clip_preprocess.h): the host path's arithmetic, one
// thread per output pixel (three channels). Kernel 1 (only when both passes run): the horizontal
// pass into the 8-bit intermediate, as resample.cpp's pass_horizontal. Kernel 2: per crop pixel,
// the vertical pass (or the horizontal one alone, or a copy), the crop's zero padding and the
// f32 normalise with explicit round-to-nearest operations (the host code is compiled without FMA
// contraction, so a contracted v * scale - mean would differ in the last bit).
#include <cstdint>

#include "core/cuda_types.cuh"
#include "vision/clip_preprocess.h"

namespace mmattn {

namespace {

// Pixel (x, y) of the virtual expand2square canvas, channel c.
__device__ __forceinline__ int canvas_px(const ClipPreprocessParams& p, int x, int y, int c) {
  const int sx = x - p.pad_x, sy = y - p.pad_y;
  if (sx < 0 || sy < 0 || sx >= p.src_w || sy >= p.src_h) return p.background[c];
  return p.src[(size_t(sy) * p.src_w + sx) * 3 + c];
}

__device__ __forceinline__ uint8_t clip8(long long acc, int precision) {
  const long long v = acc >> precision;  // arithmetic shift: floor
  return uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
}

// The horizontal pass's output pixel x of canvas row y, channel c.
__device__ __forceinline__ uint8_t h_pass(const ClipPreprocessParams& p, int x, int y, int c) {
  const int32_t* k = p.h_w + size_t(x) * p.h_ksize;
  const int first = p.h_first[x], n = p.h_count[x];
  long long acc = 1ll << (p.h_precision - 1);
  for (int j = 0; j < n; ++j) acc += (long long)canvas_px(p, first + j, y, c) * k[j];
  return clip8(acc, p.h_precision);
}

__global__ void horizontal_kernel(ClipPreprocessParams p) {
  const long long n = (long long)p.canvas_h * p.out_w;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const int y = int(i / p.out_w), x = int(i % p.out_w);
    for (int c = 0; c < 3; ++c) p.tmp[size_t(i) * 3 + c] = h_pass(p, x, y, c);
  }
}

// Resized pixel (x, y), channel c (both coordinates in range).
__device__ __forceinline__ uint8_t resized_px(const ClipPreprocessParams& p, int x, int y, int c) {
  if (!p.vertical) return p.horizontal ? h_pass(p, x, y, c) : uint8_t(canvas_px(p, x, y, c));
  const int32_t* k = p.v_w + size_t(y) * p.v_ksize;
  const int first = p.v_first[y], n = p.v_count[y];
  long long acc = 1ll << (p.v_precision - 1);
  for (int j = 0; j < n; ++j) {
    const int r = first + j;
    const int v = p.horizontal ? p.tmp[(size_t(r) * p.out_w + x) * 3 + c] : canvas_px(p, x, r, c);
    acc += (long long)v * k[j];
  }
  return clip8(acc, p.v_precision);
}

template <class T>
__global__ void crop_normalize_kernel(ClipPreprocessParams p) {
  const long long plane = (long long)p.crop_h * p.crop_w;
  T* y = static_cast<T*>(p.y);
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < plane; i += (long long)gridDim.x * blockDim.x) {
    const int cy = int(i / p.crop_w), cx = int(i % p.crop_w);
    const int rx = cx + p.crop_x, ry = cy + p.crop_y;
    const bool inside = rx >= 0 && ry >= 0 && rx < p.out_w && ry < p.out_h;
    for (int c = 0; c < 3; ++c) {
      const uint8_t v = inside ? resized_px(p, rx, ry, c) : uint8_t(0);
      if (p.crop_u8) p.crop_u8[size_t(i) * 3 + c] = v;
      y[c * plane + i] = from_f32<T>(__fdiv_rn(__fsub_rn(__fmul_rn(float(v), p.scale), p.mean[c]), p.std[c]));
    }
  }
}

}  // namespace

void clip_preprocess_cuda(const ClipPreprocessParams& p, StreamHandle s) {
  constexpr int kBlock = 256;
  if (p.horizontal && p.vertical) {
    horizontal_kernel<<<grid_for((long long)p.canvas_h * p.out_w, kBlock), kBlock, 0, s>>>(p);
    MMATTN_CUDA_CHECK_LAUNCH("clip_preprocess horizontal");
  }
  dispatch_float(p.y_dtype, "clip_preprocess", [&]<class T>() {
    crop_normalize_kernel<T><<<grid_for((long long)p.crop_h * p.crop_w, kBlock), kBlock, 0, s>>>(p);
  });
  MMATTN_CUDA_CHECK_LAUNCH("clip_preprocess crop/normalize");
}

}  // namespace mmattn
