// patch_gray_entropy on the GPU (vision/patch_entropy.h): one block per patch, the histogram in
// shared memory (exact integer counts), then one thread sums the table's terms over the bins in
// bin order in f64, as the CPU loop does.
#include <climits>

#include "core/cuda_check.h"
#include "vision/patch_entropy.h"

namespace mmattn {

namespace {

constexpr int kThreads = 256;

__global__ void patch_entropy_kernel(PatchEntropyParams p) {
  __shared__ int hist[256];
  const int64_t gw = p.width / p.patch, cell = blockIdx.x;
  const int64_t x0 = (cell % gw) * p.patch, y0 = (cell / gw) * p.patch;
  for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
  __syncthreads();
  const int64_t npx = p.patch * p.patch;
  for (int64_t i = threadIdx.x; i < npx; i += blockDim.x) {
    const uint8_t* q = p.rgb + ((y0 + i / p.patch) * p.width + x0 + i % p.patch) * 3;
    const int gray = int(rint(double(int(q[0]) + int(q[1]) + int(q[2])) / 3.0));  // round half to even
    atomicAdd(&hist[gray], 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double e = 0;
    for (int c = 0; c < 256; ++c)
      if (hist[c]) e -= p.term[hist[c]];
    p.out[cell] = float(e);
  }
}

}  // namespace

void patch_gray_entropy_cuda(const PatchEntropyParams& p, StreamHandle s) {
  const int64_t cells = (p.height / p.patch) * (p.width / p.patch);
  MMATTN_CHECK(cells <= INT32_MAX, ShapeError, "patch_gray_entropy: ", cells, " patches are too many");
  patch_entropy_kernel<<<unsigned(cells), kThreads, 0, s>>>(p);
  MMATTN_CUDA_CHECK_LAUNCH("patch_entropy_kernel");
}

}  // namespace mmattn
