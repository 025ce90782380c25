#include <cstring>

#include "core/ops/copy.h"
#include "core/ops/elem.h"

namespace mmattn {

void copy_cpu(const CopyParams& p) {
  const size_t es = dtype_size(p.src_dtype);
  const char* src = static_cast<const char*>(p.src);
  char* dst = static_cast<char*>(p.dst);
  const size_t ds = dtype_size(p.dst_dtype);
  int64_t idx[kMaxDims] = {};
  int64_t so = 0, dof = 0;
  for (int64_t n = 0; n < p.numel; ++n) {
    if (p.src_dtype == p.dst_dtype) {
      std::memcpy(dst + dof * ds, src + so * es, es);
    } else {
      store_elem(dst + dof * ds, p.dst_dtype, load_elem(src + so * es, p.src_dtype));
    }
    // odometer increment over the shape, innermost dim fastest
    for (int d = p.ndim - 1; d >= 0; --d) {
      if (++idx[d] < p.shape[d]) {
        so += p.src_strides[d];
        dof += p.dst_strides[d];
        break;
      }
      so -= p.src_strides[d] * (p.shape[d] - 1);
      dof -= p.dst_strides[d] * (p.shape[d] - 1);
      idx[d] = 0;
    }
  }
}

void fill_cpu(const FillParams& p) {
  const size_t es = dtype_size(p.dtype);
  char* dst = static_cast<char*>(p.dst);
  char one[8];
  store_elem(one, p.dtype, p.value);
  for (int64_t i = 0; i < p.numel; ++i) std::memcpy(dst + i * es, one, es);
}

}  // namespace mmattn
