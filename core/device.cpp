#include "core/device.h"

#include <atomic>
#include <deque>
#include <map>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <vector>
#include <cstring>
#include <memory>

#include "core/error.h"

#if MMATTN_HAS_CUDA
#include "core/cuda_check.h"
#endif

namespace mmattn {

Device parse_device(const std::string& s, const std::string& what) {
  if (s == "cpu") return Device::cpu();
  if (s == "cuda" || s == "gpu") return Device::cuda(0);
  if (s.rfind("cuda:", 0) == 0) {
    const std::string n = s.substr(5);
    if (!n.empty() && n.find_first_not_of("0123456789") == std::string::npos) return Device::cuda(std::stoi(n));
  }
  MMATTN_THROW(ConfigError, what, ": unknown device '", s, "' (expected cpu, cuda or cuda:N)");
}

#if MMATTN_HAS_CUDA

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}
bool cuda_available() { return cuda_device_count() > 0; }
namespace {
// An attribute of the current device, cached per device (attributes are fixed for a device).
template <cudaDeviceAttr A>
int device_attribute() {
  static std::atomic<int> cached[64] = {};
  int dev = 0;
  MMATTN_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev < 0 || dev >= 64) dev = 0;
  int n = cached[dev].load(std::memory_order_relaxed);
  if (n == 0) {
    MMATTN_CUDA_CHECK(cudaDeviceGetAttribute(&n, A, dev));
    cached[dev].store(n, std::memory_order_relaxed);
  }
  return n;
}
}  // namespace
int cuda_sm_count() { return device_attribute<cudaDevAttrMultiProcessorCount>(); }
int cuda_smem_optin() { return device_attribute<cudaDevAttrMaxSharedMemoryPerBlockOptin>(); }

namespace {
thread_local StreamHandle t_stream = nullptr;
thread_local bool t_stream_set = false;
thread_local std::unique_ptr<Stream> t_own_stream;
}  // namespace

StreamHandle current_stream() {
  if (!t_stream_set) {
    t_own_stream = std::make_unique<Stream>();
    t_stream = t_own_stream->get();
    t_stream_set = true;
  }
  return t_stream;
}
void set_current_stream(StreamHandle s) {
  t_stream = s;
  t_stream_set = true;
}

Stream::Stream() {
  cudaStream_t s;
  MMATTN_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  s_ = s;
}
Stream::~Stream() {
  if (s_) cudaStreamDestroy(s_);
}
void Stream::synchronize() const { MMATTN_CUDA_CHECK(cudaStreamSynchronize(s_)); }
void synchronize(StreamHandle s) { MMATTN_CUDA_CHECK(cudaStreamSynchronize(s)); }

namespace {
thread_local std::unique_ptr<Stream> t_side_stream;
struct JoinEvent {
  cudaEvent_t ev = nullptr;
  ~JoinEvent() {
    if (ev) cudaEventDestroy(ev);
  }
};
thread_local JoinEvent t_join;
}  // namespace

StreamHandle side_stream() {
  if (!t_side_stream) t_side_stream = std::make_unique<Stream>();
  return t_side_stream->get();
}
void stream_wait(StreamHandle waiter, StreamHandle on) {
  if (waiter == on) return;
  if (!t_join.ev) MMATTN_CUDA_CHECK(cudaEventCreateWithFlags(&t_join.ev, cudaEventDisableTiming));
  // one event serves every join: a wait binds to the record made just before it
  MMATTN_CUDA_CHECK(cudaEventRecord(t_join.ev, on));
  MMATTN_CUDA_CHECK(cudaStreamWaitEvent(waiter, t_join.ev, 0));
}

