#pragma once
// Dense products on the CPU (OpenBLAS sgemm, f32 only) and CUDA (cuBLASLt; f32/f16/bf16 with f32
// accumulation).
//   linear(x [..., K], weight [N, K], bias [N]?) -> [..., N]       torch.nn.functional.linear
//   matmul(a [..., M, K], b [..., K, N]) -> [..., M, N]            torch.matmul, batch dims equal;
//        b may also be 2-D [K, N] (shared by every batch entry). transpose_b: b is [..., N, K]
//        (or [N, K]) and the product is a @ b^T.
// x/weight/bias (a/b) must share dtype and device; non-contiguous inputs are copied first.
// K == 0 gives bias (or zeros); empty M or N gives an empty result. Outputs are new contiguous tensors.
// On CUDA, f32 uses true f32 math (CUBLAS_COMPUTE_32F) unless set_matmul_allow_tf32(true)
// (like torch.backends.cuda.matmul.allow_tf32, off by default); f16/bf16 accumulate in f32 and
// round once to the output dtype (bias is added in f32 inside the GEMM epilogue).
#include <cstdint>

#include "core/tensor.h"

namespace mmattn {

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());
Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_b = false);

// Process-wide switch for the f32 CUDA path (TF32 tensor cores: ~1e-3 relative error).
void set_matmul_allow_tf32(bool allow);
bool matmul_allow_tf32();

// Row-major, contiguous, strided-batched: for each batch entry i,
//   c_i [m, n] = a_i [m, k] @ op(b_i) + bias,   op(b) = b [k, n], or b^T when b is stored [n, k].
// Entry i of X starts at X + i * stride_x elements. Requires m, n, k >= 1.
struct GemmParams {
  const void* a = nullptr;
  const void* b = nullptr;
  const void* bias = nullptr;  // [n] or null
  void* c = nullptr;
  int64_t batch = 1, m = 0, n = 0, k = 0;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;
  bool trans_b = false;  // b stored [n, k]
  DType dtype = DType::F32;
  bool allow_tf32 = false;
};
void gemm_cpu(const GemmParams& p);
void gemm_cuda(const GemmParams& p, StreamHandle s);

}  // namespace mmattn
