#pragma once
// CUDA helpers of KVCache (kv_cache_cuda.cu): plain parameters, no Tensor.
#include <cstddef>
#include <cstdint>

#include "core/device.h"
#include "core/dtype.h"

namespace mmattn {

struct KvAppendParams {
  const void* src[2] = {nullptr, nullptr};  // k_new, v_new [B, n, Hkv, D], strides below (elements)
  int64_t src_sb[2] = {}, src_sl[2] = {}, src_sh[2] = {};  // last dim dense
  void* dst[2] = {nullptr, nullptr};        // the layer's K and V planes [B, max_len, Hkv, D], contiguous
  int64_t batch = 0, n = 0, hkv = 0, d = 0, max_len = 0;
  DType dtype = DType::BF16;  // of k, v, q and the cache (F32, F16 or BF16)
  const int32_t* start = nullptr;  // device [B]: first row written (committed length)
  const int32_t* end = nullptr;    // device [B]: one past the last row written
  // RoPE (rotate_half pairs) fused in when cos is set: k is rotated on its way into the cache and
  // q [B, n, hq, D] (strides below) in place, input row i by table row i of cos/sin (f32 [n, D/2]).
  const float* cos = nullptr;
  const float* sin = nullptr;
  void* q = nullptr;
  int64_t q_sb = 0, q_sl = 0, q_sh = 0, hq = 0;
};
void kv_append_cuda(const KvAppendParams& p, StreamHandle s);

// For each of `planes` planes (base + k * plane_stride bytes): rows i < n_keep <- rows keep[i]
// (row_bytes each). keep: device I32 [n_keep], strictly increasing.
void kv_compact_cuda(void* base, int64_t planes, int64_t plane_stride, int64_t row_bytes, const int32_t* keep,
                     int64_t n_keep, StreamHandle s);

// dst[i] = values[i] for i < n, ordered on stream s (values are passed by value; no host sync).
void kv_set_i32_cuda(int32_t* dst, const int32_t* values, int64_t n, StreamHandle s);

}  // namespace mmattn
