#pragma once
// Dense products on the CPU (OpenBLAS sgemm, f32 only) and CUDA (cuBLASLt; f32/f16/bf16 with f32
// accumulation).
//   linear(x [..., K], weight [N, K], bias [N]?) -> [..., N]       torch.nn.functional.linear
//   matmul(a [..., M, K], b [..., K, N]) -> [..., M, N]            torch.matmul, batch dims equal;
//        b may also be 2-D [K, N] (shared by every batch entry). transpose_b: b is [..., N, K]
//        (or [N, K]) and the product is a @ b^T.
// x/weight/bias (a/b) must share dtype and device; non-contiguous inputs are copied first.
// The weight and bias of linear() and of the fused forms below are a layer's parameters: on CUDA the
// decode-sized kernels may start reading them before the work queued ahead of them on the stream has
// finished (programmatic dependent launch), so they must not be written by a kernel still in flight
// (an activation as the second operand goes through matmul()).
// K == 0 gives bias (or zeros); empty M or N gives an empty result. Outputs are new contiguous tensors.
// On CUDA, f32 uses true f32 math (CUBLAS_COMPUTE_32F) unless set_matmul_allow_tf32(true)
// (like torch.backends.cuda.matmul.allow_tf32, off by default); f16/bf16 accumulate in f32 and
// round once to the output dtype (bias is added in f32 inside the GEMM epilogue).
#include <cstdint>

#include "core/tensor.h"

namespace mmattn {

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());
Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_b = false);
// matmul with an F32 result for any float inputs: f16/bf16 products accumulate in f32 and are not
// rounded back (e.g. a Gram matrix of bf16 features on the tensor cores: every product exact).
Tensor matmul_f32(const Tensor& a, const Tensor& b, bool transpose_b = false);

// Fused forms for transformer blocks (the residual add, the norm before a projection, the gated
// activation before the down projection). Each equals the unfused composition except that the
// residual add rounds once (y + x W^T + b in f32, then to the dtype; a GEMM with beta = 1) instead
// of rounding the product first. On CUDA, decode-sized inputs (<= kGemvFusedMaxRows rows) run as one
// skinny kernel that reads the weight once (gemv); elsewhere the composition runs (whose products
// take the skinny tensor-core kernel up to kGemvMaxRows rows).
//   linear_add_(y [..., N], x [..., K], weight [N, K], bias?)     y += linear(x, weight, bias)
//   rms_norm_linear(x, norm_weight [K], eps, weight, bias?)        linear(rms_norm(x, nw, eps), weight, bias)
//   swiglu_linear_add_(y, gate_up [..., 2K], weight [N, K], bias?) y += linear(swiglu_fused(gate_up), ...)
// y must be contiguous with the leading shape of x and the dtype/device of x, and must not overlap x.
void linear_add_(Tensor& y, const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());
//   linear_residual(r [..., N], x [..., K], weight, bias?)       r + linear(x, weight, bias) as a new
//        tensor, r untouched (a GEMM reading r as its C and writing the result as D, beta = 1)
Tensor linear_residual(const Tensor& residual, const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());
Tensor rms_norm_linear(const Tensor& x, const Tensor& norm_weight, float eps, const Tensor& weight,
                       const Tensor& bias = Tensor());
void swiglu_linear_add_(Tensor& y, const Tensor& gate_up, const Tensor& weight, const Tensor& bias = Tensor());
//   rms_norm_linear_swiglu(x, norm_weight [K], eps, gate_up [2F, K], bias [2F]?) -> [..., F]
//        swiglu_fused(rms_norm_linear(x, norm_weight, eps, gate_up, bias)), bit for bit: on CUDA at
//        decode sizes one skinny kernel whose tasks pair gate row j with up row j and write the gated
//        activation (half the output, and the down projection after it reads a plain input).
Tensor rms_norm_linear_swiglu(const Tensor& x, const Tensor& norm_weight, float eps, const Tensor& gate_up,
                              const Tensor& bias = Tensor());

