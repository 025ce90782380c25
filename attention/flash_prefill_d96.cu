// Explicit instantiations of the general flash prefill kernel for head dim 96 (one file per head
// dim keeps each nvcc job small).
#include "attention/flash_prefill.cuh"

namespace mmattn::flash {
MMATTN_FLASH_PREFILL_INSTANTIATE(96)
}  // namespace mmattn::flash
