#include "core/cuda_graph.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "core/error.h"

#if MMATTN_HAS_CUDA
#include "core/cuda_check.h"
#endif

namespace mmattn {

namespace {
std::atomic<int>& graphs_flag() {  // -1 unread, 0 off, 1 on
  static std::atomic<int> f{-1};
  return f;
}
}  // namespace

bool cuda_graphs_enabled() {
#if MMATTN_HAS_CUDA
  int f = graphs_flag().load();
  if (f < 0) {
    const char* e = std::getenv("MMATTN_CUDA_GRAPHS");
    f = e && std::strcmp(e, "0") == 0 ? 0 : 1;
    graphs_flag().store(f);
  }
  return f == 1;
#else
  return false;
#endif
}
void set_cuda_graphs_enabled(bool on) { graphs_flag().store(on ? 1 : 0); }

#if MMATTN_HAS_CUDA

struct CapturedGraph::Handles {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  cudaEvent_t done = nullptr;  // recorded after the warm-up and after every replay
  ~Handles() {
    if (done) cudaEventDestroy(done);
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
  }
};

CapturedGraph::CapturedGraph(const std::function<std::vector<Tensor>()>& fn)
    : stream_(std::make_unique<Stream>()), h_(std::make_unique<Handles>()) {
  const StreamHandle caller = current_stream();
  const StreamHandle s = stream_->get();
  MMATTN_CHECK(!stream_capturing(caller), CudaError, "CapturedGraph: the current stream is itself being captured");
  cuda_hold_pool(s);
  try {
    StreamGuard guard(s);
    stream_wait(s, caller);  // the inputs are written in the caller's stream order
    fn();                    // warm-up; its tensors return to the private pool
    MMATTN_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    try {
      outputs_ = fn();
    } catch (...) {
      cudaGraph_t g = nullptr;
      cudaStreamEndCapture(s, &g);
      if (g) cudaGraphDestroy(g);
      cudaGetLastError();
      throw;
    }
    MMATTN_CUDA_CHECK(cudaStreamEndCapture(s, &h_->graph));
    MMATTN_CUDA_CHECK(cudaGraphInstantiate(&h_->exec, h_->graph, 0));
    MMATTN_CUDA_CHECK(cudaGraphGetNodes(h_->graph, nullptr, &nodes_));
    MMATTN_CUDA_CHECK(cudaEventCreateWithFlags(&h_->done, cudaEventDisableTiming));
    MMATTN_CUDA_CHECK(cudaEventRecord(h_->done, s));  // the first replay follows the warm-up
  } catch (...) {
    outputs_.clear();
    h_.reset();
    cuda_release_pool(s);
    throw;
  }
}

CapturedGraph::~CapturedGraph() {
  h_.reset();
  outputs_.clear();  // back to the private pool, then every block of it to the driver
  cuda_release_pool(stream_->get());
}

const std::vector<Tensor>& CapturedGraph::replay() {
  // Ordered after the previous replay through an event of the graph's own, not the previous
  // replay's stream: that stream may have been destroyed since (or its handle reused by another).
  const StreamHandle s = current_stream();
  MMATTN_CUDA_CHECK(cudaStreamWaitEvent(s, h_->done, 0));
  MMATTN_CUDA_CHECK(cudaGraphLaunch(h_->exec, s));
  MMATTN_CUDA_CHECK(cudaEventRecord(h_->done, s));
  return outputs_;
}

#else  // CPU-only build

struct CapturedGraph::Handles {};
CapturedGraph::CapturedGraph(const std::function<std::vector<Tensor>()>&) {
  MMATTN_THROW(CudaError, "CapturedGraph: this build of mmattn has no CUDA support");
}
CapturedGraph::~CapturedGraph() = default;
const std::vector<Tensor>& CapturedGraph::replay() { return outputs_; }

#endif

}  // namespace mmattn
