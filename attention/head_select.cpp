#include "attention/head_select.h"

#include <cstring>

#include "core/ops/dispatch.h"

namespace mmattn {

void select_heads_by_mass_cpu(const HeadSelectParams& p) {
  char* out = static_cast<char*>(p.out);
  const char* alt = static_cast<const char*>(p.alt);
  const size_t row = size_t(p.D) * p.itemsize;
  for (int64_t b = 0; b < p.B; ++b)
    for (int64_t h = 0; h < p.H; ++h) {
      if (!((p.head_mask >> h) & 1)) continue;
      const int64_t r = p.rows[b];
      if (p.mass[((b * p.H + h) * p.Lq + r) * p.C + p.klass] < p.threshold) continue;
      std::memcpy(out + ((b * p.Lq + r) * p.H + h) * int64_t(row), alt + (b * p.H + h) * int64_t(row), row);
    }
}

void select_heads_by_mass_(Tensor& out, const Tensor& alt, const Tensor& class_mass, int klass, float threshold,
                           const std::vector<uint8_t>& head_mask, const std::vector<int32_t>& rows) {
  const char* op = "select_heads_by_mass_";
  MMATTN_CHECK(out.dim() == 4 && out.is_contiguous(), ShapeError, op, ": out must be dense [B, Lq, Hq, D], got ",
               out.desc());
  const int64_t B = out.size(0), Lq = out.size(1), H = out.size(2), D = out.size(3);
  MMATTN_CHECK(alt.dim() == 4 && alt.is_contiguous() && alt.size(0) == B && alt.size(1) == 1 && alt.size(2) == H &&
                   alt.size(3) == D && alt.dtype() == out.dtype() && alt.device() == out.device(),
               ShapeError, op, ": alt must be dense [", B, ", 1, ", H, ", ", D, "] like out, got ", alt.desc());
  MMATTN_CHECK(class_mass.dim() == 4 && class_mass.dtype() == DType::F32 && class_mass.size(0) == B &&
                   class_mass.size(1) == H && class_mass.size(2) == Lq && klass >= 0 && klass < class_mass.size(3) &&
                   class_mass.device() == out.device(),
               ShapeError, op, ": class_mass must be F32 [", B, ", ", H, ", ", Lq, ", C > ", klass, "], got ",
               class_mass.desc());
  MMATTN_CHECK(B <= 64 && H <= 64 && int64_t(head_mask.size()) == H && int64_t(rows.size()) == B, ShapeError, op,
               ": needs B, Hq <= 64 and one mask entry per head / one row per sequence");
  HeadSelectParams p;
  p.out = out.data_ptr();
  p.alt = alt.data_ptr();
  const Tensor mass_c = class_mass.contiguous();
  p.mass = mass_c.data<float>();
  p.B = B, p.Lq = Lq, p.H = H, p.D = D, p.C = class_mass.size(3);
  p.klass = klass;
  p.threshold = threshold;
  for (int64_t h = 0; h < H; ++h)
    if (head_mask[size_t(h)]) p.head_mask |= uint64_t(1) << h;
  for (int64_t b = 0; b < B; ++b) {
    MMATTN_CHECK(rows[size_t(b)] >= 0 && rows[size_t(b)] < Lq, ShapeError, op, ": rows[", b, "] = ", rows[size_t(b)],
                 " is outside [0, ", Lq, ")");
    p.rows[b] = rows[size_t(b)];
  }
  p.itemsize = dtype_size(out.dtype());
  if (p.head_mask == 0) return;
  if (out.is_cuda()) {
    MMATTN_IF_CUDA(select_heads_by_mass_cuda(p, current_stream()));
  } else {
    select_heads_by_mass_cpu(p);
  }
}

}  // namespace mmattn
