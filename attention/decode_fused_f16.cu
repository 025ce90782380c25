// rms_norm_qkv_rope_attention's kernel for __half (see decode_fused_cuda.cuh).
#include "attention/decode_fused_cuda.cuh"

namespace mmattn::detail {

void decode_fused_f16(const DecodeFusedArgs& a, StreamHandle s) { decode_fused::launch<__half>(a, s); }

}  // namespace mmattn::detail
