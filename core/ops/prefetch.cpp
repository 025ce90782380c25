#include "core/ops/prefetch.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "core/ops/dispatch.h"

namespace mmattn {

void prefetch_l2(const Tensor& t, int64_t max_bytes) {
  static const bool on = [] {
    const char* e = std::getenv("MMATTN_L2_PREFETCH");
    return !(e && std::string(e) == "0");
  }();
  if (!on || !t.defined() || !t.is_cuda() || t.numel() == 0) return;
  int64_t bytes = t.is_contiguous() ? t.numel() * int64_t(dtype_size(t.dtype())) : 0;  // (strided: skipped)
  if (max_bytes >= 0) bytes = std::min(bytes, max_bytes);
  if (bytes > 0) MMATTN_IF_CUDA(prefetch_l2_cuda(t.data_ptr(), bytes, current_stream()));
}

}  // namespace mmattn
