#pragma once
// Skinny products on Hopper (sm_90a): y [m, n] (+)= x [m, k] @ W[n, k]^T + bias for 1 <= m <= 128,
// bf16/f16, f32 accumulation. Decode (m = batch) and pruned prefills (~100 rows) are bound by the
// weight bytes; this kernel streams W through shared memory with TMA and multiplies on the tensor
// cores, so no register or CUDA-core work stands between the loads and the MMAs.
//
// Swap-AB: the weight rows are wgmma's M (64 per consumer warpgroup, 1 or 2 warpgroups = 64 or 128
// rows per block), the m inputs its N, padded to NP in {8, 16, 32, 64, 128} (the TMA fills the rows
// past m, and the k columns past K, with zeros). Both operands are K-major tiles of 64 k (128
// bytes, 128-byte swizzle): a stage holds the block's weight rows and the NP x 64 tile of x.
//
// Warp specialisation: one producer warp (lane 0 issues the TMA copies into an S-stage ring,
// "full" mbarriers with transaction counts, "empty" barriers released by the consumer warps) and
// the consumer warpgroups (4 wgmma m64nNPk16 per stage, one group in flight so that a stage is
// released as soon as the MMAs reading it are done). Stages fill ~100 KB of shared memory: two
// blocks per multiprocessor, ~100-200 KB of weight in flight per SM.
//
// Split K: a block (tile, split) covers k blocks [split * KB / S, (split + 1) * KB / S); with S > 1
// every block writes its f32 partial tile (per-thread contiguous) to a workspace, and the block that
// arrives last at the tile's counter sums the S partials in split order (deterministic), applies the
// epilogue and resets the counter. The host picks S from a cost model (weight bytes per block,
// partial bytes, waves over the resident blocks).
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

constexpr int kKB = 64;                  // k per stage: one 128-byte swizzle row of 16-bit elements
constexpr int kSmemPerBlock = 100 << 10;  // the ring fills up to this: two blocks per multiprocessor
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
constexpr int w_bytes() {
  return rows_per_block<NP>() * 128;
}
template <int NP>
constexpr int stage_bytes() {
  return w_bytes<NP>() + NP * 128;
}
template <int NP>
constexpr int stages() {
  return kSmemPerBlock / stage_bytes<NP>();
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
  float* partial;  // [tiles][splits][partial_floats] (splits > 1)
  int* counter;    // [tiles], zero between launches (splits > 1)
  int m, n, kblocks, splits;
  bool accumulate;
};

template <class T, int NP>
__global__ void __launch_bounds__(threads<NP>()) skinny_gemm_kernel(const __grid_constant__ CUtensorMap wmap,
                                                                    const __grid_constant__ CUtensorMap xmap, Args a) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using namespace sm90;
  constexpr int CW = groups<NP>(), S = stages<NP>(), SB = stage_bytes<NP>(), WB = w_bytes<NP>();
  constexpr int CT = 128 * CW;  // consumer threads
  extern __shared__ uint8_t smem_raw[];
  __shared__ int s_last;
  const uint32_t base = (uint32_t(__cvta_generic_to_shared(smem_raw)) + 1023u) & ~1023u;
  const uint32_t bars = base + S * SB;
  auto full = [&](int s) { return bars + 8 * s; };
  auto empty = [&](int s) { return bars + 8 * (S + s); };
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int tile = blockIdx.x, split = blockIdx.y;
  const int kb0 = int(int64_t(split) * a.kblocks / a.splits);
  const int kb1 = int(int64_t(split + 1) * a.kblocks / a.splits);
  const int row0 = tile * rows_per_block<NP>();

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
      for (int i = 0; i < S && kb0 + i < kb1; ++i) tma_prefetch_2d(&wmap, (kb0 + i) * kKB, row0);
      wait_for_previous_grid();
      for (int kb = kb0, it = 0; kb < kb1; ++kb, ++it) {
        const int s = it % S;
        if (it >= S) mbar_wait(empty(s), ((it / S) - 1) & 1);
        mbar_expect_tx(full(s), SB);
        tma_load_2d(base + s * SB, &wmap, full(s), kb * kKB, row0);
        tma_load_2d(base + s * SB + WB, &xmap, full(s), kb * kKB, 0);
      }
    }
    return;
  }

  wait_for_previous_grid();  // y (accumulating), the bias and the workspace come after it
  const int wg = warp >> 2;
  float d[NP / 2];
