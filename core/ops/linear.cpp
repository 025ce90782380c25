#include "core/ops/linear.h"

#include <atomic>
#include <cstdlib>
#include <string>

#include "core/ops/activation.h"
#include "core/ops/dispatch.h"
#include "core/ops/elementwise.h"
#include "core/ops/norm.h"

namespace mmattn {

namespace {

std::atomic<bool> g_allow_tf32{false};

// Runs the GEMM, or writes bias / zeros when K == 0 (no GEMM library accepts an empty K).
void run_gemm(GemmParams& p, Tensor& out, const Tensor& bias) {
  if (out.numel() == 0) return;
  if (p.k == 0) {
    if (bias.defined()) {
      // [rows, n] view of the output; bias broadcast over rows by a zero stride
      const int64_t rows = out.numel() / p.n;
      out.view({rows, p.n}).copy_from(bias.as_strided({rows, p.n}, {0, 1}, bias.offset()));
    } else {
      out.fill_(0.f);
    }
    return;
  }
  p.c = out.data_ptr();
  if (out.is_cuda()) {
    MMATTN_IF_CUDA(gemm_cuda(p, current_stream()));
  } else {
    gemm_cpu(p);
  }
}

}  // namespace

void set_matmul_allow_tf32(bool allow) { g_allow_tf32 = allow; }
bool matmul_allow_tf32() { return g_allow_tf32; }

namespace {

// Validates linear's arguments (x's K against `k_of_x`, which differs for the SwiGLU input) and
// returns N.
int64_t check_linear(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t k_of_x) {
  check_defined(x, op, "x");
  check_defined(weight, op, "weight");
  check_float(x, op, "x");
  MMATTN_CHECK(x.dim() >= 1, ShapeError, op, ": 'x' must be [..., K], got ", x.desc());
  MMATTN_CHECK(weight.dim() == 2, ShapeError, op, ": 'weight' must be [N, K], got ", weight.desc());
  MMATTN_CHECK(weight.dtype() == x.dtype(), ShapeError, op, ": 'weight' is ", weight.desc(), " but 'x' is ",
               x.desc(), " (dtypes must match)");
  check_same_device(x, weight, op, "x", "weight");
  const int64_t n = weight.size(0), k = weight.size(1);
  MMATTN_CHECK(k_of_x == k, ShapeError, op, ": 'x' ", x.shape_str(), " gives K = ", k_of_x, " but 'weight' ",
               weight.shape_str(), " has K = ", k);
  if (bias.defined()) {
    MMATTN_CHECK(bias.dim() == 1 && bias.size(0) == n, ShapeError, op, ": 'bias' must be [", n, "] for 'weight' ",
                 weight.shape_str(), ", got ", bias.desc());
    MMATTN_CHECK(bias.dtype() == x.dtype(), ShapeError, op, ": 'bias' is ", bias.desc(), " but 'x' is ", x.desc(),
                 " (dtypes must match)");
    check_same_device(x, bias, op, "x", "bias");
  }
  check_cpu_f32(x, op, "x");
  return n;
}

// The output of linear for x [..., *] and N outputs.
Shape out_shape_of(const Tensor& x, int64_t n) {
  Shape s = x.shape();
  s.back() = n;
  return s;
}

// y is written in place by the fused forms: it must be the output linear would make.
void check_out(const char* op, const Tensor& y, const Tensor& x, int64_t n) {
  check_defined(y, op, "y");
  MMATTN_CHECK(y.shape() == out_shape_of(x, n) && y.dtype() == x.dtype() && y.device() == x.device() &&
                   y.is_contiguous(),
               ShapeError, op, ": 'y' must be a contiguous ", dtype_name(x.dtype()), " tensor of shape ",
               shape_str(out_shape_of(x, n)), " on ", x.device().str(), ", got ", y.desc());
}

// y (+)= x [..., K] @ weight^T + bias as one GEMM (x folded into [M, K], weight stored [N, K]);
// accumulating from c_in (same shape as y) instead of y when it is given.
void gemm_into(Tensor& y, const Tensor& x, const Tensor& weight, const Tensor& bias, bool accumulate,
               const Tensor& c_in = Tensor()) {
  const int64_t n = weight.size(0), k = weight.size(1);
  Tensor xc = x.contiguous();
  Tensor wc = weight.contiguous();
  Tensor bc = bias.defined() ? bias.contiguous() : bias;
  GemmParams p;
  p.a = xc.data_ptr();
  p.b = wc.data_ptr();
  p.bias = bc.defined() ? bc.data_ptr() : nullptr;
  p.m = y.numel() / n;
  p.n = n;
  p.k = k;
  p.stride_a = p.m * k;
  p.stride_b = n * k;
  p.stride_c = p.m * n;
  p.trans_b = true;
  p.dtype = x.dtype();
  p.allow_tf32 = g_allow_tf32;
  p.accumulate = accumulate;
  p.c_in = c_in.defined() ? c_in.data_ptr() : nullptr;
  p.b_static = true;  // linear() / linear_add_: a layer's weight
  if (accumulate && k == 0) {  // nothing to multiply: add the bias, if any
    if (bias.defined()) add_(y, bias);
    return;
  }
  run_gemm(p, y, bc);
}

// The norm weight of the fused forms with a norm: [K] of x's dtype, on x's device.
void check_norm_weight(const char* op, const Tensor& x, const Tensor& norm_weight) {
  check_defined(norm_weight, op, "norm_weight");
  MMATTN_CHECK(norm_weight.dim() == 1 && norm_weight.size(0) == x.size(-1) && norm_weight.dtype() == x.dtype(),
               ShapeError, op, ": 'norm_weight' must be [", x.size(-1), "] ", dtype_name(x.dtype()), ", got ",
               norm_weight.desc());
  check_same_device(x, norm_weight, op, "x", "norm_weight");
}

// The skinny kernel's parameters for y (+)= x_eff @ weight^T + bias (y undefined for QkvRope, whose
// destinations are in *rope).
GemvParams gemv_params(const Tensor& y, const Tensor& x, const Tensor& weight, const Tensor& bias, GemvInput input,
                       const Tensor& norm_weight, float eps, bool accumulate, GemvOutput output,
                       const QkvRopeOutputs* rope) {
  GemvParams g;
  g.x = x.data_ptr();
  g.weight = weight.data_ptr();
  g.bias = bias.defined() ? bias.data_ptr() : nullptr;
  g.norm_weight = norm_weight.defined() ? norm_weight.data_ptr() : nullptr;
  g.y = y.defined() ? y.data_ptr() : nullptr;
  g.n = weight.size(0);
  g.k = weight.size(1);
  g.m = x.numel() / x.size(-1);
  g.output = output;
  if (rope) g.rope = *rope;
  g.x_stride = x.size(-1);
  g.eps = eps;
  g.accumulate = accumulate;
  g.input = input;
  g.dtype = x.dtype();
  g.weight_static = true;  // the fused forms take a layer's weight
  return g;
}

// The fused CUDA kernel for y (+)= x_eff @ weight^T + bias when it takes the problem.
bool try_gemv(Tensor& y, const Tensor& x, const Tensor& weight, const Tensor& bias, GemvInput input,
              const Tensor& norm_weight, float eps, bool accumulate, GemvOutput output = GemvOutput::Plain,
              const QkvRopeOutputs* rope = nullptr) {
  if (!x.is_cuda() || x.numel() == 0 || !x.is_contiguous() || !weight.is_contiguous() ||
      (bias.defined() && !bias.is_contiguous()) || (norm_weight.defined() && !norm_weight.is_contiguous()))
    return false;
  const GemvParams g = gemv_params(y, x, weight, bias, input, norm_weight, eps, accumulate, output, rope);
  bool ok = false;
#if MMATTN_HAS_CUDA
  if (input != GemvInput::Plain && skinny_gemm_mode() >= 2) {  // unfused: norm / swiglu, then the wgmma product
    GemmParams p;
    p.a = x.data_ptr(), p.b = g.weight, p.c = g.y;  // (the unfused x_eff is a fresh, aligned tensor)
    p.m = g.m, p.n = g.n, p.k = g.k;
    p.trans_b = true;
    p.dtype = g.dtype;
    if (skinny_gemm_sm90_supported(p)) return false;
  }
  ok = gemv_cuda_supported(g);
  if (ok) gemv_cuda(g, current_stream());
#endif
  return ok;
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  const int64_t n = check_linear("linear", x, weight, bias, x.dim() >= 1 ? x.size(-1) : -1);
  Tensor y = Tensor::empty(out_shape_of(x, n), x.dtype(), x.device());
  if (y.numel() > 0) gemm_into(y, x, weight, bias, false);
  return y;
}

void linear_add_(Tensor& y, const Tensor& x, const Tensor& weight, const Tensor& bias) {
  const char* op = "linear_add_";
  const int64_t n = check_linear(op, x, weight, bias, x.dim() >= 1 ? x.size(-1) : -1);
  check_out(op, y, x, n);
  if (y.numel() > 0) gemm_into(y, x, weight, bias, true);
}

Tensor linear_residual(const Tensor& residual, const Tensor& x, const Tensor& weight, const Tensor& bias) {
  const char* op = "linear_residual";
  const int64_t n = check_linear(op, x, weight, bias, x.dim() >= 1 ? x.size(-1) : -1);
  check_defined(residual, op, "residual");
  MMATTN_CHECK(residual.shape() == out_shape_of(x, n) && residual.dtype() == x.dtype() &&
                   residual.device() == x.device(),
               ShapeError, op, ": 'residual' must be a ", dtype_name(x.dtype()), " tensor of shape ",
               shape_str(out_shape_of(x, n)), " on ", x.device().str(), ", got ", residual.desc());
  Tensor y = Tensor::empty(out_shape_of(x, n), x.dtype(), x.device());
  if (y.numel() == 0) return y;
  const Tensor rc = residual.contiguous();
  // One cuBLASLt call (C = residual, D = y) where linear_add_ would take cuBLASLt too; else (the
  // CPU, decode-sized rows, K = 0) the composition: a copy, then linear_add_.
  if (x.is_cuda() && weight.size(1) > 0 && y.numel() / n > kGemvMaxRows) {
    gemm_into(y, x, weight, bias, true, rc);
  } else {
    y.copy_from(rc);
    linear_add_(y, x, weight, bias);
  }
  return y;
}

Tensor rms_norm_linear(const Tensor& x, const Tensor& norm_weight, float eps, const Tensor& weight,
                       const Tensor& bias) {
  const char* op = "rms_norm_linear";
  const int64_t n = check_linear(op, x, weight, bias, x.dim() >= 1 ? x.size(-1) : -1);
  check_norm_weight(op, x, norm_weight);
  Tensor y = Tensor::empty(out_shape_of(x, n), x.dtype(), x.device());
  if (try_gemv(y, x, weight, bias, GemvInput::RmsNorm, norm_weight, eps, false)) return y;
  return linear(rms_norm(x, norm_weight, eps), weight, bias);
}

namespace {
std::atomic<bool> g_gemv_paired{[] {
  const char* e = std::getenv("MMATTN_GEMV_PAIRED");
  return !(e && std::string(e) == "0");
}()};
}  // namespace

void set_gemv_paired_outputs(bool on) { g_gemv_paired = on; }
bool gemv_paired_outputs() { return g_gemv_paired; }

Tensor rms_norm_linear_swiglu(const Tensor& x, const Tensor& norm_weight, float eps, const Tensor& gate_up,
                              const Tensor& bias) {
  const char* op = "rms_norm_linear_swiglu";
  const int64_t n = check_linear(op, x, gate_up, bias, x.dim() >= 1 ? x.size(-1) : -1);
  MMATTN_CHECK(n % 2 == 0, ShapeError, op, ": 'gate_up' must be [2F, K] (gate rows | up rows), got ", gate_up.desc());
  check_norm_weight(op, x, norm_weight);
  Tensor y = Tensor::empty(out_shape_of(x, n / 2), x.dtype(), x.device());
  if (y.numel() > 0 && g_gemv_paired &&
      try_gemv(y, x, gate_up, bias, GemvInput::RmsNorm, norm_weight, eps, false, GemvOutput::SwiGLU))
    return y;
  return swiglu_fused(rms_norm_linear(x, norm_weight, eps, gate_up, bias));
}

void swiglu_linear_add_(Tensor& y, const Tensor& gate_up, const Tensor& weight, const Tensor& bias) {
  const char* op = "swiglu_linear_add_";
  const int64_t two_k = gate_up.defined() && gate_up.dim() >= 1 ? gate_up.size(-1) : -1;
  MMATTN_CHECK(two_k % 2 == 0, ShapeError, op, ": 'gate_up' must be [..., 2K] (gate | up), got ", gate_up.desc());
  const int64_t n = check_linear(op, gate_up, weight, bias, two_k / 2);
  check_out(op, y, gate_up, n);
  if (try_gemv(y, gate_up, weight, bias, GemvInput::SwiGLU, Tensor(), 0.f, true)) return;
  linear_add_(y, swiglu_fused(gate_up), weight, bias);
}

namespace {

std::atomic<int64_t> g_qkv_rope_calls{0};

GemmParams qkv_params(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  GemmParams p;
  p.a = x.data_ptr();
  p.b = weight.data_ptr();
  p.bias = bias.defined() ? bias.data_ptr() : nullptr;
  p.m = x.numel() / x.size(-1);
  p.n = weight.size(0);
  p.k = weight.size(1);
  p.trans_b = true;
  p.dtype = x.dtype();
  p.b_static = true;
  return p;
}

// Whether the gemv takes linear_qkv_rope's product at decode sizes (shapes only: stand-in outputs;
// the caller's outputs are checked by linear_qkv_rope).
bool qkv_gemv_takes(const Tensor& x, const Tensor& weight, int64_t head_dim) {
  QkvRopeOutputs o;
  o.head_dim = head_dim;
  o.q_cols = weight.size(0) - 2 * head_dim, o.k_cols = head_dim;
  o.cos = o.sin = static_cast<const float*>(x.data_ptr());
  for (void*& p : o.out) p = const_cast<void*>(x.data_ptr());
  return gemv_cuda_supported(
      gemv_params(Tensor(), x, weight, Tensor(), GemvInput::Plain, Tensor(), 0.f, false, GemvOutput::QkvRope, &o));
}

}  // namespace

bool linear_qkv_rope_fusable(const Tensor& x, const Tensor& weight, int64_t head_dim) {
#if MMATTN_HAS_CUDA
  if (!x.defined() || !weight.defined() || !x.is_cuda() || weight.dim() != 2 || x.dim() < 1 ||
      x.size(-1) != weight.size(1) || !x.is_contiguous() || !weight.is_contiguous() || x.dtype() != weight.dtype())
    return false;
  if (head_dim < 8 || head_dim % 8 != 0 || 128 % head_dim != 0 || weight.size(0) % head_dim != 0) return false;
  if (x.numel() / x.size(-1) <= kGemvPairedMaxRows)
    return g_gemv_paired && qkv_gemv_takes(x, weight, head_dim);
  // (the cluster product's streaming kernel only, and not where its route is switched off: elsewhere
  // cuBLASLt and the separate append are faster)
  if (cluster_gemm_route() == kClusterGemmNone || !cluster_gemm_streaming_available()) return false;
  GemmParams p = qkv_params(x, weight, Tensor());
  if (p.m <= kGemvMaxRows || p.m > kClusterGemmMaxRows) return false;
  p.c = const_cast<void*>(p.a);  // (stand-in: the outputs' alignment is checked by linear_qkv_rope)
  return cluster_gemm_supported(p);
#else
  (void)x, (void)weight, (void)head_dim;
  return false;
#endif
}

namespace {

// linear_qkv_rope with an optional norm (norm_weight defined: rms_norm(x) is the input).
void qkv_rope_impl(const char* op, const Tensor& x, const Tensor& norm_weight, float eps, const Tensor& weight,
                   const Tensor& bias, const Tensor& cos, const Tensor& sin, int64_t hq, int64_t hkv, Tensor& q_out,
                   Tensor& k_out, Tensor& v_out, int split, int kind) {
  const int64_t n = check_linear(op, x, weight, bias, x.dim() >= 1 ? x.size(-1) : -1);
  if (norm_weight.defined()) check_norm_weight(op, x, norm_weight);
  MMATTN_CHECK(hq >= 1 && hkv >= 1 && n % (hq + 2 * hkv) == 0, ShapeError, op, ": weight ", weight.shape_str(),
               " is not (hq + 2 hkv) = ", hq + 2 * hkv, " heads of equal width");
  const int64_t d = n / (hq + 2 * hkv), m = x.numel() / x.size(-1);
  MMATTN_CHECK(linear_qkv_rope_fusable(x, weight, d), UnsupportedError, op, ": not fusable here (x ", x.desc(),
               ", weight ", weight.desc(), ", head_dim ", d, "; check linear_qkv_rope_fusable first)");
  for (const Tensor* t : {&cos, &sin})
    MMATTN_CHECK(t->defined() && t->dim() == 2 && t->size(0) == m && t->size(1) == d / 2 && t->dtype() == DType::F32 &&
                     t->is_contiguous() && t->device() == x.device(),
                 ShapeError, op, ": '", t == &cos ? "cos" : "sin", "' must be contiguous F32 [", m, ", ", d / 2,
                 "] on ", x.device().str(), ", got ", t->defined() ? t->desc() : std::string("undefined"));
  QkvRopeOutputs o;
  o.cos = cos.data<float>(), o.sin = sin.data<float>();
  o.q_cols = hq * d, o.k_cols = hkv * d, o.head_dim = d;
  const int64_t cols[3] = {hq * d, hkv * d, hkv * d};
  Tensor* outs[3] = {&q_out, &k_out, &v_out};
  const char* names[3] = {"q_out", "k_out", "v_out"};
  for (int i = 0; i < 3; ++i) {
    const Tensor& t = *outs[i];
    MMATTN_CHECK(t.defined() && t.dim() == 2 && t.size(0) == m && t.size(1) == cols[i] && t.stride(1) == 1 &&
                     t.stride(0) % 4 == 0 && t.dtype() == x.dtype() && t.device() == x.device() &&
                     reinterpret_cast<uintptr_t>(t.data_ptr()) % 8 == 0,
                 ShapeError, op, ": '", names[i], "' must be [", m, ", ", cols[i], "] ", dtype_name(x.dtype()),
                 " on ", x.device().str(), " with a dense last dim, rows 8-byte aligned, got ", t.desc());
    o.out[i] = t.data_ptr(), o.ld[i] = t.stride(0);
  }
  const Tensor bc = bias.defined() ? bias.contiguous() : bias;
  if (m <= kGemvPairedMaxRows) {  // the gemv, its input normalised inside the kernel when it can be
    Tensor none;
    const Tensor nw = norm_weight.defined() ? norm_weight.contiguous() : norm_weight;
    if (!nw.defined() || !try_gemv(none, x, weight, bc, GemvInput::RmsNorm, nw, eps, false, GemvOutput::QkvRope, &o))
      MMATTN_CHECK(try_gemv(none, nw.defined() ? rms_norm(x, nw, eps) : x, weight, bc, GemvInput::Plain, Tensor(), 0.f,
                            false, GemvOutput::QkvRope, &o),
                   UnsupportedError, op, ": the skinny kernel does not take x ", x.desc(), ", weight ", weight.desc());
  } else {
    const Tensor xn = norm_weight.defined() ? rms_norm(x, norm_weight, eps) : x;
    MMATTN_IF_CUDA(cluster_qkv_rope_cuda(qkv_params(xn, weight, bc), o, current_stream(), split, kind));
  }
  g_qkv_rope_calls.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

void linear_qkv_rope(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& cos, const Tensor& sin,
                     int64_t hq, int64_t hkv, Tensor& q_out, Tensor& k_out, Tensor& v_out, int split, int kind) {
  qkv_rope_impl("linear_qkv_rope", x, Tensor(), 0.f, weight, bias, cos, sin, hq, hkv, q_out, k_out, v_out, split, kind);
}

void rms_norm_linear_qkv_rope(const Tensor& x, const Tensor& norm_weight, float eps, const Tensor& weight,
                              const Tensor& bias, const Tensor& cos, const Tensor& sin, int64_t hq, int64_t hkv,
                              Tensor& q_out, Tensor& k_out, Tensor& v_out) {
  const char* op = "rms_norm_linear_qkv_rope";
  check_defined(norm_weight, op, "norm_weight");  // (the rest after x's checks, in qkv_rope_impl)
  qkv_rope_impl(op, x, norm_weight, eps, weight, bias, cos, sin, hq, hkv, q_out, k_out, v_out, 0, -1);
}

int64_t linear_qkv_rope_calls() { return g_qkv_rope_calls.load(std::memory_order_relaxed); }

namespace {

Tensor matmul_impl(const Tensor& a, const Tensor& b, bool transpose_b, bool f32_out) {
  const char* op = f32_out ? "matmul_f32" : "matmul";
  check_defined(a, op, "a");
  check_defined(b, op, "b");
  check_float(a, op, "a");
  MMATTN_CHECK(a.dim() >= 2, ShapeError, op, ": 'a' must be [..., M, K], got ", a.desc());
  MMATTN_CHECK(b.dim() == 2 || b.dim() == a.dim(), ShapeError, op, ": 'b' must be 2-D or have the rank of 'a' ",
               a.shape_str(), ", got ", b.desc());
  MMATTN_CHECK(b.dtype() == a.dtype(), ShapeError, op, ": 'b' is ", b.desc(), " but 'a' is ", a.desc(),
               " (dtypes must match)");
  check_same_device(a, b, op, "a", "b");
  const int64_t m = a.size(-2), k = a.size(-1);
  const int64_t bk = transpose_b ? b.size(-1) : b.size(-2);
  const int64_t n = transpose_b ? b.size(-2) : b.size(-1);
  MMATTN_CHECK(bk == k, ShapeError, op, ": 'a' ", a.shape_str(), " has K = ", k, " but 'b' ", b.shape_str(),
               " has K = ", bk, transpose_b ? " (b is [..., N, K] with transpose_b)" : "");
  const bool b_batched = b.dim() > 2;
  if (b_batched)
    for (int d = 0; d < a.dim() - 2; ++d)
      MMATTN_CHECK(a.size(d) == b.size(d), ShapeError, op, ": batch dims of 'a' ", a.shape_str(), " and 'b' ",
                   b.shape_str(), " differ at dim ", d);
  check_cpu_f32(a, op, "a");

  Shape out_shape = a.shape();
  out_shape[out_shape.size() - 1] = n;
  Tensor y = Tensor::empty(out_shape, f32_out ? DType::F32 : a.dtype(), a.device());
  if (y.numel() == 0) return y;
  Tensor ac = a.contiguous();
  Tensor bc = b.contiguous();
  const int64_t batch = y.numel() / (m * n);
  GemmParams p;
  p.a = ac.data_ptr();
  p.b = bc.data_ptr();
  p.n = n;
  p.k = k;
  p.trans_b = transpose_b;
  p.dtype = a.dtype();
  p.f32_out = f32_out && a.dtype() != DType::F32;
  p.allow_tf32 = g_allow_tf32;
  if (b_batched) {
    p.batch = batch;
    p.m = m;
  } else {
    // a [..., M, K] contiguous is one [batch * M, K] matrix: a single GEMM against the shared b.
    p.batch = 1;
    p.m = batch * m;
  }
  p.stride_a = p.m * k;
  p.stride_b = n * k;
  p.stride_c = p.m * n;
  run_gemm(p, y, Tensor());
  return y;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_b) { return matmul_impl(a, b, transpose_b, false); }
Tensor matmul_f32(const Tensor& a, const Tensor& b, bool transpose_b) { return matmul_impl(a, b, transpose_b, true); }

}  // namespace mmattn