namespace {

// Sizes are rounded so that cached blocks are reusable: 512 B granules below 1 MiB,
// 2 MiB granules above. A cached block is reused when it is at most twice the request
// (large) so big blocks are not wasted on small requests.
size_t round_size(size_t n) {
  if (n == 0) n = 1;
  if (n < (1u << 20)) return (n + 511) & ~size_t(511);
  return (n + (2u << 20) - 1) & ~size_t((2u << 20) - 1);
}

struct Block {
  size_t size;
  StreamHandle stream;
};

class CachingAllocator {
 public:
  void* allocate(size_t bytes, StreamHandle stream) {
    const size_t size = round_size(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    auto& pool = free_[stream];
    auto it = pool.lower_bound(size);
    if (it != pool.end() && it->first <= 2 * size) {
      void* p = it->second;
      const size_t bsize = it->first;
      pool.erase(it);
      live_[p] = {bsize, stream};
      note_alloc(bsize);
      return p;
    }
    void* p = nullptr;
    // (a capture in progress on this thread tolerates the call: the block outlives the graph)
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    cudaThreadExchangeStreamCaptureMode(&mode);
    cudaError_t err = cudaMalloc(&p, size);
    cudaThreadExchangeStreamCaptureMode(&mode);
    if (err != cudaSuccess) {  // out of memory: give the cache back and retry once
      cudaGetLastError();
      release_all_locked();
      err = cudaMalloc(&p, size);
      if (err != cudaSuccess) {
        cudaGetLastError();
        MMATTN_THROW(CudaError, "cudaMalloc of ", bytes, " bytes failed (", cudaGetErrorString(err), "); ",
                     stats_.allocated_bytes, " bytes live in tensors, ", stats_.reserved_bytes, " reserved");
      }
    }
    stats_.reserved_bytes += size;
    stats_.num_cuda_mallocs++;
    live_[p] = {size, stream};
    note_alloc(size);
    return p;
  }
  void free(void* p) {
    if (!p) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(p);
    if (it == live_.end()) return;  // not ours: never happens for tensors we made
    free_[it->second.stream].emplace(it->second.size, p);
    stats_.allocated_bytes -= it->second.size;
    live_.erase(it);
  }
  void empty_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    release_all_locked();
  }
  void hold(StreamHandle s) {
    std::lock_guard<std::mutex> lock(mu_);
    held_.insert(s);
  }
  void release_pool(StreamHandle s) {
    std::lock_guard<std::mutex> lock(mu_);
    held_.erase(s);
    auto it = free_.find(s);
    if (it == free_.end()) return;
    cudaDeviceSynchronize();  // the graph may still be running
    free_blocks_locked(it->second);
    free_.erase(it);
  }
  AllocatorStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }
  void reset_peak() {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.peak_allocated_bytes = stats_.allocated_bytes;
  }

 private:
  void note_alloc(size_t n) {
    stats_.allocated_bytes += n;
    if (stats_.allocated_bytes > stats_.peak_allocated_bytes) stats_.peak_allocated_bytes = stats_.allocated_bytes;
  }
  void release_all_locked() {
    cudaDeviceSynchronize();  // cached blocks may still be read by queued work
    for (auto it = free_.begin(); it != free_.end();) {
      if (held_.count(it->first)) {  // a graph's pool: its blocks may be baked into the graph
        ++it;
        continue;
      }
      free_blocks_locked(it->second);
      it = free_.erase(it);
    }
  }
  void free_blocks_locked(const std::multimap<size_t, void*>& pool) {
    for (const auto& [size, p] : pool) {
      cudaFree(p);
      stats_.reserved_bytes -= size;
    }
  }
  std::mutex mu_;
  std::unordered_map<StreamHandle, std::multimap<size_t, void*>> free_;
  std::unordered_map<void*, Block> live_;
  std::unordered_set<StreamHandle> held_;
  AllocatorStats stats_;
};

CachingAllocator& allocator() {
  static CachingAllocator* a = new CachingAllocator();  // leaked: outlives static tensors
  return *a;
}

}  // namespace

void* cuda_alloc(size_t bytes, StreamHandle stream) { return allocator().allocate(bytes, stream); }
void cuda_free(void* p) { allocator().free(p); }
void cuda_empty_cache() { allocator().empty_cache(); }
void cuda_hold_pool(StreamHandle s) { allocator().hold(s); }
void cuda_release_pool(StreamHandle s) { allocator().release_pool(s); }
bool stream_capturing(StreamHandle s) {
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  MMATTN_CUDA_CHECK(cudaStreamIsCapturing(s, &st));
  return st != cudaStreamCaptureStatusNone;
}
AllocatorStats cuda_allocator_stats() { return allocator().stats(); }
void cuda_reset_peak() { allocator().reset_peak(); }

namespace {

// Small host->device copies go through a per-thread ring of pinned memory: the bytes are copied
// into the ring at once (the caller may reuse its buffer on return) and the DMA is queued on the
// stream, so the host does not wait for the device (a copy from pageable memory would wait for the
// stream to drain: one stall per upload of lengths, positions, gains, ... in a forward). A region
// is reused only after the event recorded behind its copy has completed.
class StagingRing {
 public:
  static constexpr size_t kCapacity = size_t(8) << 20;
  static constexpr size_t kMaxCopy = size_t(1) << 20;  // larger copies take the blocking path

