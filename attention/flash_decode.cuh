#pragma once
// Split-KV decode attention (flash_decode_cuda), the kernel template. Included by
// flash_decode.cu (dispatcher + combine) and by one flash_decode_d<D>.cu per head dim, which
// instantiate it, so that the 2-core build compiles the head dims in parallel.
//
// Work decomposition. A "unit" is (sequence b, kv head hk, row group rg). Its rows are the
// (query i, head of the group g) pairs r = i * G + g (G = Hq / Hkv), 16 per row group: all query
// heads that share a kv head are one tensor-core M tile, so K and V are read once per kv head.
// The key range of a unit is cut into gridDim.x * 4 warp splits of `chunk` keys (a multiple of
// 16); each warp keeps its own online-softmax state, the block merges its 4 warps in shared
// memory and writes one partial (m, l, lw, class sums, acc[D]) per row. Then either the last
// block of the unit to finish (atomic counter; `fused`, when the unit's partials are few) or
// decode_combine_kernel merges the gridDim.x partials into out, LSE and class mass.
//
// The main loop uses no shared memory for K and V (only MOD reads its per-row class tables there):
// every warp streams its keys straight into registers with 16-byte loads and feeds mma.sync
// m16n8k16 from registers:
//   S = Q K^T: the reduction over d may visit d in any order as long as Q and K agree, so lane
//     (n = lane/4, c = lane%4) loads the 16 bytes K[key n][32 gi + 8 c .. + 7] and uses them as
//     its B fragments of two k-steps (logical k {2c, 2c+1, 2c+8, 2c+9} <- physical d
//     32gi + 8c + 4hf + {0, 1, 2, 3}); its Q A fragments are Q[row][same d], loaded once.
//   O = P V: the C fragments of S become the A fragments of P V (FlashAttention-2 register
//     reuse); lane (n, c) loads V[key][64 blk + 8 n .. + 7] for the 4 keys its P columns hold
//     and builds B fragments with one byte-permute per register; output column n of n-tile e
//     is d = 64 blk + 8 n + e, so each lane ends up with 16 contiguous d per row.
#include <cstdint>
#include <type_traits>

#include "attention/attention_params.h"
#include "core/cuda_reduce.cuh"
#include "core/cuda_types.cuh"
#include "core/mma.cuh"
#include "core/sm90.cuh"

namespace mmattn::decode {

constexpr int kWarps = 4;       // warps per block (each an independent split)
constexpr int kTileKeys = 16;   // keys per warp iteration (one k16 step of P V)
constexpr int kRowsPerUnit = 16;
constexpr int kStatFloats = 8;  // m, l, lw, cs[4], pad
constexpr float kLog2e = 1.4426950408889634f;
// Keys per warp pulled toward L2 before waiting for the kernel ahead (programmatic launch).
constexpr int kPrefetchKeys = 32;
// The fused combine (one block merging rows * S partials) is used up to this many partials.
constexpr int kFusedMaxPartials = 128;

struct DecodeArgs {
  AttentionParams p;
  int group = 1;       // Hq / Hkv
  int rows = 1;        // Lq * group
  int row_groups = 1;  // ceil(rows / 16)
  int chunk = 16;      // keys per warp split
  float* ws_stats = nullptr;  // [B * Hq * Lq, S = gridDim.x, 8]
  float* ws_acc = nullptr;    // [B * Hq * Lq, S, D]
  bool fused = false;         // the last block of each unit combines (else decode_combine_kernel)
  int* counters = nullptr;    // [B * Hkv * row_groups], zero before and after a fused launch
};

// Launches decode_split_kernel<T, D, MOD> (instantiated in flash_decode_d<D>.cu).
template <class T, int D, bool MOD>
void launch_decode_split(const DecodeArgs& a, dim3 grid, StreamHandle s);
// Resident blocks per SM of that kernel (cached).
template <class T, int D, bool MOD>
int decode_split_blocks_per_sm();

#ifdef MMATTN_DECODE_KERNEL_BODY

__device__ __forceinline__ uint4 ld_stream16(const void* ptr) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(ptr));
  return r;
}

