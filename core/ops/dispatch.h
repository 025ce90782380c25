#pragma once
// Helpers for op launchers (the Tensor-level functions): route to the CPU reference or the
// CUDA kernel. CPU references compute in f32 and accept F32 tensors only; CUDA kernels take
// F32/F16/BF16 with f32 accumulation.
#include "core/tensor.h"

#if MMATTN_HAS_CUDA
#define MMATTN_IF_CUDA(...) __VA_ARGS__
#else
#define MMATTN_IF_CUDA(...) MMATTN_THROW(CudaError, "this build of mmattn has no CUDA support")
#endif

namespace mmattn {
// CPU references are f32-only; the message tells the caller to convert.
inline void check_cpu_f32(const Tensor& t, const char* op, const char* arg) {
  MMATTN_CHECK(t.is_cuda() || t.dtype() == DType::F32, ShapeError, op, ": CPU path computes in F32; argument '",
               arg, "' is ", t.desc(), " (convert with .to(DType::F32))");
}
}  // namespace mmattn
