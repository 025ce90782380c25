#pragma once
// Prefill-sized products that stream the weight: y [m, n] (+)= x [m, k] @ W [n, k]^T + bias for
// kGemvMaxRows < m <= kClusterGemmMaxRows (bf16/f16, f32 accumulation) — built for the decoder's
// products in a pruned request (~104 rows), where the weight bytes bound the time. linear.h says
// when gemm_cuda routes here (by default the long-k products, where the streaming kernel beats
// cuBLASLt; bench/NOTES.md, sessions 13 and 18).
//
// Tiles (both kernels): a block owns kRows = 128 weight rows (output columns), every input row (m
// padded to MT = 32, 64 or 128) and one contiguous range of K; the `split` blocks of a row tile form
// a thread-block cluster along grid y (the K ranges in order), so a product of n = 4096 still
// spreads over the GPU (32 tiles x 3-4 blocks) and x is re-read from L2 only n / 128 times.
// Shared-memory tiles use the 128-byte swizzle of wgmma's K-major operands (128-byte rows, 16-byte
// chunk c of row r stored at c ^ (r % 8); conflict-free for ldmatrix too). Products are swap-AB:
// the weight rows are the M side.
// - The streaming kernel (sm_90a; stream_gemm_kernel below has its own description): each consumer
//   warpgroup streams its own 64 weight rows, x comes by TMA from a producer warp.
// - The block-ring kernel (every other sm_90+ build): the classic multistage cp.async ring
//   (kStages stages of 64 k: the weight tile [128][64] and the x tile [MT][64]), all 8 warps copy,
//   a block barrier per stage; in sm_90a builds warpgroup g runs wgmma m64n(MT)k16 on weight rows
//   64 g .. + 63, elsewhere mma.sync m16n8k16, warp w on weight rows 32 (w % 4) .. + 31 and input
//   rows MT / 2 (w / 4) .. + MT / 2 - 1, fragments double-buffered.
// Split K (finish()): each block leaves its f32 partial tile in its own shared memory; after a
// cluster barrier, block r of the cluster sums the tile's input rows [r * per, (r + 1) * per) over
// the blocks in rank order (distributed shared memory; deterministic), adds the bias (and y,
// accumulating: one rounding, as the gemv) and writes y; a second barrier keeps every partial alive
// until it is read.
// Programmatic dependent launch: a parameter weight's first stages are copied before the wait for
// the kernel ahead (x and y after it), as the gemv's tensor-core kernel does.
#include <cooperative_groups.h>

#include <cstdint>
#include <functional>
#include <type_traits>
#include <unordered_map>

#include "core/cuda_reduce.cuh"
#include "core/cuda_types.cuh"
#include "core/mma.cuh"
#include "core/ops/linear.h"
#include "core/ops/rope.cuh"
#include "core/sm90.cuh"

