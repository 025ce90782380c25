// CPU GEMM: OpenBLAS sgemm per batch entry (f32 in, f32 accumulate). Bias is written into C
// first and accumulated with beta = 1.
#include <cblas.h>

#include <algorithm>
#include <limits>

#include "core/ops/linear.h"

namespace mmattn {

void gemm_cpu(const GemmParams& p) {
  MMATTN_CHECK(!p.c_in && !p.f32_out, UnsupportedError, "gemm_cpu: no separate C input or f32 result (f32 only)");
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  MMATTN_CHECK(p.m <= kMax && p.n <= kMax && p.k <= kMax, UnsupportedError, "gemm_cpu: dims m=", p.m, " n=", p.n,
               " k=", p.k, " exceed the BLAS int range");
  const float* a = static_cast<const float*>(p.a);
  const float* b = static_cast<const float*>(p.b);
  const float* bias = static_cast<const float*>(p.bias);
  float* c = static_cast<float*>(p.c);
  const int m = int(p.m), n = int(p.n), k = int(p.k);
  for (int64_t i = 0; i < p.batch; ++i) {
    float* ci = c + i * p.stride_c;
    if (bias)
      for (int64_t r = 0; r < p.m; ++r)
        for (int64_t j = 0; j < p.n; ++j) ci[r * p.n + j] = (p.accumulate ? ci[r * p.n + j] : 0.f) + bias[j];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, p.trans_b ? CblasTrans : CblasNoTrans, m, n, k, 1.f, a + i * p.stride_a,
                k, b + i * p.stride_b, p.trans_b ? k : n, bias || p.accumulate ? 1.f : 0.f, ci, n);
  }
}

}  // namespace mmattn