#pragma unroll
  for (int i = 0; i < NP / 2; ++i) d[i] = 0.f;
  const int iters = kb1 - kb0;
  for (int it = 0; it < iters; ++it) {
    const int s = it % S;
    mbar_wait(full(s), (it / S) & 1);
    const uint64_t da = make_desc(base + s * SB + wg * 64 * 128, 16, 1024);
    const uint64_t db = make_desc(base + s * SB + WB, 16, 1024);
    wg_fence();
#pragma unroll
    for (int ks = 0; ks < kKB / 16; ++ks) wgmma_ss<T, NP>(d, da + 2 * ks, db + 2 * ks, 1);  // +32 bytes per k-step
    wg_commit();
    wg_wait<1>();  // the MMAs of stage it - 1 are done: release it
    if (it > 0 && lane == 0) mbar_arrive(empty((it - 1) % S));
  }
  wg_wait<0>();
  fence_regs(d);

  if (a.splits > 1) {
    const size_t stride = size_t(partial_floats<NP>());
    float* mine = a.partial + (size_t(tile) * a.splits + split) * stride + size_t(tid) * (NP / 2);
#pragma unroll
    for (int i = 0; i < NP / 2; i += 4) __stcg(reinterpret_cast<float4*>(mine + i), make_float4(d[i], d[i + 1], d[i + 2], d[i + 3]));
    __threadfence();
    named_sync(1, CT);
    if (tid == 0) s_last = atomicAdd(a.counter + tile, 1) == a.splits - 1;
    named_sync(1, CT);
    if (!s_last) return;
    __threadfence();
#pragma unroll
    for (int i = 0; i < NP / 2; ++i) d[i] = 0.f;
    for (int sp = 0; sp < a.splits; ++sp) {  // split order: the same sum whichever block is last
      const float* src = a.partial + (size_t(tile) * a.splits + sp) * stride + size_t(tid) * (NP / 2);
#pragma unroll
      for (int i = 0; i < NP / 2; i += 4) {
        const float4 v = __ldcg(reinterpret_cast<const float4*>(src + i));
        d[i] += v.x, d[i + 1] += v.y, d[i + 2] += v.z, d[i + 3] += v.w;
      }
    }
    if (tid == 0) a.counter[tile] = 0;  // ready for the next launch (stream order)
  }

  // d[4j + e]: (weight row r0, input 8j + 2t + e); d[4j + 2 + e]: row r0 + 8
  T* y = static_cast<T*>(a.y);
  const T* bias = static_cast<const T*>(a.bias);
  const int g = lane >> 2, t = lane & 3;
  const int r0 = row0 + wg * 64 + (warp & 3) * 16 + g;
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
#endif
}

// Per-thread launch state: SM count and blocks per SM per instantiation, the weight maps (keyed by
// pointer and shape: weights are long-lived), and a split-K workspace per stream.
constexpr size_t kPartialBytes = size_t(16) << 20;
constexpr int kMaxCounters = 16384;
struct Workspace {
  float* partial = nullptr;
  int* counter = nullptr;
};
Workspace workspace_for(StreamHandle s);  // gemm_sm90.cu
int multiprocessors();                    // current device (cached)

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

// 2-D map of a row-major [rows, k] 16-bit matrix (row stride k), boxes of box_rows x 64, 128-byte
// swizzle, zeros out of bounds.
bool encode_map(CUtensorMap* map, const void* ptr, DType dt, int64_t rows, int64_t k, int box_rows);

// Splits of K for `tiles` row tiles of `kblocks` k blocks: the cheapest by waves x (weight bytes +
// partial traffic) per block over `slots` resident blocks.
int choose_splits(int tiles, int kblocks, int slots, double w_tile_bytes, double partial_bytes);

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
    MMATTN_CHECK(encode_map(&m, p.b, dt, p.n, p.k, R), CudaError, "skinny gemm: cuTensorMapEncodeTiled failed for W [",
                 p.n, ", ", p.k, "]");
    if (wmaps.size() > 4096) wmaps.clear();
    it = wmaps.emplace(wk, m).first;
  }
  CUtensorMap xmap;
  MMATTN_CHECK(encode_map(&xmap, p.a, dt, p.m, p.k, NP), CudaError, "skinny gemm: cuTensorMapEncodeTiled failed for x [",
               p.m, ", ", p.k, "]");

  const int tiles = int((p.n + R - 1) / R);
  const int kblocks = int((p.k + kKB - 1) / kKB);
  int splits = tiles > kMaxCounters ? 1
                                    : choose_splits(tiles, kblocks, multiprocessors() * per_sm,
                                                    double(R) * double(p.k) * 2.0, double(partial_floats<NP>()) * 4.0);
  while (splits > 1 && size_t(tiles) * splits * partial_floats<NP>() * sizeof(float) > kPartialBytes) --splits;
  Args a{};
  a.bias = p.bias;
  a.y = p.c;
  a.m = int(p.m), a.n = int(p.n), a.kblocks = kblocks, a.splits = splits;
  a.accumulate = p.accumulate;
  if (splits > 1) {
    const Workspace ws = workspace_for(s);
    a.partial = ws.partial;
    a.counter = ws.counter;
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(unsigned(tiles), unsigned(splits));
  cfg.blockDim = dim3(unsigned(threads<NP>()));
  cfg.dynamicSmemBytes = size_t(smem_bytes<NP>());
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  MMATTN_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, it->second, xmap, a));
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
