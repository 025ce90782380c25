#pragma once
// CUDA graphs: a fixed sequence of launches captured once and replayed with one launch, so that a
// host-bound stretch of a request (the ViT: ~190 kernels of ~10 us, whose launches a busy host
// cannot always keep ahead of) runs at the device's pace.
//
// A CapturedGraph runs its function twice on a stream of its own: once eagerly (the warm-up: per-
// stream workspaces, cached plans and the allocation pool settle), then under capture. Every tensor
// the function allocates comes from the caching allocator's pool of that private stream, which no
// other work allocates from and which is held (device.h: cuda_hold_pool) until the graph is
// destroyed, so the addresses baked into the graph, temporaries included, stay the graph's.
//   Inputs: device tensors the function reads, kept alive by the caller at fixed addresses (copy new
//     values into them before a replay).
//   Outputs: the tensors the function returns; every replay overwrites them in place.
//   Not allowed under capture (CudaError): host<->device copies (copy_bytes checks), host reads of
//     device values, synchronisation.
#include <functional>
#include <memory>
#include <vector>

#include "core/device.h"
#include "core/tensor.h"

namespace mmattn {

// Whether callers that can use graphs do (default on in CUDA builds; MMATTN_CUDA_GRAPHS=0 in the
// environment turns them off, as does set_cuda_graphs_enabled(false)). Always false without CUDA.
bool cuda_graphs_enabled();
void set_cuda_graphs_enabled(bool on);

class CapturedGraph {
 public:
  // Warm-up, then capture of fn (both ordered after the work queued so far on the current stream).
  // Throws CudaError when the capture fails (nothing is kept).
  explicit CapturedGraph(const std::function<std::vector<Tensor>()>& fn);
  ~CapturedGraph();
  CapturedGraph(const CapturedGraph&) = delete;
  CapturedGraph& operator=(const CapturedGraph&) = delete;

  // Launches the graph on the current stream (after the previous replay, on whichever stream it
  // ran, even one destroyed since) and returns its outputs, valid in stream order until the next
  // replay.
  const std::vector<Tensor>& replay();
  const std::vector<Tensor>& outputs() const { return outputs_; }
  size_t num_nodes() const { return nodes_; }

 private:
  struct Handles;
  std::unique_ptr<Stream> stream_;
  std::unique_ptr<Handles> h_;
  std::vector<Tensor> outputs_;
  size_t nodes_ = 0;
};

}  // namespace mmattn
