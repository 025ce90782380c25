#include "core/kernel_smem.h"

#if MMATTN_HAS_CUDA
#include <map>
#include <utility>

#include "core/cuda_check.h"

namespace mmattn {

void kernel_smem_allow(const void* kernel, int bytes) {
  int device = 0;
  MMATTN_CUDA_CHECK(cudaGetDevice(&device));
  thread_local std::map<std::pair<const void*, int>, int> allowed;  // (kernel, device) -> bytes
  auto it = allowed.find({kernel, device});
  if (it != allowed.end() && it->second >= bytes) return;
  MMATTN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  allowed[{kernel, device}] = bytes;  // (after the call: a failure leaves the next launch to retry)
}

}  // namespace mmattn
#endif
