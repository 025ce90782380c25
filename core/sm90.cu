// Host side of core/sm90.cuh.
#include "core/sm90.cuh"

#include <cstdlib>
#include <map>
#include <utility>

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

bool encode_rows_map(CUtensorMap* map, const void* ptr, bool bf16, int64_t rows, int64_t k, int box_rows) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
  if (!encode) return false;
  cuuint64_t gdim[2] = {cuuint64_t(k), cuuint64_t(rows)};
  cuuint64_t gstride[1] = {cuuint64_t(k) * 2};
  cuuint32_t box[2] = {64, cuuint32_t(box_rows)};
  cuuint32_t estride[2] = {1, 1};
  return encode(map, bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 2,
                const_cast<void*>(ptr), gdim, gstride, box, estride, CU_TENSOR_MAP_INTERLEAVE_NONE,
                CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

bool pdl_supported(const void* kernel) {
  static const bool off = [] {
    const char* e = std::getenv("MMATTN_PDL");
    return e && e[0] == '0';
  }();
  if (off) return false;
  thread_local std::map<std::pair<int, const void*>, bool> cache;
  int dev = 0;
  MMATTN_CUDA_CHECK(cudaGetDevice(&dev));
  auto it = cache.find({dev, kernel});
  if (it == cache.end()) {
    int major = 0;
    MMATTN_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    cudaFuncAttributes fa{};
    MMATTN_CUDA_CHECK(cudaFuncGetAttributes(&fa, kernel));
    it = cache.emplace(std::make_pair(dev, kernel), major >= 9 && fa.ptxVersion >= 90).first;
  }
  return it->second;
}

}  // namespace mmattn::sm90