__device__ __forceinline__ uint32_t ld_u8(const uint8_t* ptr) {
  uint32_t r;
  asm volatile("ld.global.nc.u8 %0, [%1];" : "=r"(r) : "l"(ptr));
  return r;
}

// Two floats as one register of T pairs (lo in the low half: the smaller k index).
template <class T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  } else {
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
}

template <int J>
__device__ __forceinline__ uint32_t word(const uint4& v) {
  if constexpr (J == 0) return v.x;
  else if constexpr (J == 1) return v.y;
  else if constexpr (J == 2) return v.z;
  else return v.w;
}

template <class T, int D, bool MOD>
__global__ void __launch_bounds__(kWarps * 32, 2) decode_split_kernel(const DecodeArgs a) {
  constexpr int NG = (D + 31) / 32;  // 32-wide d groups of S = Q K^T (2 k-steps each)
  constexpr int NB = (D + 63) / 64;  // 64-wide d blocks of O = P V (8 n-tiles each)
  constexpr int DP = D + 4;          // padded smem row (floats)
  __shared__ __align__(16) float s_acc[kWarps][kRowsPerUnit][DP];
  __shared__ __align__(16) float s_st[kWarps][kRowsPerUnit][kStatFloats];
  __shared__ int s_last;
  // MOD: {abs gain, bias, post weight, -} of each local row (16) and key class (4); rows that are
  // not modulated get {0, 0, 1}. Read per score by class (one shared load instead of register
  // selects: the tables would otherwise take 24 registers of every thread).
  __shared__ float4 s_tab[MOD ? kRowsPerUnit : 1][4];
  const AttentionParams& p = a.p;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, c = lane & 3;
  const int b = blockIdx.z;
  const int hk = blockIdx.y / a.row_groups, rg = blockIdx.y - hk * a.row_groups;
  const int split = blockIdx.x * kWarps + warp;
  const T* kb = static_cast<const T*>(p.k) + b * p.k_sb + int64_t(hk) * p.k_sh;
  const T* vb = static_cast<const T*>(p.v) + b * p.v_sb + int64_t(hk) * p.v_sh;

  // Programmatic dependent launch: the kernel after this one may launch now (it waits for this
  // grid before reading the output). While the kernel before finishes (the KV append, usually),
  // the first keys of this warp's split are pulled toward L2: hints only, since that kernel may be
  // writing K, V or the lengths (read through L2 here, not L1, so that no stale line stays behind).
  sm90::allow_next_grid();
  {
    const int kl = p.k_lens ? min(__ldcg(p.k_lens + b), p.lk) : p.lk;
    const int k0 = split * a.chunk, k1 = min(min(k0 + a.chunk, kl), k0 + kPrefetchKeys);
    constexpr int kRowBytes = D * int(sizeof(T)), kLines = (kRowBytes + 127) / 128 + 1;  // + 1: rows may straddle
    for (int i = lane; i < max(k1 - k0, 0) * 2 * kLines; i += 32) {
      const int key = k0 + i / (2 * kLines), rest = i % (2 * kLines), line = rest >> 1;
      const T* row = ((rest & 1) ? vb + int64_t(key) * p.v_sl : kb + int64_t(key) * p.k_sl);
      const char* at = reinterpret_cast<const char*>(row) + min(line * 128, kRowBytes - 1);
      asm volatile("prefetch.global.L2 [%0];" ::"l"(at));
    }
  }
  sm90::wait_for_previous_grid();
  const int klen = p.k_lens ? p.k_lens[b] : p.lk;
  const int qlen = p.q_lens ? p.q_lens[b] : p.lq;
  const int rows_here = min(kRowsPerUnit, a.rows - rg * kRowsPerUnit);
  // global row (b, h, i) of local row r: the index of LSE, class mass and the partials
  const auto grow_of = [&](int r) {
    const int rr_ = rg * kRowsPerUnit + r;
    const int i = rr_ / a.group;
    return (int64_t(b) * p.hq + hk * a.group + (rr_ - i * a.group)) * p.lq + i;
  };

  if constexpr (MOD) {
    if (threadIdx.x < kRowsPerUnit * 4) {
      const int r = rg * kRowsPerUnit + (threadIdx.x >> 2), cc = threadIdx.x & 3;
      const bool ok = r < a.rows;
      const int i = ok ? r / a.group : 0;
      const int h = hk * a.group + (ok ? r - i * a.group : 0);
      const int C = p.num_classes;
      const bool has = ok && i >= p.first_modulated_row && p.key_class && cc < C;
      s_tab[threadIdx.x >> 2][cc] = make_float4(has && p.logit_abs_gain ? p.logit_abs_gain[h * C + cc] : 0.f,
                                                has && p.logit_bias ? p.logit_bias[h * C + cc] : 0.f,
                                                has && p.post_weight ? p.post_weight[h * C + cc] : 1.f, 0.f);
    }
    __syncthreads();
  }
  // --- this lane's two rows (g and g + 8 of the M tile) ---
  int jend[2];
  uint4 qf[2][NG];
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int r = rg * kRowsPerUnit + g + 8 * rr;
    const bool ok = r < a.rows;
    const int i = ok ? r / a.group : 0;
    const int h = hk * a.group + (ok ? r - i * a.group : 0);
    int je = (ok && i < qlen) ? klen : 0;
    if (p.causal && ok && i < qlen) je = min(je, max(0, i + (klen - qlen) + 1));
    jend[rr] = je;
    const T* qp = static_cast<const T*>(p.q) + b * p.q_sb + int64_t(i) * p.q_sl + int64_t(h) * p.q_sh;
#pragma unroll
    for (int gi = 0; gi < NG; ++gi) {
      const int d = 32 * gi + 8 * c;
      qf[rr][gi] = (ok && d < D) ? *reinterpret_cast<const uint4*>(qp + d) : make_uint4(0, 0, 0, 0);
    }
  }
  int jmax = max(jend[0], jend[1]);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) jmax = max(jmax, __shfl_xor_sync(0xffffffffu, jmax, o));
  const int kbeg = split * a.chunk;
  const int kend = min(kbeg + a.chunk, jmax);

  const uint8_t* kcls = MOD && p.key_class ? p.key_class + b * p.key_class_sb : nullptr;

  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}, lw[2] = {0.f, 0.f};
  // MOD: the weighted class sums, taken by one more mma per tile (P times the keys' one-hot
  // classes as B): lane (g, c) holds classes 2c, 2c + 1 of row g (0, 1) and of row g + 8 (2, 3).
  float csacc[4] = {0.f, 0.f, 0.f, 0.f};
  float acc[NB][8][4] = {};

  // Loads of the next tile are issued as soon as the registers they fill are free (K after the
  // QK^T mma, V after the PV mma), so every warp keeps ~8 KB in flight while it computes. The
  // loads and mma are volatile asm so that the compiler keeps this order.
  uint4 kr[2][NG], vr[4][NB];
  const auto load_k = [&](int j0) {
#pragma unroll
    for (int t = 0; t < 2; ++t) {
      const int key = j0 + 8 * t + g;
      const T* kp = kb + int64_t(key) * p.k_sl;
#pragma unroll
      for (int gi = 0; gi < NG; ++gi) {
        const int d = 32 * gi + 8 * c;
        kr[t][gi] = (key < klen && d < D) ? ld_stream16(kp + d) : make_uint4(0, 0, 0, 0);
      }
    }
  };
  const auto load_v = [&](int j0) {
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      const int key = j0 + 2 * c + (kk & 1) + 8 * (kk >> 1);
      const T* vp = vb + int64_t(key) * p.v_sl;
#pragma unroll
      for (int blk = 0; blk < NB; ++blk) {
        const int d = 64 * blk + 8 * g;
        vr[kk][blk] = (key < klen && d < D) ? ld_stream16(vp + d) : make_uint4(0, 0, 0, 0);
      }
    }
  };
  // classes of this lane's 4 score columns, one byte each (byte 2 t + e: key j0 + 8 t + 2 c + e)
  const auto load_cls = [&](int j0) {
    uint32_t v = 0;
    if (MOD && kcls) {
#pragma unroll
      for (int t = 0; t < 2; ++t)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int key = j0 + 8 * t + 2 * c + e;
          v |= (key < klen ? ld_u8(kcls + key) : 0u) << (8 * (2 * t + e));
        }
    }
    return v;
  };
  uint32_t cls_next = 0;
  if (kbeg < kend) {
    load_k(kbeg);
    if constexpr (MOD) cls_next = load_cls(kbeg);
    load_v(kbeg);
  }

  for (int j0 = kbeg; j0 < kend; j0 += kTileKeys) {
    const bool more = j0 + kTileKeys < kend;
    const uint32_t cls_pk = cls_next;

    // ---- S = Q K^T ----
    float s[2][4];
#pragma unroll
    for (int t = 0; t < 2; ++t) {
      s[t][0] = s[t][1] = s[t][2] = s[t][3] = 0.f;
#pragma unroll
      for (int gi = 0; gi < NG; ++gi) {
        mma16816<T>(s[t], qf[0][gi].x, qf[1][gi].x, qf[0][gi].y, qf[1][gi].y, kr[t][gi].x, kr[t][gi].y);
        mma16816<T>(s[t], qf[0][gi].z, qf[1][gi].z, qf[0][gi].w, qf[1][gi].w, kr[t][gi].z, kr[t][gi].w);
      }
    }
    if (more) {
      load_k(j0 + kTileKeys);
      if constexpr (MOD) cls_next = load_cls(j0 + kTileKeys);
    }
    // ---- scale, modulate, mask; s[t][e] is row g + 8 (e >> 1), key j0 + 8 t + 2 c + (e & 1) ----
    float wt[2][4];  // post weight of each score (MOD)
#pragma unroll
    for (int t = 0; t < 2; ++t)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int rr = e >> 1;
        const int key = j0 + 8 * t + 2 * c + (e & 1);
        float z = s[t][e] * p.scale;
        if constexpr (MOD) {
          const int cc = (cls_pk >> (8 * (2 * t + (e & 1)))) & 0xff;
          const float4 te = s_tab[g + 8 * rr][cc];
          z += te.x * fabsf(z);
          z += te.y;
          wt[t][e] = te.z;
        }
        s[t][e] = key < jend[rr] ? z : -INFINITY;
      }
    // ---- online softmax, per row (reduced over the lane quad that shares the row) ----
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      float mx = fmaxf(fmaxf(s[0][2 * rr], s[0][2 * rr + 1]), fmaxf(s[1][2 * rr], s[1][2 * rr + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[rr], mx);
      const float m_use = m_new == -INFINITY ? 0.f : m_new;  // keeps (-inf) - (-inf) out
      const float alpha = exp2f((m[rr] - m_use) * kLog2e);
      m[rr] = m_new;
      l[rr] *= alpha;
#pragma unroll
      for (int blk = 0; blk < NB; ++blk)
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          acc[blk][e][2 * rr] *= alpha;
          acc[blk][e][2 * rr + 1] *= alpha;
        }
      if constexpr (MOD) {
        lw[rr] *= alpha;
        csacc[2 * rr] *= alpha;
        csacc[2 * rr + 1] *= alpha;
      }
      const float mscaled = m_use * kLog2e;
#pragma unroll
      for (int t = 0; t < 2; ++t)
#pragma unroll
        for (int e = 2 * rr; e < 2 * rr + 2; ++e) {
          const float pe = exp2f(fmaf(s[t][e], kLog2e, -mscaled));
          l[rr] += pe;
          if constexpr (MOD) {
            const float pw = pe * wt[t][e];
            lw[rr] += pw;
            s[t][e] = pw;
          } else {
            s[t][e] = pe;
          }
        }
    }
    // ---- O += P V ----
    const uint32_t pa0 = pack2<T>(s[0][0], s[0][1]), pa1 = pack2<T>(s[0][2], s[0][3]);
    const uint32_t pa2 = pack2<T>(s[1][0], s[1][1]), pa3 = pack2<T>(s[1][2], s[1][3]);
    if constexpr (MOD) {
      // B[key][n] = 1 where the key's class is n (this lane's keys 2c, 2c + 1, 2c + 8, 2c + 9); P in
      // f16 here for every T (11 significant bits: a class sum within 5e-4 of the f32 sums)
      using H = __half;
      const auto hot = [&](int byte) { return ((cls_pk >> (8 * byte)) & 0xffu) == uint32_t(g) ? 1.f : 0.f; };
      uint32_t h0 = pa0, h1 = pa1, h2 = pa2, h3 = pa3;
      if constexpr (!std::is_same_v<T, H>)
        h0 = pack2<H>(s[0][0], s[0][1]), h1 = pack2<H>(s[0][2], s[0][3]), h2 = pack2<H>(s[1][0], s[1][1]),
        h3 = pack2<H>(s[1][2], s[1][3]);
      mma16816<H>(csacc, h0, h1, h2, h3, pack2<H>(hot(0), hot(1)), pack2<H>(hot(2), hot(3)));
    }
