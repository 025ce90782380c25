#include "core/stream_scratch.h"

#include <functional>
#include <unordered_map>

#if MMATTN_HAS_CUDA
#include "core/cuda_check.h"
#endif

namespace mmattn {

namespace {

struct Key {
  const void* owner;
  StreamHandle stream;
  bool operator==(const Key& o) const { return owner == o.owner && stream == o.stream; }
};
struct KeyHash {
  size_t operator()(const Key& k) const {
    return std::hash<const void*>()(k.owner) * 31 + std::hash<const void*>()(static_cast<const void*>(k.stream));
  }
};
struct Buffer {
  void* ptr = nullptr;
  size_t bytes = 0;
};
struct Scratches {
  std::unordered_map<Key, Buffer, KeyHash> buffers;
  ~Scratches() {
    for (auto& [k, b] : buffers) cuda_free(b.ptr);  // back to the (leaked) caching allocator: no CUDA call
  }
};
thread_local Scratches t_scratch;

}  // namespace

void* stream_scratch(const void* owner, StreamHandle s, size_t bytes, bool zeroed) {
  Buffer& b = t_scratch.buffers[Key{owner, s}];
  if (b.bytes < bytes) {
    cuda_free(b.ptr);
    b = {};
    b.ptr = cuda_alloc(bytes, s);
    b.bytes = bytes;
#if MMATTN_HAS_CUDA
    if (zeroed) MMATTN_CUDA_CHECK(cudaMemsetAsync(b.ptr, 0, bytes, s));
#else
    (void)zeroed;
#endif
  }
  return b.ptr;
}

}  // namespace mmattn