namespace mmattn::cluster_gemm {

constexpr int kThreads = 256;
constexpr int kRows = 128;    // weight rows per block
constexpr int kMaxSplit = 8;  // portable cluster size
constexpr int kOutLd = kRows + 4;  // floats per input row of the partial tile (conflict-free stores)

struct Args {
  const void* x;
  const void* w;
  const void* bias;
  void* y;
  int m, n, k;
  bool accumulate;
  bool weight_static;
  int split;             // blocks per row tile (the cluster's size along y)
  int stages_per_block;  // k stages of each block's range (the last block's may be shorter)
  // A fused q/k/v projection (rope_cos null: off; see cluster_qkv_rope_cuda in linear.h): output
  // columns [0, sec1) are q, [sec1, sec2) k, [sec2, n) v, section s written at ys[s] + row * lds[s]
  // + (column - section start); q and k rotated (rotate-half pairs within each head of head_dim
  // columns; input row r by row r of rope_cos / rope_sin, f32 [m, head_dim / 2]).
  const float* rope_cos = nullptr;
  const float* rope_sin = nullptr;
  void* ys[3] = {};
  int64_t lds[3] = {};
  int sec1 = 0, sec2 = 0, head_dim = 0;
};

// The dynamic shared memory from its first 1024-byte boundary (wgmma's swizzle atom; the kernels'
// byte counts include the 1 KB of slack).
__device__ __forceinline__ unsigned char* align_1024(unsigned char* p) {
  return p + ((1024 - (smem_u32(p) & 1023)) & 1023);
}

constexpr int kStageK = 64;  // k per stage: 128 bytes of each row (the 128-byte swizzle's row)
constexpr int kStages = 6;   // ring depth (kStages - 1 stages in flight)

template <int NT>
constexpr int stage_bytes() {
  return (kRows + 16 * NT) * kStageK * 2;
}
template <int NT>
constexpr int smem_bytes() {  // + 1 KB: the ring is aligned to 1024 bytes (wgmma's swizzle atom)
  constexpr int ring = kStages * stage_bytes<NT>(), part = 16 * NT * kOutLd * 4;
  return (ring > part ? ring : part) + 1024;
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
// One accumulator quad into the partial tile [MT][kOutLd]: weight rows r and r + 8, input rows c and
// c + 1 (both kernels' fragment layout).
__device__ __forceinline__ void put_partial(float* part, int r, int c, float v0, float v1, float v2, float v3) {
  part[c * kOutLd + r] = v0;
  part[(c + 1) * kOutLd + r] = v1;
  part[c * kOutLd + r + 8] = v2;
  part[(c + 1) * kOutLd + r + 8] = v3;
}

// A wgmma m64n(MT) accumulator (warp wq of warpgroup wg: weight rows 64 wg + 16 wq .. + 15, every
// input row) into the partial tile.
template <int N>
__device__ __forceinline__ void put_wgmma_partials(float* part, int wg, int wq, int lane, const float (&d)[N]) {
#pragma unroll
  for (int j = 0; j < N / 4; ++j)
    put_partial(part, wg * 64 + 16 * wq + (lane >> 2), 8 * j + 2 * (lane & 3), d[4 * j], d[4 * j + 1], d[4 * j + 2],
                d[4 * j + 3]);
}

// Weight rows q[j] .. q[j] + 3 of input row c, for each j, summed over the cluster's partial tiles in
// rank order (distributed shared memory; deterministic).
template <int N>
__device__ __forceinline__ void sum_partials(const Args& a, float* part, int c, const int (&q)[N], float4 (&s)[N]) {
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
#pragma unroll
  for (int j = 0; j < N; ++j) s[j] = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int r = 0; r < a.split; ++r) {
    const float* src = a.split > 1 ? cluster.map_shared_rank(part, r) : part;
#pragma unroll
    for (int j = 0; j < N; ++j) {
      const float4 v = *reinterpret_cast<const float4*>(src + c * kOutLd + q[j]);
      s[j].x += v.x, s[j].y += v.y, s[j].z += v.z, s[j].w += v.w;
    }
  }
}

// finish()'s fused q/k/v form: each thread 4 consecutive rotate-half pairs (i, i + head_dim / 2) of
// one head of one input row; the sums, bias and rounding as the plain form, then apply_rope_'s
// rotation (core/ops/rope.cuh: the same roundings) for q and k, each section to its own rows.
template <class T>
__device__ __forceinline__ void finish_qkv_rope(const Args& a, float* part, int row0, int c_begin, int c_end) {
  const int half = a.head_dim / 2;
  const T* bias = static_cast<const T*>(a.bias);
  for (int idx = threadIdx.x; idx < (c_end - c_begin) * (kRows / 8); idx += int(blockDim.x)) {
    const int c = c_begin + idx / (kRows / 8), pr = 4 * (idx % (kRows / 8));  // pairs pr .. pr + 3 of the tile
    const int q0 = (pr / half) * a.head_dim + pr % half, q1 = q0 + half;      // their columns in the tile
    const int col0 = row0 + q0, col1 = row0 + q1, i = pr % half;
    if (col1 >= a.n) continue;  // (n is whole heads)
    float4 s[2];
    sum_partials(a, part, c, {q0, q1}, s);
    const float4 s0 = s[0], s1 = s[1];
    const int sec = col0 < a.sec1 ? 0 : col0 < a.sec2 ? 1 : 2;
    const int start = sec == 0 ? 0 : sec == 1 ? a.sec1 : a.sec2;
    T* dst = static_cast<T*>(a.ys[sec]) + int64_t(c) * a.lds[sec] - start;
    const float x0[4] = {s0.x, s0.y, s0.z, s0.w}, x1[4] = {s1.x, s1.y, s1.z, s1.w};
    Vec<T, 4> o0, o1;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      T t0 = from_f32<T>(x0[e] + (bias ? to_f32(bias[col0 + e]) : 0.f));
      T t1 = from_f32<T>(x1[e] + (bias ? to_f32(bias[col1 + e]) : 0.f));
      if (sec < 2) {
        float y0, y1;
        const int64_t at = int64_t(c) * half + i + e;
        rope_pair<T, RopeStyle::HalfSplit>(to_f32(t0), to_f32(t1), a.rope_cos[at], a.rope_sin[at], y0, y1);
        t0 = from_f32<T>(y0), t1 = from_f32<T>(y1);
      }
      o0.v[e] = t0, o1.v[e] = t1;
    }
    *reinterpret_cast<Vec<T, 4>*>(dst + col0) = o0;
    *reinterpret_cast<Vec<T, 4>*>(dst + col1) = o1;
  }
}

