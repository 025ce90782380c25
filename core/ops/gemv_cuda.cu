// Host side of the skinny decode product (kernels: gemv_cuda.cuh, instantiated per dtype in
// gemv_bf16.cu / gemv_f16.cu).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <unordered_map>

#include "core/ops/gemv_cuda.cuh"
#include "core/stream_scratch.h"

namespace mmattn {

namespace gemv_detail {
namespace {

constexpr int kQueueSlots = 64;  // far more than kernels in flight at once on one stream

// The next slot of each stream's ring (the slots themselves: core/stream_scratch.h, zeroed once;
// every launch leaves its slot at zero). CUDA graphs: a captured launch keeps its slot, and replays
// reuse them in the same order.
thread_local std::unordered_map<StreamHandle, int> t_next_slot;

}  // namespace

int* gemv_queue(StreamHandle s, bool always) {
  static const bool off = [] {
    const char* e = std::getenv("MMATTN_GEMV_QUEUE");
    return e && std::strcmp(e, "0") == 0;
  }();
  if (off && !always) return nullptr;
  static const char owner = 0;
  int* slots = static_cast<int*>(stream_scratch(&owner, s, kQueueSlots * kQueueInts * sizeof(int), /*zeroed=*/true));
  int& next = t_next_slot[s];
  int* q = slots + kQueueInts * next;
  next = (next + 1) % kQueueSlots;
  return q;
}

}  // namespace gemv_detail

void gemv_run_bf16(const GemvParams& p, StreamHandle s);
void gemv_run_f16(const GemvParams& p, StreamHandle s);
void gemv_run_paired_bf16(const GemvParams& p, StreamHandle s);
void gemv_run_paired_f16(const GemvParams& p, StreamHandle s);

bool gemv_cuda_supported(const GemvParams& p) {
  if (p.dtype != DType::BF16 && p.dtype != DType::F16) return false;
  const bool paired = p.output != GemvOutput::Plain;
  if (p.m < 1 || p.m > (paired ? kGemvPairedMaxRows : p.input == GemvInput::Plain ? kGemvMaxRows : kGemvFusedMaxRows))
    return false;
  if (paired) {  // (the instantiated pairs: SwiGLU after RmsNorm, QkvRope after RmsNorm or Plain)
    if (p.n % 2 != 0 || p.accumulate || p.input == GemvInput::SwiGLU) return false;
    if (p.output == GemvOutput::SwiGLU && p.input != GemvInput::RmsNorm) return false;
    if (p.output == GemvOutput::QkvRope) {
      const QkvRopeOutputs& o = p.rope;
      if (o.head_dim < 2 || o.head_dim % 2 != 0 || o.q_cols % o.head_dim != 0 || o.k_cols % o.head_dim != 0 ||
          o.q_cols + 2 * o.k_cols != p.n || !o.cos || !o.sin || !o.out[0] || !o.out[1] || !o.out[2])
        return false;
    }
  }
  if (p.k < 8 || p.k % 8 != 0 || p.x_stride % 8 != 0) return false;
  if (p.n < 256) return false;  // too few rows to spread over the GPU: cuBLAS splits K instead
  if (p.x_stride < (p.input == GemvInput::SwiGLU ? 2 * p.k : p.k)) return false;
  if (p.n > INT32_MAX / 2 || p.k > INT32_MAX / 2 || p.m * p.x_stride > INT32_MAX) return false;
  if (!p.x || !p.weight || (!p.y && p.output != GemvOutput::QkvRope) || !aligned16(p.x) || !aligned16(p.weight))
    return false;
  if (p.input == GemvInput::RmsNorm && (!p.norm_weight || !aligned16(p.norm_weight))) return false;
  if (p.input != GemvInput::Plain) {  // x_eff staged in shared memory, m rounded up to the kernel's width
    const int64_t m_inst = p.m <= 1 ? 1 : 2;
    if (m_inst * p.k * 2 > gemv_detail::staged_smem_limit()) return false;
  }
  return true;
}

void gemv_cuda(const GemvParams& p, StreamHandle s) {
  MMATTN_CHECK(gemv_cuda_supported(p), UnsupportedError, "gemv_cuda: unsupported problem m=", p.m, " n=", p.n,
               " k=", p.k, " dtype ", dtype_name(p.dtype), " (check gemv_cuda_supported first)");
  if (p.output != GemvOutput::Plain)
    p.dtype == DType::BF16 ? gemv_run_paired_bf16(p, s) : gemv_run_paired_f16(p, s);
  else
    p.dtype == DType::BF16 ? gemv_run_bf16(p, s) : gemv_run_f16(p, s);
}

}  // namespace mmattn
