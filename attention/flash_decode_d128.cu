// Instantiations of the split-KV decode kernel for head dim 128 (one TU per head dim so the
// build compiles them in parallel).
#define MMATTN_DECODE_KERNEL_BODY
#include "attention/flash_decode.cuh"

namespace mmattn::decode {
MMATTN_DECODE_INSTANTIATE(__nv_bfloat16, 128, false)
MMATTN_DECODE_INSTANTIATE(__nv_bfloat16, 128, true)
MMATTN_DECODE_INSTANTIATE(__half, 128, false)
MMATTN_DECODE_INSTANTIATE(__half, 128, true)
}  // namespace mmattn::decode
