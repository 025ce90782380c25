// Norms on the GPU. Statistics in f32 (group norm: partial sums combined in f64).
//
// Row norms (layer_norm, rms_norm over contiguous [rows, cols]) keep the row in REGISTERS: each of
// the G threads that share a row holds NV vectors of V elements (V = 16 bytes / itemsize when the
// row length and every pointer allow 16-byte accesses, else V = 1), and issues all its loads of x
// before the first use. G <= 32 (rows of up to 128 vectors): several rows per block, reduced with
// shuffles inside the warp; else one row per block of G = blockDim <= 512 threads. x is read from
// global memory exactly once, so the kernel moves the floor's bytes (read x, write y; weight/bias
// come from L1/L2). Rows of more than 512 * nv_max<V> vectors (32768 columns on the vector path,
// 8192 on the scalar one) take row_norm_long_kernel, which re-reads x.
//
// Group norm splits each (sample, group) over many blocks, two launches, each grid one wave:
// group_norm_stats_kernel writes per-chunk sums of (x - K) and (x - K)^2 in f64 (K = the group's
// first element, a shift that keeps the one-pass variance accurate even for a large mean);
// group_norm_apply_kernel sums its group's partials and normalises its chunk, walking it backwards
// so that it starts on the part of x that the stats kernel left in L2.
#include <algorithm>
#include <cmath>
#include <climits>
#include <cstring>

#include "core/cuda_reduce.cuh"
#include "core/cuda_types.cuh"
#include "core/device.h"
#include "core/ops/norm.h"
#include "core/sm90.cuh"

namespace mmattn {

namespace {

constexpr int kRowThreadsMax = 512;  // threads per row in the register path
// Vectors per thread in the register path: at most 64 elements, or nvcc keeps more converted
// floats than it has registers for (seen: bf16 with 16 vectors of 8 spilled at 128 registers).
template <int V>
constexpr int nv_max() {
  return 64 / V < 16 ? 64 / V : 16;
}
constexpr int kShortVecs = 128;      // rows of at most this many vectors: G <= 32 threads per row


int next_pow2(int v) {
  int p = 1;
  while (p < v) p <<= 1;
  return p;
}

// Read-only (non-coherent path) load of a 16-, 4- or 2-byte vector.
template <class VecT>
__device__ __forceinline__ VecT ldg(const VecT* p) {
  VecT r;
  if constexpr (sizeof(VecT) == 16) {
    const uint4 u = __ldg(reinterpret_cast<const uint4*>(p));
    memcpy(&r, &u, 16);
  } else if constexpr (sizeof(VecT) == 4) {
    const unsigned u = __ldg(reinterpret_cast<const unsigned*>(p));
    memcpy(&r, &u, 4);
  } else {
    static_assert(sizeof(VecT) == 2);
    const unsigned short u = __ldg(reinterpret_cast<const unsigned short*>(p));
    memcpy(&r, &u, 2);
  }
  return r;
}

// Sum over the G threads of one row: G <= 32 (a power of two) are lanes of one warp; G > 32 is
// the whole block. Every thread of the block must call it (the block may hold rows past the end).
__device__ __forceinline__ float row_sum(float v, int G, float* scratch) {
  if (G > 32) return block_sum(v, scratch);
  for (int o = G >> 1; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <class T, int V, bool RMS>
__device__ __forceinline__ Vec<T, V> norm_vec(const Vec<T, V>& in, const Vec<T, V>& wk, const Vec<T, V>& bk,
                                              bool has_w, bool has_b, float mean, float inv) {
  Vec<T, V> out;
#pragma unroll
  for (int e = 0; e < V; ++e) {
    const float f = to_f32(in.v[e]);
    if (RMS) {
      // transformers rounds the normalised value to the input dtype before the weight multiply
      const float n = to_f32(from_f32<T>(f * inv));
      out.v[e] = from_f32<T>(has_w ? to_f32(wk.v[e]) * n : n);
    } else {
      float v = (f - mean) * inv;
      if (has_w) v *= to_f32(wk.v[e]);
      if (has_b) v += to_f32(bk.v[e]);
      out.v[e] = from_f32<T>(v);
    }
  }
  return out;
}

// Row in registers. Thread `lane` of a row holds vectors lane + k*G, k < NV.
template <class T, int V, int NV, bool RMS>
__global__ void __launch_bounds__(kRowThreadsMax)
    row_norm_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b, T* __restrict__ y,
                    long long rows, int cols, int G, float eps) {
  using VecT = Vec<T, V>;
  __shared__ float scratch[32];
  sm90::allow_next_grid();
  sm90::wait_for_previous_grid();  // x comes from the kernels before (programmatic launch)
  const int lane = G > 32 ? int(threadIdx.x) : int(threadIdx.x & (G - 1));
  const long long row = (long long)blockIdx.x * (blockDim.x / G) + threadIdx.x / G;
  const bool valid = row < rows;
  const int nvec = cols / V;
  const long long off = (valid ? row : 0) * (long long)cols;
  const VecT* xr = reinterpret_cast<const VecT*>(x + off);

  VecT v[NV];
#pragma unroll
  for (int k = 0; k < NV; ++k)
    if (valid && lane + k * G < nvec) v[k] = xr[lane + k * G];

  float s = 0.f;
#pragma unroll
  for (int k = 0; k < NV; ++k)
    if (valid && lane + k * G < nvec) {
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const float f = to_f32(v[k].v[e]);
        s += RMS ? f * f : f;
      }
    }
  s = row_sum(s, G, scratch);
  float mean = 0.f, inv;
  if (RMS) {
    inv = rsqrtf(s / cols + eps);
  } else {
    mean = s / cols;
    // centred second pass over the registers (no cancellation as in E[x^2] - mean^2)
    float d2 = 0.f;
#pragma unroll
    for (int k = 0; k < NV; ++k)
      if (valid && lane + k * G < nvec) {
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const float d = to_f32(v[k].v[e]) - mean;
          d2 += d * d;
        }
      }
    inv = rsqrtf(row_sum(d2, G, scratch) / cols + eps);
  }
  if (!valid) return;

