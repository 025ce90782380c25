// attention_cuda: routes to the decode (split-KV) or prefill (flash) kernel.
#include <algorithm>
#include <atomic>

#include "attention/attention_kernels.h"

namespace mmattn {

namespace {
std::atomic<int> g_override{0};
}

void set_attention_kernel_override(int which) { g_override.store(which, std::memory_order_relaxed); }
int attention_kernel_override() { return g_override.load(std::memory_order_relaxed); }

namespace {

// Whether the split route can run its two parts at once: the plain rows [0, first) then need only
// a prefix of the keys (all of them without a causal mask; with one, the first + Lk - Lq keys that
// row first - 1 sees, bottom-right aligned) and no per-sequence key lengths (with k_lens the causal
// alignment is per sequence). first >= 1 always holds here (a call whose every row is in the
// tail takes the decode kernel: use_decode_kernel); the check keeps the prefill from getting 0 rows.
bool split_overlaps(const AttentionParams& p, int64_t first) {
  return first >= 1 && (!p.causal || (!p.k_lens && first + p.lk - p.lq >= 1));
}

// force: take the route whenever it is eligible (override 4, tests); else when its two parts
// overlap (the tail's decode pass then runs beside the prefill), or when the cost model below says
// the sequential split is faster than the fused kernel.
int split_tail_rows(const AttentionParams& p, bool force) {
  // Per-key modulation (needs key classes) of the last few rows only, nothing per row elsewhere
  // except the head gain (applied by both calls); no q_lens (the tail's rows are then the last
  // rows of every sequence) and no class mass (it covers every row).
  if (!p.key_class || p.class_mass || p.q_lens || use_decode_kernel(p)) return -1;
  const int64_t first = std::max<int64_t>(p.first_modulated_row, 0);
  if (first >= p.lq) return 0;  // no row is modulated: the plain kernel alone
  const int64_t tail = p.lq - first;
  const int64_t group = p.hq / p.hkv;
  if (tail > 4 || tail * group > 32) return -1;
  if (!force && !split_overlaps(p, first)) {
    // Measured on the H100 (bench_attention, causal h32 d128, last row): the fused kernel's
    // modulated warpgroup lengthens the longest (last) q tile, ~13 ns per key; the split route
    // adds a decode launch, ~8 us fixed plus a read of K and V (B Lk Hkv D 4 bytes at ~3 TB/s).
    // 640 keys: fused +5-7 us, split +11 us; 2K: +27 / +18 us; 4K: +56 / +30 us.
    const double fused_ns = 13.0 * p.lk;
    const double split_ns = 8000.0 + double(p.batch) * p.lk * p.hkv * p.d * 4.0 / 3000.0;
    if (split_ns >= fused_ns) return -1;
  }
  return int(tail);
}

}  // namespace

int attention_split_tail_rows(const AttentionParams& p) {
  const int which = attention_kernel_override();
  return which == 0 || which == 4 ? split_tail_rows(p, which == 4) : -1;
}

void attention_cuda(const AttentionParams& p_in, StreamHandle s) {
  const int which = attention_kernel_override();
  AttentionParams p = p_in;
  p.resolve_output_strides();
  const int tail = which == 0 || which == 4 ? split_tail_rows(p, which == 4) : -1;
  if (tail >= 0) {
    // PAI-like: the unmodulated (fast) prefill, and the modulated split-KV decode kernel over the
    // last `tail` rows.
    AttentionParams plain = p;
    plain.taps = nullptr;  // the rows' probabilities are modulated: not the plain call's
    plain.key_class = nullptr;
    plain.key_class_sb = 0;
    plain.num_classes = 0;
    plain.logit_abs_gain = plain.logit_bias = plain.post_weight = nullptr;
    plain.renormalize = false;
    plain.first_modulated_row = 0;
    if (tail == 0) return flash_prefill_cuda(plain, s);
    const int64_t first = p.lq - tail;
    AttentionParams t = p;
    t.q = static_cast<const char*>(p.q) + first * p.q_sl * dtype_size(p.dtype);
    t.out = static_cast<char*>(p.out) + first * p.out_sl * dtype_size(p.dtype);
    if (p.lse) t.lse = p.lse + first;  // rows: stride 1
    t.lq = tail;
    t.first_modulated_row = 0;
    if (split_overlaps(p, first)) {
      // Both at once: the prefill over rows [0, first) and the keys they see, the decode on the
      // side stream (they write disjoint rows of out and LSE; both only read q, k, v). The decode's
      // blocks are dispatched after the prefill's; the head-by-head order's ragged last wave gives
      // them multiprocessors (the longest-first order leaves none: the decode would run after it).
      plain.lq = first;
      if (p.causal) plain.lk = first + p.lk - p.lq;
      const StreamHandle side = side_stream();
      stream_wait(side, s);
      flash_prefill_cuda(plain, s, PrefillOrder::tiles_by_head);
      flash_decode_cuda(t, side);
      stream_wait(s, side);
      return;
    }
    // Sequential: the prefill over every row, then the decode overwriting the tail rows.
    flash_prefill_cuda(plain, s);
    flash_decode_cuda(t, s);
    return;
  }
  const bool decode = which == 0 || which == 4 ? use_decode_kernel(p) : which == 2;
  if (decode) flash_decode_cuda(p, s);
  else flash_prefill_cuda(p, s);
}

}  // namespace mmattn
