// Explicit instantiations of the general flash prefill kernel for head dim 64 (one file per head
// dim keeps each nvcc job small).
#include "attention/flash_prefill.cuh"

namespace mmattn::flash {
MMATTN_FLASH_PREFILL_INSTANTIATE(64)
}  // namespace mmattn::flash
