// Host side of rms_norm_qkv_rope_attention (attention/decode_fused.h): the dtype dispatch and the
// kernel's shared-memory check (kernels: decode_fused_cuda.cuh, instantiated per dtype).
#include "attention/decode_fused.h"

#include "attention/decode_fused_cuda.cuh"

namespace mmattn::detail {

void decode_fused_bf16(const DecodeFusedArgs& a, StreamHandle s);
void decode_fused_f16(const DecodeFusedArgs& a, StreamHandle s);

void decode_fused_cuda(const DecodeFusedArgs& a, StreamHandle s) {
  a.product.dtype == DType::BF16 ? decode_fused_bf16(a, s) : decode_fused_f16(a, s);
}

bool decode_fused_fits(int64_t kdim, int64_t head_dim) {
  using gemv_detail::gemv_smem;
  const int64_t smem = head_dim == 128
                           ? gemv_smem<__half, 1, GemvInput::RmsNorm, decode_fused::DecodeTail<__half, 128>>(int(kdim))
                           : gemv_smem<__half, 1, GemvInput::RmsNorm, decode_fused::DecodeTail<__half, 64>>(int(kdim));
  return smem <= gemv_detail::staged_smem_limit();
}

}  // namespace mmattn::detail