// After the main loop: every block of the cluster holds its f32 partial tile part [MT][kOutLd] (all
// threads past a block barrier); block `rank` sums input rows [rank * per, (rank + 1) * per) of the
// tile over the blocks in rank order (sum_partials), adds the bias (and y, accumulating: one
// rounding, as the gemv) and writes y; a second cluster barrier keeps every partial alive until it
// is read.
template <class T, int MT>
__device__ __forceinline__ void finish(const Args& a, float* part, int rank, int row0) {
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  if (a.split > 1)
    cluster.sync();
  else
    __syncthreads();

  // This block's input rows of the tile; each thread 4 consecutive outputs of one input row.
  const int ms = min(a.m, MT);
  const int per = (ms + a.split - 1) / a.split;
  const int c_begin = rank * per, c_end = min(ms, c_begin + per);
  if (a.rope_cos) {
    finish_qkv_rope<T>(a, part, row0, c_begin, c_end);
    if (a.split > 1) cluster.sync();  // the other blocks may still read this block's partials
    return;
  }
  T* y = static_cast<T*>(a.y);
  const T* bias = static_cast<const T*>(a.bias);
  const bool vec = (a.n & 3) == 0;
  for (int idx = threadIdx.x; idx < (c_end - c_begin) * (kRows / 4); idx += int(blockDim.x)) {
    const int c = c_begin + idx / (kRows / 4), q = 4 * (idx % (kRows / 4));
    const int col = row0 + q;
    if (col >= a.n) continue;
    float4 s[1];
    sum_partials(a, part, c, {q}, s);
    const float o[4] = {s[0].x, s[0].y, s[0].z, s[0].w};
    T* yr = y + int64_t(c) * a.n + col;
    auto out = [&](int e, T prev) {  // T(acc + bias (+ y)): one rounding
      float v = o[e] + (bias ? to_f32(bias[col + e]) : 0.f);
      if (a.accumulate) v += to_f32(prev);
      return from_f32<T>(v);
    };
    if (vec && col + 4 <= a.n) {
      Vec<T, 4> v{};  // (y's values when accumulating)
      if (a.accumulate) v = *reinterpret_cast<const Vec<T, 4>*>(yr);
#pragma unroll
      for (int e = 0; e < 4; ++e) v.v[e] = out(e, v.v[e]);
      *reinterpret_cast<Vec<T, 4>*>(yr) = v;
    } else {
      for (int e = 0; e < 4 && col + e < a.n; ++e) yr[e] = out(e, a.accumulate ? yr[e] : T());
    }
  }
  if (a.split > 1) cluster.sync();  // the other blocks may still read this block's partials
}

#endif

