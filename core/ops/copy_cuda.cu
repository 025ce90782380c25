#include "core/cuda_types.cuh"
#include "core/ops/copy.h"

namespace mmattn {

namespace {

struct DevCopy {
  int ndim;
  long long shape[kMaxDims];
  long long ss[kMaxDims];
  long long ds[kMaxDims];
};

__device__ __forceinline__ double load_any(const void* p, long long i, DType t) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::F16: return __half2float(static_cast<const __half*>(p)[i]);
    case DType::BF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case DType::I32: return static_cast<const int*>(p)[i];
    case DType::I64: return double(static_cast<const long long*>(p)[i]);
    case DType::U8: return static_cast<const unsigned char*>(p)[i];
  }
  return 0;
}
__device__ __forceinline__ void store_any(void* p, long long i, DType t, double x) {
  switch (t) {
    case DType::F32: static_cast<float*>(p)[i] = float(x); break;
    case DType::F16: static_cast<__half*>(p)[i] = __float2half_rn(float(x)); break;
    case DType::BF16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(float(x)); break;
    case DType::I32: static_cast<int*>(p)[i] = int(x); break;
    case DType::I64: static_cast<long long*>(p)[i] = (long long)x; break;
    case DType::U8: static_cast<unsigned char*>(p)[i] = (unsigned char)(x < 0 ? 0 : x > 255 ? 255 : x); break;
  }
}

// One thread per element; dtypes are uniform across the grid so the switches do not diverge.
__global__ void copy_kernel(DevCopy g, long long numel, const void* src, DType st, void* dst, DType dt) {
  for (long long n = blockIdx.x * (long long)blockDim.x + threadIdx.x; n < numel;
       n += (long long)gridDim.x * blockDim.x) {
    long long rem = n, so = 0, doff = 0;
    for (int d = g.ndim - 1; d >= 0; --d) {
      const long long i = rem % g.shape[d];
      rem /= g.shape[d];
      so += i * g.ss[d];
      doff += i * g.ds[d];
    }
    store_any(dst, doff, dt, load_any(src, so, st));
  }
}

template <class T>
__global__ void fill_kernel(T* dst, long long n, T v) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    dst[i] = v;
}

}  // namespace

void copy_cuda(const CopyParams& p, StreamHandle stream) {
  if (p.numel == 0) return;
  DevCopy g{};
  g.ndim = p.ndim;
  for (int d = 0; d < p.ndim; ++d) {
    g.shape[d] = p.shape[d];
    g.ss[d] = p.src_strides[d];
    g.ds[d] = p.dst_strides[d];
  }
  copy_kernel<<<grid_for(p.numel, 256), 256, 0, stream>>>(g, p.numel, p.src, p.src_dtype, p.dst, p.dst_dtype);
  MMATTN_CUDA_CHECK_LAUNCH("copy");
}

void fill_cuda(const FillParams& p, StreamHandle stream) {
  if (p.numel == 0) return;
  const int grid = grid_for(p.numel, 256);
  switch (p.dtype) {
    case DType::F32: fill_kernel<<<grid, 256, 0, stream>>>((float*)p.dst, p.numel, p.value); break;
    case DType::F16: fill_kernel<<<grid, 256, 0, stream>>>((__half*)p.dst, p.numel, __float2half_rn(p.value)); break;
    case DType::BF16:
      fill_kernel<<<grid, 256, 0, stream>>>((__nv_bfloat16*)p.dst, p.numel, __float2bfloat16_rn(p.value));
      break;
    case DType::I32: fill_kernel<<<grid, 256, 0, stream>>>((int*)p.dst, p.numel, int(p.value)); break;
    case DType::I64: fill_kernel<<<grid, 256, 0, stream>>>((long long*)p.dst, p.numel, (long long)p.value); break;
    case DType::U8: fill_kernel<<<grid, 256, 0, stream>>>((unsigned char*)p.dst, p.numel, (unsigned char)p.value); break;
  }
  MMATTN_CUDA_CHECK_LAUNCH("fill");
}

}  // namespace mmattn
