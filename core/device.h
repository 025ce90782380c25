#pragma once
// Devices, streams and the CUDA caching allocator.
// In a CPU-only build (MMATTN_HAS_CUDA=0) every CUDA entry point throws CudaError.
#include <cstddef>
#include <cstdint>
#include <string>

struct CUstream_st;  // cudaStream_t without including the CUDA headers

namespace mmattn {

using StreamHandle = CUstream_st*;

enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  static Device cpu() { return {}; }
  static Device cuda(int i = 0) { return {DeviceType::CUDA, i}; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  std::string str() const { return is_cuda() ? "cuda:" + std::to_string(index) : "cpu"; }
  bool operator==(const Device& o) const { return type == o.type && (is_cpu() || index == o.index); }
};

// True when this build has CUDA and a device is usable (never throws).
bool cuda_available();
int cuda_device_count();
// Multiprocessors of the current CUDA device (cached per device; 0 in a CPU-only build).
int cuda_sm_count();
// The most dynamic shared memory one block of the current device may opt in to, in bytes (cached per
// device; 0 in a CPU-only build).
int cuda_smem_optin();
// Parses "cpu", "cuda", "cuda:N", "gpu" (case-sensitive); throws ConfigError naming `what`.
Device parse_device(const std::string& s, const std::string& what = "device");

// The stream that ops launch on for the current thread (created lazily, one per thread,
// non-blocking). StreamGuard swaps it for a scope.
StreamHandle current_stream();
void set_current_stream(StreamHandle s);
class StreamGuard {
 public:
  explicit StreamGuard(StreamHandle s) : prev_(current_stream()) { set_current_stream(s); }
  ~StreamGuard() { set_current_stream(prev_); }
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  StreamHandle prev_;
};
// An owned CUDA stream (non-blocking).
class Stream {
 public:
  Stream();
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  StreamHandle get() const { return s_; }
  void synchronize() const;

 private:
  StreamHandle s_ = nullptr;
};
void synchronize(StreamHandle s = current_stream());
// A second stream of the current thread (created lazily, non-blocking) for work that may overlap
// the current stream's, and the device-side join of two streams: `waiter` waits for everything
// enqueued on `on` so far (no host synchronisation). Rule for the caching allocator (blocks are
// reused per stream): work on the side stream starts with stream_wait(side_stream(), current),
// and the current stream joins it with stream_wait(current, side_stream()) before any tensor the
// side work reads or writes is freed.
StreamHandle side_stream();
void stream_wait(StreamHandle waiter, StreamHandle on);

// Stream-ordered caching allocator: freed blocks are kept per stream and reused for later
// requests on the same stream, so a block is never handed to a stream that could still race
// with work queued by its previous owner. Thread-safe.
struct AllocatorStats {
  size_t allocated_bytes = 0;       // in live tensors
  size_t reserved_bytes = 0;        // obtained from cudaMalloc (live + cached)
  size_t peak_allocated_bytes = 0;
  size_t num_cuda_mallocs = 0;
};
void* cuda_alloc(size_t bytes, StreamHandle stream);
void cuda_free(void* p);
void cuda_empty_cache();               // returns cached blocks to the driver (held pools excepted)
// Pools held for CUDA graphs (core/cuda_graph.h): the blocks cached for stream `s`, which only a
// graph's capture allocates from, may be baked into that graph, so cuda_empty_cache() and the
// out-of-memory retry keep them until cuda_release_pool(s) returns them to the driver.
void cuda_hold_pool(StreamHandle s);
void cuda_release_pool(StreamHandle s);
// Whether stream `s` is being captured into a CUDA graph (false in a CPU-only build).
bool stream_capturing(StreamHandle s = current_stream());
AllocatorStats cuda_allocator_stats();
void cuda_reset_peak();

// Copies between any two devices on the current stream. Device->host blocks until the bytes are
// on the host; host->device returns once the source may be reused: up to 1 MiB the bytes are
// staged in pinned memory and the copy is queued (stream-ordered, no wait for the device), larger
// copies block; device->device is queued. Host<->device copies throw CudaError on a stream being
// captured into a graph (the replay would read the staging buffer or host memory of the capture).
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes);

}  // namespace mmattn
