// attention_cuda: routes to the decode (split-KV) or prefill (flash) kernel.
#include <atomic>

#include "attention/attention_kernels.h"

namespace mmattn {

namespace {
std::atomic<int> g_override{0};
}

void set_attention_kernel_override(int which) { g_override.store(which, std::memory_order_relaxed); }
int attention_kernel_override() { return g_override.load(std::memory_order_relaxed); }

void attention_cuda(const AttentionParams& p, StreamHandle s) {
  const int which = attention_kernel_override();
  const bool decode = which == 0 ? use_decode_kernel(p) : which == 2;
  if (decode) flash_decode_cuda(p, s);
  else flash_prefill_cuda(p, s);
}

}  // namespace mmattn
