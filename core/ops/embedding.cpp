#include "core/ops/embedding.h"

#include <algorithm>
#include <climits>
#include <cstring>

#include "core/ops/dispatch.h"

namespace mmattn {

namespace {
int64_t id_at(const Tensor& ids_cpu, int64_t i) {
  return ids_cpu.dtype() == DType::I32 ? int64_t(ids_cpu.data<int32_t>()[i]) : ids_cpu.data<int64_t>()[i];
}

[[noreturn]] void throw_bad_id(int64_t id, int64_t pos, const Tensor& ids, const Tensor& table) {
  MMATTN_THROW(ShapeError, "embedding: id ", id, " at position ", pos, " of 'ids' ", ids.desc(),
               " is out of range for 'table' ", table.desc(), " (V = ", table.size(0), ")");
}
}  // namespace

Tensor embedding(const Tensor& ids, const Tensor& table, bool check_ids) {
  const char* op = "embedding";
  check_defined(ids, op, "ids");
  MMATTN_CHECK(ids.dtype() == DType::I32 || ids.dtype() == DType::I64, ShapeError, op,
               ": 'ids' must be I32 or I64, got ", ids.desc());
  check_dim(table, 2, op, "table");
  // host ids with a device table are fine (validated here, then copied); device ids need that device's table
  MMATTN_CHECK(ids.device() == table.device() || ids.device().is_cpu(), ShapeError, op, ": 'ids' is on ",
               ids.device().str(), " but 'table' is on ", table.device().str());
  const int64_t vocab = table.size(0), dim = table.size(1);
  Tensor idc = ids.contiguous();
  const int64_t tokens = idc.numel();
  if (idc.device().is_cpu()) {
    for (int64_t i = 0; i < tokens; ++i) {
      const int64_t id = id_at(idc, i);
      if (id < 0 || id >= vocab) throw_bad_id(id, i, ids, table);
    }
    if (table.is_cuda()) idc = idc.to(table.device());
  }
  Tensor tc = table.contiguous();
  Shape out = ids.shape();
  out.push_back(dim);
  Tensor y = Tensor::empty(out, table.dtype(), table.device());
  EmbeddingParams p;
  p.ids = idc.data_ptr();
  p.id_dtype = idc.dtype();
  p.table = tc.data_ptr();
  p.y = y.data_ptr();
  p.tokens = tokens;
  p.vocab = vocab;
  p.row_bytes = dim * int64_t(table.itemsize());
  if (tokens == 0 || dim == 0) return y;
  if (!table.is_cuda()) {
    embedding_cpu(p);
    return y;
  }
#if MMATTN_HAS_CUDA
  const bool device_check = check_ids && ids.is_cuda();
  Tensor bad = device_check ? Tensor::empty({1}, DType::I64, table.device()) : Tensor();
  p.bad_pos = device_check ? static_cast<unsigned long long*>(bad.data_ptr()) : nullptr;
  embedding_cuda(p, current_stream());
  if (device_check) {
    int64_t pos = -1;  // all ones: no bad id
    copy_bytes(&pos, Device::cpu(), bad.data_ptr(), bad.device(), sizeof(pos));
    if (pos >= 0) throw_bad_id(id_at(idc.reshape({-1}).slice(0, pos, pos + 1).to(Device::cpu()), 0), pos, ids, table);
  }
#else
  (void)check_ids;
  MMATTN_THROW(CudaError, "this build of mmattn has no CUDA support");
#endif
  return y;
}

Tensor gather_rows(const Tensor& t, const std::vector<std::vector<int64_t>>& rows, int64_t n_new) {
  check_defined(t, "gather_rows", "t");
  MMATTN_CHECK(t.dim() >= 2 && int64_t(rows.size()) == t.size(0) && n_new >= 0, ShapeError, "gather_rows: 't' ",
               t.desc(), " must be [B, n, ...] with B = ", rows.size(), " row lists, n_new = ", n_new);
  const int64_t B = t.size(0), n = t.size(1);
  const Tensor c = t.contiguous();
  const int64_t width = c.numel() / std::max<int64_t>(B * n, 1);
  std::vector<int32_t> ids(size_t(B * n_new));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < n_new; ++i) {
      const int64_t r = i < int64_t(rows[size_t(b)].size()) ? rows[size_t(b)][size_t(i)] : 0;
      MMATTN_CHECK(r >= 0 && r < n, ShapeError, "gather_rows: row ", r, " of sequence ", b, " is outside [0, ", n, ")");
      ids[size_t(b * n_new + i)] = int32_t(b * n + r);
    }
  Shape shape = t.shape();
  shape[1] = n_new;
  return embedding(Tensor::from_vector(ids, {B, n_new}), c.view({B * n, width})).view(shape);
}

