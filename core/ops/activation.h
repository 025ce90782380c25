#pragma once
// Activations, elementwise, computed in f32 (CUDA: F32/F16/BF16 in and out; CPU: F32 only).
//   gelu(x, GeluApprox::None)   0.5 x (1 + erf(x / sqrt(2)))                     F.gelu(x)
//   gelu(x, GeluApprox::Tanh)   0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))  F.gelu(x, approximate="tanh")
//   quick_gelu(x)               x * sigmoid(1.702 x)                               CLIP's QuickGELUActivation
//   silu(x)                     x * sigmoid(x)
//   relu(x)                     max(x, 0)
//   x: any shape, any strides -> y: the shape and dtype of x, contiguous.
//
//   gated_activation(gate [...], up [same shape], act) -> [...]  = act(gate) * up
//   swiglu(gate, up)                                             = gated_activation(gate, up, Silu)
//   swiglu_fused(x [..., 2F]) -> [..., F]                        = silu(x[..., :F]) * x[..., F:]
//   gated_activation_fused(x [..., 2F], act) -> [..., F]         = act(x[..., :F]) * x[..., F:]
//   On F16/BF16 act(gate) is rounded to the dtype before the multiply, as the unfused PyTorch
//   `act(gate) * up` does. gate and up must have the same dtype and device.
//
// Activation names follow Hugging Face `hidden_act` (transformers ACT2FN): "gelu", "gelu_pytorch_tanh"
// and "gelu_new" (both the tanh form), "quick_gelu", "silu" (alias "swish"), "relu", "identity"
// (alias "linear"). activation_name() gives the first (canonical) name of each.
#include <cstdint>
#include <string>
#include <string_view>

#include "core/tensor.h"

namespace mmattn {

enum class GeluApprox : uint8_t { None, Tanh };
enum class Activation : uint8_t { Gelu, GeluTanh, QuickGelu, Silu, Relu, Identity };

// Throws ConfigError naming `what` (e.g. the config key) and the accepted names.
Activation parse_activation(std::string_view name, std::string_view what = "activation");
std::string_view activation_name(Activation a);

Tensor gelu(const Tensor& x, GeluApprox approx = GeluApprox::None);
Tensor quick_gelu(const Tensor& x);
Tensor silu(const Tensor& x);
Tensor relu(const Tensor& x);
// Identity returns x itself (no copy; it shares x's storage).
Tensor apply_activation(const Tensor& x, Activation act);

Tensor gated_activation(const Tensor& gate, const Tensor& up, Activation act);
Tensor swiglu(const Tensor& gate, const Tensor& up);
Tensor gated_activation_fused(const Tensor& x, Activation act);
Tensor swiglu_fused(const Tensor& x);

// y[i] = act(x[i]) over n contiguous elements.
struct ActivationParams {
  const void* x = nullptr;
  void* y = nullptr;
  int64_t n = 0;
  Activation act = Activation::Identity;
  DType dtype = DType::F32;
};
void activation_cpu(const ActivationParams& p);
void activation_cuda(const ActivationParams& p, StreamHandle s);

// y[r * cols + c] = act(gate[r * gate_stride + c]) * up[r * up_stride + c]; y contiguous [rows, cols].
struct GatedActivationParams {
  const void* gate = nullptr;
  const void* up = nullptr;
  void* y = nullptr;
  int64_t rows = 0, cols = 0;
  int64_t gate_stride = 0, up_stride = 0;  // in elements, between rows
  Activation act = Activation::Silu;
  DType dtype = DType::F32;
};
void gated_activation_cpu(const GatedActivationParams& p);
void gated_activation_cuda(const GatedActivationParams& p, StreamHandle s);

}  // namespace mmattn