template <class T, int NT>
__global__ void __launch_bounds__(kThreads, 1) cluster_gemm_kernel(Args a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900  // clusters (built(): the host never launches it otherwise)
  namespace cg = cooperative_groups;
  constexpr int MT = 16 * NT;
  constexpr int kWBytes = kRows * kStageK * 2;
  constexpr int kStageBytes = stage_bytes<NT>();
  constexpr int kChunks = kStageK / 8, kRowStep = kThreads / kChunks;  // 16-byte chunks per row; copy rows per pass
  extern __shared__ __align__(128) unsigned char smem_raw[];
  unsigned char* smem = align_1024(smem_raw);
  const uint32_t base = smem_u32(smem);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row0 = blockIdx.x * kRows;
  const int rank = blockIdx.y;  // = the block's rank in its cluster (cluster dims (1, split, 1))
  const int kstages = (a.k + kStageK - 1) / kStageK;
  const int s_begin = rank * a.stages_per_block;
  const int nst = max(0, min(kstages, s_begin + a.stages_per_block) - s_begin);
  const T* w = static_cast<const T*>(a.w);
  const T* x = static_cast<const T*>(a.x);

  // Copy roles: chunk cc (8 elements) of rows cr + kRowStep i: a warp instruction copies 512
  // contiguous bytes split over 32 / kChunks rows. Sources advance by kStageK per stage from one base
  // pointer each (32-bit row offsets); destinations are fixed per slot.
  constexpr int kWCopies = kRows / kRowStep, kXCopies = (MT + kRowStep - 1) / kRowStep;
  const int cc = threadIdx.x % kChunks, cr = threadIdx.x / kChunks;
  auto chunk = [](int r, int c) { return uint32_t(r * kStageK * 2 + ((c ^ (r & 7)) << 4)); };
  const int k0 = s_begin * kStageK + cc * 8;  // this thread's first k
  const T* wbase = w + int64_t(row0) * a.k + k0;
  const T* xbase = x + k0;
  int woff[kWCopies];
#pragma unroll
  for (int i = 0; i < kWCopies; ++i) woff[i] = min(cr + kRowStep * i, a.n - 1 - row0) * a.k;
  auto issue = [&](int st, bool with_w, bool with_x) {
    if (st >= nst) return;
    const bool in = k0 + st * kStageK < a.k;
    const uint32_t dst = base + uint32_t((st % kStages) * kStageBytes);
    if (with_w)
#pragma unroll
      for (int i = 0; i < kWCopies; ++i)
        cp_async16(dst + chunk(cr + kRowStep * i, cc), in ? wbase + woff[i] + st * kStageK : w, in);
    if (with_x)
#pragma unroll
      for (int i = 0; i < kXCopies; ++i) {
        const int r = cr + kRowStep * i;
        if (r >= MT) break;
        const bool ok = in && r < a.m;
        cp_async16(dst + kWBytes + chunk(r, cc), ok ? xbase + r * a.k + st * kStageK : x, ok);
      }
  };

  sm90::allow_next_grid();
  if (a.weight_static) {
    // A parameter weight: its first stages are copied while the kernel ahead finishes (they join
    // the first commit group below).
#pragma unroll
    for (int st = 0; st < kStages - 1; ++st) issue(st, true, false);
    sm90::wait_for_previous_grid();  // x and y (when accumulating) come from the kernels before
#pragma unroll
    for (int st = 0; st < kStages - 1; ++st) {
      issue(st, false, true);
      cp_async_commit();
    }
  } else {
    if (cc == 0 && nst > 0)  // L2 hints for the first stages: one per 128-byte row segment
#pragma unroll
      for (int i = 0; i < kWCopies; ++i)
        for (int st = 0; st < min(nst, kStages - 1); ++st)
          if (k0 + st * kStageK < a.k) asm volatile("prefetch.global.L2 [%0];" ::"l"(wbase + woff[i] + st * kStageK));
    sm90::wait_for_previous_grid();  // W, x and y may come from the kernels before
#pragma unroll
    for (int st = 0; st < kStages - 1; ++st) {
      issue(st, true, true);
      cp_async_commit();
    }
  }

  // Top of stage st (both paths): its copies have landed everywhere and stage st - 1 is consumed,
  // so that slot refills with stage st + kStages - 1; returns the slot's address.
  auto begin_stage = [&](int st) {
    cp_async_wait<kStages - 2>();  // this thread's copies of stage st have landed
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    sm90::fence_proxy_async();  // (visible to wgmma's async proxy)
#endif
    __syncthreads();  // everyone's; and stage st - 1 is consumed, so its slot may refill
    issue(st + kStages - 1, true, true);
    cp_async_commit();  // (an empty group past the end keeps the group count uniform)
    return base + uint32_t((st % kStages) * kStageBytes);
  };
  // After the main loop the ring is free: the partial tile [MT][kOutLd] f32 takes its place.
  float* const part = reinterpret_cast<float*>(smem);
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  // sm_90a: warpgroup wg multiplies weight rows 64 wg .. + 63 by every input row with wgmma
  // m64n(MT)k16, both operands K-major in the 128-byte swizzle the copies wrote (the generic-proxy
  // writes are made visible to wgmma's async proxy before the block barrier).
  const int wg = warp >> 2, wq = warp & 3;
  float d[MT / 2];
#pragma unroll
  for (int i = 0; i < MT / 2; ++i) d[i] = 0.f;
  for (int st = 0; st < nst; ++st) {
    const uint32_t ws = begin_stage(st);
    const uint64_t da = sm90::make_desc(ws + uint32_t(wg * 64 * 128), 16, 1024);
    const uint64_t db = sm90::make_desc(ws + kWBytes, 16, 1024);
    sm90::wg_fence();
#pragma unroll
    for (int ks = 0; ks < kStageK / 16; ++ks) sm90::wgmma_ss<T, MT>(d, da + 2 * ks, db + 2 * ks, 1);  // +32 bytes per k-step
    sm90::wg_commit();
    sm90::wg_wait<0>();
    sm90::fence_regs(d);
  }
  cp_async_wait<0>();
  __syncthreads();
  put_wgmma_partials(part, wg, wq, lane, d);
#else
  // ldmatrix row addresses, relative to a slot's weight / x tile: rows r with r % 8 == lane % 8,
  // so chunk c of step ks sits at (the step-0 offset) ^ (ks << 5) (the swizzle's XOR and the step's
  // chunk pair touch disjoint bits).
  const int wr = (warp & 3) * 32;         // this warp's weight rows
  const int wt = (warp >> 2) * (MT / 2);  // this warp's input rows
  const uint32_t lo_a = uint32_t(((lane >> 4) ^ (lane & 7)) << 4), lo_b = uint32_t((((lane >> 3) & 1) ^ (lane & 7)) << 4);
  uint32_t a_off[2], b_off[(NT + 1) / 2];
#pragma unroll
  for (int i = 0; i < 2; ++i) a_off[i] = uint32_t((wr + 16 * i + (lane & 15)) * kStageK * 2) + lo_a;
#pragma unroll
  for (int j = 0; j < NT; j += 2) {
    const int r = wt + 8 * j + (lane & 7) + (j + 1 < NT ? ((lane >> 4) << 3) : 0);
    b_off[j / 2] = uint32_t(r * kStageK * 2) + lo_b;
  }
  float acc[2][NT][4];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

  // Fragments of step ks of one slot (double-buffered across steps: step ks + 1's loads are in
  // flight during step ks's products).
  auto load = [&](uint32_t ws, int ks, uint32_t (&af)[2][4], uint32_t (&bf)[NT][2]) {
    const uint32_t step = uint32_t(ks << 5), xs = ws + kWBytes;
#pragma unroll
    for (int i = 0; i < 2; ++i) ldmatrix_x4(af[i], ws + (a_off[i] ^ step));
#pragma unroll
    for (int j = 0; j < NT; j += 2) {
      if (j + 1 < NT) {
        uint32_t b[4];
        ldmatrix_x4(b, xs + (b_off[j / 2] ^ step));
        bf[j][0] = b[0], bf[j][1] = b[1], bf[j + 1][0] = b[2], bf[j + 1][1] = b[3];
      } else {
        ldmatrix_x2(bf[j], xs + (b_off[j / 2] ^ step));
      }
    }
  };
  constexpr int kSteps = kStageK / 16;
  for (int st = 0; st < nst; ++st) {
    const uint32_t ws = begin_stage(st);
    uint32_t af[2][2][4], bf[2][NT][2];
    load(ws, 0, af[0], bf[0]);
#pragma unroll
    for (int ks = 0; ks < kSteps; ++ks) {
      if (ks + 1 < kSteps) load(ws, ks + 1, af[(ks + 1) & 1], bf[(ks + 1) & 1]);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < NT; ++j) mma16816<T>(acc[i][j], af[ks & 1][i], bf[ks & 1][j][0], bf[ks & 1][j][1]);
    }
  }
  cp_async_wait<0>();
  __syncthreads();
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < NT; ++j)
      put_partial(part, wr + 16 * i + (lane >> 2), wt + 8 * j + 2 * (lane & 3), acc[i][j][0], acc[i][j][1],
                  acc[i][j][2], acc[i][j][3]);
