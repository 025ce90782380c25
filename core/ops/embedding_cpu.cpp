// CPU embedding: row copies (the launcher has already rejected out-of-range ids; they would give
// zero rows here, as on CUDA). Weighted row combinations: f32, in list order.
#include <cstring>

#include "core/ops/embedding.h"

namespace mmattn {

void embedding_cpu(const EmbeddingParams& p) {
  const char* table = static_cast<const char*>(p.table);
  char* y = static_cast<char*>(p.y);
  for (int64_t t = 0; t < p.tokens; ++t) {
    const int64_t id = p.id_dtype == DType::I32 ? int64_t(static_cast<const int32_t*>(p.ids)[t])
                                                : static_cast<const int64_t*>(p.ids)[t];
    char* row = y + t * p.row_bytes;
    if (id < 0 || id >= p.vocab)
      std::memset(row, 0, size_t(p.row_bytes));
    else
      std::memcpy(row, table + id * p.row_bytes, size_t(p.row_bytes));
  }
}

void weighted_rows_cpu(const WeightedRowsParams& p) {
  const float* x = static_cast<const float*>(p.x);
  float* y = static_cast<float*>(p.y);
  for (int64_t r = 0; r < p.rows; ++r) {
    float* yr = y + r * p.d;
    for (int64_t c = 0; c < p.d; ++c) yr[c] = 0.f;
    for (int32_t e = p.offsets[r]; e < p.offsets[r + 1]; ++e) {
      const float w = p.weights[e];
      const float* xr = x + int64_t(p.index[e]) * p.x_stride;
      for (int64_t c = 0; c < p.d; ++c) yr[c] += w * xr[c];
    }
  }
}

}  // namespace mmattn
