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
  ~Handles() {
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
  } catch (...) {
    outputs_.clear();
    h_.reset();
    cuda_release_pool(s);
    throw;
  }
  last_ = s;  // the first replay follows the warm-up
}

CapturedGraph::~CapturedGraph() {
  h_.reset();
  outputs_.clear();  // back to the private pool, then every block of it to the driver
  cuda_release_pool(stream_->get());
}

const std::vector<Tensor>& CapturedGraph::replay() {
  const StreamHandle s = current_stream();
  if (last_ != s) stream_wait(s, last_);
  MMATTN_CUDA_CHECK(cudaGraphLaunch(h_->exec, s));
  last_ = s;
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
