#pragma once
// Embedding lookup (a row gather; exact for every dtype, so the CPU path takes any dtype too).
//   embedding(ids [...] I32/I64, table [V, D]) -> [..., D], table's dtype and device.
// ids may be on the CPU while table is on CUDA (validated on the host, then copied over); ids on
// CUDA need table on CUDA.
// An id outside [0, V) is a ShapeError naming the first bad id, its position and V. Host ids are
// checked before anything is written. Device ids: the kernel writes a zero row for each bad id and
// records the first bad position; the launcher reads that back synchronously (one 8-byte copy) and
// throws. check_ids = false skips the read-back (required inside CUDA graph capture): bad ids then
// give zero rows without an error. The table is never read out of bounds either way.
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace mmattn {

Tensor embedding(const Tensor& ids, const Tensor& table, bool check_ids = true);

// t [B, n, ...] -> [B, n', ...] with row rows[b][i] of sequence b at i (rows past rows[b].size()
// are copies of row 0: padding). One gather on t's device. Rows must lie in [0, n).
Tensor gather_rows(const Tensor& t, const std::vector<std::vector<int64_t>>& rows, int64_t n_new);

// Weighted row combinations (token selection and merging in one op):
//   y[r, :] = sum over e in [offsets[r], offsets[r + 1]) of weights[e] * x[index[e], :]
// accumulated in f32 in list order and rounded once to x's dtype, so a one-entry row of weight 1
// copies its source exactly; a row without entries is zeros. x [n, d] (rows contiguous) on any
// device; the lists are host vectors (offsets: R + 1 entries from 0, non-decreasing, ending at
// index.size() == weights.size(); every index in [0, n)) and go to the device in one upload.
// Returns [R, d] in x's dtype on x's device. The CPU path takes F32 only.
Tensor weighted_rows(const Tensor& x, const std::vector<int64_t>& offsets, const std::vector<int64_t>& index,
                     const std::vector<float>& weights);
// The same with the lists already on x's device (made there by a device op, e.g. a token-merge
// plan: core/ops/token_merge.h): I32 offsets [R + 1], I32 index and F32 weights, contiguous, whose
// values are not checked on the host (that would be the round trip the plan avoids).
struct RowPlan {
  Tensor offsets, index, weights;
};
Tensor weighted_rows(const Tensor& x, const RowPlan& plan);

struct WeightedRowsParams {
  const void* x = nullptr;  // [n, d], row stride x_stride elements
  DType dtype = DType::F32;
  int64_t d = 0, x_stride = 0, rows = 0;
  const int32_t* offsets = nullptr;  // [rows + 1] (same device as x)
  const int32_t* index = nullptr;    // [offsets[rows]]
  const float* weights = nullptr;    // [offsets[rows]]
  void* y = nullptr;                 // contiguous [rows, d]
};
void weighted_rows_cpu(const WeightedRowsParams& p);
void weighted_rows_cuda(const WeightedRowsParams& p, StreamHandle s);

// y[t, :] = table[ids[t], :] (row_bytes bytes per row), zeros where ids[t] is outside [0, vocab).
struct EmbeddingParams {
  const void* ids = nullptr;  // contiguous, `tokens` ids
  DType id_dtype = DType::I64;
  const void* table = nullptr;  // contiguous [vocab, row_bytes]
  void* y = nullptr;            // contiguous [tokens, row_bytes]
  int64_t tokens = 0, vocab = 0, row_bytes = 0;
  // CUDA: device word set to the smallest bad position (all ones when none; reset by
  // embedding_cuda before its kernel). Null: not recorded.
  unsigned long long* bad_pos = nullptr;
};
void embedding_cpu(const EmbeddingParams& p);
void embedding_cuda(const EmbeddingParams& p, StreamHandle s);

}  // namespace mmattn
