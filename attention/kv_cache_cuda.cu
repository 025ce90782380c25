// KVCache on the GPU: appending rows at per-sequence offsets, compaction, length updates.
#include <algorithm>

#include "attention/kv_cache_kernels.h"
#include "core/cuda_types.cuh"
#include "core/ops/rope.cuh"
#include "core/sm90.cuh"

namespace mmattn {

namespace {

// Both append kernels are launched allowed to start before the kernel ahead has finished
// (programmatic dependent launch: the q/k/v projection, usually) and wait for it before reading.
//
// One thread per unit U (16 bytes when every row is 16-byte aligned, else one element) of a
// row (b, i, :, :) of K or V (blockIdx.z); rows outside [start_b, end_b) are skipped.
// Rows (b, i) of the input go over blockIdx.y, grid-stride (gridDim.y <= 65535).
template <class U>
__global__ void kv_append_kernel(const KvAppendParams p, int64_t itemsize, int64_t units_per_head) {
  sm90::allow_next_grid();
  sm90::wait_for_previous_grid();  // the rows (and lengths) come from the kernels before
  const int which = blockIdx.z;
  for (int64_t row = blockIdx.y; row < p.batch * p.n; row += gridDim.y) {  // b * n + i
    const int64_t b = row / p.n, i = row - b * p.n;
    const int64_t dst_row = p.start[b] + i;
    if (dst_row >= p.end[b]) continue;
    const int64_t units = p.hkv * units_per_head;
    const U* src = reinterpret_cast<const U*>(static_cast<const char*>(p.src[which]) +
                                              (b * p.src_sb[which] + i * p.src_sl[which]) * itemsize);
    U* dst = reinterpret_cast<U*>(static_cast<char*>(p.dst[which]) +
                                  (b * p.max_len + dst_row) * p.hkv * p.d * itemsize);
    const int64_t sh = p.src_sh[which] * itemsize / int64_t(sizeof(U));  // head stride in units
    for (int64_t u = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; u < units; u += int64_t(gridDim.x) * blockDim.x) {
      const int64_t h = u / units_per_head, e = u - h * units_per_head;
      dst[u] = src[h * sh + e];
    }
  }
}

// RoPE fused in: one thread per pair (h, i), i < D/2, of a row (b, t) of plane z: 0 k (rotated into
// the cache; rows outside [start_b, end_b) skipped), 1 v (copied into the cache), 2 q (rotated in
// place, every row, as apply_rope_ does).
template <class T>
__global__ void kv_append_rope_kernel(const KvAppendParams p) {
  sm90::allow_next_grid();
  sm90::wait_for_previous_grid();  // q / k / v (and the lengths) come from the kernels before
  const int which = blockIdx.z;
  const int64_t half = p.d / 2, heads = which == 2 ? p.hq : p.hkv;
  const int64_t u = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (u >= heads * half) return;
  const int64_t h = u / half, i = u - h * half;
  for (int64_t row = blockIdx.y; row < p.batch * p.n; row += gridDim.y) {  // b * n + t
    const int64_t b = row / p.n, t = row - b * p.n;
    const T* src;
    T* dst;
    if (which == 2) {
      dst = static_cast<T*>(p.q) + b * p.q_sb + t * p.q_sl + h * p.q_sh;
      src = dst;
    } else {
      const int64_t dst_row = p.start[b] + t;
      if (dst_row >= p.end[b]) continue;
      src = static_cast<const T*>(p.src[which]) + b * p.src_sb[which] + t * p.src_sl[which] + h * p.src_sh[which];
      dst = static_cast<T*>(p.dst[which]) + ((b * p.max_len + dst_row) * p.hkv + h) * p.d;
    }
    const T a0 = src[i], a1 = src[i + half];
    if (which == 1) {
      dst[i] = a0, dst[i + half] = a1;
      continue;
    }
    float y0, y1;
    rope_pair<T, RopeStyle::HalfSplit>(to_f32(a0), to_f32(a1), p.cos[t * half + i], p.sin[t * half + i], y0, y1);
    dst[i] = from_f32<T>(y0);
    dst[i + half] = from_f32<T>(y1);
  }
}

template <class U>
__global__ void kv_gather_kernel(const char* base, int64_t plane_stride, int64_t row_bytes, const int32_t* keep,
                                 int64_t n_keep, char* tmp) {
  const int64_t plane = blockIdx.z, i = blockIdx.y;
  const U* src = reinterpret_cast<const U*>(base + plane * plane_stride + int64_t(keep[i]) * row_bytes);
  U* dst = reinterpret_cast<U*>(tmp + (plane * n_keep + i) * row_bytes);
  const int64_t units = row_bytes / int64_t(sizeof(U));
  for (int64_t u = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; u < units; u += int64_t(gridDim.x) * blockDim.x)
    dst[u] = src[u];
}

constexpr int kSetChunk = 256;
struct I32Chunk {
  int32_t v[kSetChunk];
};
__global__ void kv_set_kernel(int32_t* dst, I32Chunk c, int n) {
  if (int(threadIdx.x) < n) dst[threadIdx.x] = c.v[threadIdx.x];
}

}  // namespace

void kv_append_cuda(const KvAppendParams& p, StreamHandle s) {
  if (p.batch == 0 || p.n == 0) return;
  if (p.cos) {
    const int threads = 128;
    const int64_t pairs = std::max(p.hq, p.hkv) * (p.d / 2);
    const dim3 grid(unsigned((pairs + threads - 1) / threads), unsigned(std::min<int64_t>(p.batch * p.n, 65535)), 3);
    dispatch_float(p.dtype, "kv_append (rope)", [&]<class T>() {
      constexpr auto kernel = kv_append_rope_kernel<T>;
      sm90::launch_pdl(kernel, grid, dim3(threads), 0, s, p);
    });
    MMATTN_CUDA_CHECK_LAUNCH("kv_append (rope)");
    return;
  }
  const int64_t es = int64_t(dtype_size(p.dtype)), row_bytes = p.d * es;
  bool vec = row_bytes % 16 == 0;
  for (int w = 0; w < 2; ++w)
    vec = vec && aligned16(p.src[w]) && aligned16(p.dst[w]) && (p.src_sb[w] * es) % 16 == 0 &&
          (p.src_sl[w] * es) % 16 == 0 && (p.src_sh[w] * es) % 16 == 0;
  const int threads = 128;
  auto launch = [&]<class U>() {
    const int64_t uph = row_bytes / int64_t(sizeof(U));
    const int64_t units = p.hkv * uph;
    const dim3 grid(unsigned(std::min<int64_t>((units + threads - 1) / threads, 64)),
                    unsigned(std::min<int64_t>(p.batch * p.n, 65535)), 2);
    constexpr auto kernel = kv_append_kernel<U>;
    sm90::launch_pdl(kernel, grid, dim3(threads), 0, s, p, es, uph);
  };
  if (vec) launch.template operator()<uint4>();
  else if (es == 4) launch.template operator()<uint32_t>();
  else if (es == 2) launch.template operator()<uint16_t>();
  else launch.template operator()<uint8_t>();
  MMATTN_CUDA_CHECK_LAUNCH("kv_append");
}

void kv_compact_cuda(void* base, int64_t planes, int64_t plane_stride, int64_t row_bytes, const int32_t* keep,
                     int64_t n_keep, StreamHandle s) {
  if (n_keep == 0 || planes == 0) return;
  MMATTN_CHECK(n_keep <= 65535 && planes <= 65535, UnsupportedError, "kv_compact: ", n_keep, " rows x ", planes,
               " planes is too many for one launch");
  // Gather into a scratch buffer (the moves overlap in place), then copy back as one 2D copy.
  char* tmp = static_cast<char*>(cuda_alloc(size_t(planes * n_keep * row_bytes), s));
  const bool vec = row_bytes % 16 == 0 && aligned16(base) && plane_stride % 16 == 0;
  const int threads = 128;
  auto launch = [&]<class U>() {
    const int64_t units = row_bytes / int64_t(sizeof(U));
    const dim3 grid(unsigned(std::min<int64_t>((units + threads - 1) / threads, 64)), unsigned(n_keep),
                    unsigned(planes));
    kv_gather_kernel<U><<<grid, threads, 0, s>>>(static_cast<const char*>(base), plane_stride, row_bytes, keep,
                                                 n_keep, tmp);
  };
  if (vec) launch.template operator()<uint4>();
  else launch.template operator()<uint8_t>();
  MMATTN_CUDA_CHECK_LAUNCH("kv_compact");
  MMATTN_CUDA_CHECK(cudaMemcpy2DAsync(base, size_t(plane_stride), tmp, size_t(n_keep * row_bytes),
                                      size_t(n_keep * row_bytes), size_t(planes), cudaMemcpyDeviceToDevice, s));
  cuda_free(tmp);  // stream-ordered: reused only by later work on s
}

void kv_set_i32_cuda(int32_t* dst, const int32_t* values, int64_t n, StreamHandle s) {
  for (int64_t o = 0; o < n; o += kSetChunk) {
    const int m = int(std::min<int64_t>(kSetChunk, n - o));
    I32Chunk c;
    std::copy(values + o, values + o + m, c.v);
    kv_set_kernel<<<1, kSetChunk, 0, s>>>(dst + o, c, m);
    MMATTN_CUDA_CHECK_LAUNCH("kv_set_i32");
  }
}

}  // namespace mmattn
