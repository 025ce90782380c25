// Development timer (issues 5, 6): how fast a decoder weight [n, k] (16-bit) can be streamed once,
// with no arithmetic, by two access patterns: the gemv's (a warp instruction reads 512 contiguous
// bytes of one row) and the register-fed mma products' (8 rows x 64 bytes: lane (g, q) reads 16
// bytes of row g at byte 16 q), each through cp.async with 8-32 commit groups in flight per warp (no
// registers bound the depth). Cold (a 128 MB memset before every run, as dev_gemm; medians of 15) and
// in-stream (32 launches back to back over 4 copies of the weight, as dev_step), % of the measured
// copy bandwidth. bench/NOTES.md (session 17) has the table. No arguments.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <vector>

#define CK(x)                                                                     \
  do {                                                                            \
    const cudaError_t e_ = (x);                                                   \
    if (e_ != cudaSuccess) {                                                      \
      std::fprintf(stderr, "%s failed: %s\n", #x, cudaGetErrorString(e_));         \
      std::exit(1);                                                               \
    }                                                                             \
  } while (0)

__device__ __forceinline__ void cp16(uint32_t dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src));
}
__device__ __forceinline__ void commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void wait_group() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Each warp streams its tasks through cp.async (16 bytes per lane per step, a commit group per step,
// D groups in flight per warp): the memory system sees the pattern, no registers bound the depth.
// PAT 0 (A): task = R rows x KC k, step s = row s % R, 512 contiguous bytes (chunk s / R).
// PAT 1 (B): task = 16 rows x KC k, step s = rows g + 8 (s & 1) of lanes (g, q), 16 bytes at 64 (s >> 1) + 16 q.
template <int PAT, int R, int KC, int D>
__global__ void __launch_bounds__(256) probe(const uint16_t* w, int n, int k, unsigned* out) {
  extern __shared__ __align__(16) unsigned char sm[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, q = lane & 3;
  const uint32_t slot0 = uint32_t(__cvta_generic_to_shared(sm)) + uint32_t(warp * D * 512 + lane * 16);
  const int warps = gridDim.x * 8, wid = blockIdx.x * 8 + warp;
  constexpr int rows = PAT == 0 ? R : 16;
  constexpr int steps = PAT == 0 ? R * KC / 256 : 2 * KC / 32;
  const int kt = k / KC, tasks = (n / rows) * kt;
  int s_all = 0;
  for (int t = wid; t < tasks; t += warps) {
    const int r0 = (t / kt) * rows, k0 = (t % kt) * KC;
#pragma unroll 4
    for (int s = 0; s < steps; ++s, ++s_all) {
      const uint16_t* src = PAT == 0 ? w + int64_t(r0 + s % R) * k + k0 + 256 * (s / R) + 8 * lane
                                     : w + int64_t(r0 + g + 8 * (s & 1)) * k + k0 + 32 * (s >> 1) + 8 * q;
      cp16(slot0 + uint32_t((s_all % D) * 512), src);
      commit();
      wait_group<D - 1>();
    }
  }
  wait_group<0>();
  if (s_all == -1) out[0] = 1;
}

// A launch of probe<PAT, R, KC, D> on weight wp (grid blocks; its per-warp ring in shared memory).
template <int PAT, int R, int KC, int D>
auto launcher(int grid, int n, int k, unsigned* out) {
  constexpr auto kernel = probe<PAT, R, KC, D>;
  constexpr int smem = 8 * D * 512;
  CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  return [=](const uint16_t* wp) { kernel<<<grid, 256, smem>>>(wp, n, k, out); };
}

int main() {
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const size_t big = size_t(1) << 30, flush_bytes = size_t(128) << 20;
  void *src, *dst, *fl;
  unsigned* out;
  CK(cudaMalloc(&src, big));
  CK(cudaMalloc(&dst, big));
  CK(cudaMalloc(&fl, flush_bytes));
  CK(cudaMalloc(&out, 64));
  CK(cudaMemset(src, 1, big));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  // median event time of fn over `runs` runs after 2 warm-ups; flush: a 128 MB memset before each
  auto median_ms = [&](auto&& fn, int runs, bool flush) {
    std::vector<float> t;
    for (int r = 0; r < runs + 2; ++r) {
      if (flush) CK(cudaMemsetAsync(fl, r, flush_bytes));
      CK(cudaEventRecord(e0));
      fn();
      CK(cudaEventRecord(e1));
      CK(cudaEventSynchronize(e1));
      float ms = 0;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      if (r >= 2) t.push_back(ms);
    }
    CK(cudaGetLastError());
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  };
  const float cms = median_ms([&] { CK(cudaMemcpyAsync(dst, src, big, cudaMemcpyDeviceToDevice)); }, 15, true);
  const double copy = 2.0 * big / (cms * 1e-3) / 1e9;
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("%s: copy %.0f GB/s (read + write)\n", prop.name, copy);
  struct Shape { const char* name; int n, k; };
  const Shape shapes[] = {{"o 4096x4096", 4096, 4096}, {"qkv 12288x4096", 12288, 4096},
                          {"gate_up 22016x4096", 22016, 4096}, {"down 4096x11008", 4096, 11008}};
  const uint16_t* w = static_cast<const uint16_t*>(src);
  for (const Shape& s : shapes) {
    const double bytes = 2.0 * s.n * s.k;
    // cold: one launch after the flush; in-stream: 32 launches back to back over 4 copies of the
    // weight (as 32 decoder layers over dev_step's 4 weight sets: L2 never holds the next one)
    auto row = [&](const char* what, auto&& launch) {
      const float cold = median_ms([&] { launch(w); }, 15, true);
      const float st = median_ms([&] {
        for (int i = 0; i < 32; ++i) launch(w + size_t(i % 4) * size_t(s.n) * size_t(s.k));
      }, 5, false) / 32;
      auto pct = [&](float m) { return 100.0 * bytes / (m * 1e-3) / 1e9 / copy; };
      std::printf("  %-20s %-24s cold %6.1f us %3.0f%%   in-stream %6.1f us %3.0f%% of copy\n", s.name, what,
                  cold * 1e3, pct(cold), st * 1e3, pct(st));
    };
    for (int per_sm : {1, 2}) {
      const int grid = per_sm * sms;
      std::printf(" %d blocks of 256 per SM\n", per_sm);
      if (s.k % 1024 == 0) {
        row("A 4 rows x 4, D8", launcher<0, 4, 1024, 8>(grid, s.n, s.k, out));
        row("A 4 rows x 4, D16", launcher<0, 4, 1024, 16>(grid, s.n, s.k, out));
        row("A 2 rows x 8, D16", launcher<0, 2, 2048, 16>(grid, s.n, s.k, out));
        row("B frag, D8", launcher<1, 16, 1024, 8>(grid, s.n, s.k, out));
        row("B frag, D16", launcher<1, 16, 1024, 16>(grid, s.n, s.k, out));
        row("B frag, D32", launcher<1, 16, 1024, 32>(grid, s.n, s.k, out));
      } else {  // (11008 = 43 x 256)
        row("A 16 rows x 1, D16", launcher<0, 16, 256, 16>(grid, s.n, s.k, out));
        row("B frag (k 256), D16", launcher<1, 16, 256, 16>(grid, s.n, s.k, out));
        row("B frag (k 256), D32", launcher<1, 16, 256, 32>(grid, s.n, s.k, out));
      }
    }
  }
  CK(cudaDeviceSynchronize());
  return 0;
}
