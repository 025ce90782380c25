// rms_norm_qkv_rope_attention's kernel for __nv_bfloat16 (see decode_fused_cuda.cuh).
#include "attention/decode_fused_cuda.cuh"

namespace mmattn::detail {

void decode_fused_bf16(const DecodeFusedArgs& a, StreamHandle s) { decode_fused::launch<__nv_bfloat16>(a, s); }

}  // namespace mmattn::detail
