#pragma once
// Skinny products for decoding: y [m, n] (+)= x [m, k] @ W[n, k]^T + bias, m <= 2, f16/bf16,
// f32 accumulation. The weight is read exactly once, as 16-byte streaming loads that bypass L1;
// the product is bound by the weight bytes, so the kernel's job is to keep enough loads in flight
// on every multiprocessor (4 x 16 bytes per row per lane, 4 rows per warp at a time).
//
// Work split: a warp owns ROWS consecutive output rows (a "task") for all m inputs; its lanes walk
// K in 16-byte vectors (lane, lane + 32, ...), multiply each weight vector with the m input vectors
// and keep ROWS x M f32 partial sums, reduced by shuffles at the end. Warps take tasks with a grid
// stride over a grid of one full wave, so that no partial last wave halves the loads in flight.
//
// Inputs (GemvInput):
//   Plain   x read through the read-only path (L1/L2 hits: every warp reads all of x).
//   RmsNorm x_eff = rms_norm(x, norm_weight, eps) with the rounding of core/ops/norm (to T after
//           the scaling, to T after the weight); each block computes it once into shared memory.
//   SwiGLU  x [m, 2k] = gate | up, x_eff = T(T(silu(gate)) * up) as swiglu_fused; shared memory.
// Output: y = T(acc + bias) or, accumulating, T(y + acc + bias) (one rounding, like a GEMM with
// beta = 1).
//
// Programmatic dependent launch (sm_90): the kernel is launched allowed to start before the
// kernel ahead of it in the stream has finished. Its blocks then pull their first weight bytes
// toward L2 (the weights do not depend on that kernel) and wait (griddepcontrol.wait) before
// touching x or y; each block also lets its own successor launch at once. So in a chain of decode
// products the next one's weight stream starts during this one's tail instead of after it.
#include <algorithm>
#include <cstdint>
#include <unordered_map>

#include "core/cuda_reduce.cuh"
#include "core/cuda_types.cuh"
#include "core/ops/linear.h"