#endif
  finish<T, MT>(a, part, rank, row0);
#else
  __trap();  // never launched: built() requires code for sm_90+
#endif
}

// The streaming kernel (sm_90a): the same tiles, cluster split and epilogue, but no block-wide ring.
// Each consumer warpgroup streams its own 64 weight rows into kWSlots stages of its own (a warp
// instruction copies 128 kSub contiguous bytes of each of 4 / kSub rows: cp.async, 16 bytes a lane)
// and waits only for its own warpgroup (cp.async wait + proxy fence + a 128-thread named barrier per
// stage) before its wgmma m64n(MT)k16; x (every input row) comes by TMA, one 64-k atom per box, from
// a producer warp into a kXSlots-atom ring on full / empty mbarriers: the one thing the two
// warpgroups share.
// Ring sizes: the best of a sweep on the H100 (bench/NOTES.md, session 18; in-stream at 104 rows):
// 256-byte runs (kSub 2) beat 128 and 512, three weight stages per warpgroup beat two, four and
// five (more bytes in flight was slower), and x's ring is deep enough at six atoms.
template <int NT>
struct Stream {
  static constexpr int MT = 16 * NT;
  static constexpr int kSub = 2;  // 64-k atoms per stage: 128 kSub bytes of each weight row
  static constexpr int kStageK = 64 * kSub;
  static constexpr int kWSlots = 3;  // weight stages per warpgroup (kWSlots - 1 in flight)
  static constexpr int kXSlots = 6;  // x atoms (64 k of every input row), shared
  static constexpr int kWAtom = 64 * 128, kXAtom = MT * 128;
  static constexpr int kWStage = kSub * kWAtom;
  static constexpr int kWRing = 2 * kWSlots * kWStage;
  static constexpr int kData = kWRing + kXSlots * kXAtom;
  static constexpr int kPart = MT * kOutLd * 4;
  static constexpr int kThreads = 2 * 128 + 32;
  static constexpr int kSmem = (kData > kPart ? kData : kPart) + 16 * kXSlots + 1024;
};

