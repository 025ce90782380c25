// flash_decode_cuda: split-KV decode attention for few query rows over long keys.
// The split kernel (flash_decode.cuh, instantiated per head dim in flash_decode_d<D>.cu) writes
// one partial per (row, block); when a unit's partials are few its last block merges them (one
// launch), else decode_combine_kernel merges them into out, LSE and class mass.
// Costs: K and V are read once per kv head (all query heads of a group are one M tile); the
// partials are B * Hq * Lq * S * (D + 8) floats, written once and read once (S = blocks per unit).
// Modulation off costs nothing (MOD = false instantiations; head_gain alone needs no per-key work).
// Views whose rows are not 16-byte aligned go to flash_prefill_cuda.
// CUDA graphs: the per-stream partial and counter buffers only grow (cuda_alloc + memset), so run
// the largest shape once on the stream before capturing; the counters are left at zero by every
// fused launch, so replays need no reset.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <unordered_map>

#include "attention/attention_kernels.h"
#include "attention/flash_decode.cuh"
#include "core/cuda_reduce.cuh"
#include "core/stream_scratch.h"

namespace mmattn {

namespace decode {
namespace {

constexpr int kCombineThreads = 256;
constexpr int kCombineUnroll = 4;
constexpr int kMinTilesPerSplit = 2;

struct CombineArgs {
  AttentionParams p;
  int splits = 1;
  const float* ws_stats = nullptr;
  const float* ws_acc = nullptr;
};

// One block per output row (b, h, i): merges the S block partials (m_s, l_s, lw_s, cs_s, acc_s) with
// weights exp(m_s - M), then normalises (by l, or by lw when renormalising), applies the head
// gain and writes out, LSE and class mass. Dead partials (m_s = -inf) are skipped unread.
template <class T>
__global__ void __launch_bounds__(kCombineThreads) decode_combine_kernel(const CombineArgs a) {
  const AttentionParams& p = a.p;
  extern __shared__ float sw[];  // [S] merge weights
  __shared__ float scratch[32];
  __shared__ float4 part[kCombineThreads / 32][32];
  const int64_t row = blockIdx.x;
  const int i = int(row % p.lq);
  const int64_t bh = row / p.lq;
  const int h = int(bh % p.hq);
  const int64_t b = bh / p.hq;
  const int S = a.splits, D = p.d;
  const float* st = a.ws_stats + row * S * kStatFloats;

  float mx = -INFINITY;
  for (int s = threadIdx.x; s < S; s += blockDim.x) mx = fmaxf(mx, st[s * kStatFloats]);
  const float M = block_max(mx, scratch);
  const bool renorm = p.renormalize && p.post_weight && p.key_class && i >= p.first_modulated_row;
  const bool want_cs = p.class_mass != nullptr;
  float L = 0.f, LW = 0.f, CS[4] = {0.f, 0.f, 0.f, 0.f};
  for (int s = threadIdx.x; s < S; s += blockDim.x) {
    const float4 x = *reinterpret_cast<const float4*>(st + s * kStatFloats);
    const float w = x.x == -INFINITY ? 0.f : __expf(x.x - M);
    sw[s] = w;
    if (w != 0.f) {
      L += w * x.y;
      LW += w * x.z;
      if (want_cs) {
        const float4 y = *reinterpret_cast<const float4*>(st + s * kStatFloats + 4);
        CS[0] += w * x.w, CS[1] += w * y.x, CS[2] += w * y.y, CS[3] += w * y.z;
      }
    }
  }
  L = block_sum(L, scratch);  // its barriers also publish sw[]
  if (renorm) LW = block_sum(LW, scratch);
  if (want_cs)
    for (int cc = 0; cc < 4; ++cc) CS[cc] = block_sum(CS[cc], scratch);
  const float norm = renorm ? LW : L;
  const float inv = norm > 0.f ? 1.f / norm : 0.f;

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const int d = 4 * lane;
  float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
  if (d < D) {
    const float* ap = a.ws_acc + row * S * D + d;
    for (int s0 = warp; s0 < S; s0 += nwarps * kCombineUnroll) {
      float w[kCombineUnroll];
      float4 x[kCombineUnroll];
#pragma unroll
      for (int u = 0; u < kCombineUnroll; ++u) {
        const int s = s0 + u * nwarps;
        w[u] = s < S ? sw[s] : 0.f;
        x[u] = w[u] != 0.f ? *reinterpret_cast<const float4*>(ap + int64_t(s) * D) : make_float4(0.f, 0.f, 0.f, 0.f);
      }
#pragma unroll
      for (int u = 0; u < kCombineUnroll; ++u) {
        o.x += w[u] * x[u].x, o.y += w[u] * x[u].y, o.z += w[u] * x[u].z, o.w += w[u] * x[u].w;
      }
    }
  }
  part[warp][lane] = o;
  __syncthreads();
  if (warp == 0 && d < D) {
    for (int k = 1; k < nwarps; ++k) {
      const float4 y = part[k][lane];
      o.x += y.x, o.y += y.y, o.z += y.z, o.w += y.w;
    }
    const float f = inv * (p.head_gain ? p.head_gain[h] : 1.f);
    T* op = static_cast<T*>(p.out) + p.out_offset(b, i, h) + d;
    Vec<T, 4> v;
    v.v[0] = from_f32<T>(o.x * f), v.v[1] = from_f32<T>(o.y * f);
    v.v[2] = from_f32<T>(o.z * f), v.v[3] = from_f32<T>(o.w * f);
    *reinterpret_cast<Vec<T, 4>*>(op) = v;
  }
  if (threadIdx.x == 0) {
    if (p.lse) p.lse[p.lse_offset(b, h, i)] = L > 0.f ? M + logf(L) : -INFINITY;
    if (want_cs) {
#pragma unroll
      for (int cc = 0; cc < 4; ++cc)
        if (cc < p.num_classes) p.class_mass[row * p.num_classes + cc] = CS[cc] * inv;
    }
  }
}

// Per-stream scratch (core/stream_scratch.h): the partials, and the counters, zero-initialised (the
// fused kernel leaves every counter at zero again).
float* partials(size_t bytes, StreamHandle s) {
  static const char owner = 0;
  return static_cast<float*>(stream_scratch(&owner, s, bytes));
}
int* counters(size_t n, StreamHandle s) {
  static const char owner = 0;
  return static_cast<int*>(stream_scratch(&owner, s, n * sizeof(int), /*zeroed=*/true));
}

struct DeviceInfo {
  int sms = 0;
};
const DeviceInfo& device_info() {
  static DeviceInfo info[16];
  static std::once_flag once[16];
  int dev = 0;
  MMATTN_CUDA_CHECK(cudaGetDevice(&dev));
  dev = dev < 16 ? dev : 15;
  std::call_once(once[dev], [&] {
    MMATTN_CUDA_CHECK(cudaDeviceGetAttribute(&info[dev].sms, cudaDevAttrMultiProcessorCount, dev));
  });
  return info[dev];
}

bool debug_print() {
  static const bool on = [] {
    const char* e = std::getenv("MMATTN_DECODE_DEBUG");
    return e && e[0] == '1';
  }();
  return on;
}

using LaunchFn = void (*)(const DecodeArgs&, dim3, StreamHandle);
using OccFn = int (*)();

template <class T, bool MOD>
void pick_kernel(int d, LaunchFn& launch, OccFn& occ) {
  switch (d) {
#define MMATTN_DECODE_CASE(D)                   \
  case D:                                       \
    launch = &launch_decode_split<T, D, MOD>;   \
    occ = &decode_split_blocks_per_sm<T, D, MOD>; \
    return;
    MMATTN_DECODE_CASE(64)
    MMATTN_DECODE_CASE(72)
    MMATTN_DECODE_CASE(80)
    MMATTN_DECODE_CASE(96)
    MMATTN_DECODE_CASE(128)
#undef MMATTN_DECODE_CASE
    default: MMATTN_THROW(UnsupportedError, "flash_decode: head_dim ", d, " is not supported (64, 72, 80, 96, 128)");
  }
}

// Splits per unit: the grid should fill the GPU in whole waves of resident blocks while each
// split keeps enough keys to amortise its partial. Cost model in "tiles of 16 keys per warp":
// waves * (tiles per split + setup), minimised over the blocks per unit.
int choose_blocks_per_unit(int64_t units, int64_t tiles, int resident_blocks) {
  const int64_t max_bx = std::max<int64_t>(1, (tiles + kWarps * kMinTilesPerSplit - 1) / (kWarps * kMinTilesPerSplit));
  int64_t best_bx = 1;
  double best = 1e300;
  for (int64_t bx = 1; bx <= std::min<int64_t>(max_bx, 1024); ++bx) {
    const int64_t blocks = units * bx;
    const int64_t waves = (blocks + resident_blocks - 1) / resident_blocks;
    const int64_t tps = (tiles + bx * kWarps - 1) / (bx * kWarps);
    const double cost = double(waves) * (double(tps) + 1.5);
    if (cost < best - 1e-9) best = cost, best_bx = bx;
  }
  return int(best_bx);
}

}  // namespace
}  // namespace decode

void flash_decode_cuda(const AttentionParams& p, StreamHandle s) {
  using namespace decode;
  MMATTN_CHECK(p.dtype == DType::BF16 || p.dtype == DType::F16, UnsupportedError,
               "flash_decode: dtype ", dtype_name(p.dtype), " (bf16/f16 only)");
  MMATTN_CHECK(p.hkv >= 1 && p.hq % p.hkv == 0, ShapeError, "flash_decode: Hq ", p.hq, " vs Hkv ", p.hkv);
  // 16-byte vector loads need 16-byte aligned rows; views that are not (odd strides or offsets,
  // rare) go to the prefill kernel, which supports every layout.
  const auto aligned = [](const void* ptr, int64_t s0, int64_t s1, int64_t s2) {
    return (reinterpret_cast<uintptr_t>(ptr) % 16 == 0) && s0 % 8 == 0 && s1 % 8 == 0 && s2 % 8 == 0;
  };
  if (!(aligned(p.q, p.q_sb, p.q_sl, p.q_sh) && aligned(p.k, p.k_sb, p.k_sl, p.k_sh) &&
        aligned(p.v, p.v_sb, p.v_sl, p.v_sh))) {
    flash_prefill_cuda(p, s);
    return;
  }

  DecodeArgs a;
  a.p = p;
  a.p.resolve_output_strides();
  a.group = p.hq / p.hkv;
  a.rows = p.lq * a.group;
  a.row_groups = (a.rows + kRowsPerUnit - 1) / kRowsPerUnit;
  const bool mod = p.has_logit_mod() || p.has_post_mod() || p.class_mass;  // head_gain alone: combine only

  LaunchFn launch = nullptr;
  OccFn occ = nullptr;
  if (p.dtype == DType::BF16) {
    if (mod) pick_kernel<__nv_bfloat16, true>(p.d, launch, occ);
    else pick_kernel<__nv_bfloat16, false>(p.d, launch, occ);
  } else {
    if (mod) pick_kernel<__half, true>(p.d, launch, occ);
    else pick_kernel<__half, false>(p.d, launch, occ);
  }

  const int64_t units = int64_t(p.batch) * p.hkv * a.row_groups;
  const int64_t tiles = (int64_t(p.lk) + kTileKeys - 1) / kTileKeys;
  const int resident = device_info().sms * occ();
  static const int forced_bx = [] {  // MMATTN_DECODE_BX=N: N blocks per unit (benchmark A/B)
    const char* e = std::getenv("MMATTN_DECODE_BX");
    return e ? std::max(0, std::atoi(e)) : 0;
  }();
  const int bx = forced_bx ? int(std::min<int64_t>(forced_bx, std::max<int64_t>(1, tiles / kWarps)))
                           : choose_blocks_per_unit(units, tiles, resident);
  a.chunk = int((tiles + int64_t(bx) * kWarps - 1) / (int64_t(bx) * kWarps)) * kTileKeys;
  MMATTN_CHECK(p.hkv * a.row_groups <= 65535 && p.batch <= 65535, UnsupportedError, "flash_decode: grid too large (B ",
               p.batch, ", Hkv ", p.hkv, ")");
  // Few partials per unit: the last block of each unit combines them (no second launch); one block
  // per unit (bx = 1, always fused) writes its result directly, without partials.
  a.fused = std::min(a.rows, kRowsPerUnit) * bx <= kFusedMaxPartials;

  const int64_t out_rows = int64_t(p.batch) * p.hq * p.lq;
  const size_t stat_floats = size_t(out_rows) * bx * kStatFloats;
  const size_t acc_floats = size_t(out_rows) * bx * p.d;
  float* ws = partials((stat_floats + acc_floats) * sizeof(float), s);
  a.ws_stats = ws;
  a.ws_acc = ws + stat_floats;
  if (a.fused) a.counters = counters(size_t(units), s);
  if (debug_print())
    std::fprintf(stderr,
                 "flash_decode: B %d Lq %d Lk %d Hq %d Hkv %d D %d mod %d: units %lld, %d blocks/SM x %d SMs, "
                 "grid.x %d, %d keys per warp, fused %d\n",
                 p.batch, p.lq, p.lk, p.hq, p.hkv, p.d, int(mod), (long long)units, occ(), device_info().sms, bx,
                 a.chunk, int(a.fused));
  launch(a, dim3(unsigned(bx), unsigned(p.hkv * a.row_groups), unsigned(p.batch)), s);
  if (a.fused) return;

  CombineArgs ca;
  ca.p = a.p;
  ca.splits = bx;
  ca.ws_stats = a.ws_stats;
  ca.ws_acc = a.ws_acc;
  dispatch_float(p.dtype, "flash_decode", [&]<class T>() {
    if constexpr (!std::is_same_v<T, float>) {
      decode_combine_kernel<T><<<unsigned(out_rows), kCombineThreads, size_t(bx) * sizeof(float), s>>>(ca);
      MMATTN_CUDA_CHECK_LAUNCH("flash_decode combine");
    }
  });
}

}  // namespace mmattn