// A Llama layer's q/k/v projection with RoPE in its epilogue, on CUDA (f16/bf16) for decode steps of
// m <= kGemvPairedMaxRows rows (the skinny gemv below) and prefills of kGemvMaxRows < m <=
// kClusterGemmMaxRows rows (the cluster product below), its three outputs written where the caller
// wants them (k and v straight into a KV cache's rows: no separate append):
//   y = x [m, K] @ weight [(hq + 2 hkv) D, K]^T + bias?, in sections q | k | v of hq D, hkv D, hkv D
//   columns; q_out [m, hq D] = rope(y_q), k_out [m, hkv D] = rope(y_k), v_out [m, hkv D] = y_v (any row
//   strides, dense last dims, 8-byte aligned); rope: rotate-half pairs per head of D columns, row r
//   by row r of cos / sin (f32 [m, D / 2], contiguous: a RopeTable's device copy).
// The same values, bit for bit, as linear() through the same product kernel (gemv, or the cluster
// product) and then apply_rope_ on q and k (the same partial-sum order, the same rotation code).
// linear_qkv_rope_fusable: whether this build and device take it for these shapes (D a multiple of 8
// dividing 128): at m <= kGemvPairedMaxRows where the gemv takes the product, at kGemvMaxRows < m <=
// kClusterGemmMaxRows with the cluster product's streaming kernel available and its route not
// kClusterGemmNone. split / kind: the cluster product's (ignored by the gemv).
// rms_norm_linear_qkv_rope: the same for rms_norm(x, norm_weight, eps) as the input (on the gemv
// path the norm runs inside the product's kernel, as rms_norm_linear's).
bool linear_qkv_rope_fusable(const Tensor& x, const Tensor& weight, int64_t head_dim);
void linear_qkv_rope(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& cos, const Tensor& sin,
                     int64_t hq, int64_t hkv, Tensor& q_out, Tensor& k_out, Tensor& v_out, int split = 0,
                     int kind = -1);
void rms_norm_linear_qkv_rope(const Tensor& x, const Tensor& norm_weight, float eps, const Tensor& weight,
                              const Tensor& bias, const Tensor& cos, const Tensor& sin, int64_t hq, int64_t hkv,
                              Tensor& q_out, Tensor& k_out, Tensor& v_out);
int64_t linear_qkv_rope_calls();  // calls so far, process-wide (tests and benchmarks: the fused form ran)

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
  DType dtype = DType::F32;      // a and b (and c unless f32_out)
  bool f32_out = false;          // c is F32 (half inputs, f32 accumulation, no rounding to the input type)
  bool allow_tf32 = false;
  bool accumulate = false;  // c += ... (beta = 1; one rounding)
  const void* c_in = nullptr;  // accumulate: add this [m, n] (c's shape and strides) instead of c's contents
  bool b_static = false;    // b is a parameter, not written by work still in flight (linear(), above)
};
void gemm_cpu(const GemmParams& p);
void gemm_cuda(const GemmParams& p, StreamHandle s);

// linear_qkv_rope's outputs: the RoPE table (f32 [m, head_dim / 2], row r for input row r) and, per
// section q | k | v (q_cols, k_cols, k_cols columns of the product), where its rows go (out, row
// stride ld).
struct QkvRopeOutputs {
  const float* cos = nullptr;
  const float* sin = nullptr;
  void* out[3] = {};
  int64_t ld[3] = {};
  int64_t q_cols = 0, k_cols = 0, head_dim = 0;
};