  const VecT* wv = reinterpret_cast<const VecT*>(w);
  const VecT* bv = reinterpret_cast<const VecT*>(b);
  const bool has_w = w != nullptr, has_b = b != nullptr;
  VecT* yr = reinterpret_cast<VecT*>(y + off);
#pragma unroll
  for (int k = 0; k < NV; ++k) {
    const int i = lane + k * G;
    if (i < nvec) {
      VecT wk, bk;
      if (has_w) wk = wv[i];
      if (!RMS && has_b) bk = bv[i];
      yr[i] = norm_vec<T, V, RMS>(v[k], wk, bk, has_w, has_b, mean, inv);
    }
  }
}

// Rows too long for registers: one block per row, x read three times (twice for RMS); the row
// mostly comes back from L2.
constexpr int kLongThreads = 1024;
constexpr int kLongUnroll = 4;

template <class T, int V, bool RMS>
__global__ void __launch_bounds__(kLongThreads)
    row_norm_long_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                         T* __restrict__ y, int cols, float eps) {
  using VecT = Vec<T, V>;
  __shared__ float scratch[32];
  sm90::allow_next_grid();
  sm90::wait_for_previous_grid();
  const long long off = (long long)blockIdx.x * cols;
  const VecT* xr = reinterpret_cast<const VecT*>(x + off);
  VecT* yr = reinterpret_cast<VecT*>(y + off);
  const int nvec = cols / V, step = blockDim.x * kLongUnroll;

  float s = 0.f;
  for (int i0 = threadIdx.x; i0 < nvec; i0 += step) {
    VecT a[kLongUnroll];
#pragma unroll
    for (int u = 0; u < kLongUnroll; ++u)
      if (i0 + u * int(blockDim.x) < nvec) a[u] = xr[i0 + u * blockDim.x];
#pragma unroll
    for (int u = 0; u < kLongUnroll; ++u)
      if (i0 + u * int(blockDim.x) < nvec)
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const float f = to_f32(a[u].v[e]);
          s += RMS ? f * f : f;
        }
  }
  s = block_sum(s, scratch);
  float mean = 0.f, inv;
  if (RMS) {
    inv = rsqrtf(s / cols + eps);
  } else {
    mean = s / cols;
    float d2 = 0.f;
    for (int i0 = threadIdx.x; i0 < nvec; i0 += step) {
      VecT a[kLongUnroll];
#pragma unroll
      for (int u = 0; u < kLongUnroll; ++u)
        if (i0 + u * int(blockDim.x) < nvec) a[u] = xr[i0 + u * blockDim.x];
#pragma unroll
      for (int u = 0; u < kLongUnroll; ++u)
        if (i0 + u * int(blockDim.x) < nvec)
#pragma unroll
          for (int e = 0; e < V; ++e) {
            const float d = to_f32(a[u].v[e]) - mean;
            d2 += d * d;
          }
    }
    inv = rsqrtf(block_sum(d2, scratch) / cols + eps);
  }

  const VecT* wv = reinterpret_cast<const VecT*>(w);
  const VecT* bv = reinterpret_cast<const VecT*>(b);
  const bool has_w = w != nullptr, has_b = b != nullptr;
  for (int i0 = threadIdx.x; i0 < nvec; i0 += step) {
    VecT a[kLongUnroll];
#pragma unroll
    for (int u = 0; u < kLongUnroll; ++u)
      if (i0 + u * int(blockDim.x) < nvec) a[u] = xr[i0 + u * blockDim.x];
#pragma unroll
    for (int u = 0; u < kLongUnroll; ++u) {
      const int i = i0 + u * blockDim.x;
      if (i < nvec) {
        VecT wk, bk;
        if (has_w) wk = wv[i];
        if (!RMS && has_b) bk = bv[i];
        yr[i] = norm_vec<T, V, RMS>(a[u], wk, bk, has_w, has_b, mean, inv);
      }
    }
  }
}