#pragma unroll
    for (int blk = 0; blk < NB; ++blk) {
#define MMATTN_DECODE_PV(J)                                                                           \
  {                                                                                                   \
    const uint32_t x0 = word<J>(vr[0][blk]), x1 = word<J>(vr[1][blk]);                                \
    const uint32_t x2 = word<J>(vr[2][blk]), x3 = word<J>(vr[3][blk]);                                \
    mma16816<T>(acc[blk][2 * J], pa0, pa1, pa2, pa3, __byte_perm(x0, x1, 0x5410), __byte_perm(x2, x3, 0x5410)); \
    mma16816<T>(acc[blk][2 * J + 1], pa0, pa1, pa2, pa3, __byte_perm(x0, x1, 0x7632),                 \
                __byte_perm(x2, x3, 0x7632));                                                          \
  }
      MMATTN_DECODE_PV(0)
      MMATTN_DECODE_PV(1)
      MMATTN_DECODE_PV(2)
      MMATTN_DECODE_PV(3)
#undef MMATTN_DECODE_PV
    }
    if (more) load_v(j0 + kTileKeys);
  }

  // ---- merge the block's warps in shared memory: one partial per (row, block) ----
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    // class k of row g + 8 rr is in lane c = k / 2 (the quad sum below adds the others' zeros)
    float cs[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) cs[k] = (k >> 1) == c ? csacc[2 * rr + (k & 1)] : 0.f;
    float st[7] = {m[rr], l[rr], lw[rr], cs[0], cs[1], cs[2], cs[3]};