static_assert(Stream<8>::kSmem <= 227 * 1024, "the streaming kernel's widest tile must fit an H100 block");

template <class T, int NT>
__global__ void __launch_bounds__(Stream<NT>::kThreads, 1)
    stream_gemm_kernel(const __grid_constant__ CUtensorMap xmap, Args a) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using C = Stream<NT>;
  constexpr int MT = C::MT;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  unsigned char* smem = align_1024(smem_raw);
  const uint32_t base = smem_u32(smem), xbase = base + C::kWRing, bars = base + C::kData;
  auto full_x = [&](int s) { return bars + uint32_t(8 * s); };
  auto empty_x = [&](int s) { return bars + uint32_t(8 * (C::kXSlots + s)); };
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row0 = blockIdx.x * kRows, rank = blockIdx.y;
  const int kstages = (a.k + C::kStageK - 1) / C::kStageK;
  const int s_begin = rank * a.stages_per_block;
  const int nst = max(0, min(kstages, s_begin + a.stages_per_block) - s_begin);
  if (threadIdx.x == 0) {
    for (int s = 0; s < C::kXSlots; ++s) sm90::mbar_init(full_x(s), 1), sm90::mbar_init(empty_x(s), 8);
    sm90::mbar_init_fence();
  }
  __syncthreads();
  sm90::allow_next_grid();
  float* const part = reinterpret_cast<float*>(smem);
  if (warp == 8) {  // producer: x's stages by TMA (zeros past m and k)
    sm90::wait_for_previous_grid();  // every lane: all of them reach finish(), which reads and writes y
    if (lane == 0) {
      for (int at = 0; at < nst * C::kSub; ++at) {
        const int slot = at % C::kXSlots;
        if (at >= C::kXSlots) sm90::mbar_wait(empty_x(slot), uint32_t((at / C::kXSlots - 1) & 1));
        sm90::mbar_expect_tx(full_x(slot), C::kXAtom);
        sm90::tma_load_2d(xbase + uint32_t(slot * C::kXAtom), &xmap, full_x(slot), s_begin * C::kStageK + 64 * at, 0);
      }
    }
    __syncthreads();  // (the consumers' barrier after their main loop)
  } else {
    const int wg = warp >> 2, wq = warp & 3;
    const T* w = static_cast<const T*>(a.w);
    // Copy roles: instruction i of warp wq copies rows 16 wq + 2 i + (lane / 16) of the warpgroup's
    // 64, 16-byte chunk ci = lane % 16 of the stage's 256 bytes (atom ci / 8, chunk ci % 8, stored at
    // chunk (ci % 8) ^ (row % 8) of the atom's 128-byte row).
    constexpr int kLanesPerRow = 8 * C::kSub, kRowsPerCopy = 32 / kLanesPerRow, kCopies = 16 / kRowsPerCopy;
    const int ci = lane % kLanesPerRow, kc = 8 * ci;
    uint32_t dst_off[kCopies];
    int woff[kCopies];
#pragma unroll
    for (int i = 0; i < kCopies; ++i) {
      const int r = 16 * wq + kRowsPerCopy * i + lane / kLanesPerRow;
      dst_off[i] = uint32_t((ci >> 3) * C::kWAtom + r * 128 + (((ci & 7) ^ (r & 7)) << 4));
      woff[i] = min(64 * wg + r, a.n - 1 - row0) * a.k;  // rows past n repeat row n - 1 (never written out)
    }
    const T* wsrc = w + int64_t(row0) * a.k + int64_t(s_begin) * C::kStageK + kc;
    const uint32_t wring = base + uint32_t(wg * C::kWSlots * C::kWStage);
    auto issue = [&](int st) {
      if (st >= nst) return;
      const bool in = (s_begin + st) * C::kStageK + kc < a.k;
      const uint32_t dst = wring + uint32_t((st % C::kWSlots) * C::kWStage);
#pragma unroll
      for (int i = 0; i < kCopies; ++i) cp_async16(dst + dst_off[i], in ? wsrc + woff[i] + st * C::kStageK : w, in);
    };
    if (a.weight_static) {  // a parameter weight: its first stages stream while the kernel ahead finishes
#pragma unroll
      for (int st = 0; st < C::kWSlots - 1; ++st) issue(st), cp_async_commit();
      sm90::wait_for_previous_grid();  // (y, when accumulating, comes from the kernels before)
    } else {
      sm90::wait_for_previous_grid();
#pragma unroll
      for (int st = 0; st < C::kWSlots - 1; ++st) issue(st), cp_async_commit();
    }
    float d[MT / 2];
#pragma unroll
    for (int i = 0; i < MT / 2; ++i) d[i] = 0.f;
    for (int st = 0; st < nst; ++st) {
      cp_async_wait<C::kWSlots - 2>();  // this thread's copies of stage st have landed
      sm90::fence_proxy_async();        // (visible to wgmma's async proxy)
      sm90::named_sync(1 + wg, 128);    // the warpgroup's; and its stage st - 1 is consumed
      issue(st + C::kWSlots - 1);       // into stage st - 1's slot
      cp_async_commit();
      const uint32_t ws = wring + uint32_t((st % C::kWSlots) * C::kWStage);
#pragma unroll
      for (int b = 0; b < C::kSub; ++b) {
        const int at = st * C::kSub + b;
        sm90::mbar_wait(full_x(at % C::kXSlots), uint32_t((at / C::kXSlots) & 1));
      }
      sm90::wg_fence();
#pragma unroll
      for (int b = 0; b < C::kSub; ++b) {
        const int xs = (st * C::kSub + b) % C::kXSlots;
        const uint64_t da = sm90::make_desc(ws + uint32_t(b * C::kWAtom), 16, 1024);
        const uint64_t db = sm90::make_desc(xbase + uint32_t(xs * C::kXAtom), 16, 1024);
#pragma unroll
        for (int ks = 0; ks < 4; ++ks) sm90::wgmma_ss<T, MT>(d, da + 2 * ks, db + 2 * ks, 1);  // +32 bytes per k-step
      }
      sm90::wg_commit();
      sm90::wg_wait<0>();
      sm90::fence_regs(d);
      if (lane == 0)
#pragma unroll
        for (int b = 0; b < C::kSub; ++b) sm90::mbar_arrive(empty_x((st * C::kSub + b) % C::kXSlots));
    }
    cp_async_wait<0>();
    __syncthreads();  // every warpgroup is past its last wgmma: the rings are free
    put_wgmma_partials(part, wg, wq, lane, d);
  }
  finish<T, MT>(a, part, rank, row0);
