#pragma once
// Checked CUDA calls, for translation units that include the CUDA headers.
#include <cuda_runtime.h>

#include "core/error.h"

#define MMATTN_CUDA_CHECK(call)                                                              \
  do {                                                                                       \
    cudaError_t err_ = (call);                                                               \
    if (err_ != cudaSuccess)                                                                 \
      MMATTN_THROW(CudaError, #call, " failed: ", cudaGetErrorName(err_), " (",              \
                   cudaGetErrorString(err_), ")");                                           \
  } while (0)
// After a kernel launch: catches launch-configuration errors (not asynchronous faults).
#define MMATTN_CUDA_CHECK_LAUNCH(name) MMATTN_CUDA_CHECK(cudaGetLastError())

namespace mmattn {
inline unsigned ceil_div_u(long long a, long long b) { return unsigned((a + b - 1) / b); }
}
