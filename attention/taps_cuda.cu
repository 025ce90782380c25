// Taps on the GPU: one block per (batch, head, chosen row). Pass 1 writes the modulated logits to
// the output row (scratch) and finds the max; pass 2 turns them into exp(z - lse) * w and sums;
// pass 3 normalises when renormalising. The rows are few, so this favours simplicity.
#include "attention/taps_params.h"
#include "core/cuda_reduce.cuh"
#include "core/cuda_types.cuh"

namespace mmattn {

namespace {

template <class T>
__global__ void taps_kernel(TapParams tp) {
  const AttentionParams& p = tp.attn;
  extern __shared__ float qs[];  // [d]
  __shared__ float scratch[32];
  const int r = blockIdx.x % p.lq;
  const int h = (blockIdx.x / p.lq) % p.hq;
  const int b = blockIdx.x / (p.lq * p.hq);
  const int hk = h / (p.hq / p.hkv);
  const int C = p.num_classes;
  const long long i = tp.rows[r];
  const int klen = p.k_lens ? p.k_lens[b] : p.lk;
  const long long qlen = p.q_lens ? p.q_lens[b] : tp.lq_total;
  long long jend = i < qlen ? klen : 0;
  if (p.causal && i < qlen) jend = min(jend, max(0ll, i + (klen - qlen) + 1));
  const bool modulate = i >= p.first_modulated_row;
  const T* q = static_cast<const T*>(p.q) + b * p.q_sb + (long long)r * p.q_sl + (long long)h * p.q_sh;
  for (int d = threadIdx.x; d < p.d; d += blockDim.x) qs[d] = to_f32(q[d]) * p.scale;
  __syncthreads();
  float* out = tp.probs + ((long long)(b * p.hq + h) * p.lq + r) * p.lk;
  const T* kb = static_cast<const T*>(p.k) + b * p.k_sb + (long long)hk * p.k_sh;
  float m = -INFINITY;
  for (long long j = threadIdx.x; j < p.lk; j += blockDim.x) {
    if (j >= jend) {
      out[j] = -INFINITY;
      continue;
    }
    const T* kj = kb + j * p.k_sl;
    float s = 0.f;
    for (int d = 0; d < p.d; ++d) s += qs[d] * to_f32(kj[d]);
    if (modulate && p.key_class) {
      const int c = p.key_class[b * p.key_class_sb + j];
      if (p.logit_abs_gain) s += p.logit_abs_gain[h * C + c] * fabsf(s);
      if (p.logit_bias) s += p.logit_bias[h * C + c];
    }
    out[j] = s;
    m = fmaxf(m, s);
  }
  float lse;
  if (tp.lse) {
    lse = tp.lse[(long long)(b * p.hq + h) * p.lq + r];
  } else {
    m = block_max(m, scratch);
    float l = 0.f;
    for (long long j = threadIdx.x; j < jend; j += blockDim.x) l += __expf(out[j] - m);
    l = block_sum(l, scratch);
    lse = jend > 0 ? m + logf(l) : -INFINITY;
  }
  const bool post = modulate && p.post_weight && p.key_class;
  float norm = 0.f;
  for (long long j = threadIdx.x; j < p.lk; j += blockDim.x) {
    float w = j < jend ? __expf(out[j] - lse) : 0.f;
    if (j < jend && post) w *= p.post_weight[h * C + p.key_class[b * p.key_class_sb + j]];
    out[j] = w;
    norm += w;
  }
  if (post && p.renormalize) {
    norm = block_sum(norm, scratch);
    if (norm > 0.f) {
      const float inv = 1.f / norm;
      for (long long j = threadIdx.x; j < jend; j += blockDim.x) out[j] *= inv;
    }
  }
}

}  // namespace

void attention_probs_cuda(const TapParams& tp, StreamHandle s) {
  const AttentionParams& p = tp.attn;
  const unsigned blocks = unsigned(p.batch) * unsigned(p.hq) * unsigned(p.lq);
  if (blocks == 0) return;
  const size_t smem = size_t(p.d) * sizeof(float);
  switch (p.dtype) {
    case DType::BF16: taps_kernel<__nv_bfloat16><<<blocks, 256, smem, s>>>(tp); break;
    case DType::F16: taps_kernel<__half><<<blocks, 256, smem, s>>>(tp); break;
    default: MMATTN_THROW(UnsupportedError, "attention_probs: CUDA takes bf16/f16, got ", dtype_name(p.dtype));
  }
  MMATTN_CUDA_CHECK_LAUNCH("attention_probs");
}

}  // namespace mmattn
