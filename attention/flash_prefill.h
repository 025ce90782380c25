#pragma once
// Internal interface of the flash prefill kernels (attention/flash_prefill*.cu). Not a public
// header: attention.h is the API, attention_kernels.h the dispatcher's view.
#include <cuda_runtime.h>

#include "attention/attention_kernels.h"
#include "attention/attention_params.h"

namespace mmattn::flash {

// What the host computes once per call and every block reads.
struct PrefillArgs {
  AttentionParams p;
  int group = 1;           // hq / hkv
  float scale_log2 = 0.f;  // scale * log2(e): logits are handled in base 2
  bool vec_q = false, vec_k = false, vec_v = false;  // 16-byte loads allowed (pointer and strides)
  PrefillOrder order = PrefillOrder::longest_first;  // causal launch order (attention_kernels.h)
  // in-kernel taps (the Hopper kernel; a copy of *p.taps, by value): n_taps rows, logits into the
  // block's shared memory (row stride tap_ld floats), probabilities into tap_probs (row stride Lk)
  int n_taps = 0;
  int32_t tap_rows[kMaxPrefillTaps] = {};
  float* tap_probs = nullptr;
  int64_t tap_ld = 0;
};

// General path: mma.sync m16n8k16 + ldmatrix + cp.async, every head dim and feature.
// Explicit instantiations live in flash_prefill_d<D>.cu (T = __nv_bfloat16 / __half).
template <class T, int D, bool MOD>
void flash_prefill_launch(const PrefillArgs& a, cudaStream_t s);

// Hopper fast path (warp-specialised TMA + wgmma, sm_90a builds only): every head dim, modulation
// except class mass (launch() returns false for it), in-kernel taps of unmodulated calls, 16-byte
// aligned rows (the caller checks these). available() says whether this build and the current
// device can run it; launch() returns false, launching nothing, when the tensor maps of this view
// cannot be made (the caller falls back to the general path, which writes no taps).
bool flash_prefill_sm90_available();
bool flash_prefill_sm90_launch(const PrefillArgs& a, cudaStream_t s);
// Whether n tap rows' logits over lk keys fit in the Hopper kernel's shared memory at head dim d.
bool flash_prefill_sm90_taps_fit(int n, int64_t lk, int64_t d);

}  // namespace mmattn::flash
