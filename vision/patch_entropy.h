#pragma once
// Gray-level entropy of each patch of an 8-bit RGB image (VFlowOpt's information term,
// pipelines/pruning.cpp): per patch x patch cell, gray = round-half-even((r + g + b) / 3), a
// 256-bin histogram, and H = -sum over the non-empty bins, in bin order, of (c / n) log2(c / n +
// 1e-10) in f64 (n = patch^2), stored as f32.
//   patch_gray_entropy(rgb U8 [H, W, 3], patch) -> F32 [(H / patch) * (W / patch)], patches in
//   row-major order, on rgb's device (CPU or CUDA). H and W must be multiples of patch.
// The CPU and CUDA paths give the same bits: the histograms are exact and the log2 terms come from
// one host-made table, summed in the same order.
#include <cstdint>

#include "core/tensor.h"

namespace mmattn {

Tensor patch_gray_entropy(const Tensor& rgb, int64_t patch);

struct PatchEntropyParams {
  const uint8_t* rgb = nullptr;  // [H, W, 3] contiguous
  const double* term = nullptr;  // [patch^2 + 1]: term[c] = (c / n) log2(c / n + 1e-10), term[0] unused
  float* out = nullptr;          // [(H / patch) * (W / patch)]
  int64_t height = 0, width = 0, patch = 0;
};
void patch_gray_entropy_cuda(const PatchEntropyParams& p, StreamHandle s);

}  // namespace mmattn
