#pragma once
// Row reductions.
//   vector_norm(x [..., D], p) -> F32 [...]: (sum_i |x_i|^p)^(1/p) over the last dim, p = 1 or 2
//        (torch.linalg.vector_norm(x, ord=p, dim=-1)), accumulated in f32.
//   argmax(x [..., V]) -> I64 [...]: the index of each row's largest value, the first one on ties
//        (std::max_element's and torch.argmax's choice; -0 equals +0). NaN ranks below every
//        number (a row of NaNs gives 0). Greedy decoding on the device (the token id never leaves
//        it: pipelines/llava.cpp).
// Selections that stay on the tensor's device (a pruner's kept set, queued without a host round
// trip: pipelines/pruning.cpp):
//   column_sum(x [R, N], divisor = 1) -> F32 [N]: (x[0, j] + x[1, j] + ... + x[R - 1, j]) / divisor,
//        summed in row order in f32 and divided once (the operation order of a host loop over the
//        rows; a divisor of 1 leaves the sums as they are). F32.
//   top_k_indices(scores [N], k) -> I64 [min(k, N)]: the indices of the k largest scores in
//        ascending index order (ties: the lower index is taken first, as largest_k; NaN ranks below
//        every number). F32.
//   sort_ascending(v [k]) -> I64 [k]: the values in ascending order. I64.
//   host_indices(idx) -> the values of an I64 tensor (any device) on the host, in element order:
//        the read-back of a selection, once the work that needs it on the device is queued.
// On CUDA one block does the whole selection or sort (kSelectDeviceItems items at most; past that
// the host computes it: a download and an upload).
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace mmattn {

Tensor vector_norm(const Tensor& x, int p);

struct VectorNormParams {
  const void* x = nullptr;  // contiguous [rows, cols]
  float* y = nullptr;       // [rows]
  int64_t rows = 0, cols = 0;
  int p = 2;
  DType dtype = DType::F32;
};
void vector_norm_cpu(const VectorNormParams& p);
void vector_norm_cuda(const VectorNormParams& p, StreamHandle s);

Tensor argmax(const Tensor& x);

struct ArgmaxParams {
  const void* x = nullptr;  // contiguous [rows, cols], cols >= 1
  int64_t* y = nullptr;     // [rows]
  int64_t rows = 0, cols = 0;
  DType dtype = DType::F32;
};
void argmax_cpu(const ArgmaxParams& p);
void argmax_cuda(const ArgmaxParams& p, StreamHandle s);

constexpr int64_t kSelectDeviceItems = 4096;

Tensor column_sum(const Tensor& x, float divisor = 1.f);
Tensor top_k_indices(const Tensor& scores, int64_t k);
Tensor sort_ascending(const Tensor& v);
std::vector<int64_t> host_indices(const Tensor& idx);

struct ColumnSumParams {
  const float* x = nullptr;  // contiguous [rows, cols], rows >= 1
  float* y = nullptr;        // [cols]
  int64_t rows = 0, cols = 0;
  float divisor = 1.f;
};
void column_sum_cpu(const ColumnSumParams& p);
void column_sum_cuda(const ColumnSumParams& p, StreamHandle s);

struct TopKParams {
  const float* scores = nullptr;  // [n]
  int64_t* out = nullptr;         // [k]
  int64_t n = 0, k = 0;           // 1 <= k <= n
};
void top_k_indices_cpu(const TopKParams& p);
void top_k_indices_cuda(const TopKParams& p, StreamHandle s);  // n <= kSelectDeviceItems

struct SortParams {
  const int64_t* v = nullptr;  // [n]
  int64_t* out = nullptr;      // [n]
  int64_t n = 0;
};
void sort_ascending_cpu(const SortParams& p);
void sort_ascending_cuda(const SortParams& p, StreamHandle s);  // n <= kSelectDeviceItems

}  // namespace mmattn