template <class T, int V, bool RMS>
void launch_rows(const T* x, const T* w, const T* b, T* y, long long rows, int cols, float eps, cudaStream_t s) {
  const int nvec = cols / V;
  int nv, G, threads;
  long long blocks;
  if (nvec <= kShortVecs) {
    // G = a power of two <= 32 lanes per row, several rows per block
    nv = 1;
    G = next_pow2(nvec);
    while (G > 32) {
      nv *= 2;
      G = next_pow2((nvec + nv - 1) / nv);
    }
    int rpb = 256 / G;  // rows per block; fewer when that leaves SMs idle (blocks stay >= 1 warp)
    const long long want = 2LL * cuda_sm_count();
    while (rpb * G > 32 && (rows + rpb - 1) / rpb < want) rpb /= 2;
    threads = rpb * G;
    blocks = (rows + rpb - 1) / rpb;
  } else {
    nv = 2;
    while (nv < nv_max<V>() && (nvec + nv - 1) / nv > 128) nv *= 2;
    threads = ((nvec + nv - 1) / nv + 31) / 32 * 32;
    G = threads;
    blocks = rows;
  }
  MMATTN_CHECK(blocks <= INT_MAX, ShapeError, "row norm: ", rows, " rows are too many for one launch");
  const dim3 grid{unsigned(blocks)};
  if (threads > kRowThreadsMax) {
    constexpr auto kernel = row_norm_long_kernel<T, V, RMS>;
    sm90::launch_pdl(kernel, grid, dim3(kLongThreads), 0, s, x, w, b, y, cols, eps);
    return;
  }
  auto go = [&]<int NV>() {
    if constexpr (NV <= nv_max<V>()) {
      constexpr auto kernel = row_norm_kernel<T, V, NV, RMS>;
      sm90::launch_pdl(kernel, grid, dim3(unsigned(threads)), 0, s, x, w, b, y, rows,
                       cols, G, eps);
    }
  };
  switch (nv) {
    case 1: go.template operator()<1>(); break;
    case 2: go.template operator()<2>(); break;
    case 4: go.template operator()<4>(); break;
    case 8: go.template operator()<8>(); break;
    default: go.template operator()<16>(); break;
  }
}

