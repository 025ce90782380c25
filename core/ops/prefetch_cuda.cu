// prefetch_l2 on the GPU (core/ops/prefetch.h): 32-thread blocks, each thread one chunk at a time.
#include <algorithm>

#include "core/device.h"
#include "core/ops/prefetch.h"
#include "core/sm90.cuh"

namespace mmattn {

namespace {

constexpr int kChunk = 16 << 10;  // bytes per bulk prefetch
constexpr int kThreads = 32;

__global__ void __launch_bounds__(kThreads) prefetch_l2_kernel(const char* p, long long bytes) {
  sm90::allow_next_grid();
  const long long step = (long long)gridDim.x * kThreads * kChunk;
  for (long long off = ((long long)blockIdx.x * kThreads + threadIdx.x) * kChunk; off < bytes; off += step) {
    const int n = int(min((long long)kChunk, bytes - off));
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    const int n16 = n & ~15;  // the bulk prefetch takes multiples of 16 bytes (the rest is left out)
    if (n16 > 0 && (reinterpret_cast<uintptr_t>(p + off) & 15) == 0)
      asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p + off), "r"(n16) : "memory");
#else
    for (int i = 0; i < n; i += 128) asm volatile("prefetch.global.L2 [%0];" ::"l"(p + off + i));
#endif
  }
  sm90::wait_for_previous_grid();  // the kernels after this one may rely on those before it
}

}  // namespace

void prefetch_l2_cuda(const void* p, int64_t bytes, StreamHandle s) {
  const int64_t chunks = (bytes + kChunk - 1) / kChunk;
  const int blocks = int(std::max<int64_t>(1, std::min<int64_t>((chunks + kThreads - 1) / kThreads, 2 * cuda_sm_count())));
  sm90::launch_pdl(prefetch_l2_kernel, dim3(unsigned(blocks)), dim3(kThreads), 0, s, static_cast<const char*>(p),
                   (long long)bytes);
}

}  // namespace mmattn
