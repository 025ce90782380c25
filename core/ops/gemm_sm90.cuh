#pragma once
// Skinny products on Hopper (sm_90a): y [m, n] (+)= x [m, k] @ W[n, k]^T + bias for 1 <= m <= 128,
// bf16/f16, f32 accumulation. Decode (m = batch) and pruned prefills (~100 rows) are bound by the
// weight bytes; this kernel streams W through shared memory with TMA and multiplies on the tensor
// cores, so no register or CUDA-core work stands between the loads and the MMAs.
//
// Opt-in (linear.h, mode 0 by default): on the H100 it reached 57-65% of copy bandwidth at m <= 8
// and 22-55% at m = 104, below the register gemv (79-92%) and cuBLASLt; ncu shows DRAM at 63% of
// peak with ~130 KB of weight in flight per SM (bench/NOTES.md, session 7).
//
// Swap-AB: the weight rows are wgmma's M (64 per consumer warpgroup, 1 or 2 warpgroups = 64 or 128
// rows per block), the m inputs its N, padded to NP in {8, 16, 32, 64, 128} (the TMA fills the rows
// past m, and the k columns past K, with zeros). Both operands are K-major boxes of 64 k (128
// bytes, 128-byte swizzle): a stage holds NB boxes (4 for NP <= 32: 512 contiguous bytes of each
// weight row) of the block's weight rows and of the NP rows of x.
//
// Warp specialisation: one producer warp (lane 0 issues the TMA copies into an S-stage ring,
// "full" mbarriers with transaction counts, "empty" barriers released by the consumer warps) and
// the consumer warpgroups (4 wgmma m64nNPk16 per stage, one group in flight so that a stage is
// released as soon as the MMAs reading it are done). The ring fills ~200 KB of shared memory (one
// block per SM) for NP <= 32, ~100 KB otherwise.
//
// Stream-K: the grid is one wave of persistent blocks and the flattened work, tiles x KB k steps
// (tile-major; a step is one ring stage), is cut into equal contiguous ranges, one per block, so
// that every multiprocessor streams the same number of weight bytes and a block's ring runs on
// from one tile into the next without draining. A tile whose k steps one block covers is finished
// by that block;
// a tile shared by several blocks gets their f32 partials (a block has at most two: the segments at
// the start and at the end of its range) in a workspace, and the block that arrives last at the
// tile's counter sums them in block order (deterministic), applies the epilogue and resets the
// counter.
//
// Epilogue: y = T(acc + bias) or, accumulating, T(y + acc + bias) (one rounding, as the gemv and
// cuBLASLt with beta = 1).
//
// Programmatic dependent launch: the producer prefetches its first stages' weight tiles into L2
// (hints only: the "weight" of a matmul of activations may come from the kernel before), then
// every thread waits (griddepcontrol.wait) before reading an operand, the workspace or y.
#include <algorithm>
#include <unordered_map>

#include "core/cuda_types.cuh"
#include "core/ops/linear.h"
#include "core/sm90.cuh"

