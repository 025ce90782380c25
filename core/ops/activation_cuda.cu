// Activations: grid-stride elementwise kernels with 16-byte vector loads/stores where the
// pointers and sizes allow, and a scalar tail. The activation is a kernel argument (uniform
// across the grid, so its switch does not diverge): 3 instantiations per kernel, one per dtype.
#include <cstdint>

#include "core/cuda_reduce.cuh"
#include "core/cuda_types.cuh"
#include "core/ops/activation.h"
#include "core/sm90.cuh"

namespace mmattn {

namespace {

// The formulas of PyTorch's CUDA kernels (opmath f32).
__device__ __forceinline__ float act_f32(float x, Activation a) {
  switch (a) {
    case Activation::Gelu: return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
    case Activation::GeluTanh: {
      const float k_beta = 0.79788456080286536f;  // sqrt(2 / pi)
      return 0.5f * x * (1.f + tanhf(k_beta * (x + 0.044715f * x * x * x)));
    }
    case Activation::QuickGelu: return x / (1.f + expf(-1.702f * x));
    case Activation::Silu: return x / (1.f + expf(-x));
    case Activation::Relu: return x < 0.f ? 0.f : x;
    case Activation::Identity: return x;
  }
  return x;
}

// nvec vectors of V elements first (0 when unaligned), then the scalar tail [nvec * V, n).
template <class T>
__global__ void activation_kernel(const T* __restrict__ x, T* __restrict__ y, long long n, long long nvec,
                                  Activation act) {
  constexpr int V = 16 / sizeof(T);
  const long long tid = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = tid; i < nvec; i += stride) {
    Vec<T, V> v = reinterpret_cast<const Vec<T, V>*>(x)[i];
#pragma unroll
    for (int k = 0; k < V; ++k) v.v[k] = from_f32<T>(act_f32(to_f32(v.v[k]), act));
    reinterpret_cast<Vec<T, V>*>(y)[i] = v;
  }
  for (long long i = nvec * V + tid; i < n; i += stride) y[i] = from_f32<T>(act_f32(to_f32(x[i]), act));
}

// act(gate) is rounded to T before the multiply (as PyTorch's unfused act(gate) * up).
template <class T>
__device__ __forceinline__ T gated_one(T g, T u, Activation act) {
  return from_f32<T>(to_f32(from_f32<T>(act_f32(to_f32(g), act))) * to_f32(u));
}

template <class T>
__global__ void gated_activation_kernel(const T* __restrict__ gate, const T* __restrict__ up, T* __restrict__ y,
                                        long long rows, long long cols, long long gs, long long us, Activation act,
                                        bool vec) {
  constexpr int V = 16 / sizeof(T);
  sm90::allow_next_grid();
  sm90::wait_for_previous_grid();  // gate / up come from the kernels before (programmatic launch)
  const long long tid = blockIdx.x * (long long)blockDim.x + threadIdx.x;
  const long long stride = (long long)gridDim.x * blockDim.x;
  if (vec) {  // cols, gs, us multiples of V; pointers 16-byte aligned
    const long long cv = cols / V;
    for (long long i = tid; i < rows * cv; i += stride) {
      const long long r = i / cv, c = (i - r * cv) * V;
      const Vec<T, V> g = *reinterpret_cast<const Vec<T, V>*>(gate + r * gs + c);
      const Vec<T, V> u = *reinterpret_cast<const Vec<T, V>*>(up + r * us + c);
      Vec<T, V> o;
#pragma unroll
      for (int k = 0; k < V; ++k) o.v[k] = gated_one(g.v[k], u.v[k], act);
      *reinterpret_cast<Vec<T, V>*>(y + r * cols + c) = o;
    }
  } else {
    for (long long i = tid; i < rows * cols; i += stride) {
      const long long r = i / cols, c = i - r * cols;
      y[i] = gated_one(gate[r * gs + c], up[r * us + c], act);
    }
  }
}

}  // namespace

void activation_cuda(const ActivationParams& p, StreamHandle s) {
  dispatch_float(p.dtype, "activation", [&]<class T>() {
    constexpr int V = 16 / sizeof(T);
    const long long nvec = aligned16(p.x) && aligned16(p.y) ? p.n / V : 0;
    activation_kernel<T><<<grid_for(nvec ? nvec : p.n, 256), 256, 0, s>>>(static_cast<const T*>(p.x),
                                                                          static_cast<T*>(p.y), p.n, nvec, p.act);
    MMATTN_CUDA_CHECK_LAUNCH("activation");
  });
}

void gated_activation_cuda(const GatedActivationParams& p, StreamHandle s) {
  dispatch_float(p.dtype, "gated_activation", [&]<class T>() {
    constexpr int V = 16 / sizeof(T);
    const bool vec = p.cols % V == 0 && p.gate_stride % V == 0 && p.up_stride % V == 0 && aligned16(p.gate) &&
                     aligned16(p.up) && aligned16(p.y);
    const long long work = vec ? p.rows * (p.cols / V) : p.rows * p.cols;
    constexpr auto kernel = gated_activation_kernel<T>;
    sm90::launch_pdl(kernel, dim3(unsigned(grid_for(work, 256))), dim3(256), 0, s,
                     static_cast<const T*>(p.gate), static_cast<const T*>(p.up), static_cast<T*>(p.y), p.rows, p.cols,
                     p.gate_stride, p.up_stride, p.act, vec);
    MMATTN_CUDA_CHECK_LAUNCH("gated_activation");
  });
}

}  // namespace mmattn
