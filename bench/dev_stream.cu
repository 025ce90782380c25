// Development timer (issues 5, 6): how fast a decoder weight [n, k] (16-bit) can be streamed once,
// with no arithmetic, by two access patterns: the gemv's (a warp instruction reads 512 contiguous
// bytes of one row) and the register-fed mma products' (8 rows x 64 bytes: lane (g, q) reads 16
// bytes of row g at byte 16 q), each through cp.async with 8-32 commit groups in flight per warp (no
// registers bound the depth). Cold (a 128 MB memset before every run, as dev_gemm; medians of 15) and
// in-stream (32 launches back to back over 4 copies of the weight, as dev_step), % of the measured
// copy bandwidth. bench/NOTES.md (session 17) has the table. Then (session 18) the streaming
// product's own weight stream (tile_probe), with its barrier, cluster, one-block-per-SM shared
// memory and 256-byte runs switched off one at a time. No arguments.
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

// The streaming product's weight stream without its arithmetic (session 18; core/ops/
// gemm_cluster_cuda.cuh): block = 128 weight rows x one K range (grid (n / 128, split)), two groups
// of 128 threads with 64 rows each, stages of 16 KB per group (R rows x S bytes: 64 x 256 is the
// kernel's, 16 x 1024 reads 1 KB runs), STAGES per group (STAGES - 1 in flight). BAR: a 128-thread
// barrier per stage (the kernel's) or only __syncwarp. The launcher adds a cluster (1, split) or
// not, and shared memory padded to the kernel's (one block per SM) or not: each feature alone.
template <int S, int STAGES, bool BAR>
__global__ void __launch_bounds__(256) tile_probe(const uint16_t* w, int n, int k, int split, unsigned* out) {
  extern __shared__ __align__(16) unsigned char sm[];
  constexpr int kStage = 16384, kRowsPerStage = kStage / S, kChunksPerRow = S / 16, kStageK = S / 2;
  constexpr int kCopies = kStage / 16 / 128;
  const int g = threadIdx.x >> 7, t = threadIdx.x & 127;
  const uint32_t ring = uint32_t(__cvta_generic_to_shared(sm)) + uint32_t(g * STAGES * kStage);
  const int row0 = blockIdx.x * 128 + 64 * g;
  // this block's k range in units of kStageK; stages run over (k chunk, row block of the 64 rows)
  const int kchunks = (k + kStageK - 1) / kStageK, per = (kchunks + split - 1) / split;  // (a tail chunk reads past the row: in bounds here)
  const int c0 = blockIdx.y * per, c1 = min(kchunks, c0 + per);
  constexpr int kRowBlocks = 64 / kRowsPerStage;
  const int nst = max(0, c1 - c0) * kRowBlocks;
  auto issue = [&](int st) {
    if (st >= nst) return;
    const int kc = c0 + st / kRowBlocks, rb = st % kRowBlocks;
    const uint32_t dst = ring + uint32_t((st % STAGES) * kStage);
#pragma unroll
    for (int i = 0; i < kCopies; ++i) {
      const int c = t + 128 * i, r = rb * kRowsPerStage + c / kChunksPerRow, col = c % kChunksPerRow;
      cp16(dst + uint32_t(c * 16), w + int64_t(min(row0 + r, n - 1)) * k + int64_t(kc) * kStageK + 8 * col);
    }
  };
#pragma unroll
  for (int st = 0; st < STAGES - 1; ++st) issue(st), commit();
  for (int st = 0; st < nst; ++st) {
    wait_group<STAGES - 2>();
    if (BAR)
      asm volatile("bar.sync %0, 128;\n" ::"r"(1 + g) : "memory");
    else
      __syncwarp();
    issue(st + STAGES - 1);
    commit();
  }
  wait_group<0>();
  if (nst == -1) out[0] = 1;
}

template <int S, int STAGES, bool BAR>
auto tile_launcher(int n, int k, int split, bool cluster, bool pad, unsigned* out) {
  constexpr auto kernel = tile_probe<S, STAGES, BAR>;
  const int smem = pad ? 225 * 1024 : 2 * STAGES * 16384;  // the kernel's 225 KB: one block per SM
  CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  return [=](const uint16_t* wp) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(unsigned((n + 127) / 128), unsigned(split));
    cfg.blockDim = dim3(256);
    cfg.dynamicSmemBytes = size_t(smem);
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = 1;
    attr[0].val.clusterDim.y = unsigned(split);
    attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs = cluster ? 1 : 0;
    CK(cudaLaunchKernelEx(&cfg, kernel, wp, n, k, split, out));
  };
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
  struct Shape { const char* name; int n, k, split; };  // split: the streaming product's pick at 104 rows
  const Shape shapes[] = {{"o 4096x4096", 4096, 4096, 4}, {"qkv 12288x4096", 12288, 4096, 1},
                          {"gate_up 22016x4096", 22016, 4096, 2}, {"down 4096x11008", 4096, 11008, 4}};
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
    // the streaming product's stream, one feature at a time (its own configuration first)
    std::printf(" tile probes (128 rows x K / %d per block)\n", s.split);
    row("T kernel: 256B bar clu pad", tile_launcher<256, 3, true>(s.n, s.k, s.split, true, true, out));
    row("T no barrier", tile_launcher<256, 3, false>(s.n, s.k, s.split, true, true, out));
    row("T no cluster", tile_launcher<256, 3, true>(s.n, s.k, s.split, false, true, out));
    row("T no pad (2 blocks/SM)", tile_launcher<256, 3, true>(s.n, s.k, s.split, true, false, out));
    row("T 1 KB runs", tile_launcher<1024, 3, true>(s.n, s.k, s.split, true, true, out));
    row("T none of them", tile_launcher<1024, 3, false>(s.n, s.k, s.split, false, false, out));
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