namespace mmattn::skinny {

constexpr int kKB = 64;  // k per TMA box: one 128-byte swizzle row of 16-bit elements
constexpr int kMaxM = 128;

template <int NP>
constexpr int groups() {  // consumer warpgroups: x tiles of 64+ rows are shared by 128 weight rows
  return NP >= 64 ? 2 : 1;
}
template <int NP>
constexpr int rows_per_block() {
  return 64 * groups<NP>();
}
template <int NP>
constexpr int boxes() {  // k boxes per stage: 4 give 512 contiguous bytes of each weight row per stage
  return NP <= 32 ? 4 : 1;
}
template <int NP>
constexpr int w_bytes() {
  return boxes<NP>() * rows_per_block<NP>() * 128;
}
template <int NP>
constexpr int stage_bytes() {
  return w_bytes<NP>() + boxes<NP>() * NP * 128;
}
template <int NP>
constexpr int smem_per_block() {  // the ring fills up to this: one block per SM (m <= 32), else two
  return NP <= 32 ? (200 << 10) : (100 << 10);
}
template <int NP>
constexpr int stages() {
  return smem_per_block<NP>() / stage_bytes<NP>();
}
template <int NP>
constexpr int smem_bytes() {  // ring, 1024-byte alignment slack, 2 x S mbarriers
  return stages<NP>() * stage_bytes<NP>() + 1024 + 16 * stages<NP>();
}
template <int NP>
constexpr int threads() {  // consumers + one producer warp
  return 128 * groups<NP>() + 32;
}
template <int NP>
constexpr int partial_floats() {  // one block's f32 partial tile
  return rows_per_block<NP>() * NP;
}

struct Args {
  const void* bias;
  void* y;
  float* partial;  // [blocks][2][partial_floats], element i of consumer thread t at i * threads + t
  int* counter;    // [tiles], zero between launches
  int m, n, ksteps, tiles;  // ksteps: ring stages of k (NB boxes of 64) per row tile
  bool accumulate;
};

// Block of the stream-K range that holds flattened k step u (ranges [c T / G, (c + 1) T / G)).
__device__ __forceinline__ int owner_of(int64_t u, int64_t total, int blocks) {
  return int(((u + 1) * blocks + total - 1) / total) - 1;
}
__device__ __forceinline__ int64_t range_start(int c, int64_t total, int blocks) { return int64_t(c) * total / blocks; }

template <class T, int NP>
__global__ void __launch_bounds__(threads<NP>()) skinny_gemm_kernel(const __grid_constant__ CUtensorMap wmap,
                                                                    const __grid_constant__ CUtensorMap xmap, Args a) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using namespace sm90;
  constexpr int CW = groups<NP>(), S = stages<NP>(), SB = stage_bytes<NP>(), WB = w_bytes<NP>(), NB = boxes<NP>();
  constexpr int CT = 128 * CW;  // consumer threads
  extern __shared__ uint8_t smem_raw[];
  __shared__ int s_last;
  const uint32_t base = (uint32_t(__cvta_generic_to_shared(smem_raw)) + 1023u) & ~1023u;
  const uint32_t bars = base + S * SB;
  auto full = [&](int s) { return bars + 8 * s; };
  auto empty = [&](int s) { return bars + 8 * (S + s); };
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int c = blockIdx.x, G = gridDim.x, KB = a.ksteps;
  const int64_t total = int64_t(a.tiles) * KB;
  const int64_t u0 = range_start(c, total, G), u1 = range_start(c + 1, total, G);
  constexpr int R = rows_per_block<NP>();

  allow_next_grid();
  if (tid == 0) {
    for (int s = 0; s < S; ++s) {
      mbar_init(full(s), 1);
      mbar_init(empty(s), 4 * CW);  // one arrival per consumer warp
    }
    mbar_init_fence();
  }
  __syncthreads();

  if (warp == 4 * CW) {  // producer warp
    if (lane == 0) {
      for (int64_t u = u0; u < u1 && u < u0 + S; ++u)
        for (int b = 0; b < NB; ++b) tma_prefetch_2d(&wmap, int(u % KB) * (kKB * NB) + b * kKB, int(u / KB) * R);
      wait_for_previous_grid();
      for (int64_t u = u0; u < u1; ++u) {
        const int it = int(u - u0), s = it % S;
        if (it >= S) mbar_wait(empty(s), ((it / S) - 1) & 1);
        mbar_expect_tx(full(s), SB);
        const int k0 = int(u % KB) * (kKB * NB), row = int(u / KB) * R;
#pragma unroll
        for (int b = 0; b < NB; ++b) tma_load_2d(base + s * SB + b * (R * 128), &wmap, full(s), k0 + b * kKB, row);
#pragma unroll
        for (int b = 0; b < NB; ++b) tma_load_2d(base + s * SB + WB + b * (NP * 128), &xmap, full(s), k0 + b * kKB, 0);
      }
    }
    return;
  }

  wait_for_previous_grid();  // y (accumulating), the bias and the workspace come after it
  const int wg = warp >> 2;
  const int g = lane >> 2, t = lane & 3;
  T* y = static_cast<T*>(a.y);
  const T* bias = static_cast<const T*>(a.bias);
  float d[NP / 2];
#pragma unroll
  for (int i = 0; i < NP / 2; ++i) d[i] = 0.f;