#else
  __trap();  // never launched: run() takes it only where sm90::kernels_available()
#endif
}

// Whether this build has the kernel for the current device: compute capability 9.0+, the kernel
// compiled from PTX for sm_90 or later (ptxVersion: a JIT from older PTX would run the empty body),
// and the widest instantiation's shared memory within the device's opt-in limit; cached per thread
// and device.
template <class T>
bool built() {
  thread_local std::unordered_map<int, bool> cache;
  int device = 0;
  MMATTN_CUDA_CHECK(cudaGetDevice(&device));
  auto it = cache.find(device);
  if (it == cache.end()) {
    int major = 0;
    MMATTN_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    cudaFuncAttributes fa{};
    const bool ok = major >= 9 && cuda_smem_optin() >= smem_bytes<8>() &&
                    cudaFuncGetAttributes(&fa, cluster_gemm_kernel<T, 2>) == cudaSuccess && fa.ptxVersion >= 90;
    cudaGetLastError();
    it = cache.emplace(device, ok).first;
  }
  return it->second;
}

// Blocks of the cluster (split) per row tile when not forced: the split with the lowest modelled
// time, waves x (k per block + kOverheadK), where a wave is the clusters the device runs at once
// (cudaOccupancyMaxActiveClusters); a block keeps at least kMinK of k.
constexpr int kOverheadK = 192;
constexpr int kMinK = 512;

