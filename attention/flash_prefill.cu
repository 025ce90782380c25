// flash_prefill_cuda: picks the Hopper fast path (16-byte aligned rows, no class mass, sm_90a
// build on a 9.0 device; attention/flash_prefill_sm90.cu) or the general mma.sync kernel
// (attention/flash_prefill.cuh, every feature), by head dim, dtype and modulation.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

#include "attention/attention_kernels.h"
#include "attention/flash_prefill.h"
#include "core/error.h"

namespace mmattn {

namespace {

// 16-byte loads need a 16-byte aligned base and strides that are multiples of 8 elements
// (the head dim is always a multiple of 8). Strides of size-1 dims never move the pointer.
bool rows_aligned16(const void* ptr, int64_t sb, int64_t sl, int64_t sh, int b, int l, int h) {
  if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0) return false;
  return (b == 1 || sb % 8 == 0) && (l == 1 || sl % 8 == 0) && (h == 1 || sh % 8 == 0);
}

template <class T, bool MOD>
void launch_general(const flash::PrefillArgs& a, cudaStream_t s) {
  switch (a.p.d) {
    case 64: flash::flash_prefill_launch<T, 64, MOD>(a, s); break;
    case 72: flash::flash_prefill_launch<T, 72, MOD>(a, s); break;
    case 80: flash::flash_prefill_launch<T, 80, MOD>(a, s); break;
    case 96: flash::flash_prefill_launch<T, 96, MOD>(a, s); break;
    case 128: flash::flash_prefill_launch<T, 128, MOD>(a, s); break;
    default: MMATTN_THROW(UnsupportedError, "flash_prefill: head_dim ", a.p.d, " is not supported");
  }
}

template <class T>
void launch_general(const flash::PrefillArgs& a, bool mod, cudaStream_t s) {
  if (mod) launch_general<T, true>(a, s);
  else launch_general<T, false>(a, s);
}

}  // namespace

void flash_prefill_cuda(const AttentionParams& p, StreamHandle stream, PrefillOrder order) {
  MMATTN_CHECK(p.dtype == DType::BF16 || p.dtype == DType::F16, UnsupportedError,
               "flash_prefill: dtype ", dtype_name(p.dtype), " (bf16/f16 only)");
  flash::PrefillArgs a;
  a.p = p;
  a.p.resolve_output_strides();
  a.group = p.hq / p.hkv;
  a.scale_log2 = p.scale * 1.4426950408889634f;
  a.vec_q = rows_aligned16(p.q, p.q_sb, p.q_sl, p.q_sh, p.batch, p.lq, p.hq);
  a.vec_k = rows_aligned16(p.k, p.k_sb, p.k_sl, p.k_sh, p.batch, p.lk, p.hkv);
  a.vec_v = rows_aligned16(p.v, p.v_sb, p.v_sl, p.v_sh, p.batch, p.lk, p.hkv);
  a.order = order;
  const bool mod = p.has_modulation() || p.key_class != nullptr;
  // in-kernel taps: unmodulated calls on the Hopper kernel (attention_params.h: PrefillTaps)
  const bool taps = p.taps && p.taps->n > 0 && !p.key_class && !p.class_mass &&
                    flash::flash_prefill_sm90_taps_fit(p.taps->n, p.lk, p.d);
  if (taps) {
    a.n_taps = p.taps->n;
    std::copy(p.taps->rows, p.taps->rows + p.taps->n, a.tap_rows);
    a.tap_probs = p.taps->probs;
    a.tap_ld = PrefillTaps::scratch_ld(p.lk);
  }
  cudaStream_t s = stream;
  // the fast path serves modulated calls too, except class mass (it returns false then)
  if (a.vec_q && a.vec_k && a.vec_v && attention_kernel_override() != 3 &&
      flash::flash_prefill_sm90_available() && flash::flash_prefill_sm90_launch(a, s)) {
    if (taps) p.taps->written = true;
    return;
  }
  if (p.dtype == DType::BF16) launch_general<__nv_bfloat16>(a, mod, s);
  else launch_general<__half>(a, mod, s);
}

}  // namespace mmattn
