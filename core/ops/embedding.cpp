#include "core/ops/embedding.h"

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

}  // namespace mmattn