// Launches `kernel` (threads, smem bytes, k per stage) over (row tiles, split) with its cluster;
// `extra` are the kernel's parameters before Args (the streaming kernel's x tensor map).
template <class... P, class... E>
void launch_kernel(void (*kernel)(P...), int threads, int smem, int stage_k, Args a, int split, StreamHandle s,
                   const E&... extra) {
  int device = 0;
  MMATTN_CUDA_CHECK(cudaGetDevice(&device));
  thread_local std::unordered_map<const void*, std::unordered_map<int, bool>> attr_set;  // kernel -> device
  auto& set = attr_set[reinterpret_cast<const void*>(kernel)];
  if (!set.count(device)) {
    MMATTN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    MMATTN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 0));
    set[device] = true;
  }
  const int tiles = (a.n + kRows - 1) / kRows;
  const int kstages = (a.k + stage_k - 1) / stage_k;
  auto config = [&](int sp, cudaLaunchAttribute* attrs) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(unsigned(tiles), unsigned(sp));
    cfg.blockDim = dim3(unsigned(threads));
    cfg.dynamicSmemBytes = size_t(smem);
    cfg.stream = s;
    attrs[0].id = cudaLaunchAttributeClusterDimension;
    attrs[0].val.clusterDim.x = 1;
    attrs[0].val.clusterDim.y = unsigned(sp);
    attrs[0].val.clusterDim.z = 1;
    attrs[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attrs[1].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attrs;
    cfg.numAttrs = 1;
    return cfg;
  };
  if (split <= 0) {  // pick by the model above (cached per kernel, shape and device)
    struct Key {
      const void* kernel;
      int device, n, k;
      bool operator==(const Key&) const = default;
    };
    struct Hash {
      size_t operator()(const Key& q) const {
        return std::hash<const void*>()(q.kernel) ^ size_t(q.device) * 1000003u ^ size_t(q.n) * 7919u ^ size_t(q.k);
      }
    };
    thread_local std::unordered_map<Key, int, Hash> picked;
    const Key key{reinterpret_cast<const void*>(kernel), device, a.n, a.k};
    auto it = picked.find(key);
    if (it == picked.end()) {
      int best = 1;
      double best_cost = 1e30;
      for (int sp = 1; sp <= kMaxSplit; ++sp) {
        const int per = (kstages + sp - 1) / sp;
        if (sp > 1 && per * stage_k < kMinK) break;
        cudaLaunchAttribute attrs[2];
        cudaLaunchConfig_t cfg = config(sp, attrs);
        int wave = 0;
        if (cudaOccupancyMaxActiveClusters(&wave, kernel, &cfg) != cudaSuccess || wave < 1) {
          cudaGetLastError();
          continue;
        }
        const int waves = (tiles + wave - 1) / wave;
        const double cost = double(waves) * double(per * stage_k + kOverheadK);
        if (cost < best_cost) best = sp, best_cost = cost;
      }
      it = picked.emplace(key, best).first;
    }
    split = it->second;
  }
  a.split = split;
  a.stages_per_block = (kstages + split - 1) / split;
  cudaLaunchAttribute attrs[2];
  cudaLaunchConfig_t cfg = config(split, attrs);
  cfg.numAttrs = sm90::pdl_supported(kernel) ? 2 : 1;
  MMATTN_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, extra..., a));
}

template <class T, int NT>
void launch(const Args& a, int split, StreamHandle s) {
  launch_kernel(cluster_gemm_kernel<T, NT>, kThreads, smem_bytes<NT>(), kStageK, a, split, s);
}

template <class T, int NT>
void launch_stream(const Args& a, int split, StreamHandle s) {
  using C = Stream<NT>;
  CUtensorMap xmap;
  MMATTN_CHECK(sm90::encode_rows_map(&xmap, a.x, std::is_same_v<T, __nv_bfloat16>, a.m, a.k, C::MT),
               CudaError, "cluster product: cuTensorMapEncodeTiled failed for x [", a.m, ", ", a.k, "]");
  launch_kernel(stream_gemm_kernel<T, NT>, C::kThreads, C::kSmem, C::kStageK, a, split, s, xmap);
}

// Which kernel: kind 1 = the ring kernel; otherwise the streaming kernel where this build and device
// have it (sm90::kernels_available), else the ring kernel. m rounds up to 32, 64 or 128 input rows
// (the wgmma widths).
template <class T>
void run(const Args& a, int split, int kind, StreamHandle s) {
  const bool stream = kind != 1 && sm90::kernels_available();
  auto at_width = [&]<int NT>() { stream ? launch_stream<T, NT>(a, split, s) : launch<T, NT>(a, split, s); };
  if (a.m <= 32) at_width.template operator()<2>();
  else if (a.m <= 64) at_width.template operator()<4>();
  else at_width.template operator()<8>();
}

}  // namespace mmattn::cluster_gemm
