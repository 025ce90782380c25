#include "attention/decode_fused.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "core/device.h"
#include "core/error.h"
#include "core/stream_scratch.h"

namespace mmattn {

namespace {

std::atomic<bool> g_on{[] {
  const char* e = std::getenv("MMATTN_DECODE_FUSED");
  return !(e && std::strcmp(e, "0") == 0);
}()};
std::atomic<int64_t> g_calls{0};

constexpr const char* kOp = "rms_norm_qkv_rope_attention";

// The q/k/v product's parameters: x normalised in the kernel, its rotated q to q_out and k / v to the
// cache rows k_row / v_row (each one row: m = 1). The shape checks pass stand-ins for what they lack.
GemvParams product_params(const Tensor& x, const void* norm_weight, float eps, const Tensor& weight,
                          const void* bias, const float* cos, const float* sin, int64_t hq, int64_t hkv, int64_t d,
                          void* q_out, void* k_row, void* v_row) {
  GemvParams g;
  g.x = x.data_ptr(), g.norm_weight = norm_weight;
  g.weight = weight.data_ptr(), g.bias = bias;
  g.m = 1, g.n = weight.size(0), g.k = weight.size(1), g.x_stride = g.k;
  g.eps = eps;
  g.input = GemvInput::RmsNorm;
  g.output = GemvOutput::QkvRope;
  g.rope.cos = cos, g.rope.sin = sin;
  g.rope.out[0] = q_out, g.rope.out[1] = k_row, g.rope.out[2] = v_row;
  g.rope.ld[0] = hq * d, g.rope.ld[1] = g.rope.ld[2] = hkv * d;
  g.rope.q_cols = hq * d, g.rope.k_cols = hkv * d, g.rope.head_dim = d;
  g.dtype = x.dtype();
  g.weight_static = true;
  return g;
}

}  // namespace

void set_decode_attention_fused(bool on) { g_on = on; }
bool decode_attention_fused() { return g_on; }
int64_t decode_attention_fused_calls() { return g_calls.load(std::memory_order_relaxed); }

bool decode_attention_fusable(const Tensor& x, const Tensor& weight, int64_t hq, int64_t hkv, int64_t head_dim,
                              int64_t len) {
#if MMATTN_HAS_CUDA
  if (!g_on || !gemv_paired_outputs() || !x.defined() || !weight.defined() || !x.is_cuda()) return false;
  if (x.dtype() != DType::BF16 && x.dtype() != DType::F16) return false;
  if (x.numel() != x.size(-1) || !x.is_contiguous() || !weight.is_contiguous() || weight.dim() != 2 ||
      weight.dtype() != x.dtype() || weight.device() != x.device() || weight.size(1) != x.size(-1))
    return false;
  if ((head_dim != 64 && head_dim != 128) || hq < 1 || hkv < 1 || hq % hkv != 0 ||
      weight.size(0) != (hq + 2 * hkv) * head_dim)
    return false;
  if (len < 0 || len + 1 > kDecodeFusedMaxKeys) return false;
  void* any = const_cast<void*>(x.data_ptr());  // (stand-ins: only the shapes decide)
  const float* f = static_cast<const float*>(any);
  return gemv_cuda_supported(product_params(x, any, 0.f, weight, nullptr, f, f, hq, hkv, head_dim, any, any, any)) &&
         detail::decode_fused_fits(weight.size(1), head_dim);
#else
  (void)x, (void)weight, (void)hq, (void)hkv, (void)head_dim, (void)len;
  return false;
#endif
}

Tensor rms_norm_qkv_rope_attention(const Tensor& x, const Tensor& norm_weight, float eps, const Tensor& weight,
                                   const Tensor& bias, const Tensor& cos, const Tensor& sin, int64_t hq, int64_t hkv,
                                   const Tensor& k_cache, const Tensor& v_cache, int64_t len, float scale) {
  check_defined(x, kOp, "x");
  check_defined(weight, kOp, "weight");
  check_defined(norm_weight, kOp, "norm_weight");
  MMATTN_CHECK(hq >= 1 && hkv >= 1 && weight.dim() == 2 && weight.size(0) % (hq + 2 * hkv) == 0, ShapeError, kOp,
               ": weight ", weight.desc(), " is not (hq + 2 hkv) = ", hq + 2 * hkv, " heads of equal width");
  const int64_t d = weight.size(0) / (hq + 2 * hkv), kdim = weight.size(1);
  MMATTN_CHECK(decode_attention_fusable(x, weight, hq, hkv, d, len), UnsupportedError, kOp, ": not fusable here (x ",
               x.desc(), ", weight ", weight.desc(), ", head_dim ", d, ", ", len,
               " old keys; check decode_attention_fusable first)");
  MMATTN_CHECK(norm_weight.dim() == 1 && norm_weight.size(0) == kdim && norm_weight.dtype() == x.dtype() &&
                   norm_weight.is_contiguous() && norm_weight.device() == x.device(),
               ShapeError, kOp, ": 'norm_weight' must be contiguous [", kdim, "] ", dtype_name(x.dtype()), " on ",
               x.device().str(), ", got ", norm_weight.desc());
  if (bias.defined())
    MMATTN_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0) && bias.dtype() == x.dtype() &&
                     bias.is_contiguous() && bias.device() == x.device(),
                 ShapeError, kOp, ": 'bias' must be contiguous [", weight.size(0), "] ", dtype_name(x.dtype()),
                 ", got ", bias.desc());
  for (const Tensor* t : {&cos, &sin})
    MMATTN_CHECK(t->defined() && t->dim() == 2 && t->size(0) == 1 && t->size(1) == d / 2 && t->dtype() == DType::F32 &&
                     t->is_contiguous() && t->device() == x.device(),
                 ShapeError, kOp, ": '", t == &cos ? "cos" : "sin", "' must be contiguous F32 [1, ", d / 2, "] on ",
                 x.device().str(), ", got ", t->defined() ? t->desc() : std::string("undefined"));
  for (const Tensor* t : {&k_cache, &v_cache})
    MMATTN_CHECK(t->defined() && t->dim() == 4 && t->size(0) == 1 && t->size(2) == hkv && t->size(3) == d &&
                     t->is_contiguous() && t->dtype() == x.dtype() && t->device() == x.device() && len < t->size(1),
                 ShapeError, kOp, ": '", t == &k_cache ? "k_cache" : "v_cache", "' must be contiguous [1, > ", len,
                 ", ", hkv, ", ", d, "] ", dtype_name(x.dtype()), " on ", x.device().str(), ", got ",
                 t->defined() ? t->desc() : std::string("undefined"));

  Tensor q = Tensor::empty({hq * d}, x.dtype(), x.device());
  Tensor out = Tensor::empty({1, 1, hq * d}, x.dtype(), x.device());
  detail::DecodeFusedArgs a;
  const int64_t row = len * hkv * d;  // the token's row of the cache
  char* const kc = static_cast<char*>(const_cast<void*>(k_cache.data_ptr()));
  char* const vc = static_cast<char*>(const_cast<void*>(v_cache.data_ptr()));
  const size_t es = dtype_size(x.dtype());
  a.product = product_params(x, norm_weight.data_ptr(), eps, weight, bias.defined() ? bias.data_ptr() : nullptr,
                             cos.data<float>(), sin.data<float>(), hq, hkv, d, q.data_ptr(), kc + row * es,
                             vc + row * es);
  a.k = kc, a.v = vc, a.out = out.data_ptr();
  a.hq = int(hq), a.hkv = int(hkv), a.d = int(d), a.len = int(len);
  a.splits = int((len + kDecodeFusedKeys - 1) / kDecodeFusedKeys);
  a.scale = scale > 0.f ? scale : float(1.0 / std::sqrt(double(d)));
  static const char owner = 0;  // the items' partial states: written and read inside one launch
  const StreamHandle s = current_stream();
  a.ws = static_cast<float*>(
      stream_scratch(&owner, s, size_t(std::max(1, a.hq * a.splits)) * size_t(2 + d) * sizeof(float)));
#if MMATTN_HAS_CUDA
  detail::decode_fused_cuda(a, s);
#endif
  g_calls.fetch_add(1, std::memory_order_relaxed);
  return out;
}

}  // namespace mmattn