// The skinny CUDA product behind the fused forms (core/ops/gemv_cuda.cuh):
//   y [m, n] (+)= x_eff [m, k] @ weight [n, k]^T + bias, x_eff from x per `input`, written per `output`.
enum class GemvInput {
  Plain,    // x [m, k]
  RmsNorm,  // rms_norm(x [m, k], norm_weight, eps)
  SwiGLU,   // swiglu_fused(x [m, 2k])
};
enum class GemvOutput {
  Plain,    // y [m, n]
  SwiGLU,   // weight rows gate [n / 2] | up [n / 2]: y [m, n / 2] = swiglu_fused(T(gate) | T(up)); no accumulate
  QkvRope,  // weight rows q | k | v (QkvRopeOutputs): q and k rotated, each section to its own rows
};
struct GemvParams {
  const void* x = nullptr;
  const void* weight = nullptr;
  const void* bias = nullptr;         // [n] or null
  const void* norm_weight = nullptr;  // [k] (RmsNorm)
  void* y = nullptr;
  int64_t m = 0, n = 0, k = 0;
  int64_t x_stride = 0;  // elements between rows of x (k, or 2k for SwiGLU)
  float eps = 0.f;
  bool accumulate = false;
  GemvInput input = GemvInput::Plain;
  GemvOutput output = GemvOutput::Plain;
  QkvRopeOutputs rope;  // output QkvRope (y unused)
  DType dtype = DType::BF16;
  bool weight_static = false;  // weight is a parameter, not written by work still in flight
};
// Whether gemv_cuda takes p: f16/bf16, 1 <= m <= kGemvMaxRows (fused inputs: m <= kGemvFusedMaxRows;
// paired outputs: m <= kGemvPairedMaxRows, n even, no accumulate, RmsNorm or (QkvRope) Plain input),
// n >= 256, k % 8 == 0, x_stride % 8 == 0 and at least the row width, 16-byte aligned x / weight /
// norm_weight, sizes within int32, the staged input (m rounded up to 1 or 2 rows of k) within the
// device's shared memory per block.
// Measured on an H100 (bench/NOTES.md): m = 1 reads the weight at 2.4 TB/s (cuBLASLt 1.9); m <= 2 runs
// on the CUDA cores, 3 <= m <= 8 on the tensor cores (on the CUDA cores the per-element f32 work made
// m = 8 slower than cuBLASLt).
constexpr int64_t kGemvMaxRows = 8;
constexpr int64_t kGemvFusedMaxRows = 2;
constexpr int64_t kGemvPairedMaxRows = 1;  // paired outputs (GemvOutput::SwiGLU, QkvRope)
bool gemv_cuda_supported(const GemvParams& p);
void gemv_cuda(const GemvParams& p, StreamHandle s);
// Process-wide switch for the gemv's paired outputs behind rms_norm_linear_swiglu and the decode-sized
// linear_qkv_rope (on by default; MMATTN_GEMV_PAIRED=0 turns it off at start-up). Off, the first
// runs its composition and linear_qkv_rope_fusable answers false at m <= kGemvFusedMaxRows (the
// caller then appends separately): the same values either way (tests and A/B benchmarks). (At m = 1
// only: the paired kernels then run at the plain ones' occupancy, so they split K alike and sum in the
// same order; at m = 2 their register counts differ.)
void set_gemv_paired_outputs(bool on);
bool gemv_paired_outputs();