template <bool RMS>
void launch_row_norm(const RowNormParams& p, StreamHandle s) {
  dispatch_float(p.dtype, RMS ? "rms_norm" : "layer_norm", [&]<class T>() {
    MMATTN_CHECK(p.cols > 0 && p.cols <= INT_MAX, ShapeError, RMS ? "rms_norm" : "layer_norm", ": ", p.cols,
                 " columns are too many");
    if (p.rows == 0) return;
    const int cols = int(p.cols);
    constexpr int V16 = 16 / sizeof(T);
    const bool vec_ok = cols % V16 == 0 && aligned16(p.x) && aligned16(p.y) && aligned16(p.weight) &&
                        aligned16(p.bias);
    auto x = static_cast<const T*>(p.x);
    auto w = static_cast<const T*>(p.weight);
    auto b = static_cast<const T*>(p.bias);
    auto y = static_cast<T*>(p.y);
    if (vec_ok)
      launch_rows<T, V16, RMS>(x, w, b, y, p.rows, cols, p.eps, s);
    else
      launch_rows<T, 1, RMS>(x, w, b, y, p.rows, cols, p.eps, s);
    MMATTN_CUDA_CHECK_LAUNCH("row_norm");
  });
}

// ---------------------------------------------------------------------------------------------
// GroupNorm. The (sample, group) slab is contiguous: gid * count .. (gid + 1) * count, with
// count = cpg * spatial; so count % V == 0 and aligned pointers make every slab 16-byte aligned.

constexpr int kGnThreads = 256;
constexpr int kGnStatsUnroll = 8;  // 16-byte loads in flight per thread in the stats kernel
constexpr int kGnApplyUnroll = 4;  // per thread in the apply kernel, plus as many prefetched

__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Block-wide sums of two doubles (blockDim.x a multiple of 32); every thread gets both.
__device__ __forceinline__ void block_sum2_d(double& a, double& b, double2* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  a = warp_sum_d(a);
  b = warp_sum_d(b);
  __syncthreads();
  if (lane == 0) scratch[warp] = make_double2(a, b);
  __syncthreads();
  const double2 t = lane < nwarps ? scratch[lane] : make_double2(0.0, 0.0);
  a = warp_sum_d(t.x);
  b = warp_sum_d(t.y);
}

struct GnArgs {
  const void* x;
  const void* w;
  const void* b;
  void* y;
  double2* partial;       // [groups_total, stats_chunks]: sums of (x - K), (x - K)^2
  long long count;        // elements per (sample, group)
  long long spatial;
  int groups;             // per sample
  int cpg;                // channels per group
  int stats_chunks;       // stats blocks per (sample, group)
  int apply_chunks;       // apply blocks per (sample, group)
  float eps;
};

// Block p's range of vectors inside its group: [c0, c1).
__device__ __forceinline__ void gn_chunk(long long nvec, int chunks, int p, long long& c0, long long& c1) {
  c0 = nvec * p / chunks;
  c1 = nvec * (p + 1) / chunks;
}

template <class T, int V>
__global__ void __launch_bounds__(kGnThreads) group_norm_stats_kernel(GnArgs a) {
  using VecT = Vec<T, V>;
  constexpr int U = kGnStatsUnroll;
  __shared__ double2 scratch[32];
  const long long gid = blockIdx.x / a.stats_chunks;
  const int p = int(blockIdx.x % a.stats_chunks);
  const T* xg = static_cast<const T*>(a.x) + gid * a.count;
  const VecT* xv = reinterpret_cast<const VecT*>(xg);
  const float K = to_f32(ldg(xg));
  long long c0, c1;
  gn_chunk(a.count / V, a.stats_chunks, p, c0, c1);
  double S = 0.0, SS = 0.0;
  for (long long i0 = c0 + threadIdx.x; i0 < c1; i0 += (long long)kGnThreads * U) {
    VecT v[U];
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (i0 + u * kGnThreads < c1) v[u] = ldg(xv + i0 + u * kGnThreads);
    // a short f32 run per iteration (at most U * V terms of (x - K)), then f64
    float s = 0.f, ss = 0.f;
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (i0 + u * kGnThreads < c1)
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const float d = to_f32(v[u].v[e]) - K;
          s += d;
          ss += d * d;
        }
    S += s;
    SS += ss;
  }
  block_sum2_d(S, SS, scratch);
  if (threadIdx.x == 0) a.partial[gid * a.stats_chunks + p] = make_double2(S, SS);
}

