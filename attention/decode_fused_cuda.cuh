#pragma once
// rms_norm_qkv_rope_attention's kernel (attention/decode_fused.h): the q/k/v product's gemv_kernel
// (core/ops/gemv_cuda.cuh, RmsNorm input, QkvRope output) with DecodeTail as its Extra. Included by
// decode_fused_bf16.cu / decode_fused_f16.cu, one instantiation each.
//
// The queue's order (gemv_kernel takes items in this order, a block's first item static):
//   row groups [0, a0)              q's pairs first (the QkvRope pairs run head by head: q | k | v);
//                                   a0 = q's groups + one wave (at_waves): q is written by then
//   row groups [a0, groups) with the attention items [0, hq splits) spread evenly among them
//   merges [0, hq)                  after every row group and attention item
// Counters (the launch's queue slot, zero at its start): [0] q's groups done, [1] row groups done
// (a block counts its k / v groups when it takes a merge or ends), [2] attention items done. A
// writer's block syncs after its stores, then one thread fences and adds; a waiter's thread 0
// polls with acquire loads, then the block syncs; data written in this launch is read through L2
// only (ld.global.cg).
//
// Attention item (query head h, keys [128 s, 128 s + 128) of the old ones): the keys' K and V rows
// of kv head h / (hq / hkv) go to shared memory by cp.async (issued before waiting for q); each lane
// group (D / 8 lanes x 8 dims: 16 groups of 8 keys at D = 128, 32 of 4 at D = 64) takes its keys:
// scores by shuffles, its own max, sum and weighted V; the block's group states merge into one
// (max, sum, acc[D]) in ws.
// Merge (query head h): the token's own key (q . k_new, from the rows the product wrote) and the
// head's items' states, out = acc / sum rounded once to T. Scores are in the exp2 domain (scale
// log2 e folded into q).
#include <cmath>
#include <cstdlib>

#include "attention/decode_fused.h"
#include "core/cuda_reduce.cuh"
#include "core/cuda_types.cuh"
#include "core/mma.cuh"
#include "core/ops/gemv_cuda.cuh"

namespace mmattn::decode_fused {

using gemv_detail::kThreads;
using gemv_detail::to_floats;

template <class T>
__device__ __forceinline__ float ld_cg(const T* p) {
  unsigned short r;
  asm volatile("ld.global.cg.u16 %0, [%1];" : "=h"(r) : "l"(p));
  return to_f32(*reinterpret_cast<const T*>(&r));
}

// Thread 0 polls until each counter c[i] reaches target[i]; then the block syncs.
__device__ __forceinline__ void wait_counts(const int* c, int t0, int t1 = 0, const int* c1 = nullptr) {
  if (threadIdx.x == 0) {
    for (int i = 0; i < 2; ++i) {
      const int* ci = i == 0 ? c : c1;
      const int target = i == 0 ? t0 : t1;
      if (!ci) continue;
      for (;;) {
        int v;
        asm volatile("ld.acquire.gpu.global.s32 %0, [%1];" : "=r"(v) : "l"(ci) : "memory");
        if (v >= target) break;
        __nanosleep(64);
      }
    }
  }
  __syncthreads();
}

// Counter c += 1 once every thread's stores of this item are visible: a block barrier, then one
// thread's fence and atomic (a release: the fence is cumulative over the stores the barrier ordered
// before it, the pattern of CUTLASS's semaphore).
__device__ __forceinline__ void signal(int* c) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    atomicAdd(c, 1);
  }
}

template <class T, int D>
struct DecodeTail {
  static_assert(D == 64 || D == 128, "a lane group of D / 8 lanes (8 dims each) within a warp holds one key");
  static constexpr bool kActive = true;
  static constexpr int kKeys = int(kDecodeFusedKeys);  // old keys per attention item
  static constexpr int kLanes = D / 8;                  // lanes per key
  static constexpr int kGroups = kThreads / kLanes;
  static constexpr int kPerGroup = kKeys / kGroups;  // keys per lane group
  static constexpr int kSmem = 2 * kKeys * D * int(sizeof(T)) + kGroups * (2 + D) * int(sizeof(float));
  static_assert(kSmem >= (32 + (kDecodeFusedMaxKeys / kKeys) * (2 + D)) * int(sizeof(float)), "a merge's states");

  struct Params {
    const T* k;  // the layer's cache rows: key j of kv head h at (j * hkv + h) * D; the token's at j = len
    const T* v;
    const T* q;  // the token's rotated q [hq * D] (the product's section 0)
    T* out;      // [hq * D]
    float* ws;   // [hq * splits][2 + D]
    int hq, hkv, len, splits;
    float scale_log2;  // scale * log2(e)
    float at_waves;    // the attention items go after q's groups and this many waves of row groups
  };