namespace {

void check_weighted_rows_x(const Tensor& x) {
  const char* op = "weighted_rows";
  check_defined(x, op, "x");
  check_dim(x, 2, op, "x");
  check_cpu_f32(x, op, "x");
}

// y [rows, d] from x and lists already on x's device
Tensor weighted_rows_run(const Tensor& x, int64_t rows, const int32_t* offsets, const int32_t* index,
                         const float* weights) {
  const Tensor xc = x.stride(1) == 1 ? x : x.contiguous();
  Tensor y = Tensor::empty({rows, x.size(1)}, x.dtype(), x.device());
  WeightedRowsParams p;
  p.x = xc.data_ptr();
  p.dtype = x.dtype();
  p.d = x.size(1);
  p.x_stride = xc.stride(0);
  p.rows = rows;
  p.offsets = offsets;
  p.index = index;
  p.weights = weights;
  p.y = y.data_ptr();
  if (rows == 0 || p.d == 0) return y;
  if (x.is_cuda()) {
    MMATTN_IF_CUDA(weighted_rows_cuda(p, current_stream()));
  } else {
    weighted_rows_cpu(p);
  }
  return y;
}

}  // namespace

Tensor weighted_rows(const Tensor& x, const std::vector<int64_t>& offsets, const std::vector<int64_t>& index,
                     const std::vector<float>& weights) {
  const char* op = "weighted_rows";
  check_weighted_rows_x(x);
  MMATTN_CHECK(!offsets.empty() && offsets.front() == 0 && offsets.back() == int64_t(index.size()) &&
                   index.size() == weights.size(),
               ShapeError, op, ": 'offsets' (", offsets.size(), " entries, first ", offsets.empty() ? -1 : offsets.front(),
               ", last ", offsets.empty() ? -1 : offsets.back(), ") must run from 0 to the ", index.size(),
               " entries of 'index' (", weights.size(), " weights)");
  MMATTN_CHECK(index.size() < size_t(INT32_MAX), ShapeError, op, ": ", index.size(), " entries is too many");
  const int64_t rows = int64_t(offsets.size()) - 1, n = x.size(0);
  // one host block [offsets | index | weights] (32-bit words), one upload
  std::vector<int32_t> packed(offsets.size() + 2 * index.size());
  for (size_t r = 0; r < offsets.size(); ++r) {
    MMATTN_CHECK(r == 0 || offsets[r] >= offsets[r - 1], ShapeError, op, ": 'offsets' decrease at row ", r - 1, " (",
                 offsets[r - 1], " -> ", offsets[r], ")");
    packed[r] = int32_t(offsets[r]);
  }
  int32_t* idx = packed.data() + offsets.size();
  for (size_t e = 0; e < index.size(); ++e) {
    MMATTN_CHECK(index[e] >= 0 && index[e] < n, ShapeError, op, ": index ", index[e], " (entry ", e,
                 ") is outside the ", n, " rows of 'x' ", x.desc());
    idx[e] = int32_t(index[e]);
  }
  std::memcpy(idx + index.size(), weights.data(), weights.size() * sizeof(float));
  const Tensor lists = Tensor::from_vector(packed, {int64_t(packed.size())}).to(x.device());
  const int32_t* off = lists.data<int32_t>();
  return weighted_rows_run(x, rows, off, off + offsets.size(),
                           reinterpret_cast<const float*>(off + offsets.size() + index.size()));
}

Tensor weighted_rows(const Tensor& x, const RowPlan& plan) {
  const char* op = "weighted_rows";
  check_weighted_rows_x(x);
  check_dim(plan.offsets, 1, op, "plan.offsets");
  check_dim(plan.index, 1, op, "plan.index");
  check_dim(plan.weights, 1, op, "plan.weights");
  MMATTN_CHECK(plan.offsets.dtype() == DType::I32 && plan.index.dtype() == DType::I32 &&
                   plan.weights.dtype() == DType::F32 && plan.offsets.size(0) >= 1 &&
                   plan.index.size(0) == plan.weights.size(0),
               ShapeError, op, ": the plan must be I32 offsets [rows + 1], I32 index and F32 weights of one length, got ",
               plan.offsets.desc(), ", ", plan.index.desc(), ", ", plan.weights.desc());
  for (const Tensor* t : {&plan.offsets, &plan.index, &plan.weights})
    MMATTN_CHECK(t->device() == x.device() && t->is_contiguous(), ShapeError, op, ": the plan's lists must be contiguous on ",
                 x.device().str(), ", got ", t->desc(), " on ", t->device().str());
  return weighted_rows_run(x, plan.offsets.size(0) - 1, plan.offsets.data<int32_t>(), plan.index.data<int32_t>(),
                           plan.weights.data<float>());
}

}  // namespace mmattn