#pragma unroll
    for (int k = 1; k < (MOD ? 7 : 2); ++k) {
      st[k] += __shfl_xor_sync(0xffffffffu, st[k], 1);
      st[k] += __shfl_xor_sync(0xffffffffu, st[k], 2);
    }
    const int r = g + 8 * rr;
    if (c == 0) {
#pragma unroll
      for (int k = 0; k < 7; ++k) s_st[warp][r][k] = st[k];
    }
    float* sp = &s_acc[warp][r][0];
#pragma unroll
    for (int blk = 0; blk < NB; ++blk)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf)
#pragma unroll
        for (int q4 = 0; q4 < 2; ++q4) {
          const int d = 64 * blk + 16 * c + 8 * hf + 4 * q4;
          if (d < D)
            *reinterpret_cast<float4*>(sp + d) =
                make_float4(acc[blk][4 * q4 + 0][2 * rr + hf], acc[blk][4 * q4 + 1][2 * rr + hf],
                            acc[blk][4 * q4 + 2][2 * rr + hf], acc[blk][4 * q4 + 3][2 * rr + hf]);
        }
  }
  __syncthreads();
  const int S = gridDim.x;
  constexpr int nvec = D / 4;
  // Local row r's final values from its merged state (M; sum = l, lw, cs[4]; o = sum of p v):
  // normalised (by l, or by lw when renormalising), head gain, out; LSE and class mass (d = 0).
  const auto finish_row = [&](int r, int d, float M, const float (&sum)[6], float4 o) {
    const int rr_ = rg * kRowsPerUnit + r;
    const int i = rr_ / a.group, h = hk * a.group + (rr_ - i * a.group);
    const bool renorm = p.renormalize && p.post_weight && p.key_class && i >= p.first_modulated_row;
    const float norm = renorm ? sum[1] : sum[0];
    const float inv = norm > 0.f ? 1.f / norm : 0.f;
    if (d == 0) {
      if (p.lse) p.lse[p.lse_offset(b, h, i)] = sum[0] > 0.f ? M + logf(sum[0]) : -INFINITY;
      if (p.class_mass) {
#pragma unroll
        for (int cc = 0; cc < 4; ++cc)
          if (cc < p.num_classes) p.class_mass[grow_of(r) * p.num_classes + cc] = sum[2 + cc] * inv;
      }
    }
    const float fo = inv * (p.head_gain ? p.head_gain[h] : 1.f);
    Vec<T, 4> v;
    v.v[0] = from_f32<T>(o.x * fo), v.v[1] = from_f32<T>(o.y * fo);
    v.v[2] = from_f32<T>(o.z * fo), v.v[3] = from_f32<T>(o.w * fo);
    *reinterpret_cast<Vec<T, 4>*>(static_cast<T*>(p.out) + p.out_offset(b, i, h) + d) = v;
  };
  // The block's merge of its warps' states for local row r: M, the max of their m; f[w], warp w's
  // weight relative to it; and their acc (d .. d + 3) so weighted.
  const auto warp_weights = [&](int r, float& M, float (&f)[kWarps]) {
    M = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, s_st[w][r][0]);
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float mw = s_st[w][r][0];
      f[w] = mw == -INFINITY ? 0.f : exp2f((mw - M) * kLog2e);
    }
  };
  const auto merged_acc = [&](int r, int d, const float (&f)[kWarps]) {
    float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float4 x = *reinterpret_cast<const float4*>(&s_acc[w][r][d]);
      o.x += f[w] * x.x, o.y += f[w] * x.y, o.z += f[w] * x.z, o.w += f[w] * x.w;
    }
    return o;
  };
  if (S == 1) {
    // One block per unit: the merge of its warps is the result (no partials, no combine).
    for (int it = threadIdx.x; it < rows_here * nvec; it += blockDim.x) {
      const int r = it / nvec, d = 4 * (it - r * nvec);
      float M, f[kWarps];
      warp_weights(r, M, f);
      float sum[6] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
      float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
      if (M != -INFINITY) {
        o = merged_acc(r, d, f);
#pragma unroll
        for (int w = 0; w < kWarps; ++w)
#pragma unroll
          for (int k = 0; k < (MOD ? 6 : 1); ++k) sum[k] += f[w] * s_st[w][r][k + 1];
      }
      finish_row(r, d, M, sum, o);
    }
    return;
  }
  for (int it = threadIdx.x; it < rows_here * nvec; it += blockDim.x) {
    const int r = it / nvec, d = 4 * (it - r * nvec);
    float M, f[kWarps];
    warp_weights(r, M, f);
    if (M == -INFINITY) continue;  // dead partial: the combine skips it unread
    *reinterpret_cast<float4*>(a.ws_acc + (grow_of(r) * S + blockIdx.x) * D + d) = merged_acc(r, d, f);
  }
  for (int r = threadIdx.x; r < rows_here; r += blockDim.x) {
    float M, f[kWarps];
    warp_weights(r, M, f);
    float st[7] = {M, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int w = 0; w < kWarps; ++w)
#pragma unroll
      for (int k = 1; k < (MOD ? 7 : 2); ++k) st[k] += f[w] * s_st[w][r][k];
    float4* sp = reinterpret_cast<float4*>(a.ws_stats + (grow_of(r) * S + blockIdx.x) * kStatFloats);
    sp[0] = make_float4(st[0], st[1], st[2], st[3]);
    if (MOD) sp[1] = make_float4(st[4], st[5], st[6], 0.f);
  }
  if (!a.fused) return;

  // ---- fused combine: the last block of this unit to finish merges the unit's partials ----
  // (CUTLASS's semaphore pattern: the barrier orders the block's stores before thread 0's
  // release; thread 0's acquire plus the barrier order the last block's reads after all of them.)
  __syncthreads();
  if (threadIdx.x == 0) {
    int* cnt = a.counters + (int64_t(b) * gridDim.y + blockIdx.y);
    int prev;
    asm volatile("atom.add.acq_rel.gpu.global.s32 %0, [%1], 1;" : "=r"(prev) : "l"(cnt) : "memory");
    s_last = prev == S - 1;
    if (s_last) *cnt = 0;  // ready for the next launch (no other block touches it in this one)
  }
  __syncthreads();
  if (!s_last) return;
  // One thread per (row, 4 d): it merges all S partials of its row (stats and acc loaded together,
  // 8 partials per round trip, online rescaling), so the tail costs about one L2 round trip.
  for (int it = threadIdx.x; it < rows_here * nvec; it += blockDim.x) {
    const int r = it / nvec, d = 4 * (it - r * nvec);
    const int64_t grow = grow_of(r);
    const float* st = a.ws_stats + grow * S * kStatFloats;
    const float* ap = a.ws_acc + grow * S * D + d;
    float M = -INFINITY;
    float sum[6] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f};  // l, lw, cs[4]
    float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int s0 = 0; s0 < S; s0 += 8) {
      float4 x[8], y[8], z[8];
#pragma unroll
      for (int u = 0; u < 8; ++u) {
        const bool in = s0 + u < S;
        x[u] = in ? __ldcg(reinterpret_cast<const float4*>(st + (s0 + u) * kStatFloats))
                  : make_float4(-INFINITY, 0.f, 0.f, 0.f);
        if (MOD)
          y[u] = in ? __ldcg(reinterpret_cast<const float4*>(st + (s0 + u) * kStatFloats + 4))
                    : make_float4(0.f, 0.f, 0.f, 0.f);
        // loaded together with the stats (one round trip); a dead partial (m = -inf) wrote no acc,
        // so its (stale) values are discarded by the select below, never multiplied
        z[u] = in ? __ldcg(reinterpret_cast<const float4*>(ap + int64_t(s0 + u) * D)) : make_float4(0.f, 0.f, 0.f, 0.f);
      }
#pragma unroll
      for (int u = 0; u < 8; ++u)
        if (x[u].x == -INFINITY) z[u] = make_float4(0.f, 0.f, 0.f, 0.f);
      float mc = M;
#pragma unroll
      for (int u = 0; u < 8; ++u) mc = fmaxf(mc, x[u].x);
      if (mc == -INFINITY) continue;
      const float fo = M == -INFINITY ? 0.f : exp2f((M - mc) * kLog2e);
      M = mc;
#pragma unroll
      for (int k = 0; k < 6; ++k) sum[k] *= fo;
      o.x *= fo, o.y *= fo, o.z *= fo, o.w *= fo;
#pragma unroll
      for (int u = 0; u < 8; ++u) {
        const float f = x[u].x == -INFINITY ? 0.f : exp2f((x[u].x - M) * kLog2e);
        sum[0] += f * x[u].y;
        if (MOD) sum[1] += f * x[u].z, sum[2] += f * x[u].w, sum[3] += f * y[u].x, sum[4] += f * y[u].y,
                 sum[5] += f * y[u].z;
        o.x += f * z[u].x, o.y += f * z[u].y, o.z += f * z[u].z, o.w += f * z[u].w;
      }
    }
    finish_row(r, d, M, sum, o);
  }
}

template <class T, int D, bool MOD>
void launch_decode_split(const DecodeArgs& a, dim3 grid, StreamHandle s) {
  constexpr auto kernel = decode_split_kernel<T, D, MOD>;
  sm90::launch_pdl(kernel, grid, dim3(kWarps * 32), 0, s, a);
  MMATTN_CUDA_CHECK_LAUNCH("flash_decode split");
}

template <class T, int D, bool MOD>
int decode_split_blocks_per_sm() {
  static const int n = [] {
    int blocks = 0;
    MMATTN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, decode_split_kernel<T, D, MOD>,
                                                                     kWarps * 32, 0));
    return blocks < 1 ? 1 : blocks;
  }();
  return n;
}

#define MMATTN_DECODE_INSTANTIATE(T, D, MOD)                                          \
  template void launch_decode_split<T, D, MOD>(const DecodeArgs&, dim3, StreamHandle); \
  template int decode_split_blocks_per_sm<T, D, MOD>();

#endif  // MMATTN_DECODE_KERNEL_BODY

}  // namespace mmattn::decode
