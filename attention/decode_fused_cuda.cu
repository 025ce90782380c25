// Host side of rms_norm_qkv_rope_attention (attention/decode_fused.h): the dtype dispatch and the
// kernel's shared memory (kernels: decode_fused_cuda.cuh, instantiated per dtype).
#include "attention/decode_fused.h"

#include "attention/decode_fused_cuda.cuh"

namespace mmattn::detail {

void decode_fused_bf16(const DecodeFusedArgs& a, StreamHandle s);
void decode_fused_f16(const DecodeFusedArgs& a, StreamHandle s);

void decode_fused_cuda(const DecodeFusedArgs& a, StreamHandle s) {
  a.dtype == DType::BF16 ? decode_fused_bf16(a, s) : decode_fused_f16(a, s);
}

int64_t decode_fused_smem_bytes(int64_t kdim, int64_t head_dim) {
  static_assert(decode_fused::tail_smem(128) == decode_fused::DecodeTail<__half, 128>::kSmem);
  static_assert(decode_fused::tail_smem(64) == decode_fused::DecodeTail<__half, 64>::kSmem);
  return kdim * 2 + decode_fused::tail_smem(int(head_dim));  // (the staged input: one row of T)
}

}  // namespace mmattn::detail
