// select_heads_by_mass_ on the GPU: one block per (sequence, head), the decision read on the device.
#include "attention/head_select.h"
#include "core/cuda_check.h"

namespace mmattn {

namespace {

__global__ void head_select_kernel(HeadSelectParams p) {
  const int64_t b = blockIdx.x / p.H, h = blockIdx.x % p.H;
  if (!((p.head_mask >> h) & 1)) return;
  const int64_t r = p.rows[b];
  if (p.mass[((b * p.H + h) * p.Lq + r) * p.C + p.klass] < p.threshold) return;
  const int64_t words = p.D * int64_t(p.itemsize) / 2;  // 16-bit words (D * itemsize is even)
  uint16_t* dst = reinterpret_cast<uint16_t*>(static_cast<char*>(p.out) + ((b * p.Lq + r) * p.H + h) * p.D * p.itemsize);
  const uint16_t* src = reinterpret_cast<const uint16_t*>(static_cast<const char*>(p.alt) + (b * p.H + h) * p.D * p.itemsize);
  for (int64_t i = threadIdx.x; i < words; i += blockDim.x) dst[i] = src[i];
}

}  // namespace

void select_heads_by_mass_cuda(const HeadSelectParams& p, StreamHandle s) {
  head_select_kernel<<<unsigned(p.B * p.H), 64, 0, s>>>(p);
  MMATTN_CUDA_CHECK_LAUNCH("select_heads_by_mass");
}

}  // namespace mmattn
