// Row norms: one block per row; the row is staged once in shared memory as f32 (so x is read
// from global memory once) when it fits, with 16-byte vector loads when the row allows.
#include "core/cuda_reduce.cuh"
#include "core/cuda_types.cuh"
#include "core/ops/norm.h"

namespace mmattn {

namespace {

constexpr int kSmemRowMax = 12288;  // floats staged in shared memory (48 KB)

template <class T, int V, bool RMS>
__global__ void row_norm_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                                T* __restrict__ y, int cols, float eps, bool staged) {
  extern __shared__ float row[];
  __shared__ float scratch[32];
  const T* xr = x + (long long)blockIdx.x * cols;
  T* yr = y + (long long)blockIdx.x * cols;
  const int nvec = cols / V;
  // pass 1: sum (and stage)
  float s = 0.f, ss = 0.f;
  for (int i = threadIdx.x; i < nvec; i += blockDim.x) {
    Vec<T, V> v = reinterpret_cast<const Vec<T, V>*>(xr)[i];
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float f = to_f32(v.v[k]);
      s += f;
      ss += f * f;
      if (staged) row[i * V + k] = f;
    }
  }
  float mean = 0.f, inv;
  if (RMS) {
    ss = block_sum(ss, scratch);
    inv = rsqrtf(ss / cols + eps);
  } else {
    mean = block_sum(s, scratch) / cols;
    // pass 2: centred variance (numerically safer than E[x^2] - mean^2)
    float d2 = 0.f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
      const float f = staged ? row[i] : to_f32(xr[i]);
      d2 += (f - mean) * (f - mean);
    }
    inv = rsqrtf(block_sum(d2, scratch) / cols + eps);
  }
  for (int i = threadIdx.x; i < nvec; i += blockDim.x) {
    Vec<T, V> out;
    Vec<T, V> in;
    if (!staged) in = reinterpret_cast<const Vec<T, V>*>(xr)[i];
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const int c = i * V + k;
      const float f = staged ? row[c] : to_f32(in.v[k]);
      if (RMS) {
        // transformers rounds the normalised value to the input dtype before the weight multiply
        const float n = to_f32(from_f32<T>(f * inv));
        out.v[k] = from_f32<T>(to_f32(w[c]) * n);
      } else {
        float v = (f - mean) * inv;
        if (w) v *= to_f32(w[c]);
        if (b) v += to_f32(b[c]);
        out.v[k] = from_f32<T>(v);
      }
    }
    reinterpret_cast<Vec<T, V>*>(yr)[i] = out;
  }
}

template <bool RMS>
void launch_row_norm(const RowNormParams& p, StreamHandle s) {
  dispatch_float(p.dtype, RMS ? "rms_norm" : "layer_norm", [&]<class T>() {
    const int cols = int(p.cols);
    const bool staged = cols <= kSmemRowMax;
    const size_t smem = staged ? size_t(cols) * sizeof(float) : 0;
    constexpr int V16 = 16 / sizeof(T);
    const bool vec_ok = cols % V16 == 0 && (reinterpret_cast<uintptr_t>(p.x) % 16 == 0) &&
                        (reinterpret_cast<uintptr_t>(p.y) % 16 == 0);
    const int v = vec_ok ? V16 : 1;
    int threads = (cols / v + 31) / 32 * 32;
    threads = threads < 32 ? 32 : threads > 512 ? 512 : threads;
    const dim3 grid(unsigned(p.rows));
    auto x = static_cast<const T*>(p.x);
    auto w = static_cast<const T*>(p.weight);
    auto b = static_cast<const T*>(p.bias);
    auto y = static_cast<T*>(p.y);
    if (vec_ok)
      row_norm_kernel<T, V16, RMS><<<grid, threads, smem, s>>>(x, w, b, y, cols, p.eps, staged);
    else
      row_norm_kernel<T, 1, RMS><<<grid, threads, smem, s>>>(x, w, b, y, cols, p.eps, staged);
    MMATTN_CUDA_CHECK_LAUNCH("row_norm");
  });
}

// GroupNorm: one block per (sample, group); statistics in two passes over global memory.
template <class T>
__global__ void group_norm_kernel(GroupNormParams p) {
  __shared__ float scratch[32];
  const int64_t cpg = p.channels / p.groups;
  const int64_t count = cpg * p.spatial;
  const int g = blockIdx.x % p.groups;
  const int64_t n = blockIdx.x / p.groups;
  const int64_t base = (n * p.channels + g * cpg) * p.spatial;
  const T* x = static_cast<const T*>(p.x) + base;
  T* y = static_cast<T*>(p.y) + base;
  float s = 0.f;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) s += to_f32(x[i]);
  const float mean = block_sum(s, scratch) / float(count);
  float d2 = 0.f;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
    const float d = to_f32(x[i]) - mean;
    d2 += d * d;
  }
  const float inv = rsqrtf(block_sum(d2, scratch) / float(count) + p.eps);
  const T* w = static_cast<const T*>(p.weight);
  const T* b = static_cast<const T*>(p.bias);
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
    const int64_t ch = g * cpg + i / p.spatial;
    float v = (to_f32(x[i]) - mean) * inv;
    if (w) v *= to_f32(w[ch]);
    if (b) v += to_f32(b[ch]);
    y[i] = from_f32<T>(v);
  }
}

}  // namespace

void layer_norm_cuda(const RowNormParams& p, StreamHandle s) { launch_row_norm<false>(p, s); }
void rms_norm_cuda(const RowNormParams& p, StreamHandle s) { launch_row_norm<true>(p, s); }

void group_norm_cuda(const GroupNormParams& p, StreamHandle s) {
  dispatch_float(p.dtype, "group_norm", [&]<class T>() {
    group_norm_kernel<T><<<unsigned(p.n * p.groups), 512, 0, s>>>(p);
    MMATTN_CUDA_CHECK_LAUNCH("group_norm");
  });
}

}  // namespace mmattn
