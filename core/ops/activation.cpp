#include "core/ops/activation.h"

#include <array>
#include <utility>

#include "core/ops/dispatch.h"

namespace mmattn {

namespace {
// One table for parsing and printing; the first entry of each activation is its canonical name.
constexpr std::array<std::pair<std::string_view, Activation>, 9> kActivationNames{{
    {"gelu", Activation::Gelu},
    {"gelu_pytorch_tanh", Activation::GeluTanh},
    {"gelu_new", Activation::GeluTanh},
    {"quick_gelu", Activation::QuickGelu},
    {"silu", Activation::Silu},
    {"swish", Activation::Silu},
    {"relu", Activation::Relu},
    {"identity", Activation::Identity},
    {"linear", Activation::Identity},
}};

Tensor unary(const char* op, const Tensor& x, Activation act) {
  check_float(x, op, "x");
  check_cpu_f32(x, op, "x");
  Tensor xc = x.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  ActivationParams p;
  p.x = xc.data_ptr();
  p.y = y.data_ptr();
  p.n = x.numel();
  p.act = act;
  p.dtype = x.dtype();
  if (p.n == 0) return y;
  if (x.is_cuda()) {
    MMATTN_IF_CUDA(activation_cuda(p, current_stream()));
  } else {
    activation_cpu(p);
  }
  return y;
}

// gate/up: [rows, cols] views with unit column stride and row strides given.
Tensor gated(const Tensor& gate, const Tensor& up, int64_t rows, int64_t cols, int64_t gate_stride, int64_t up_stride,
             const Shape& out_shape, Activation act) {
  Tensor y = Tensor::empty(out_shape, gate.dtype(), gate.device());
  GatedActivationParams p;
  p.gate = gate.data_ptr();
  p.up = up.data_ptr();
  p.y = y.data_ptr();
  p.rows = rows;
  p.cols = cols;
  p.gate_stride = gate_stride;
  p.up_stride = up_stride;
  p.act = act;
  p.dtype = gate.dtype();
  if (rows * cols == 0) return y;
  if (gate.is_cuda()) {
    MMATTN_IF_CUDA(gated_activation_cuda(p, current_stream()));
  } else {
    gated_activation_cpu(p);
  }
  return y;
}
}  // namespace

Activation parse_activation(std::string_view name, std::string_view what) {
  for (const auto& [n, a] : kActivationNames)
    if (n == name) return a;
  std::string known;
  for (const auto& [n, a] : kActivationNames) known += (known.empty() ? "" : ", ") + std::string(n);
  MMATTN_THROW(ConfigError, what, ": unknown activation '", name, "' (expected one of ", known, ")");
}

std::string_view activation_name(Activation a) {
  for (const auto& [n, v] : kActivationNames)
    if (v == a) return n;
  return "?";
}

Tensor gelu(const Tensor& x, GeluApprox approx) {
  return unary("gelu", x, approx == GeluApprox::Tanh ? Activation::GeluTanh : Activation::Gelu);
}
Tensor quick_gelu(const Tensor& x) { return unary("quick_gelu", x, Activation::QuickGelu); }
Tensor silu(const Tensor& x) { return unary("silu", x, Activation::Silu); }
Tensor relu(const Tensor& x) { return unary("relu", x, Activation::Relu); }

Tensor apply_activation(const Tensor& x, Activation act) {
  if (act == Activation::Identity) {
    check_float(x, "apply_activation", "x");
    return x;
  }
  return unary("apply_activation", x, act);
}

Tensor gated_activation(const Tensor& gate, const Tensor& up, Activation act) {
  const char* op = "gated_activation";
  check_float(gate, op, "gate");
  check_defined(up, op, "up");
  check_cpu_f32(gate, op, "gate");
  MMATTN_CHECK(up.dtype() == gate.dtype(), ShapeError, op, ": 'up' is ", up.desc(), " but 'gate' is ", gate.desc());
  check_same_device(gate, up, op, "gate", "up");
  MMATTN_CHECK(up.shape() == gate.shape(), ShapeError, op, ": 'up' has shape ", up.shape_str(),
               " but 'gate' has shape ", gate.shape_str());
  Tensor g = gate.contiguous(), u = up.contiguous();
  const int64_t n = gate.numel();
  return gated(g, u, 1, n, n, n, gate.shape(), act);
}

Tensor swiglu(const Tensor& gate, const Tensor& up) { return gated_activation(gate, up, Activation::Silu); }

Tensor gated_activation_fused(const Tensor& x, Activation act) {
  const char* op = "gated_activation_fused";
  check_float(x, op, "x");
  check_cpu_f32(x, op, "x");
  MMATTN_CHECK(x.dim() >= 1 && x.size(-1) % 2 == 0, ShapeError, op,
               ": 'x' must have an even last dim [..., 2F], got ", x.desc());
  Tensor xc = x.contiguous();
  const int64_t f = x.size(-1) / 2;
  const int64_t rows = f ? x.numel() / (2 * f) : 0;
  Shape out = x.shape();
  out.back() = f;
  // gate = x[..., :F], up = x[..., F:]: both [rows, F] with row stride 2F
  return gated(xc, xc.slice(-1, f, 2 * f), rows, f, 2 * f, 2 * f, out, act);
}

Tensor swiglu_fused(const Tensor& x) { return gated_activation_fused(x, Activation::Silu); }

}  // namespace mmattn