  // d[4j + e]: (weight row r0, input 8j + 2t + e); d[4j + 2 + e]: row r0 + 8
  auto epilogue = [&](int tile) {
    const int r0 = tile * R + wg * 64 + (warp & 3) * 16 + g;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = r0 + 8 * h;
      if (r >= a.n) continue;
      const float b = bias ? to_f32(bias[r]) : 0.f;
#pragma unroll
      for (int j = 0; j < NP / 8; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int m = 8 * j + 2 * t + e;
          if (m >= a.m) continue;
          T* out = y + int64_t(m) * a.n + r;
          float v = d[4 * j + 2 * h + e] + b;
          if (a.accumulate) v += to_f32(*out);
          *out = from_f32<T>(v);
        }
    }
  };
  const int first_tile = int(u0 / KB);
  auto slot_ptr = [&](int blk, int slot) {
    return a.partial + (size_t(blk) * 2 + slot) * size_t(partial_floats<NP>()) + tid;
  };
  // A segment of `tile` ends here: finish the tile, or hand in the partial (and finish if last).
  auto finish_segment = [&](int tile, bool whole) {
    if (whole) {
      epilogue(tile);
      return;
    }
    float* mine = slot_ptr(c, tile == first_tile ? 0 : 1);
#pragma unroll
    for (int i = 0; i < NP / 2; ++i) __stcg(mine + size_t(i) * CT, d[i]);
    __threadfence();
    named_sync(1, CT);
    const int cf = owner_of(int64_t(tile) * KB, total, G), cl = owner_of(int64_t(tile + 1) * KB - 1, total, G);
    if (tid == 0) s_last = atomicAdd(a.counter + tile, 1) == cl - cf;
    named_sync(1, CT);
    if (!s_last) return;
    __threadfence();
#pragma unroll
    for (int i = 0; i < NP / 2; ++i) d[i] = 0.f;
    for (int cb = cf; cb <= cl; ++cb) {  // block order: the same sum whichever block is last
      const float* src = slot_ptr(cb, range_start(cb, total, G) / KB == tile ? 0 : 1);
#pragma unroll
      for (int i = 0; i < NP / 2; ++i) d[i] += __ldcg(src + size_t(i) * CT);
    }
    epilogue(tile);
    if (tid == 0) a.counter[tile] = 0;  // ready for the next launch (stream order)
  };

  int64_t seg0 = u0;  // first k step of the current segment
  for (int64_t u = u0; u < u1; ++u) {
    const int it = int(u - u0), s = it % S;
    mbar_wait(full(s), (it / S) & 1);
    wg_fence();
#pragma unroll
    for (int b = 0; b < NB; ++b) {
      const uint64_t da = make_desc(base + s * SB + b * (R * 128) + wg * 64 * 128, 16, 1024);
      const uint64_t db = make_desc(base + s * SB + WB + b * (NP * 128), 16, 1024);
#pragma unroll
      for (int ks = 0; ks < kKB / 16; ++ks) wgmma_ss<T, NP>(d, da + 2 * ks, db + 2 * ks, 1);  // +32 bytes per k-step
    }
    wg_commit();
    wg_wait<1>();  // the MMAs of the previous stage are done: release it
    if (it > 0 && lane == 0) mbar_arrive(empty((it - 1) % S));
    const int kb = int(u % KB);
    if (kb == KB - 1 || u == u1 - 1) {
      wg_wait<0>();
      fence_regs(d);
      const int tile = int(u / KB);
      finish_segment(tile, seg0 % KB == 0 && kb == KB - 1);
#pragma unroll
      for (int i = 0; i < NP / 2; ++i) d[i] = 0.f;
      seg0 = u + 1;
    }
  }
#endif
}

