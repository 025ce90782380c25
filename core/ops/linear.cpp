#include "core/ops/linear.h"

#include <atomic>

#include "core/ops/dispatch.h"

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

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  const char* op = "linear";
  check_defined(x, op, "x");
  check_defined(weight, op, "weight");
  check_float(x, op, "x");
  MMATTN_CHECK(x.dim() >= 1, ShapeError, op, ": 'x' must be [..., K], got ", x.desc());
  MMATTN_CHECK(weight.dim() == 2, ShapeError, op, ": 'weight' must be [N, K], got ", weight.desc());
  MMATTN_CHECK(weight.dtype() == x.dtype(), ShapeError, op, ": 'weight' is ", weight.desc(), " but 'x' is ",
               x.desc(), " (dtypes must match)");
  check_same_device(x, weight, op, "x", "weight");
  const int64_t n = weight.size(0), k = weight.size(1);
  MMATTN_CHECK(x.size(-1) == k, ShapeError, op, ": 'x' ", x.shape_str(), " has K = ", x.size(-1), " but 'weight' ",
               weight.shape_str(), " has K = ", k);
  if (bias.defined()) {
    MMATTN_CHECK(bias.dim() == 1 && bias.size(0) == n, ShapeError, op, ": 'bias' must be [", n, "] for 'weight' ",
                 weight.shape_str(), ", got ", bias.desc());
    MMATTN_CHECK(bias.dtype() == x.dtype(), ShapeError, op, ": 'bias' is ", bias.desc(), " but 'x' is ", x.desc(),
                 " (dtypes must match)");
    check_same_device(x, bias, op, "x", "bias");
  }
  check_cpu_f32(x, op, "x");

  Shape out_shape = x.shape();
  out_shape.back() = n;
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
  if (y.numel() == 0) return y;
  Tensor xc = x.contiguous();
  Tensor wc = weight.contiguous();
  Tensor bc = bias.defined() ? bias.contiguous() : bias;
  // x [..., K] is folded into [M, K]: one GEMM with the weight stored [N, K] (so op = transpose).
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
  run_gemm(p, y, bc);
  return y;
}

Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_b) {
  const char* op = "matmul";
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
  Tensor y = Tensor::empty(out_shape, a.dtype(), a.device());
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

}  // namespace mmattn
