#pragma once
// The CUDA attention kernels behind attention_cuda(). Each supports every feature of
// AttentionParams (GQA, causal bottom-right, k_lens/q_lens, LSE, modulation, class mass), so the
// dispatcher may pick either for any shape; it picks by speed.
#include "attention/attention_params.h"

namespace mmattn {

// FlashAttention-2 style tiled kernel (tensor cores, online softmax): many query rows.
// order (causal calls): the launch order of the query tiles. longest_first: the tiles with the most
// keys first across every head and sequence, the short ones last (the fastest schedule for one
// kernel: 640 tokens x 32 heads 26.3 -> 22.8 us on the H100); tiles_by_head: head after head
// (longest first within each), whose ragged last wave leaves multiprocessors free for a kernel
// running beside it on another stream (the split route below: 4K tokens 282 -> 271 us).
enum class PrefillOrder { longest_first, tiles_by_head };
void flash_prefill_cuda(const AttentionParams& p, StreamHandle s, PrefillOrder order = PrefillOrder::longest_first);
// Split-KV decode: few query rows per kv head, long keys; the keys are split across blocks so that
// one sequence fills the GPU, partial results combined by a second small kernel.
void flash_decode_cuda(const AttentionParams& p, StreamHandle s);

// Test hook, process-wide (tests and benchmarks only): which kernel attention_cuda() runs.
//   0 auto (default: decode when use_decode_kernel(), else prefill),
//   1 always flash_prefill_cuda (its fastest eligible path),
//   2 always flash_decode_cuda,
//   3 always flash_prefill_cuda's general mma.sync path (never the Hopper fast path),
//   4 auto, but the split PAI route (below) whenever it is eligible, whatever its cost model says.
void set_attention_kernel_override(int which);
int attention_kernel_override();

// The split PAI route of attention_cuda() (auto kernel choice only): when a prefill call modulates
// only its last few rows (rows >= first_modulated_row: at most 4, at most 32 rows per kv head) and
// needs no class mass nor q_lens, it runs the plain prefill over every row, then the modulated
// decode kernel over those rows (writing through the output strides), when a cost model says that
// beats the fused kernel (about Lk >= 1K with 32 kv heads of 128). Returns the number of tail
// rows it would run on the decode kernel (0: none is modulated, plain prefill only), -1 if the
// call is not split.
int attention_split_tail_rows(const AttentionParams& p);

// True when the decode kernel should serve this call.
inline bool use_decode_kernel(const AttentionParams& p) {
  const int rows_per_kv_head = p.lq * (p.hq / p.hkv);
  return p.lq <= 4 && rows_per_kv_head <= 32;
}

}  // namespace mmattn
