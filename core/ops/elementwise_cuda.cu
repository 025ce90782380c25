// Binary elementwise ops. Fast path (after the launcher's coalescing): a and y contiguous and b
// either the same layout or repeating with period P along the flat index (bias [D] onto [N, D]:
// P = D; a scalar: P = 1); 16-byte vectors when pointers are aligned and P is a multiple of the
// vector width. Anything else (e.g. [N, 1] onto [N, D], strided a) takes the index-decomposing kernel.
#include <cstdint>

#include "core/cuda_reduce.cuh"
#include "core/cuda_types.cuh"
#include "core/ops/elementwise.h"

namespace mmattn {

namespace {

__device__ __forceinline__ float binop(float a, float b, BinaryOp op, float alpha) {
  switch (op) {
    case BinaryOp::AddScaled: return a + alpha * b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Scale: return alpha * a;
  }
  return a;
}

// Flat: y[e] = op(a[e], b[e % period]); nvec vectors first (0 when not vectorisable), then the tail.
// No __restrict__: y may be a (add_), and b may be a too.
template <class T>
__global__ void binary_flat_kernel(const T* a, const T* b, T* y, long long n,
                                   long long period, long long nvec, BinaryOp op, float alpha) {
  constexpr int V = 16 / sizeof(T);
  const long long tid = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  const long long stride = (long long)gridDim.x * blockDim.x;
  const bool use_b = op != BinaryOp::Scale;
  for (long long i = tid; i < nvec; i += stride) {
    const long long e = i * V;
    Vec<T, V> va = reinterpret_cast<const Vec<T, V>*>(a)[i];
    Vec<T, V> vb{};
    if (use_b) vb = *reinterpret_cast<const Vec<T, V>*>(b + e % period);
#pragma unroll
    for (int k = 0; k < V; ++k)
      va.v[k] = from_f32<T>(binop(to_f32(va.v[k]), use_b ? to_f32(vb.v[k]) : 0.f, op, alpha));
    reinterpret_cast<Vec<T, V>*>(y)[i] = va;
  }
  for (long long e = nvec * V + tid; e < n; e += stride)
    y[e] = from_f32<T>(binop(to_f32(a[e]), use_b ? to_f32(b[e % period]) : 0.f, op, alpha));
}

// General strides: one element per iteration, offsets from the decomposed flat index.
template <class T>
__global__ void binary_strided_kernel(BinaryParams p) {
  const T* a = static_cast<const T*>(p.a);
  const T* b = static_cast<const T*>(p.b);
  T* y = static_cast<T*>(p.y);
  const bool use_b = p.op != BinaryOp::Scale;
  for (long long n = blockIdx.x * (long long)blockDim.x + threadIdx.x; n < p.numel;
       n += (long long)gridDim.x * blockDim.x) {
    long long rem = n, ao = 0, bo = 0, yo = 0;
    for (int d = p.ndim - 1; d >= 0; --d) {
      const long long i = rem % p.shape[d];
      rem /= p.shape[d];
      ao += i * p.a_strides[d];
      bo += i * p.b_strides[d];
      yo += i * p.y_strides[d];
    }
    y[yo] = from_f32<T>(binop(to_f32(a[ao]), use_b ? to_f32(b[bo]) : 0.f, p.op, p.alpha));
  }
}

// Period of b along the flat index when a and y are contiguous (0: not a flat case).
long long flat_period(const BinaryParams& p) {
  const bool use_b = p.op != BinaryOp::Scale;
  if (p.ndim == 1 && p.a_strides[0] == 1 && p.y_strides[0] == 1) {
    if (!use_b || p.b_strides[0] == 0) return 1;
    return p.b_strides[0] == 1 ? p.numel : 0;
  }
  if (p.ndim == 2 && p.a_strides[1] == 1 && p.y_strides[1] == 1 && p.a_strides[0] == p.shape[1] &&
      p.y_strides[0] == p.shape[1] && (!use_b || (p.b_strides[0] == 0 && p.b_strides[1] == 1)))
    return p.shape[1];
  return 0;
}

}  // namespace

void binary_cuda(const BinaryParams& p, StreamHandle s) {
  dispatch_float(p.dtype, "binary elementwise", [&]<class T>() {
    constexpr int V = 16 / sizeof(T);
    const auto a = static_cast<const T*>(p.a);
    const auto b = static_cast<const T*>(p.b);
    const auto y = static_cast<T*>(p.y);
    const long long period = flat_period(p);
    if (period > 0) {
      const bool use_b = p.op != BinaryOp::Scale;
      const bool vec = aligned16(a) && aligned16(y) &&
                       (!use_b || (aligned16(b) && (period == p.numel || period % V == 0)));
      const long long nvec = vec ? p.numel / V : 0;
      binary_flat_kernel<T><<<grid_for(nvec ? nvec : p.numel, 256), 256, 0, s>>>(a, b, y, p.numel, period, nvec,
                                                                                  p.op, p.alpha);
    } else {
      binary_strided_kernel<T><<<grid_for(p.numel, 256), 256, 0, s>>>(p);
    }
    MMATTN_CUDA_CHECK_LAUNCH("binary elementwise");
  });
}

}  // namespace mmattn
