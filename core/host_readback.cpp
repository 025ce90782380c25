#include "core/host_readback.h"

#include "core/device.h"
#include "core/error.h"

#if MMATTN_HAS_CUDA
#include "core/cuda_check.h"
#endif

namespace mmattn {

#if MMATTN_HAS_CUDA

HostReadback::HostReadback(size_t capacity) : capacity_(capacity) {
  MMATTN_CUDA_CHECK(cudaHostAlloc(&host_, capacity ? capacity : 1, cudaHostAllocDefault));
  cudaEvent_t ev = nullptr;
  const cudaError_t st = cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
  if (st != cudaSuccess) cudaFreeHost(host_);
  MMATTN_CUDA_CHECK(st);
  event_ = ev;
}
HostReadback::~HostReadback() {
  if (pending_) cudaEventSynchronize(static_cast<cudaEvent_t>(event_));  // the copy still writes host_
  cudaEventDestroy(static_cast<cudaEvent_t>(event_));
  cudaFreeHost(host_);
}
void HostReadback::enqueue(const void* device_src, size_t bytes) {
  MMATTN_CHECK(!pending_, Error, "HostReadback::enqueue: the previous copy was not waited for");
  MMATTN_CHECK(bytes <= capacity_, ShapeError, "HostReadback::enqueue: ", bytes, " bytes into a ", capacity_,
               "-byte buffer");
  cudaStream_t s = current_stream();
  MMATTN_CUDA_CHECK(cudaMemcpyAsync(host_, device_src, bytes, cudaMemcpyDeviceToHost, s));
  MMATTN_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event_), s));
  pending_ = true;
}
const void* HostReadback::wait() {
  MMATTN_CHECK(pending_, Error, "HostReadback::wait: nothing was enqueued");
  pending_ = false;
  MMATTN_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event_)));
  return host_;
}

#else  // CPU-only build

[[noreturn]] static void no_cuda() {
  MMATTN_THROW(CudaError, "HostReadback: this build of mmattn has no CUDA support (configure with -DMMATTN_CUDA=ON)");
}
HostReadback::HostReadback(size_t) { no_cuda(); }
HostReadback::~HostReadback() {}
void HostReadback::enqueue(const void*, size_t) { no_cuda(); }
const void* HostReadback::wait() { no_cuda(); }

#endif

}  // namespace mmattn
