#pragma once
// A decode token's attention half of a Llama layer in one CUDA kernel (one token of one sequence):
//   q | k | v = rope(rms_norm(x, norm_weight, eps) W^T + b)   as rms_norm_linear_qkv_rope (core/ops/linear.h)
//   k, v     -> the cache's row `len` (the token's slot: KVCache::next_rows_k / next_rows_v)
//   out      =  softmax(scale q K^T) V over the len + 1 keys of each query head (GQA: query head h
//               reads kv head h / (hq / hkv)), as attention() with causal decode rows
// The q/k/v product's gemv kernel (core/ops/gemv_cuda.cuh) computes q's rows first; its blocks then
// take, between the later row groups, the attention over the cache's old keys (which do not depend on
// the token's k and v) in items of kDecodeFusedKeys keys per query head, and after the last row group
// one merge per head that adds the token's own key and writes out. So the attention's bytes stream
// while the product's weight does, and the decode attention kernel's launch, first round trips and
// tail leave the layer's chain (bench/NOTES.md, session 25).
// Numerics: q, k and v equal rms_norm_linear_qkv_rope's bit for bit; the attention accumulates in f32
// in its own order (within rounding of attention()'s decode kernel).
// Residency: the kernel's items wait for other blocks' items (one wave of blocks; a block's first
// item is static), so its blocks must all become resident once the kernels ahead of it on its stream
// have finished: true on one stream; a kernel on another stream that holds multiprocessors until
// this one progresses (e.g. a second fused step spinning beside it) could stall it.
#include <cstdint>

#include "core/ops/linear.h"
#include "core/tensor.h"

namespace mmattn {

constexpr int64_t kDecodeFusedKeys = 128;     // old keys per attention item
// len + 1 at most (at most 12 items per head): past ~1500 keys the attention's bytes cost more inside
// the product's kernel than in the decode kernel of their own (bench/NOTES.md, session 25)
constexpr int64_t kDecodeFusedMaxKeys = 1536;

// Whether this build and device take the fused form: CUDA, bf16 / f16, one row of x (x [1, K] or
// [1, 1, K]), head_dim 64 or 128, the q/k/v product on the skinny gemv with paired outputs (gemv_paired_outputs),
// len + 1 <= kDecodeFusedMaxKeys, and the process switch on (set_decode_attention_fused).
bool decode_attention_fusable(const Tensor& x, const Tensor& weight, int64_t hq, int64_t hkv, int64_t head_dim,
                              int64_t len);
// The fused form. k_cache / v_cache: one layer of a KV cache for one sequence, [1, max_len, hkv, D]
// contiguous (KVCache::k(l) / v(l) at batch 1), rows [0, len) the old keys; row len receives the
// token's k / v (len < max_len). cos / sin: F32 [1, D / 2], the token's RoPE row. Returns out
// [1, 1, hq * D] (x's dtype). The caller records the appended row (KVCache::append_written).
Tensor rms_norm_qkv_rope_attention(const Tensor& x, const Tensor& norm_weight, float eps, const Tensor& weight,
                                   const Tensor& bias, const Tensor& cos, const Tensor& sin, int64_t hq, int64_t hkv,
                                   const Tensor& k_cache, const Tensor& v_cache, int64_t len, float scale);

// Process-wide switch (on by default; MMATTN_DECODE_FUSED=0 turns it off at start-up): off,
// decode_attention_fusable answers false and the caller runs the product, then attention() (A/B).
void set_decode_attention_fused(bool on);
bool decode_attention_fused();
int64_t decode_attention_fused_calls();  // calls so far, process-wide (tests: the fused form ran)

namespace detail {
// The kernel's arguments (decode_fused_cuda.cuh); pointers on the device.
struct DecodeFusedArgs {
  GemvParams product;       // the q/k/v product (RmsNorm input, QkvRope output: the token's rotated q
                            // to product.rope.out[0], [hq * D]; k / v to the cache's row len)
  const void* k = nullptr;  // cache rows: key j of kv head h at (j * hkv + h) * D
  const void* v = nullptr;
  void* out = nullptr;      // [hq * D]
  float* ws = nullptr;      // [hq * splits, 2 + D]
  int hq = 0, hkv = 0, d = 0, len = 0, splits = 0;
  float scale = 0.f;
};
void decode_fused_cuda(const DecodeFusedArgs& a, StreamHandle s);
// Whether the kernel's dynamic shared memory (the staged row of x and the attention items' K / V)
// fits a block on the current device for kdim columns.
bool decode_fused_fits(int64_t kdim, int64_t head_dim);
}  // namespace detail

}  // namespace mmattn
