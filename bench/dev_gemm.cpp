// Development timer (issues 5, 6): every algorithm cuBLASLt's heuristic offers for the products of
// a pruned request (the decoder's four at ~104 rows) and of the ViT (577 rows), bf16, as linear()
// calls them (column-major C^T = W^T-op x^T, f32 compute), each timed cold (L2 flushed by a 128 MB
// memset before every run; events around the product alone), medians of --reps runs, with the
// algorithm's configuration, so that a consistently better choice than the heuristic's first can
// be seen. First the cluster product (gemm_cluster_cuda.cuh) on the decoder's four shapes at m = 16,
// 32, 64 and 104: the split it chooses, every forced split 1-8 and gemm_cuda's route without it
// (cuBLASLt), timed the same way.
//   dev_gemm [--reps 25] [--count 16] [--cluster-only]
#include <cublasLt.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "bench/bench_util.h"
#include "core/device.h"
#include "core/ops/linear.h"

using namespace mmattn;
using namespace mmattn::bench;

#define CK(x)                                                                             \
  do {                                                                                    \
    cublasStatus_t st_ = (x);                                                             \
    if (st_ != CUBLAS_STATUS_SUCCESS) {                                                   \
      std::fprintf(stderr, "%s failed: %s\n", #x, cublasLtGetStatusName(st_));            \
      std::exit(1);                                                                       \
    }                                                                                     \
  } while (0)

namespace {

template <class V>
V cfg(const cublasLtMatmulAlgo_t& a, cublasLtMatmulAlgoConfigAttributes_t attr) {
  V v{};
  size_t w = 0;
  cublasLtMatmulAlgoConfigGetAttribute(&a, attr, &v, sizeof(v), &w);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const int reps = std::stoi(arg_value(argc, argv, "--reps", "25"));
  const int count = std::stoi(arg_value(argc, argv, "--count", "16"));
  const double copy = measure_copy_GBps();
  std::printf("device %s, copy %.0f GB/s\n", device_name().c_str(), copy);
  cublasLtHandle_t h;
  CK(cublasLtCreate(&h));
  cudaStream_t s = current_stream();
  const size_t ws_bytes = size_t(32) << 20, flush_bytes = size_t(128) << 20;
  void* ws = cuda_alloc(ws_bytes, s);
  void* flush = cuda_alloc(flush_bytes, s);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0), cudaEventCreate(&e1);
  struct Shape3 { const char* name; int64_t m, n, k; bool accumulate; };
  const Shape3 shapes[] = {
      {"llama qkv", 104, 12288, 4096, false}, {"llama o", 104, 4096, 4096, true},
      {"llama gate_up", 104, 22016, 4096, false}, {"llama down", 104, 4096, 11008, true},
      {"vit qkv", 577, 3072, 1024, false}, {"vit out", 577, 1024, 1024, false},
      {"vit fc1", 577, 4096, 1024, false}, {"vit fc2", 577, 1024, 4096, true}};
  auto of_copy = [&](double bytes, double us) { return 100.0 * bytes / (us * 1e-6) / 1e9 / copy; };
  auto cold_us = [&](auto&& fn) {
    std::vector<float> t;
    for (int r = 0; r < reps + 2; ++r) {
      MMATTN_CUDA_CHECK(cudaMemsetAsync(flush, r & 0xff, flush_bytes, s));
      cudaEventRecord(e0, s);
      fn();
      cudaEventRecord(e1, s);
      cudaEventSynchronize(e1);
      float ms = 0;
      cudaEventElapsedTime(&ms, e0, e1);
      if (r >= 2) t.push_back(ms);
    }
    std::sort(t.begin(), t.end());
    return 1e3 * t[t.size() / 2];
  };
  std::printf("\ncluster product (split 0 = its choice), cold, us (%% of copy)\n");
  for (int64_t m : {16, 32, 64, 104})
    for (const Shape3& sh : shapes) {
      if (sh.m != 104) continue;
      const Tensor x = bench_random({m, sh.k}, 1, DType::BF16, -1.f, 1.f);
      const Tensor w = bench_random({sh.n, sh.k}, 2, DType::BF16, -0.02f, 0.02f);
      Tensor y = bench_random({m, sh.n}, 3, DType::BF16, -1.f, 1.f);
      GemmParams p;
      p.a = x.data_ptr(), p.b = w.data_ptr(), p.c = y.data_ptr();
      p.m = m, p.n = sh.n, p.k = sh.k, p.trans_b = true, p.dtype = DType::BF16, p.accumulate = sh.accumulate;
      p.b_static = true;
      if (!cluster_gemm_supported(p)) {
        std::printf("  not supported here\n");
        break;
      }
      const double bytes = 2.0 * double(sh.n * sh.k + m * sh.k + m * sh.n * (sh.accumulate ? 2 : 1));
      std::printf("  %-14s m %3lld:", sh.name, (long long)m);
      for (int split = 0; split <= 8; ++split) {
        const double us = cold_us([&] { cluster_gemm_cuda(p, s, split); });
        std::printf(" %d:%.1f(%.0f%%)", split, us, of_copy(bytes, us));
      }
      const int was = cluster_gemm_route();
      set_cluster_gemm_route(kClusterGemmNone);  // gemm_cuda's route without it: cuBLASLt (m > kGemvMaxRows)
      const double lt = cold_us([&] { gemm_cuda(p, s); });
      set_cluster_gemm_route(was);
      std::printf("  cuBLASLt %.1f(%.0f%%)\n", lt, of_copy(bytes, lt));
    }
  if (has_flag(argc, argv, "--cluster-only")) return 0;
  for (const Shape3& sh : shapes) {
    const Tensor x = bench_random({sh.m, sh.k}, 1, DType::BF16, -1.f, 1.f);
    const Tensor w = bench_random({sh.n, sh.k}, 2, DType::BF16, -0.02f, 0.02f);
    Tensor y = bench_random({sh.m, sh.n}, 3, DType::BF16, -1.f, 1.f);
    cublasLtMatmulDesc_t op;
    CK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    CK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    cublasLtMatrixLayout_t la, lb, lc;
    CK(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, uint64_t(sh.k), uint64_t(sh.n), sh.k));
    CK(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, uint64_t(sh.k), uint64_t(sh.m), sh.k));
    CK(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, uint64_t(sh.n), uint64_t(sh.m), sh.n));
    cublasLtMatmulPreference_t pref;
    CK(cublasLtMatmulPreferenceCreate(&pref));
    CK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof(ws_bytes)));
    std::vector<cublasLtMatmulHeuristicResult_t> res(static_cast<size_t>(count));
    int found = 0;
    CK(cublasLtMatmulAlgoGetHeuristic(h, op, la, lb, lc, lc, pref, count, res.data(), &found));
    const double bytes = 2.0 * double(sh.n * sh.k + sh.m * sh.k + sh.m * sh.n * (sh.accumulate ? 2 : 1));
    std::printf("\n%s: m %lld n %lld k %lld, floor %.1f us; %d algorithms\n", sh.name, (long long)sh.m,
                (long long)sh.n, (long long)sh.k, bytes / copy / 1e3, found);
    std::printf("  #   us_med  of_copy   id tile stages splitK red swz cluster waves\n");
    const float alpha = 1.f, beta = sh.accumulate ? 1.f : 0.f;
    for (int i = 0; i < found; ++i) {
      bool ok = true;
      const double us = cold_us([&] {
        ok = ok && cublasLtMatmul(h, op, &alpha, w.data_ptr(), la, x.data_ptr(), lb, &beta, y.data_ptr(), lc,
                                  y.data_ptr(), lc, &res[size_t(i)].algo, ws, ws_bytes, s) == CUBLAS_STATUS_SUCCESS;
      });
      if (!ok) {
        std::printf("  %-2d  failed\n", i);
        continue;
      }
      const auto& a = res[size_t(i)].algo;
      std::printf("  %-2d %7.1f %7.0f%% %4d %4d %6d %6d %3d %3d %7d %5.2f\n", i, us, of_copy(bytes, us),
                  cfg<int>(a, CUBLASLT_ALGO_CONFIG_ID), cfg<int>(a, CUBLASLT_ALGO_CONFIG_TILE_ID),
                  cfg<int>(a, CUBLASLT_ALGO_CONFIG_STAGES_ID), cfg<int>(a, CUBLASLT_ALGO_CONFIG_SPLITK_NUM),
                  cfg<int>(a, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME), cfg<int>(a, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING),
                  cfg<int>(a, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID), res[size_t(i)].wavesCount);
    }
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la), cublasLtMatrixLayoutDestroy(lb), cublasLtMatrixLayoutDestroy(lc);
    cublasLtMatmulDescDestroy(op);
  }
  return 0;
}