  __device__ static int q_groups(const Params& p, int ppg) { return (p.hq * D / 2 + ppg - 1) / ppg; }
  __device__ static int extra_items(const Params& p) { return p.hq * p.splits + p.hq; }
  __device__ static int row_group(const Params& p, int v, int groups, int grid, int ppg) {
    const int a0 = min(groups, q_groups(p, ppg) + int(p.at_waves * float(grid))), na = p.hq * p.splits;
    if (v < a0) return v;
    if (v >= groups + na) return -1 - (v - groups);  // merge e - na
    // positions u of [a0, groups + na): the na attention items spread evenly among the groups - a0
    // row groups (c(u): attention items at positions <= u), so that at any time most blocks stream
    // the weight while a few read the cache
    const int64_t u = v - a0, len = int64_t(groups - a0) + na;
    const int c = int((u + 1) * na / len), c_before = int(u * na / len);
    return c > c_before ? -1 - (c - 1) : a0 + int(u) - c;
  }
  // q's groups are counted at once (the attention items wait for them); the others only when the
  // block takes a merge or ends (flush: the merges wait for every row group), one fence per block
  // instead of one per group
  __device__ static void row_group_done(const Params& p, int g, int ppg, int* c, int& pending) {
    if (g < q_groups(p, ppg)) {
      __threadfence();
      atomicAdd(c, 1);
      atomicAdd(c + 1, 1);
    } else {
      ++pending;
    }
  }
  __device__ static void flush(int* c, int& pending) {
    if (pending == 0) return;
    __threadfence();
    atomicAdd(c + 1, pending);
    pending = 0;
  }
  __device__ static void finish(const Params&, int* c, int& pending) { flush(c, pending); }
  __device__ static void run(const Params& p, int e, int* c, char* smem, int groups, int ppg, int& pending) {
    const int na = p.hq * p.splits;
    if (e < na) {
      attend(p, e / p.splits, e % p.splits, c, smem, ppg);
    } else {
      if (threadIdx.x == 0) flush(c, pending);  // (before waiting for every row group)
      merge(p, e - na, c, smem, groups);
    }
  }

