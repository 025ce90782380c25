// CPU embedding: row copies (the launcher has already rejected out-of-range ids; they would give
// zero rows here, as on CUDA).
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

}  // namespace mmattn
