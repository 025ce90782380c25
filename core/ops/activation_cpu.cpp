// CPU references for the activations: the PyTorch formulas in f32.
#include <cmath>

#include "core/ops/activation.h"

namespace mmattn {

namespace {
float act_ref(float x, Activation a) {
  switch (a) {
    case Activation::Gelu: return 0.5f * x * (1.f + std::erf(x * 0.70710678118654752f));
    case Activation::GeluTanh: {
      const float k_beta = 0.79788456080286536f;  // sqrt(2 / pi)
      return 0.5f * x * (1.f + std::tanh(k_beta * (x + 0.044715f * x * x * x)));
    }
    case Activation::QuickGelu: return x / (1.f + std::exp(-1.702f * x));
    case Activation::Silu: return x / (1.f + std::exp(-x));
    case Activation::Relu: return x < 0.f ? 0.f : x;  // NaN stays NaN, as torch.relu
    case Activation::Identity: return x;
  }
  return x;
}
}  // namespace

void activation_cpu(const ActivationParams& p) {
  const float* x = static_cast<const float*>(p.x);
  float* y = static_cast<float*>(p.y);
  for (int64_t i = 0; i < p.n; ++i) y[i] = act_ref(x[i], p.act);
}

void gated_activation_cpu(const GatedActivationParams& p) {
  const float* g = static_cast<const float*>(p.gate);
  const float* u = static_cast<const float*>(p.up);
  float* y = static_cast<float*>(p.y);
  for (int64_t r = 0; r < p.rows; ++r)
    for (int64_t c = 0; c < p.cols; ++c)
      y[r * p.cols + c] = act_ref(g[r * p.gate_stride + c], p.act) * u[r * p.up_stride + c];
}

}  // namespace mmattn