// Per-thread launch state: blocks per SM per instantiation, the weight maps (keyed by
// pointer and shape: weights are long-lived), and a stream-K workspace per stream.
constexpr size_t kPartialBytes = size_t(32) << 20;
constexpr int kMaxCounters = 16384;
struct Workspace {
  float* partial = nullptr;
  int* counter = nullptr;
};
Workspace workspace_for(StreamHandle s);  // gemm_sm90.cu

struct WeightKey {
  int device;
  const void* ptr;
  int64_t n, k;
  int rows;
  bool operator==(const WeightKey& o) const { return device == o.device && ptr == o.ptr && n == o.n && k == o.k && rows == o.rows; }
};
struct WeightKeyHash {
  size_t operator()(const WeightKey& w) const {
    return std::hash<const void*>()(w.ptr) ^ (size_t(w.n) * 0x9E3779B97F4A7C15ull) ^ (size_t(w.k) << 20) ^ size_t(w.rows);
  }
};

template <class T, int NP>
void launch(const GemmParams& p, StreamHandle s) {
  auto kernel = skinny_gemm_kernel<T, NP>;
  thread_local std::unordered_map<int, int> per_sm_of;  // device -> resident blocks per SM
  int device = 0;
  MMATTN_CUDA_CHECK(cudaGetDevice(&device));
  auto ps = per_sm_of.find(device);
  if (ps == per_sm_of.end()) {
    MMATTN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes<NP>()));
    int v = 0;
    MMATTN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&v, kernel, threads<NP>(), smem_bytes<NP>()));
    MMATTN_CHECK(v >= 1, CudaError, "skinny gemm: no block fits on a multiprocessor");
    ps = per_sm_of.emplace(device, v).first;
  }
  const int per_sm = ps->second;
  constexpr int R = rows_per_block<NP>();
  const DType dt = p.dtype;
  thread_local std::unordered_map<WeightKey, CUtensorMap, WeightKeyHash> wmaps;
  const WeightKey wk{device, p.b, p.n, p.k, R};
  auto it = wmaps.find(wk);
  if (it == wmaps.end()) {
    CUtensorMap m;
    MMATTN_CHECK(sm90::encode_rows_map(&m, p.b, dt == DType::BF16, p.n, p.k, R), CudaError, "skinny gemm: cuTensorMapEncodeTiled failed for W [",
                 p.n, ", ", p.k, "]");
    if (wmaps.size() > 4096) wmaps.clear();
    it = wmaps.emplace(wk, m).first;
  }
  CUtensorMap xmap;
  MMATTN_CHECK(sm90::encode_rows_map(&xmap, p.a, dt == DType::BF16, p.m, p.k, NP), CudaError, "skinny gemm: cuTensorMapEncodeTiled failed for x [",
               p.m, ", ", p.k, "]");

  const int tiles = int((p.n + R - 1) / R);
  const int ksteps = int((p.k + kKB * boxes<NP>() - 1) / (kKB * boxes<NP>()));
  const int64_t total = int64_t(tiles) * ksteps;
  const int64_t max_blocks = int64_t(kPartialBytes / (2 * sizeof(float) * partial_floats<NP>()));
  const int blocks = int(std::min<int64_t>({int64_t(cuda_sm_count()) * per_sm, total, max_blocks}));
  Args a{};
  a.bias = p.bias;
  a.y = p.c;
  a.m = int(p.m), a.n = int(p.n), a.ksteps = ksteps, a.tiles = tiles;
  a.accumulate = p.accumulate;
  const Workspace ws = workspace_for(s);
  a.partial = ws.partial;
  a.counter = ws.counter;
  sm90::launch_pdl(kernel, dim3(unsigned(blocks)), dim3(unsigned(threads<NP>())), size_t(smem_bytes<NP>()), s, it->second,
                   xmap, a);
}

// Dispatch on m (padded to the next instantiated width).
template <class T>
void run(const GemmParams& p, StreamHandle s) {
  if (p.m <= 8) launch<T, 8>(p, s);
  else if (p.m <= 16) launch<T, 16>(p, s);
  else if (p.m <= 32) launch<T, 32>(p, s);
  else if (p.m <= 64) launch<T, 64>(p, s);
  else launch<T, 128>(p, s);
}

}  // namespace mmattn::skinny
