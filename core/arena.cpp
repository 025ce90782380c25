#include "core/arena.h"

#include <algorithm>

namespace mmattn {

Arena::Arena(size_t bytes, Device dev) : storage_(Storage::allocate(bytes, dev)) {}

Tensor Arena::alloc(const Shape& shape, DType dtype) {
  const size_t bytes = size_t(shape_numel(shape)) * dtype_size(dtype);
  const size_t start = (used_ + 255) & ~size_t(255);
  MMATTN_CHECK(start + bytes <= capacity(), Error, "workspace arena exhausted: ", bytes, " bytes for ",
               shape_str(shape), " requested, ", capacity() - std::min(start, capacity()), " of ", capacity(),
               " left");
  used_ = start + bytes;
  peak_ = std::max(peak_, used_);
  return Tensor::from_storage(storage_, start, shape, dtype);
}

void Arena::reset() {
  MMATTN_CHECK(storage_.use_count() == 1, Error, "Arena::reset while ", storage_.use_count() - 1,
               " tensor(s) from it are alive");
  used_ = 0;
}

}  // namespace mmattn
