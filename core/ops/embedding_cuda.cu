// Embedding: one block per token (grid-stride over tokens), copying the row in the widest word
// (16, 4, 2 or 1 bytes) that the row size and the pointers' alignment allow.
#include <cstdint>

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

}  // namespace mmattn