// Prefill-sized products that stream the weight once (core/ops/gemm_cluster_cuda.cuh): y [m, n]
// (+)= x [m, k] @ W[n, k]^T + bias for m <= kClusterGemmMaxRows, f16/bf16, f32 accumulation, on the
// tensor cores, each 128-row tile of W split along K over a thread-block cluster (sm_90+) whose
// blocks sum their partials in distributed shared memory in a fixed order (deterministic). Two
// kernels: the streaming one (sm_90a builds on a 9.0 device: each warpgroup streams its own weight
// rows, x by TMA) and the block-ring one (mma.sync or wgmma; every other sm_90+ build). Built for a
// pruned request's decoder (~104 rows). Measured in-stream on the H100 (bench/NOTES.md, sessions 13
// and 18) against cuBLASLt: the streaming kernel wins where k is long (the down projection, k =
// 11008: 46 vs 48 us) and loses on the short-k products (o, gate_up), the ring kernel loses
// everywhere. So gemm_cuda routes plain products with kGemvMaxRows < m <= kClusterGemmMaxRows here
// per cluster_gemm_route(): kClusterGemmLongK (the default) when k >= kClusterGemmLongKMin and the
// streaming kernel is available, kClusterGemmAll always, kClusterGemmNone never;
// MMATTN_CLUSTER_GEMM=1 / 0 sets All / None at start-up. Needs: batch 1, b stored [n, k], no f32
// result or separate C, k % 8 == 0, 16-byte aligned a and b, 8-byte aligned c. split: blocks per
// tile, 0 = chosen per shape, 1..8 forced (tests, benchmarks). kind: which kernel, 1 the ring
// kernel, 2 the streaming kernel (needs cluster_gemm_streaming_available()), 0 the streaming kernel
// where available else the ring kernel, -1 the process default (MMATTN_CLUSTER_KERNEL, else 0).
constexpr int64_t kClusterGemmMaxRows = 128;
constexpr int64_t kClusterGemmLongKMin = 8192;
constexpr int kClusterGemmNone = 0, kClusterGemmAll = 1, kClusterGemmLongK = 2;
bool cluster_gemm_supported(const GemmParams& p);
void cluster_gemm_cuda(const GemmParams& p, StreamHandle s, int split = 0, int kind = -1);
bool cluster_gemm_routes(const GemmParams& p);  // whether gemm_cuda takes p here
void set_cluster_gemm_route(int route);
int cluster_gemm_route();
bool cluster_gemm_streaming_available();  // kind 2 may be asked for
// linear_qkv_rope's launch: p as for cluster_gemm_cuda (c unused), the outputs as QkvRopeOutputs.
void cluster_qkv_rope_cuda(const GemmParams& p, const QkvRopeOutputs& o, StreamHandle s, int split = 0, int kind = -1);

// Skinny products on Hopper (sm_90a builds on a compute-capability 9.0 device; gemm_sm90.cuh):
// y [m, n] (+)= x [m, k] @ W[n, k]^T + bias for 1 <= m <= 128, bf16/f16, the weight streamed by
// TMA into a shared-memory ring and multiplied on the tensor cores (wgmma), stream-K over one wave
// of blocks. Opt-in: it measured slower than the gemv kernels and cuBLASLt on the H100 (DRAM at
// ~63% of peak, bench/NOTES.md session 7), so the default mode is 0. Modes: 0 off (gemv /
// cuBLASLt), 1 plain products, 2 also the fused decode forms at m <= 2 (rms_norm_linear,
// swiglu_linear_add_ run unfused: the norm or swiglu kernel, then this product). The default comes
// from the environment variable MMATTN_SKINNY_GEMM (0, 1, 2); set_skinny_gemm_mode overrides it
// (process-wide; bench_core and bench_llava7b measure every mode in one run).
void set_skinny_gemm_mode(int mode);
int skinny_gemm_mode();
// Sets the mode for a scope (tests, benchmarks) and restores the previous one.
struct SkinnyGemmModeGuard {
  explicit SkinnyGemmModeGuard(int mode) : was(skinny_gemm_mode()) { set_skinny_gemm_mode(mode); }
  ~SkinnyGemmModeGuard() { set_skinny_gemm_mode(was); }
  SkinnyGemmModeGuard(const SkinnyGemmModeGuard&) = delete;
  SkinnyGemmModeGuard& operator=(const SkinnyGemmModeGuard&) = delete;
  int was;
};
bool skinny_gemm_sm90_supported(const GemmParams& p);
bool skinny_gemm_sm90(const GemmParams& p, StreamHandle s);  // false: not taken (nothing launched)

}  // namespace mmattn
