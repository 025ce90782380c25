#pragma once
// A device -> host copy that does not block the host when queued: enqueue() queues a copy of up
// to `capacity` bytes into pinned host memory on the current stream (after the work queued there
// so far, not after work queued later) and returns at once; wait() blocks until those bytes are on
// the host and returns them. One copy per instance in flight: enqueue again only after wait().
// For a decode loop that queues step t + 1 before it reads step t's token (pipelines/llava.cpp).
#include <cstddef>

namespace mmattn {

class HostReadback {
 public:
  explicit HostReadback(size_t capacity);
  ~HostReadback();
  HostReadback(const HostReadback&) = delete;
  HostReadback& operator=(const HostReadback&) = delete;
  void enqueue(const void* device_src, size_t bytes);
  const void* wait();

 private:
  void* host_ = nullptr;
  void* event_ = nullptr;  // cudaEvent_t
  size_t capacity_ = 0;
  bool pending_ = false;
};

}  // namespace mmattn
