#pragma once
// Device-side element types and conversions shared by the CUDA kernels.
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "core/cuda_check.h"
#include "core/dtype.h"

namespace mmattn {

// Host: whether a pointer allows 16-byte vector accesses.
inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Calls f.template operator()<T>() with T the CUDA type of a float dtype; throws otherwise.
template <class F>
void dispatch_float(DType t, const char* op, F&& f) {
  switch (t) {
    case DType::F32: f.template operator()<float>(); break;
    case DType::F16: f.template operator()<__half>(); break;
    case DType::BF16: f.template operator()<__nv_bfloat16>(); break;
    default: MMATTN_THROW(UnsupportedError, op, ": dtype ", dtype_name(t), " is not a float type");
  }
}

inline int grid_for(long long n, int block, int max_blocks = 65535 * 16) {
  long long g = (n + block - 1) / block;
  if (g > max_blocks) g = max_blocks;
  return int(g < 1 ? 1 : g);
}

}  // namespace mmattn