  void copy_to_device(void* dst, const void* src, size_t bytes, cudaStream_t s) {
    if (!base_) MMATTN_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&base_), kCapacity, cudaHostAllocDefault));
    const size_t n = (bytes + 255) & ~size_t(255);
    if (head_ + n > kCapacity) head_ = 0;
    retire(head_, head_ + n);
    std::memcpy(base_ + head_, src, bytes);
    MMATTN_CUDA_CHECK(cudaMemcpyAsync(dst, base_ + head_, bytes, cudaMemcpyHostToDevice, s));
    cudaEvent_t ev = nullptr;
    if (!events_.empty()) {
      ev = events_.back();
      events_.pop_back();
    } else {
      MMATTN_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    }
    MMATTN_CUDA_CHECK(cudaEventRecord(ev, s));
    inflight_.push_back({head_, head_ + n, ev});
    head_ += n;
  }

 private:
  struct Span {
    size_t begin, end;
    cudaEvent_t ev;
  };
  // Waits for the copies still reading [begin, end), then recycles the completed spans. One stream
  // per thread records them in order, so they complete in order: the front is the oldest.
  void retire(size_t begin, size_t end) {
    for (const Span& sp : inflight_)
      if (sp.begin < end && begin < sp.end) MMATTN_CUDA_CHECK(cudaEventSynchronize(sp.ev));
    while (!inflight_.empty()) {
      const cudaError_t st = cudaEventQuery(inflight_.front().ev);
      if (st == cudaErrorNotReady) break;
      MMATTN_CUDA_CHECK(st);
      events_.push_back(inflight_.front().ev);
      inflight_.pop_front();
    }
  }

  char* base_ = nullptr;
  size_t head_ = 0;
  std::deque<Span> inflight_;
  std::vector<cudaEvent_t> events_;
};

StagingRing& staging_ring() {
  thread_local StagingRing* r = new StagingRing();  // leaked: pinned memory outlives thread-exit order issues
  return *r;
}

}  // namespace

void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  if (bytes == 0) return;
  if (dst_dev.is_cpu() && src_dev.is_cpu()) {
    std::memcpy(dst, src, bytes);
    return;
  }
  cudaStream_t s = current_stream();
  if (dst_dev.is_cuda() && src_dev.is_cuda()) {
    MMATTN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s));
    return;
  }
  MMATTN_CHECK(!stream_capturing(s), CudaError, "a ", bytes, "-byte copy ",
               dst_dev.is_cuda() ? "to the device from the host" : "from the device to the host",
               " on a stream being captured into a CUDA graph (the replay would not see the data)");
  if (dst_dev.is_cuda() && bytes <= StagingRing::kMaxCopy) {
    staging_ring().copy_to_device(dst, src, bytes, s);
    return;
  }
  const cudaMemcpyKind kind = dst_dev.is_cuda() ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost;
  MMATTN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, s));
  MMATTN_CUDA_CHECK(cudaStreamSynchronize(s));
}

#else  // CPU-only build

[[noreturn]] static void no_cuda(const char* what) {
  MMATTN_THROW(CudaError, what, ": this build of mmattn has no CUDA support (configure with -DMMATTN_CUDA=ON)");
}
int cuda_device_count() { return 0; }
bool cuda_available() { return false; }
int cuda_sm_count() { return 0; }
int cuda_smem_optin() { return 0; }
StreamHandle current_stream() { return nullptr; }
void set_current_stream(StreamHandle) {}
Stream::Stream() { no_cuda("Stream"); }
Stream::~Stream() {}
void Stream::synchronize() const {}
void synchronize(StreamHandle) {}
StreamHandle side_stream() { no_cuda("side_stream"); }
void stream_wait(StreamHandle, StreamHandle) {}
void* cuda_alloc(size_t, StreamHandle) { no_cuda("cuda_alloc"); }
void cuda_free(void*) {}
void cuda_empty_cache() {}
void cuda_hold_pool(StreamHandle) {}
void cuda_release_pool(StreamHandle) {}
bool stream_capturing(StreamHandle) { return false; }
AllocatorStats cuda_allocator_stats() { return {}; }
void cuda_reset_peak() {}
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  if (dst_dev.is_cuda() || src_dev.is_cuda()) no_cuda("copy to/from a CUDA device");
  if (bytes) std::memcpy(dst, src, bytes);
}

#endif

}  // namespace mmattn
