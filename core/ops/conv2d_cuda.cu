// CUDA conv2d: cuDNN's legacy convolution API when the build found cuDNN, else (or when cuDNN
// answers NOT_SUPPORTED for a configuration) a direct kernel: one thread per output element,
// f32 accumulation, bias fused. The cuDNN path caches per thread a handle per device, a plan per
// shape (descriptors + algorithm from cudnnGetConvolutionForwardAlgorithm_v7) and a growable
// workspace per stream (stream-ordered, so freeing an outgrown one is safe).
#include <memory>
#include <unordered_map>

#include "core/cuda_types.cuh"
#include "core/ops/conv2d.h"
#include "core/stream_scratch.h"

#if MMATTN_HAS_CUDNN
#include <cudnn.h>

#define MMATTN_CUDNN_CHECK(call)                                                                     \
  do {                                                                                               \
    cudnnStatus_t st_ = (call);                                                                      \
    if (st_ != CUDNN_STATUS_SUCCESS)                                                                 \
      MMATTN_THROW(CudaError, #call, " failed: ", cudnnGetErrorString(st_), " (status ", int(st_), ")"); \
  } while (0)
// Inside the cuDNN attempt: NOT_SUPPORTED makes it return false (the caller falls back).
#define MMATTN_CUDNN_TRY(call)                                  \
  do {                                                          \
    cudnnStatus_t st_ = (call);                                 \
    if (st_ == CUDNN_STATUS_NOT_SUPPORTED) return false;        \
    if (st_ != CUDNN_STATUS_SUCCESS)                            \
      MMATTN_THROW(CudaError, #call, " failed: ", cudnnGetErrorString(st_), " (status ", int(st_), ")"); \
  } while (0)
#endif

namespace mmattn {

namespace {

template <class T>
__global__ void conv2d_direct_kernel(Conv2dParams p) {
  const T* x = static_cast<const T*>(p.x);
  const T* w = static_cast<const T*>(p.w);
  const T* bias = static_cast<const T*>(p.bias);
  T* y = static_cast<T*>(p.y);
  const int64_t cg = p.c / p.groups, og = p.o / p.groups;
  const int64_t total = p.n * p.o * p.oh * p.ow;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ox = idx % p.ow;
    int64_t t = idx / p.ow;
    const int64_t oy = t % p.oh;
    t /= p.oh;
    const int64_t oc = t % p.o;
    const int64_t n = t / p.o;
    const int64_t g = oc / og;
    const int64_t iy0 = oy * p.stride_h - p.pad_h, ix0 = ox * p.stride_w - p.pad_w;
    float acc = 0.f;
    for (int64_t ci = 0; ci < cg; ++ci) {
      const T* xc = x + ((n * p.c + g * cg + ci) * p.h) * p.w_in;
      const T* wc = w + ((oc * cg + ci) * p.kh) * p.kw;
      for (int64_t ky = 0; ky < p.kh; ++ky) {
        const int64_t iy = iy0 + ky * p.dil_h;
        if (iy < 0 || iy >= p.h) continue;
        for (int64_t kx = 0; kx < p.kw; ++kx) {
          const int64_t ix = ix0 + kx * p.dil_w;
          if (ix < 0 || ix >= p.w_in) continue;
          acc += to_f32(xc[iy * p.w_in + ix]) * to_f32(wc[ky * p.kw + kx]);
        }
      }
    }
    if (bias) acc += to_f32(bias[oc]);
    y[idx] = from_f32<T>(acc);
  }
}

void conv2d_direct(const Conv2dParams& p, StreamHandle s) {
  dispatch_float(p.dtype, "conv2d", [&]<class T>() {
    const int64_t total = p.n * p.o * p.oh * p.ow;
    conv2d_direct_kernel<T><<<grid_for(total, 256), 256, 0, s>>>(p);
    MMATTN_CUDA_CHECK_LAUNCH("conv2d_direct");
  });
}

#if MMATTN_HAS_CUDNN

// y [n, o, hw] += bias [o], rounding once to T (the convolution output is already rounded).
template <class T>
__global__ void add_channel_bias_kernel(T* __restrict__ y, const T* __restrict__ bias, int64_t total, int64_t o,
                                        int64_t hw) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = from_f32<T>(to_f32(y[i]) + to_f32(bias[(i / hw) % o]));
}

constexpr size_t kMaxWorkspace = size_t(1) << 30;

struct ConvKey {
  int device;
  int64_t n, c, h, w, o, kh, kw;
  int sh, sw, ph, pw, dh, dw, groups;
  DType dtype;
  bool operator==(const ConvKey& k) const {
    return device == k.device && n == k.n && c == k.c && h == k.h && w == k.w && o == k.o && kh == k.kh &&
           kw == k.kw && sh == k.sh && sw == k.sw && ph == k.ph && pw == k.pw && dh == k.dh && dw == k.dw &&
           groups == k.groups && dtype == k.dtype;
  }
};
struct ConvKeyHash {
  size_t operator()(const ConvKey& k) const {
    size_t h = 1469598103934665603ull;
    for (int64_t v : {int64_t(k.device), k.n, k.c, k.h, k.w, k.o, k.kh, k.kw, int64_t(k.sh), int64_t(k.sw),
                      int64_t(k.ph), int64_t(k.pw), int64_t(k.dh), int64_t(k.dw), int64_t(k.groups),
                      int64_t(k.dtype)})
      h = (h ^ uint64_t(v)) * 1099511628211ull;
    return h;
  }
};

struct ConvPlan {
  bool supported = false;  // false: cuDNN declined this configuration; use the direct kernel
  cudnnTensorDescriptor_t xd = nullptr, yd = nullptr;
  cudnnFilterDescriptor_t wd = nullptr;
  cudnnConvolutionDescriptor_t cd = nullptr;
  cudnnConvolutionFwdAlgo_t algo{};
  size_t ws_bytes = 0;
  ConvPlan() = default;
  ConvPlan(const ConvPlan&) = delete;
  ConvPlan& operator=(const ConvPlan&) = delete;
  ~ConvPlan() {  // host-side frees only
    if (cd) cudnnDestroyConvolutionDescriptor(cd);
    if (wd) cudnnDestroyFilterDescriptor(wd);
    if (yd) cudnnDestroyTensorDescriptor(yd);
    if (xd) cudnnDestroyTensorDescriptor(xd);
  }
};

struct CudnnState {
  std::unordered_map<int, cudnnHandle_t> handles;  // never destroyed (teardown order vs the runtime)
  std::unordered_map<ConvKey, std::unique_ptr<ConvPlan>, ConvKeyHash> plans;
};
thread_local CudnnState t_cudnn;

cudnnHandle_t cudnn_handle(int device) {
  auto it = t_cudnn.handles.find(device);
  if (it != t_cudnn.handles.end()) return it->second;
  cudnnHandle_t h;
  MMATTN_CUDNN_CHECK(cudnnCreate(&h));
  t_cudnn.handles.emplace(device, h);
  return h;
}

void* cudnn_workspace(size_t bytes, StreamHandle s) {
  static const char owner = 0;
  return bytes == 0 ? nullptr : stream_scratch(&owner, s, bytes);
}

cudnnDataType_t cudnn_dtype(DType t) {
  switch (t) {
    case DType::F32: return CUDNN_DATA_FLOAT;
    case DType::F16: return CUDNN_DATA_HALF;
    case DType::BF16: return CUDNN_DATA_BFLOAT16;
    default: MMATTN_THROW(UnsupportedError, "conv2d: dtype ", dtype_name(t), " is not a float type");
  }
}

// Fills the plan; false when cuDNN does not support the configuration.
bool build_plan(ConvPlan& plan, const Conv2dParams& p, cudnnHandle_t handle) {
  const cudnnDataType_t dt = cudnn_dtype(p.dtype);
  MMATTN_CUDNN_CHECK(cudnnCreateTensorDescriptor(&plan.xd));
  MMATTN_CUDNN_CHECK(cudnnCreateTensorDescriptor(&plan.yd));
  MMATTN_CUDNN_CHECK(cudnnCreateFilterDescriptor(&plan.wd));
  MMATTN_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&plan.cd));
  MMATTN_CUDNN_TRY(
      cudnnSetTensor4dDescriptor(plan.xd, CUDNN_TENSOR_NCHW, dt, int(p.n), int(p.c), int(p.h), int(p.w_in)));
  MMATTN_CUDNN_TRY(cudnnSetFilter4dDescriptor(plan.wd, dt, CUDNN_TENSOR_NCHW, int(p.o), int(p.c / p.groups),
                                              int(p.kh), int(p.kw)));
  MMATTN_CUDNN_TRY(cudnnSetConvolution2dDescriptor(plan.cd, p.pad_h, p.pad_w, p.stride_h, p.stride_w, p.dil_h,
                                                   p.dil_w, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  MMATTN_CUDNN_TRY(cudnnSetConvolutionGroupCount(plan.cd, p.groups));
  // f32: FMA only (CUDNN_DEFAULT_MATH would allow TF32 on Ampere and later); f16/bf16: tensor cores.
  const cudnnMathType_t math = p.dtype == DType::F32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH;
  MMATTN_CUDNN_TRY(cudnnSetConvolutionMathType(plan.cd, math));
  int on = 0, oc = 0, ohh = 0, oww = 0;
  MMATTN_CUDNN_TRY(cudnnGetConvolution2dForwardOutputDim(plan.cd, plan.xd, plan.wd, &on, &oc, &ohh, &oww));
  MMATTN_CHECK(on == p.n && oc == p.o && ohh == p.oh && oww == p.ow, CudaError, "conv2d: cuDNN output dims [", on,
               ", ", oc, ", ", ohh, ", ", oww, "] differ from the expected [", p.n, ", ", p.o, ", ", p.oh, ", ", p.ow,
               "]");
  MMATTN_CUDNN_TRY(cudnnSetTensor4dDescriptor(plan.yd, CUDNN_TENSOR_NCHW, dt, int(p.n), int(p.o), int(p.oh),
                                              int(p.ow)));
  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int returned = 0;
  MMATTN_CUDNN_TRY(cudnnGetConvolutionForwardAlgorithm_v7(handle, plan.xd, plan.wd, plan.cd, plan.yd,
                                                          CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &returned, perf));
  // Results come sorted by expected speed; take the first usable one within the workspace cap.
  // f32 keeps FMA math: entries that need another math type are skipped.
  for (int i = 0; i < returned; ++i) {
    const auto& r = perf[i];
    if (r.status != CUDNN_STATUS_SUCCESS || r.memory > kMaxWorkspace) continue;
    if (p.dtype == DType::F32 && r.mathType != CUDNN_FMA_MATH) continue;
    MMATTN_CUDNN_TRY(cudnnSetConvolutionMathType(plan.cd, r.mathType));
    size_t ws = 0;
    const cudnnStatus_t st = cudnnGetConvolutionForwardWorkspaceSize(handle, plan.xd, plan.wd, plan.cd, plan.yd,
                                                                     r.algo, &ws);
    if (st == CUDNN_STATUS_NOT_SUPPORTED) continue;
    MMATTN_CUDNN_CHECK(st);
    plan.algo = r.algo;
    plan.ws_bytes = ws;
    return true;
  }
  return false;
}

// Runs the convolution through cuDNN; false when cuDNN does not support this configuration.
bool conv2d_cudnn(const Conv2dParams& p, StreamHandle s) {
  constexpr int64_t kIntMax = 2147483647;
  if (p.n * p.c * p.h * p.w_in > kIntMax || p.n * p.o * p.oh * p.ow > kIntMax || p.o * (p.c / p.groups) * p.kh * p.kw > kIntMax)
    return false;  // the legacy API indexes with int
  int device = 0;
  MMATTN_CUDA_CHECK(cudaGetDevice(&device));
  cudnnHandle_t handle = cudnn_handle(device);
  const ConvKey key{device, p.n, p.c, p.h, p.w_in, p.o, p.kh, p.kw, p.stride_h, p.stride_w,
                    p.pad_h, p.pad_w, p.dil_h, p.dil_w, p.groups, p.dtype};
  auto it = t_cudnn.plans.find(key);
  if (it == t_cudnn.plans.end()) {
    if (t_cudnn.plans.size() >= 256) t_cudnn.plans.clear();
    auto plan = std::make_unique<ConvPlan>();
    plan->supported = build_plan(*plan, p, handle);
    it = t_cudnn.plans.emplace(key, std::move(plan)).first;
  }
  ConvPlan& plan = *it->second;
  if (!plan.supported) return false;
  MMATTN_CUDNN_CHECK(cudnnSetStream(handle, s));
  void* ws = cudnn_workspace(plan.ws_bytes, s);
  const float alpha = 1.f, beta = 0.f;
  const cudnnStatus_t st = cudnnConvolutionForward(handle, &alpha, plan.xd, p.x, plan.wd, p.w, plan.cd, plan.algo,
                                                   ws, plan.ws_bytes, &beta, plan.yd, p.y);
  if (st == CUDNN_STATUS_NOT_SUPPORTED) {
    plan.supported = false;
    return false;
  }
  MMATTN_CUDNN_CHECK(st);
  if (p.bias) {
    dispatch_float(p.dtype, "conv2d(bias)", [&]<class T>() {
      const int64_t total = p.n * p.o * p.oh * p.ow;
      add_channel_bias_kernel<T><<<grid_for(total, 256), 256, 0, s>>>(
          static_cast<T*>(p.y), static_cast<const T*>(p.bias), total, p.o, p.oh * p.ow);
      MMATTN_CUDA_CHECK_LAUNCH("conv2d_bias");
    });
  }
  return true;
}

#endif  // MMATTN_HAS_CUDNN

}  // namespace

const char* conv2d_cuda(const Conv2dParams& p, StreamHandle s) {
#if MMATTN_HAS_CUDNN
  if (p.allow_cudnn && conv2d_cudnn(p, s)) return "cudnn";
#endif
  conv2d_direct(p, s);
  return "direct";
}

}  // namespace mmattn