// Normalises a chunk of one group. The grid is one wave, and so was the stats kernel's: when it
// ended, L2 held the ENDS of its chunks, so this kernel walks its chunk from the end backwards.
// SAME_CHANNEL: spatial % V == 0, so each vector lies in one channel.
template <class T, int V, bool SAME_CHANNEL>
__global__ void __launch_bounds__(kGnThreads, 3) group_norm_apply_kernel(GnArgs a) {
  using VecT = Vec<T, V>;
  constexpr int U = kGnApplyUnroll;
  constexpr int kStep = kGnThreads * U;  // vectors per iteration of the block
  __shared__ double2 scratch[32];
  const long long gid = blockIdx.x / a.apply_chunks;
  const int p = int(blockIdx.x % a.apply_chunks);
  const long long base = gid * a.count;
  const T* xg = static_cast<const T*>(a.x) + base;
  const VecT* xv = reinterpret_cast<const VecT*>(xg);
  VecT* yv = reinterpret_cast<VecT*>(static_cast<T*>(a.y) + base);
  long long c0, c1;
  gn_chunk(a.count / V, a.apply_chunks, p, c0, c1);
  const int iters = int((c1 - c0 + kStep - 1) / kStep);

  auto load = [&](VecT (&v)[U], int it) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const long long i = c0 + (long long)it * kStep + u * kGnThreads + threadIdx.x;
      if (i < c1) v[u] = ldg(xv + i);
    }
  };
  // the first (last in memory) loads go out before the group's partials are reduced
  VecT cur[U], nxt[U];
  if (iters > 0) load(cur, iters - 1);

  double S = 0.0, SS = 0.0;
  const double2* part = a.partial + gid * a.stats_chunks;
  for (int j = threadIdx.x; j < a.stats_chunks; j += kGnThreads) {
    const double2 t = part[j];
    S += t.x;
    SS += t.y;
  }
  block_sum2_d(S, SS, scratch);
  const double n = double(a.count);
  const double dm = S / n;
  const double var = fmax(SS / n - dm * dm, 0.0);
  // x - mean as (x - K) - (mean - K): x - K is (nearly) exact when x is near K, so a large mean
  // costs no precision, as it would with x - float(mean)
  const float K = to_f32(ldg(xg));
  const float dmf = float(dm);
  const float inv = float(1.0 / sqrt(var + double(a.eps)));

  const T* w = static_cast<const T*>(a.w);
  const T* b = static_cast<const T*>(a.b);
  const long long ch_base = (gid % a.groups) * a.cpg;
  const bool small = a.count <= 0xffffffffLL;
  for (int it = iters - 1; it >= 0; --it) {
    if (it > 0) load(nxt, it - 1);  // prefetch the next (lower) slice while this one is written
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const long long i = c0 + (long long)it * kStep + u * kGnThreads + threadIdx.x;
      if (i >= c1) continue;
      const long long e0 = i * V;
      long long c = small ? (long long)(unsigned(e0) / unsigned(a.spatial)) : e0 / a.spatial;
      VecT o;
      if constexpr (SAME_CHANNEL) {
        const float wc = w ? to_f32(w[ch_base + c]) : 1.f;
        const float bc = b ? to_f32(b[ch_base + c]) : 0.f;
#pragma unroll
        for (int e = 0; e < V; ++e) {
          float t = ((to_f32(cur[u].v[e]) - K) - dmf) * inv;
          if (w) t *= wc;
          if (b) t += bc;
          o.v[e] = from_f32<T>(t);
        }
      } else {
        long long r = e0 - c * a.spatial;
#pragma unroll
        for (int e = 0; e < V; ++e) {
          float t = ((to_f32(cur[u].v[e]) - K) - dmf) * inv;
          if (w) t *= to_f32(w[ch_base + c]);
          if (b) t += to_f32(b[ch_base + c]);
          o.v[e] = from_f32<T>(t);
          if (++r == a.spatial) {
            r = 0;
            ++c;
          }
        }
      }
      yv[i] = o;
    }