  __device__ static void attend(const Params& p, int h, int s, int* c, char* smem, int ppg) {
    T* ks = reinterpret_cast<T*>(smem);
    T* vs = ks + kKeys * D;
    float* st = reinterpret_cast<float*>(vs + kKeys * D);  // [kGroups][2]: max, sum
    float* st_acc = st + 2 * kGroups;                       // [kGroups][D]
    const int hk = h / (p.hq / p.hkv), k0 = s * kKeys, n = min(kKeys, p.len - k0);
    constexpr int kVecs = D / 8;
    for (int i = threadIdx.x; i < kKeys * kVecs; i += kThreads) {
      const int j = i / kVecs, c8 = i % kVecs;
      const int64_t at = (int64_t(k0 + (j < n ? j : 0)) * p.hkv + hk) * D + c8 * 8;
      cp_async16(smem_u32(ks + j * D + c8 * 8), p.k + at, j < n);
      cp_async16(smem_u32(vs + j * D + c8 * 8), p.v + at, j < n);
    }
    cp_async_commit();
    wait_counts(c, q_groups(p, ppg));  // q's rows are written
    const int grp = threadIdx.x / kLanes, lg = threadIdx.x % kLanes;
    float qf[8];
    {
      uint4 qv;
      const uint4* src = reinterpret_cast<const uint4*>(p.q + h * D) + lg;
      asm volatile("ld.global.cg.v4.u32 {%0, %1, %2, %3}, [%4];"
                   : "=r"(qv.x), "=r"(qv.y), "=r"(qv.z), "=r"(qv.w)
                   : "l"(src));
      to_floats<T>(qv, qf);
#pragma unroll
      for (int i = 0; i < 8; ++i) qf[i] *= p.scale_log2;
    }
    cp_async_wait<0>();
    __syncthreads();
    float sc[kPerGroup], m = -INFINITY;
#pragma unroll
    for (int i = 0; i < kPerGroup; ++i) {
      const int j = grp * kPerGroup + i;
      float kf[8];
      to_floats<T>(*reinterpret_cast<const uint4*>(ks + j * D + lg * 8), kf);
      float dot = 0.f;
#pragma unroll
      for (int e = 0; e < 8; ++e) dot = fmaf(qf[e], kf[e], dot);
#pragma unroll
      for (int o = kLanes / 2; o >= 1; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);  // (within the group)
      sc[i] = j < n ? dot : -INFINITY;
      m = fmaxf(m, sc[i]);
    }
    float l = 0.f, acc[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[e] = 0.f;
#pragma unroll
    for (int i = 0; i < kPerGroup; ++i) {
      const int j = grp * kPerGroup + i;
      if (j >= n) break;  // (uniform across the group)
      const float pr = exp2f(sc[i] - m);
      l += pr;
      float vf[8];
      to_floats<T>(*reinterpret_cast<const uint4*>(vs + j * D + lg * 8), vf);
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[e] = fmaf(pr, vf[e], acc[e]);
    }
    if (lg == 0) st[2 * grp] = m, st[2 * grp + 1] = l;
#pragma unroll
    for (int e = 0; e < 8; ++e) st_acc[grp * D + lg * 8 + e] = acc[e];
    __syncthreads();
    if (threadIdx.x < D) {
      const int d = threadIdx.x;
      float M = -INFINITY;
      for (int i = 0; i < kGroups; ++i) M = fmaxf(M, st[2 * i]);
      float L = 0.f, O = 0.f;
      for (int i = 0; i < kGroups; ++i) {
        if (st[2 * i] == -INFINITY) continue;  // a group without keys
        const float w = exp2f(st[2 * i] - M);
        L = fmaf(st[2 * i + 1], w, L);
        O = fmaf(st_acc[i * D + d], w, O);
      }
      float* slot = p.ws + int64_t(h * p.splits + s) * (2 + D);
      slot[2 + d] = O;
      if (d == 0) slot[0] = M, slot[1] = L;
    }
    signal(c + 2);
  }

  __device__ static void merge(const Params& p, int h, int* c, char* smem, int groups) {
    wait_counts(c + 1, groups, p.hq * p.splits, c + 2);  // every row (the token's k, v) and item
    float* red = reinterpret_cast<float*>(smem);
    float* sts = red + 32;
    const int hk = h / (p.hq / p.hkv), d = threadIdx.x;
    const int64_t row = (int64_t(p.len) * p.hkv + hk) * D;
    // every load in flight at once (one L2 round trip): the token's q, k and v, and the head's item
    // states into shared memory
    float qk = 0.f, vd = 0.f;
    if (d < D) {
      qk = ld_cg(p.q + h * D + d) * ld_cg(p.k + row + d);
      vd = ld_cg(p.v + row + d);
    }
    const float* ws = p.ws + int64_t(h) * p.splits * (2 + D);
#pragma unroll 4
    for (int i = threadIdx.x; i < p.splits * (2 + D); i += kThreads) sts[i] = __ldcg(ws + i);
    qk = warp_sum(qk);
    if ((threadIdx.x & 31) == 0 && threadIdx.x < D) red[threadIdx.x >> 5] = qk;
    __syncthreads();
    if (d < D) {
      float sn = 0.f;
#pragma unroll
      for (int i = 0; i < D / 32; ++i) sn += red[i];
      sn *= p.scale_log2;
      float M = sn;
      for (int s = 0; s < p.splits; ++s) M = fmaxf(M, sts[s * (2 + D)]);
      float L = exp2f(sn - M), O = vd * L;
      for (int s = 0; s < p.splits; ++s) {
        const float* st = sts + s * (2 + D);
        const float w = exp2f(st[0] - M);
        L = fmaf(st[1], w, L);
        O = fmaf(st[2 + d], w, O);
      }
      p.out[h * D + d] = from_f32<T>(O / L);
    }
    __syncthreads();  // (red and sts are the next item's shared memory)
  }
};

// Where the attention items go in the queue's order, in waves of row groups after q's (1 unless
// MMATTN_DECODE_FUSED_AT says otherwise: an A/B knob for bench/dev_step).
inline float at_waves() {
  static const float v = [] {
    const char* e = std::getenv("MMATTN_DECODE_FUSED_AT");
    return e ? float(std::atof(e)) : 1.f;
  }();
  return v;
}

template <class T, int D>
void launch_d(const detail::DecodeFusedArgs& a, StreamHandle s) {
  using X = DecodeTail<T, D>;
  typename X::Params xp{static_cast<const T*>(a.k), static_cast<const T*>(a.v), static_cast<const T*>(a.product.rope.out[0]),
                        static_cast<T*>(a.out), a.ws, a.hq, a.hkv, a.len, a.splits,
                        float(double(a.scale) * 1.4426950408889634), at_waves()};
  const gemv_detail::Args args = gemv_detail::args_of(a.product);
  const int extra = a.hq * a.splits + a.hq;
  using gemv_detail::launch;
  if (gemv_detail::two_row_tasks(int(a.product.n)))
    launch<T, 1, 2, GemvInput::RmsNorm, 8, GemvOutput::QkvRope, X>(args, s, xp, extra);
  else
    launch<T, 1, 4, GemvInput::RmsNorm, gemv_detail::kUnroll, GemvOutput::QkvRope, X>(args, s, xp, extra);
}

template <class T>
void launch(const detail::DecodeFusedArgs& a, StreamHandle s) {
  a.d == 128 ? launch_d<T, 128>(a, s) : launch_d<T, 64>(a, s);
}

}  // namespace mmattn::decode_fused
