#pragma once
// prefetch_l2(t, max_bytes): a hint. Starts bringing the first max_bytes (all when < 0) of t's bytes
// into the GPU's L2 cache and returns; values are never affected. For a decode step's next weight
// while the memory system idles: the attention between the q/k/v and the output products reads a
// few MB of keys and values for ~10 us, time enough to stream most of the 32 MB output-projection
// weight into the 50 MB L2 of an H100, which that product then reads at L2 speed (language/llama.cpp,
// bench/NOTES.md session 11).
// CUDA: a small kernel of bulk L2 prefetches (sm_90; per-line prefetches before), launched as a
// programmatic dependent of the kernel ahead: its blocks issue their prefetches as soon as they are
// resident, then wait for the kernel ahead before they exit, so the stream's order still holds for
// the kernels after it. A CPU or empty tensor: nothing. MMATTN_L2_PREFETCH=0 turns it off (A/B).
#include <cstdint>

#include "core/tensor.h"

namespace mmattn {

void prefetch_l2(const Tensor& t, int64_t max_bytes = -1);

void prefetch_l2_cuda(const void* p, int64_t bytes, StreamHandle s);

}  // namespace mmattn
