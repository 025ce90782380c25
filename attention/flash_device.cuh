#pragma once
// Device helpers shared by the flash attention kernels: packing, fast exp2, quad reductions (cp.async,
// ldmatrix and mma.sync come from core/mma.cuh).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "attention/attention_params.h"
#include "core/mma.cuh"

namespace mmattn::flash {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Two floats -> one register of two 16-bit values (lo in the low half).
template <class T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// 2^x on the SFU; exp2(-inf) = 0.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Reductions over the 4 lanes of a quad (the lanes that share a row of an mma fragment).
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// The (query tile, head, sequence) of this block (grid: x = query tiles, y = heads, z = sequences).
// Causal: the tiles with the most keys go first across all heads and sequences (the tile's rank
// varies slowest in the launch order), so the last wave holds the shortest tiles of every head
// (longest-processing-time first) instead of every tile of the last heads. by_head: the launch
// order of the grid, longest first within each head, whose unequal last wave leaves
// multiprocessors idle for a kernel running beside it (attention_cuda's split route).
struct TileCoord {
  int qtile, h, b;
};
__device__ __forceinline__ TileCoord tile_coord(bool causal, bool by_head) {
  if (causal && by_head) return {int(gridDim.x) - 1 - int(blockIdx.x), int(blockIdx.y), int(blockIdx.z)};
  if (!causal) return {int(blockIdx.x), int(blockIdx.y), int(blockIdx.z)};
  const unsigned heads_seqs = gridDim.y * gridDim.z;
  const unsigned lin = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned rank = lin / heads_seqs, rest = lin - rank * heads_seqs;
  return {int(gridDim.x - 1 - rank), int(rest % gridDim.y), int(rest / gridDim.y)};
}

// Per-block row/key ranges shared by both kernels. Row i (< qlen) sees keys j < lim(i) with
// lim(i) = klen, or min(klen, i + 1 + klen - qlen) when causal (bottom-right aligned).
struct BlockRange {
  int klen, qlen, shift;
  int n_end;         // keys [0, n_end) are seen by some real row of the block
  int unmasked_end;  // keys [0, unmasked_end) are seen by every real row of the block
  __device__ __forceinline__ int lim(int row, bool causal) const {
    return causal ? min(klen, row + 1 + shift) : klen;
  }
};
__device__ __forceinline__ BlockRange block_range(const AttentionParams& p, int b, int q0, int rows) {
  BlockRange r;
  r.klen = p.k_lens ? min(max(p.k_lens[b], 0), p.lk) : p.lk;
  r.qlen = p.q_lens ? min(max(p.q_lens[b], 0), p.lq) : p.lq;
  r.shift = r.klen - r.qlen;
  r.n_end = 0;
  if (q0 < r.qlen) r.n_end = p.causal ? max(0, min(r.klen, min(q0 + rows, r.qlen) + r.shift)) : r.klen;
  r.unmasked_end = p.causal ? max(0, min(r.klen, q0 + 1 + r.shift)) : r.klen;
  return r;
}

}  // namespace mmattn::flash
