#pragma once
// Device scratch per caller, stream and thread: cuBLASLt's and cuDNN's workspaces, split-K partials,
// zeroed counters and task queues that kernels leave at zero again.
//   stream_scratch(owner, s, bytes, zeroed): the buffer that `owner` (any address unique to the
//   caller, e.g. a function-local static) keeps for stream s on this thread, at least `bytes` long.
//   It only grows: a longer request frees the old block (stream-ordered: only s can get it back, so
//   a kernel still reading it cannot race with its reuse) and allocates a new one, zero-filled in
//   stream order when `zeroed`. A buffer keeps its address until a longer request (a captured CUDA
//   graph keeps a valid pointer) and goes back to the caching allocator when the thread ends.
#include <cstddef>

#include "core/device.h"

namespace mmattn {

void* stream_scratch(const void* owner, StreamHandle s, size_t bytes, bool zeroed = false);

}  // namespace mmattn