#pragma unroll
    for (int u = 0; u < U; ++u) cur[u] = nxt[u];
  }
}

// Blocks per (sample, group) for a one-wave grid of a kernel with `occupancy` resident blocks
// per SM; each block gets at least `min_vecs` vectors.
int gn_chunks(int occupancy, long long groups_total, long long nvec, long long min_vecs) {
  const long long resident = (long long)std::max(1, occupancy) * cuda_sm_count();
  const long long by_size = std::max(1LL, nvec / min_vecs);
  return int(std::max(1LL, std::min({resident / groups_total, by_size, 1024LL})));
}

template <class T, int V>
void launch_group_norm(const GroupNormParams& p, GnArgs a, cudaStream_t s) {
  const long long groups_total = p.n * p.groups;
  const long long nvec = a.count / V;
  const bool same = a.spatial % V == 0;
  auto apply = same ? group_norm_apply_kernel<T, V, true> : group_norm_apply_kernel<T, V, false>;
  static const int occ_stats = [] {
    int o = 0;
    MMATTN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&o, group_norm_stats_kernel<T, V>, kGnThreads, 0));
    return o;
  }();
  static const int occ_apply = [] {
    int o1 = 0, o2 = 0;
    MMATTN_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&o1, group_norm_apply_kernel<T, V, true>, kGnThreads, 0));
    MMATTN_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&o2, group_norm_apply_kernel<T, V, false>, kGnThreads, 0));
    return std::min(o1, o2);
  }();
  // one wave each; the apply blocks each read all stats_chunks partials of their group, which
  // stay few (<= 1024, and groups_total * stats_chunks <= the resident blocks) next to a chunk
  a.stats_chunks = gn_chunks(occ_stats, groups_total, nvec, 2048);
  a.apply_chunks = gn_chunks(occ_apply, groups_total, nvec, 1024);
  const long long stats_blocks = groups_total * a.stats_chunks, apply_blocks = groups_total * a.apply_chunks;
  MMATTN_CHECK(std::max(stats_blocks, apply_blocks) <= INT_MAX, ShapeError, "group_norm: ", groups_total,
               " groups are too many for one launch");
  void* ws = cuda_alloc(size_t(stats_blocks) * sizeof(double2), s);
  a.partial = static_cast<double2*>(ws);
  group_norm_stats_kernel<T, V><<<unsigned(stats_blocks), kGnThreads, 0, s>>>(a);
  cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) {
    apply<<<unsigned(apply_blocks), kGnThreads, 0, s>>>(a);
    err = cudaGetLastError();
  }
  cuda_free(ws);  // stream-ordered: reused only by later work on this stream
  MMATTN_CUDA_CHECK(err);
}

}  // namespace

void layer_norm_cuda(const RowNormParams& p, StreamHandle s) { launch_row_norm<false>(p, s); }
void rms_norm_cuda(const RowNormParams& p, StreamHandle s) { launch_row_norm<true>(p, s); }

void group_norm_cuda(const GroupNormParams& p, StreamHandle s) {
  dispatch_float(p.dtype, "group_norm", [&]<class T>() {
    const long long cpg = p.channels / p.groups;
    GnArgs a{};
    a.x = p.x;
    a.w = p.weight;
    a.b = p.bias;
    a.y = p.y;
    a.count = cpg * p.spatial;
    a.spatial = p.spatial;
    a.groups = p.groups;
    a.cpg = int(cpg);
    a.eps = p.eps;
    if (p.n == 0 || a.count == 0) return;
    constexpr int V16 = 16 / sizeof(T);
    const bool vec_ok = a.count % V16 == 0 && aligned16(p.x) && aligned16(p.y);
    if (vec_ok)
      launch_group_norm<T, V16>(p, a, s);
    else
      launch_group_norm<T, 1>(p, a, s);
  });
}

}  // namespace mmattn
