// Explicit instantiations of the general flash prefill kernel for head dim 128 (one file per head
// dim keeps each nvcc job small).
#include "attention/flash_prefill.cuh"

namespace mmattn::flash {
MMATTN_FLASH_PREFILL_INSTANTIATE(128)
}  // namespace mmattn::flash
