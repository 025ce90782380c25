// Core-op micro-benchmarks on the GPU: linear (cuBLASLt) and the norms, against the ceilings
// measured in the same run (device copy bandwidth; cuBLAS's own bf16 GEMM rate) and against
// PyTorch on the same shapes (bench/peer_core.py, run just before by tools/gpu/run.sh).
//   bench_core --out bench/results [--peer bench/results/core_ops_peer.json]
#include <cublas_v2.h>

#include "bench/bench_util.h"
#include "core/ops/linear.h"
#include "core/ops/norm.h"
#include "core/tensor.h"

using namespace mmattn;
using namespace mmattn::bench;

namespace {

#define CUBLAS_OK(x) MMATTN_CHECK((x) == CUBLAS_STATUS_SUCCESS, CudaError, #x " failed")

Tensor randn_gpu(const Shape& s, DType dt, uint64_t seed) { return bench_random(s, seed, dt, -1.f, 1.f); }

// C[M,N] = A[M,K] * B[N,K]^T with cublasGemmEx directly (the "cuBLAS's own" reference).
double cublas_gemm_ms(cublasHandle_t h, const Tensor& a, const Tensor& b, Tensor& c) {
  const int M = int(a.size(0)), K = int(a.size(1)), N = int(b.size(0));
  const float alpha = 1.f, beta = 0.f;
  return time_ms([&] {
    CUBLAS_OK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &alpha, b.data_ptr(), CUDA_R_16BF, K, a.data_ptr(),
                           CUDA_R_16BF, K, &beta, c.data_ptr(), CUDA_R_16BF, N, CUBLAS_COMPUTE_32F,
                           CUBLAS_GEMM_DEFAULT));
  });
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string out = arg_value(argc, argv, "--out", "bench/results");
    const std::string peer_path = arg_value(argc, argv, "--peer", out + "/core_ops_peer.json");
    Json peer = Json::object();
    if (path_exists(peer_path)) peer = read_json_file(peer_path)["rows"];
    auto peer_ms = [&](const std::string& c) { return peer.contains(c) ? peer[c].get<double>() : 0.0; };

    Results r{"core_ops"};
    cublasHandle_t h;
    CUBLAS_OK(cublasCreate(&h));
    CUBLAS_OK(cublasSetStream(h, current_stream()));
    const double copy = measure_copy_GBps();
    double peak = 0;
    {
      Tensor a = randn_gpu({8192, 8192}, DType::BF16, 1), b = randn_gpu({8192, 8192}, DType::BF16, 2);
      Tensor c = Tensor::empty({8192, 8192}, DType::BF16, Device::cuda());
      peak = 2.0 * 8192.0 * 8192 * 8192 / (cublas_gemm_ms(h, a, b, c) * 1e-3) / 1e12;
    }
    r.ceilings = {{"copy_GBps", copy}, {"bf16_gemm_TFLOPs", peak},
                  {"how", "1 GiB cudaMemcpy D2D (read+write); cublasGemmEx bf16 8192^3, f32 accumulate"}};
    std::printf("ceilings: copy %.0f GB/s, cuBLAS bf16 GEMM %.0f TFLOP/s\n", copy, peak);

    // --- linear: y = x W^T (+ b), bf16, f32 accumulation ---
    struct LinCase { int64_t m, n, k; bool bias; const char* what; };
    const LinCase lin[] = {{4096, 4096, 4096, false, "square"},
                           {8192, 8192, 8192, false, "square"},
                           {640, 4096, 4096, true, "LLaVA prefill qkv-like"},
                           {640, 11008, 4096, false, "LLaVA prefill mlp up"},
                           {4096, 3072, 3072, true, "FLUX 4096 img tokens"},
                           {1, 11008, 4096, false, "decode b1 (weight-bound)"},
                           {2, 11008, 4096, false, "decode b2 (weight-bound)"},
                           {8, 11008, 4096, false, "decode b8 (weight-bound)"},
                           {104, 12288, 4096, false, "pruned prefill (64 image tokens) qkv"},
                           {104, 4096, 4096, false, "pruned prefill o_proj"},
                           {104, 22016, 4096, false, "pruned prefill gate_up"},
                           {104, 4096, 11008, false, "pruned prefill down"},
                           {577, 3072, 1024, true, "CLIP ViT-L/14-336 qkv"},
                           {577, 4096, 1024, true, "CLIP ViT fc1"},
                           {577, 1024, 4096, true, "CLIP ViT fc2"}};
    for (const auto& c : lin) {
      Tensor x = randn_gpu({c.m, c.k}, DType::BF16, 3), w = randn_gpu({c.n, c.k}, DType::BF16, 4);
      Tensor b = c.bias ? randn_gpu({c.n}, DType::BF16, 5) : Tensor();
      Tensor y;
      const double ours = time_ms([&] { y = linear(x, w, b); });
      // m <= 128: the same product in the other skinny-product mode (linear.h: 0 gemv / cuBLASLt,
      // 1 the Hopper skinny kernel)
      double other_mode_ms = 0;
      const int other_mode = skinny_gemm_mode() == 0 ? 1 : 0;
      if (c.m <= 128) {
        const SkinnyGemmModeGuard mode(other_mode);
        other_mode_ms = time_ms([&] { y = linear(x, w, b); });
      }
      Tensor yc = Tensor::empty({c.m, c.n}, DType::BF16, Device::cuda());
      const double direct = cublas_gemm_ms(h, x, w, yc);
      const double flops = 2.0 * c.m * c.n * c.k;
      const double bytes = 2.0 * (c.m * c.k + c.n * c.k + c.m * c.n);
      const std::string name = str_cat("linear bf16 M", c.m, " N", c.n, " K", c.k, c.bias ? " +bias" : "");
      Json row = {{"case", name}, {"what", c.what}, {"metric", "time"}, {"unit", "ms"}, {"ours", ours},
                  {"peer", peer_ms(name)}, {"peer_name", "torch F.linear"}, {"cublas_direct_ms", direct},
                  {"ours_tflops", flops / (ours * 1e-3) / 1e12}, {"ours_GBps", bytes / (ours * 1e-3) / 1e9},
                  {"ratio_to_cublas_direct", ours / direct}};
      if (other_mode_ms > 0) row["ms_skinny_mode_" + std::to_string(other_mode)] = other_mode_ms;
      // the bound that applies: FLOPs over the measured GEMM rate, or bytes over copy bandwidth
      const double floor_ms = std::max(flops / (peak * 1e12), bytes / (copy * 1e9)) * 1e3;
      row["floor_ms"] = floor_ms;
      row["fraction_of_ceiling"] = floor_ms / ours;
      r.add(row);
    }

    // --- the fused decode projections of a Llama-7B layer (issue 5): bytes = the weight ---
    struct FusedCase { const char* form; int64_t m, n, k; };
    const FusedCase fused[] = {{"rms_norm_linear", 1, 12288, 4096}, {"linear_add_", 1, 4096, 4096},
                               {"rms_norm_linear", 1, 22016, 4096}, {"swiglu_linear_add_", 1, 4096, 11008},
                               {"rms_norm_linear", 8, 12288, 4096}, {"swiglu_linear_add_", 8, 4096, 11008},
                               {"linear_add_", 8, 4096, 4096}, {"rms_norm_linear", 8, 22016, 4096},
                               {"rms_norm_linear", 104, 12288, 4096}, {"linear_add_", 104, 4096, 4096},
                               {"rms_norm_linear", 104, 22016, 4096}, {"swiglu_linear_add_", 104, 4096, 11008}};
    for (const auto& c : fused) {
      const std::string form = c.form;
      const int64_t kin = form == "swiglu_linear_add_" ? 2 * c.k : c.k;
      const double bytes = 2.0 * double(c.n * c.k);
      // "cold": a rotating set of weight copies (>= 160 MB, over 3x the 50 MB L2) as in a decode
      // step, where each layer's weights were last read a whole step ago; the plain number repeats
      // one weight, which partly stays in L2 (bench/NOTES.md)
      std::vector<Tensor> ws;
      for (int i = 0; i < std::max(2, int(160e6 / bytes) + 1); ++i)
        ws.push_back(randn_gpu({c.n, c.k}, DType::BF16, 10 + uint64_t(i)));
      Tensor x = randn_gpu({c.m, kin}, DType::BF16, 9), nw = randn_gpu({c.k}, DType::BF16, 11);
      Tensor y = randn_gpu({c.m, c.n}, DType::BF16, 12);
      const Tensor* w = &ws[0];
      std::function<void()> fn;
      if (form == "rms_norm_linear") fn = [&] { y = rms_norm_linear(x, nw, 1e-6f, *w); };
      else if (form == "linear_add_") fn = [&] { linear_add_(y, x, *w); };
      else fn = [&] { swiglu_linear_add_(y, x, *w); };
      size_t next = 0;
      auto cold_fn = [&] {
        w = &ws[next++ % ws.size()];
        fn();
      };
      // each Hopper skinny-product mode (linear.h: 0 gemv / cuBLASLt, 1 plain products, 2 also the
      // fused forms unfused), cold; the row's numbers are the default mode's
      const std::string default_mode = std::to_string(skinny_gemm_mode());
      Json by_mode = Json::object();
      for (int md = 0; md <= 2; ++md) {
        const SkinnyGemmModeGuard mode(md);
        by_mode[std::to_string(md)] = time_ms(cold_fn);
      }
      const double cold = by_mode[default_mode].get<double>();
      w = &ws[0];
      const double ours = time_ms(fn);
      const std::string name = str_cat(form, " bf16 M", c.m, " N", c.n, " K", c.k);
      const double gbps = bytes / (ours * 1e-3) / 1e9, cold_gbps = bytes / (cold * 1e-3) / 1e9;
      std::printf("%-44s %.4f ms (%.0f%% of copy), cold L2 %.4f ms (%.0f%%)\n", name.c_str(), ours, 100 * gbps / copy,
                  cold, 100 * cold_gbps / copy);
      r.add({{"case", name}, {"what", c.m <= 8 ? "decode, fused forms" : "pruned prefill, fused forms"}, {"metric", "time"}, {"unit", "ms"}, {"ours", ours},
             {"peer", peer_ms(name)}, {"peer_name", "torch, unfused"}, {"ours_GBps", gbps},
             {"floor_ms", bytes / (copy * 1e9) * 1e3}, {"fraction_of_ceiling", gbps / copy},
             {"ours_cold_l2_ms", cold}, {"fraction_of_ceiling_cold_l2", cold_gbps / copy},
             {"cold_l2_ms_by_skinny_mode", by_mode}});
    }

    // --- norms, bf16: bytes = read x + write y ---
    struct NormCase { const char* op; Shape shape; int groups; };
    const NormCase norms[] = {{"rms_norm", {16384, 4096}, 0},   {"rms_norm", {640, 4096}, 0},
                              {"layer_norm", {16384, 4096}, 0}, {"layer_norm", {577, 1024}, 0},
                              {"layer_norm", {4096, 3072}, 0},  {"group_norm", {1, 512, 128, 128}, 32},
                              {"group_norm", {1, 128, 512, 512}, 32}};
    for (const auto& c : norms) {
      Tensor x = randn_gpu(c.shape, DType::BF16, 6);
      const int64_t ch = std::string(c.op) == "group_norm" ? c.shape[1] : c.shape.back();
      Tensor w = randn_gpu({ch}, DType::BF16, 7), b = randn_gpu({ch}, DType::BF16, 8);
      Tensor y;
      std::function<void()> fn;
      if (std::string(c.op) == "rms_norm") fn = [&] { y = rms_norm(x, w, 1e-6f); };
      else if (std::string(c.op) == "layer_norm") fn = [&] { y = layer_norm(x, w, b, 1e-5f); };
      else fn = [&] { y = group_norm(x, c.groups, w, b, 1e-6f); };
      const double ours = time_ms(fn);
      const double bytes = 2.0 * 2.0 * double(x.numel());
      const std::string name = str_cat(c.op, " bf16 ", shape_str(c.shape));
      const double gbps = bytes / (ours * 1e-3) / 1e9;
      r.add({{"case", name}, {"metric", "time"}, {"unit", "ms"}, {"ours", ours}, {"peer", peer_ms(name)},
             {"peer_name", std::string("torch F.") + c.op}, {"ours_GBps", gbps}, {"fraction_of_ceiling", gbps / copy}});
    }
    cublasDestroy(h);
    r.write(out);
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_core: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
