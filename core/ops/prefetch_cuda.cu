// prefetch_l2 on the GPU (core/ops/prefetch.h).
#include <algorithm>
#include <cstdlib>

#include "core/device.h"
#include "core/ops/prefetch.h"
#include "core/sm90.cuh"

namespace mmattn {

namespace {

constexpr int kThreads = 128;

// BULK: one cp.async.bulk.prefetch.L2 of `chunk` bytes per thread at a time (sm_90); else one
// prefetch.global.L2 per 128-byte line.
template <bool BULK>
__global__ void __launch_bounds__(kThreads) prefetch_l2_kernel(const char* p, long long bytes, int chunk) {
  sm90::allow_next_grid();
  const long long step = (long long)gridDim.x * kThreads * chunk;
  for (long long off = ((long long)blockIdx.x * kThreads + threadIdx.x) * chunk; off < bytes; off += step) {
    const int n = int(min((long long)chunk, bytes - off));
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if constexpr (BULK) {
      const int n16 = n & ~15;  // the bulk prefetch takes multiples of 16 bytes (the rest is left out)
      if (n16 > 0 && (reinterpret_cast<uintptr_t>(p + off) & 15) == 0)
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p + off), "r"(n16) : "memory");
      continue;
    }
#endif
    for (int i = 0; i < n; i += 128) asm volatile("prefetch.global.L2 [%0];" ::"l"(p + off + i));
  }
  sm90::wait_for_previous_grid();  // the kernels after this one may rely on those before it
}

}  // namespace

void prefetch_l2_cuda(const void* p, int64_t bytes, StreamHandle s) {
  static const int mode = [] {  // experiment (session 11): 1 bulk 16 KB, 2 lines, 3 bulk 2 KB
    const char* e = std::getenv("MMATTN_L2_PREFETCH");
    return e ? std::atoi(e) : 2;
  }();
  const int chunk = mode == 1 ? (16 << 10) : mode == 3 ? 2048 : 128;
  const int64_t chunks = (bytes + chunk - 1) / chunk;
  const int blocks = int(std::max<int64_t>(1, std::min<int64_t>((chunks + kThreads - 1) / kThreads, 2 * cuda_sm_count())));
  const char* c = static_cast<const char*>(p);
  if (mode == 2)
    sm90::launch_pdl(prefetch_l2_kernel<false>, dim3(unsigned(blocks)), dim3(kThreads), 0, s, c, (long long)bytes, chunk);
  else
    sm90::launch_pdl(prefetch_l2_kernel<true>, dim3(unsigned(blocks)), dim3(kThreads), 0, s, c, (long long)bytes, chunk);
}

}  // namespace mmattn
