// Embedding: one block per token (grid-stride over tokens), copying the row in the widest word
// (16, 4, 2 or 1 bytes) that the row size and the pointers' alignment allow. Weighted row
// combinations: one block per output row.
#include <cstdint>

#include "core/cuda_reduce.cuh"
#include "core/cuda_types.cuh"
#include "core/ops/embedding.h"

namespace mmattn {

namespace {

template <class W, class I>
__global__ void embedding_kernel(const I* __restrict__ ids, const W* __restrict__ table, W* __restrict__ y,
                                 long long tokens, long long vocab, long long words, unsigned long long* bad_pos) {
  for (long long t = blockIdx.x; t < tokens; t += gridDim.x) {
    const long long id = (long long)ids[t];
    W* yr = y + t * words;
    if (id < 0 || id >= vocab) {
      for (long long w = threadIdx.x; w < words; w += blockDim.x) yr[w] = W{};
      if (threadIdx.x == 0 && bad_pos) atomicMin(bad_pos, (unsigned long long)t);
      continue;
    }
    const W* tr = table + id * words;
    for (long long w = threadIdx.x; w < words; w += blockDim.x) yr[w] = tr[w];
  }
}

template <class W>
void launch(const EmbeddingParams& p, StreamHandle s) {
  const long long words = p.row_bytes / (long long)sizeof(W);
  int threads = int(words < 256 ? (words + 31) / 32 * 32 : 256);
  const unsigned grid = unsigned(p.tokens < (1 << 20) ? p.tokens : (1 << 20));
  const auto table = static_cast<const W*>(p.table);
  const auto y = static_cast<W*>(p.y);
  if (p.id_dtype == DType::I32)
    embedding_kernel<W, int><<<grid, threads, 0, s>>>(static_cast<const int*>(p.ids), table, y, p.tokens, p.vocab,
                                                       words, p.bad_pos);
  else
    embedding_kernel<W, long long><<<grid, threads, 0, s>>>(static_cast<const long long*>(p.ids), table, y, p.tokens,
                                                             p.vocab, words, p.bad_pos);
  MMATTN_CUDA_CHECK_LAUNCH("embedding");
}

}  // namespace

void embedding_cuda(const EmbeddingParams& p, StreamHandle s) {
  if (p.bad_pos) MMATTN_CUDA_CHECK(cudaMemsetAsync(p.bad_pos, 0xff, sizeof(unsigned long long), s));
  if (p.tokens == 0 || p.row_bytes == 0) return;
  const uintptr_t align = reinterpret_cast<uintptr_t>(p.table) | reinterpret_cast<uintptr_t>(p.y);
  const auto fits = [&](long long w) { return p.row_bytes % w == 0 && align % w == 0; };
  if (fits(16))
    launch<uint4>(p, s);
  else if (fits(4))
    launch<uint32_t>(p, s);
  else if (fits(2))
    launch<uint16_t>(p, s);
  else
    launch<uint8_t>(p, s);
}

namespace {

// Block (r, cy): output row r, columns [cy * blockDim.x * V, ...) with V consecutive columns per
// thread (one 16-byte load per entry when the rows allow it). Each thread walks the row's entries
// in list order, four entries' loads in flight at a time, accumulating in f32 (one rounding at the
// end, as the CPU path).
template <class T, int V>
__global__ void weighted_rows_kernel(const T* __restrict__ x, long long d, long long x_stride,
                                     const int32_t* __restrict__ offsets, const int32_t* __restrict__ index,
                                     const float* __restrict__ weights, T* __restrict__ y) {
  const long long r = blockIdx.x;
  const long long c0 = ((long long)blockIdx.y * blockDim.x + threadIdx.x) * V;
  if (c0 >= d) return;
  const int32_t e0 = offsets[r], e1 = offsets[r + 1];
  float acc[V];
#pragma unroll
  for (int k = 0; k < V; ++k) acc[k] = 0.f;
  const auto row = [&](int32_t e) { return *reinterpret_cast<const Vec<T, V>*>(x + (long long)index[e] * x_stride + c0); };
  int32_t e = e0;
  for (; e + 4 <= e1; e += 4) {
    Vec<T, V> v[4];
    float w[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) v[u] = row(e + u), w[u] = weights[e + u];
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
      for (int k = 0; k < V; ++k) acc[k] += w[u] * to_f32(v[u].v[k]);
  }
  for (; e < e1; ++e) {
    const Vec<T, V> v = row(e);
    const float w = weights[e];
#pragma unroll
    for (int k = 0; k < V; ++k) acc[k] += w * to_f32(v.v[k]);
  }
  Vec<T, V> out;
#pragma unroll
  for (int k = 0; k < V; ++k) out.v[k] = from_f32<T>(acc[k]);
  *reinterpret_cast<Vec<T, V>*>(y + r * d + c0) = out;
}

template <class T, int V>
void launch_weighted_rows(const WeightedRowsParams& p, StreamHandle s) {
  constexpr int kThreads = 128;
  const long long per_row = (p.d / V + kThreads - 1) / kThreads;
  weighted_rows_kernel<T, V><<<dim3(unsigned(p.rows), unsigned(per_row)), kThreads, 0, s>>>(
      static_cast<const T*>(p.x), p.d, p.x_stride, p.offsets, p.index, p.weights, static_cast<T*>(p.y));
}

}  // namespace

void weighted_rows_cuda(const WeightedRowsParams& p, StreamHandle s) {
  if (p.rows == 0 || p.d == 0) return;
  dispatch_float(p.dtype, "weighted_rows", [&]<class T>() {
    constexpr int V = 16 / sizeof(T);
    const bool vec = p.d % V == 0 && p.x_stride % V == 0 && aligned16(p.x) && aligned16(p.y);
    if (vec)
      launch_weighted_rows<T, V>(p, s);
    else
      launch_weighted_rows<T, 1>(p, s);
  });
  MMATTN_CUDA_CHECK_LAUNCH("weighted_rows");
}

}  // namespace mmattn
