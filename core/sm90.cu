// Host side of core/sm90.cuh.
#include "core/sm90.cuh"

#include "core/cuda_check.h"

namespace mmattn::sm90 {

bool kernels_available() {
#if defined(MMATTN_SM90A)
  static int cache[64];  // per device: 0 unknown, 1 yes, 2 no
  int dev = 0;
  MMATTN_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev < 0 || dev >= 64) return false;
  if (cache[dev] == 0) {
    int major = 0, minor = 0;
    MMATTN_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    MMATTN_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
    cache[dev] = major == 9 && minor == 0 && tensor_map_encoder() ? 1 : 2;
  }
  return cache[dev] == 1;
#else
  return false;
#endif
}

}  // namespace mmattn::sm90
