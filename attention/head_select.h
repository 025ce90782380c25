#pragma once
// Per-(sequence, head) choice between two attention outputs of one query row, by the row's
// attention mass on a key class (AD-HH: heads whose last-row attention to the text after the
// image is >= a threshold take the output computed with that text zeroed).
//
//   out        [B, Lq, Hq, D] (dense), modified in place at row rows[b] of each sequence b
//   alt        [B, 1, Hq, D] (dense, dtype of out): the alternative output of that row
//   class_mass F32 [B, Hq, Lq, C] (attention()'s class_mass of `out`)
//   rows       per sequence: the row (< Lq); head_mask: per head, 1 = eligible
// out[b, rows[b], h] <- alt[b, 0, h] where head_mask[h] and class_mass[b, h, rows[b], klass] >= threshold.
// No host synchronisation: the decision is made on the device.
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace mmattn {

void select_heads_by_mass_(Tensor& out, const Tensor& alt, const Tensor& class_mass, int klass, float threshold,
                           const std::vector<uint8_t>& head_mask, const std::vector<int32_t>& rows);

struct HeadSelectParams {
  void* out = nullptr;
  const void* alt = nullptr;
  const float* mass = nullptr;
  int64_t B = 0, Lq = 0, H = 0, D = 0, C = 0;
  int klass = 0;
  float threshold = 0;
  uint64_t head_mask = 0;  // bit h: head h eligible (H <= 64)
  int32_t rows[64] = {};   // per sequence (B <= 64)
  size_t itemsize = 4;
};
void select_heads_by_mass_cpu(const HeadSelectParams& p);
void select_heads_by_mass_cuda(const HeadSelectParams& p, StreamHandle s);

}  // namespace mmattn
