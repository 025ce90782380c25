#pragma once
// Workspace arena: one block of device (or host) memory carved into tensors with a bump pointer
// (256-byte aligned) and reset wholesale between steps. Tensors it hands out share its storage;
// reset() refuses while any of them is still alive, so a stale view can never alias new data.
#include <cstddef>
#include <memory>

#include "core/tensor.h"

namespace mmattn {

class Arena {
 public:
  Arena(size_t bytes, Device dev);
  Tensor alloc(const Shape& shape, DType dtype);  // throws when the arena is exhausted
  void reset();
  size_t used() const { return used_; }
  size_t capacity() const { return storage_->bytes(); }
  size_t peak() const { return peak_; }
  Device device() const { return storage_->device(); }

 private:
  std::shared_ptr<Storage> storage_;
  size_t used_ = 0, peak_ = 0;
};

}  // namespace mmattn