namespace mmattn::gemv_detail {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kUnroll = 4;  // 16-byte weight loads per row per lane in flight

struct Args {
  const void* x;
  const void* w;
  const void* bias;
  const void* norm_weight;
  void* y;
  int m, n, k;
  int x_stride;  // elements between rows of x
  float eps;
  bool accumulate;
};

__device__ __forceinline__ uint4 ld_stream(const uint4* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

// griddepcontrol: no-ops when the grid was launched without programmatic dependencies.
__device__ __forceinline__ void wait_for_previous_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void allow_next_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Bytes of each of its first task's rows a warp prefetches into L2 before waiting: the first round
// of tasks (a full wave of warps x 4 rows) then brings <= ~17 MB, well inside the H100's 50 MB L2.
constexpr int kPrefetchBytesPerRow = 4096;

template <class T>
__device__ __forceinline__ void to_floats(const uint4& v, float (&f)[8]) {
  const T* e = reinterpret_cast<const T*>(&v);
#pragma unroll
  for (int i = 0; i < 8; ++i) f[i] = to_f32(e[i]);
}

template <class T>
__device__ __forceinline__ float round_t(float v) {
  return to_f32(from_f32<T>(v));
}

// x_eff for all m rows into shared memory xs [m][k] (as T).
template <class T, int M, GemvInput IN>
__device__ void stage_input(const Args& a, uint4* xs, float* scratch) {
  const int kv = a.k / 8;
  const uint4* x = static_cast<const uint4*>(a.x);
  const int xsv = a.x_stride / 8;
  if constexpr (IN == GemvInput::RmsNorm) {
    float inv[M];
#pragma unroll
    for (int m = 0; m < M; ++m) {
      float s = 0.f;
      if (m < a.m)
        for (int v = threadIdx.x; v < kv; v += kThreads) {
          float f[8];
          to_floats<T>(x[m * xsv + v], f);
#pragma unroll
          for (int i = 0; i < 8; ++i) s = fmaf(f[i], f[i], s);
        }
      inv[m] = rsqrtf(block_sum(s, scratch) / float(a.k) + a.eps);
    }
    const uint4* nw = static_cast<const uint4*>(a.norm_weight);
    for (int v = threadIdx.x; v < kv; v += kThreads) {
      float wf[8];
      to_floats<T>(nw[v], wf);
#pragma unroll
      for (int m = 0; m < M; ++m) {
        if (m >= a.m) break;
        float f[8];
        to_floats<T>(x[m * xsv + v], f);
        Vec<T, 8> o;
#pragma unroll
        for (int i = 0; i < 8; ++i) o.v[i] = from_f32<T>(wf[i] * round_t<T>(f[i] * inv[m]));
        xs[m * kv + v] = *reinterpret_cast<const uint4*>(&o);
      }
    }
  } else {  // SwiGLU: gate | up
    for (int v = threadIdx.x; v < kv; v += kThreads) {
#pragma unroll
      for (int m = 0; m < M; ++m) {
        if (m >= a.m) break;
        float g[8], u[8];
        to_floats<T>(x[m * xsv + v], g);
        to_floats<T>(x[m * xsv + kv + v], u);
        Vec<T, 8> o;
#pragma unroll
        for (int i = 0; i < 8; ++i) o.v[i] = from_f32<T>(round_t<T>(g[i] / (1.f + expf(-g[i]))) * u[i]);
        xs[m * kv + v] = *reinterpret_cast<const uint4*>(&o);
      }
    }
  }
  __syncthreads();
}

template <class T, int M, int ROWS, GemvInput IN>
__global__ void __launch_bounds__(kThreads) gemv_kernel(Args a) {
  extern __shared__ uint4 xs[];  // [m][k / 8] for RmsNorm / SwiGLU
  __shared__ float scratch[32];
  constexpr bool kStaged = IN != GemvInput::Plain;
  const int kv = a.k / 8;
  const int lane = threadIdx.x & 31;
  const uint4* w = static_cast<const uint4*>(a.w);
  const uint4* x = static_cast<const uint4*>(a.x);
  const int xsv = a.x_stride / 8;
  const int tasks = (a.n + ROWS - 1) / ROWS;

  allow_next_grid();
  if (const int t = blockIdx.x * kWarps + (threadIdx.x >> 5); t < tasks) {
    const int lines = min(a.k * int(sizeof(T)), kPrefetchBytesPerRow) / 128;  // 128-byte lines per row
    for (int i = lane; i < lines * ROWS; i += 32) {
      const char* row = reinterpret_cast<const char*>(w + int64_t(min(t * ROWS + i / lines, a.n - 1)) * kv);
      asm volatile("prefetch.global.L2 [%0];" ::"l"(row + (i % lines) * 128));
    }
  }
  wait_for_previous_grid();  // x (and y, when accumulating) come from the kernels before
  if constexpr (kStaged) stage_input<T, M, IN>(a, xs, scratch);

  for (int t = blockIdx.x * kWarps + (threadIdx.x >> 5); t < tasks; t += gridDim.x * kWarps) {
    const int row0 = t * ROWS;
    const uint4* wr[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) wr[r] = w + int64_t(min(row0 + r, a.n - 1)) * kv;
    float acc[ROWS][M];
#pragma unroll
    for (int r = 0; r < ROWS; ++r)
#pragma unroll
      for (int m = 0; m < M; ++m) acc[r][m] = 0.f;

    for (int c0 = lane; c0 < kv; c0 += 32 * kUnroll) {
      uint4 wv[kUnroll][ROWS];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
#pragma unroll
        for (int r = 0; r < ROWS; ++r) {
          const int c = c0 + 32 * u;
          wv[u][r] = c < kv ? ld_stream(wr[r] + c) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int c = c0 + 32 * u;
        if (c >= kv) break;
        float wf[ROWS][8];
#pragma unroll
        for (int r = 0; r < ROWS; ++r) to_floats<T>(wv[u][r], wf[r]);
#pragma unroll
        for (int m = 0; m < M; ++m) {
          if (m >= a.m) break;
          float xf[8];
          to_floats<T>(kStaged ? xs[m * kv + c] : __ldg(x + m * xsv + c), xf);
#pragma unroll
          for (int r = 0; r < ROWS; ++r)
#pragma unroll
            for (int i = 0; i < 8; ++i) acc[r][m] = fmaf(wf[r][i], xf[i], acc[r][m]);
        }
      }
    }

    T* y = static_cast<T*>(a.y);
    const T* bias = static_cast<const T*>(a.bias);
#pragma unroll
    for (int r = 0; r < ROWS; ++r)
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const float s = warp_sum(acc[r][m]);
        const int row = row0 + r;
        if (lane == r * M + m && row < a.n && m < a.m) {
          float v = s + (bias ? to_f32(bias[row]) : 0.f);
          if (a.accumulate) v += to_f32(y[int64_t(m) * a.n + row]);
          y[int64_t(m) * a.n + row] = from_f32<T>(v);
        }
      }
  }
}

// The dynamic shared memory a staged kernel may use on the current device: the per-block opt-in
// limit less a margin for the kernels' static scratch (queried once per thread and device).
inline int staged_smem_limit() {
  thread_local std::unordered_map<int, int> limit;
  int device = 0;
  MMATTN_CUDA_CHECK(cudaGetDevice(&device));
  auto it = limit.find(device);
  if (it == limit.end()) {
    int optin = 0;
    MMATTN_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    it = limit.emplace(device, optin - 1024).first;
  }
  return it->second;
}

// One full wave of blocks (or fewer when there are fewer tasks). The device's SM count and the
// kernel's occupancy per shared-memory size are queried once (per thread, per instantiation).
// Staged kernels get the device's whole opt-in limit as their dynamic shared-memory ceiling (a
// process-wide attribute: always the same value, so no thread lowers it under another).
template <class T, int M, int ROWS, GemvInput IN>
void launch(const Args& a, StreamHandle s) {
  auto kernel = gemv_kernel<T, M, ROWS, IN>;
  const int smem = IN == GemvInput::Plain ? 0 : M * a.k * int(sizeof(T));
  struct Cache {
    int device = -1, sms = 0;
    bool pdl = false;  // programmatic dependent launch (compute capability >= 9)
    std::unordered_map<int, int> per_sm;  // dynamic shared memory -> blocks per SM
  };
  thread_local Cache c;
  int device = 0;
  MMATTN_CUDA_CHECK(cudaGetDevice(&device));
  if (device != c.device) {
    c = Cache();
    c.device = device;
    MMATTN_CUDA_CHECK(cudaDeviceGetAttribute(&c.sms, cudaDevAttrMultiProcessorCount, device));
    int major = 0;
    MMATTN_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    c.pdl = major >= 9;
    if (IN != GemvInput::Plain)
      MMATTN_CUDA_CHECK(
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, staged_smem_limit()));
  }
  auto it = c.per_sm.find(smem);
  if (it == c.per_sm.end()) {
    int per_sm = 0;
    MMATTN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, size_t(smem)));
    MMATTN_CHECK(per_sm >= 1, CudaError, "gemv: no block of ", kThreads, " threads with ", smem,
                 " bytes of shared memory fits on a multiprocessor");
    it = c.per_sm.emplace(smem, per_sm).first;
  }
  const int tasks = (a.n + ROWS - 1) / ROWS;
  const int blocks = std::max(1, std::min((tasks + kWarps - 1) / kWarps, c.sms * it->second));
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(unsigned(blocks));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = size_t(smem);
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = c.pdl ? 1 : 0;
  MMATTN_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, a));
}

// Dispatch on m (rounded up to the next instantiated width) and the input kind.
template <class T>
void run(const Args& a, GemvInput in, StreamHandle s) {
  auto go = [&]<int M, int ROWS>() {
    switch (in) {
      case GemvInput::Plain: launch<T, M, ROWS, GemvInput::Plain>(a, s); break;
      case GemvInput::RmsNorm: launch<T, M, ROWS, GemvInput::RmsNorm>(a, s); break;
      case GemvInput::SwiGLU: launch<T, M, ROWS, GemvInput::SwiGLU>(a, s); break;
    }
  };
  // Wider m is a template argument away, but measured slower than cuBLAS from m = 8 on (bench/NOTES.md):
  // per weight element the f32 FMAs and conversions grow with m while the bytes do not.
  if (a.m <= 1) go.template operator()<1, 4>();
  else go.template operator()<2, 4>();
}

}  // namespace mmattn::gemv_detail
