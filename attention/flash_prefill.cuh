#pragma once
// The general flash prefill kernel (FlashAttention-2 style): one block per (query tile, head,
// sequence), 4 warps of 16 query rows each, tensor cores through mma.sync m16n8k16, K/V tiles
// double-buffered with cp.async, online softmax in base 2 with f32 state, P kept in registers as
// the A operand of the PV product. Every feature of AttentionParams; MOD = false compiles the
// modulation out. Included only by flash_prefill_d<D>.cu, which instantiate it explicitly.
//
// Shared memory rows are padded by 16 bytes (DP + 8 elements) so that ldmatrix on 8 consecutive
// rows hits 8 different bank groups for every DP in {64, 80, 96, 128}. D = 72 is computed as
// DP = 80 with the 8 extra columns zero in Q, K and V.
#include "attention/flash_device.cuh"
#include "attention/flash_prefill.h"
#include "core/cuda_check.h"
#include "core/kernel_smem.h"

namespace mmattn::flash {

template <int D>
struct PrefillTraits {
  static constexpr int DP = (D + 15) / 16 * 16;  // head dim padded to the mma k-step
  static constexpr int SS = DP + 8;              // shared-memory row stride, elements
  static constexpr int NW = 4;                   // warps; 16 query rows each
  static constexpr int BR = 16 * NW;             // query rows per block
  static constexpr int BC = 64;                  // keys per tile
  static constexpr int THREADS = 32 * NW;
};

// Loads `ROWS` rows of D elements (row r at g + r * stride) into shared rows of stride SS.
// Rows >= nvalid are zero-filled. vec: pointer and stride allow 16-byte accesses; otherwise the
// rows are read element by element (any 2-byte alignment).
template <class T, int D, int SS, int ROWS, int THREADS>
__device__ __forceinline__ void load_rows(T* s, const T* g, int64_t stride, int nvalid, bool vec, int tid) {
  constexpr int CH = D / 8;  // 16-byte chunks per row
  if (vec) {
#pragma unroll 4
    for (int idx = tid; idx < ROWS * CH; idx += THREADS) {
      const int r = idx / CH, c = idx - (idx / CH) * CH;
      const bool ok = r < nvalid;
      cp_async16(smem_u32(s + r * SS + c * 8), ok ? g + int64_t(r) * stride + c * 8 : g, ok);
    }
  } else {
    for (int idx = tid; idx < ROWS * CH; idx += THREADS) {
      const int r = idx / CH, c = idx - (idx / CH) * CH;
      uint32_t w[4] = {0u, 0u, 0u, 0u};
      if (r < nvalid) {
        const uint16_t* src = reinterpret_cast<const uint16_t*>(g + int64_t(r) * stride + c * 8);
#pragma unroll
        for (int e = 0; e < 4; ++e) w[e] = uint32_t(src[2 * e]) | (uint32_t(src[2 * e + 1]) << 16);
      }
      *reinterpret_cast<uint4*>(s + r * SS + c * 8) = make_uint4(w[0], w[1], w[2], w[3]);
    }
  }
}

template <class T, int D, bool MOD>
__global__ void __launch_bounds__(PrefillTraits<D>::THREADS)
    flash_prefill_kernel(const __grid_constant__ PrefillArgs a) {
  using Tr = PrefillTraits<D>;
  constexpr int DP = Tr::DP, SS = Tr::SS, BR = Tr::BR, BC = Tr::BC, THREADS = Tr::THREADS;
  constexpr int KS = DP / 16;   // k-steps of Q K^T
  constexpr int NS = BC / 8;    // n-tiles of S
  constexpr int NO = DP / 8;    // n-tiles of O
  const AttentionParams& p = a.p;

  extern __shared__ __align__(128) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem);  // [BR][SS]
  T* sK = sQ + BR * SS;                // [2][BC][SS]
  T* sV = sK + 2 * BC * SS;            // [2][BC][SS]
  // MOD: per key of the tile {abs gain, bias, post weight, class} of this head, [2][BC]
  float4* sKM = reinterpret_cast<float4*>(sV + 2 * BC * SS);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const TileCoord tc = tile_coord(p.causal, a.order == PrefillOrder::tiles_by_head);
  const int b = tc.b, h = tc.h, qtile = tc.qtile;
  const int q0 = qtile * BR;
  const int hk = h / a.group;
  const BlockRange rg = block_range(p, b, q0, BR);
  const int n_tiles = (rg.n_end + BC - 1) / BC;

  const T* gq = static_cast<const T*>(p.q) + b * p.q_sb + h * p.q_sh + int64_t(q0) * p.q_sl;
  const T* gk = static_cast<const T*>(p.k) + b * p.k_sb + hk * p.k_sh;
  const T* gv = static_cast<const T*>(p.v) + b * p.v_sb + hk * p.v_sh;

  if constexpr (DP > D) {  // zero the padding columns once; loads never write them
    for (int r = tid; r < BR + 4 * BC; r += THREADS)
      *reinterpret_cast<uint4*>(sQ + r * SS + D) = make_uint4(0u, 0u, 0u, 0u);
  }

  auto load_kv = [&](int t, int buf) {
    const int j0 = t * BC;
    const int nvalid = min(BC, rg.klen - j0);
    load_rows<T, D, SS, BC, THREADS>(sK + buf * BC * SS, gk + int64_t(j0) * p.k_sl, p.k_sl, nvalid, a.vec_k, tid);
    load_rows<T, D, SS, BC, THREADS>(sV + buf * BC * SS, gv + int64_t(j0) * p.v_sl, p.v_sl, nvalid, a.vec_v, tid);
    if constexpr (MOD) {
      for (int jl = tid; jl < BC; jl += THREADS) {
        const int j = j0 + jl;
        float4 km = make_float4(0.f, 0.f, 1.f, 0.f);
        if (p.key_class && j < p.lk) {
          const int c = p.key_class[b * p.key_class_sb + j];
          const int hc = h * p.num_classes + c;
          km.x = p.logit_abs_gain ? p.logit_abs_gain[hc] : 0.f;
          km.y = p.logit_bias ? p.logit_bias[hc] : 0.f;
          km.z = p.post_weight ? p.post_weight[hc] : 1.f;
          km.w = float(c);
        }
        sKM[buf * BC + jl] = km;
      }
    }
  };

  load_rows<T, D, SS, BR, THREADS>(sQ, gq, p.q_sl, min(BR, rg.qlen - q0), a.vec_q, tid);
  if (n_tiles > 0) load_kv(0, 0);
  cp_async_commit();

  // this thread's two rows (fragment rows g and g + 8 of the warp's 16)
  const int g = lane >> 2, tq = lane & 3;
  const int row0 = q0 + warp * 16 + g, row1 = row0 + 8;
  const int lim0 = rg.lim(row0, p.causal), lim1 = rg.lim(row1, p.causal);
  const bool modrow0 = MOD && row0 >= p.first_modulated_row;
  const bool modrow1 = MOD && row1 >= p.first_modulated_row;
  const bool want_mass = MOD && p.class_mass != nullptr;

  float m0 = -INFINITY, m1 = -INFINITY;  // running max (base-2 logits)
  float l0 = 0.f, l1 = 0.f;              // sum 2^(t - m), this thread's columns
  float lw0 = 0.f, lw1 = 0.f;            // MOD: sum w 2^(t - m)
  float cm0[4] = {0.f, 0.f, 0.f, 0.f}, cm1[4] = {0.f, 0.f, 0.f, 0.f};  // MOD: per class
  float o[NO][4];
#pragma unroll
  for (int n = 0; n < NO; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  uint32_t qf[KS][4];

  for (int t = 0; t < n_tiles; ++t) {
    const int buf = t & 1;
    cp_async_wait<0>();
    __syncthreads();  // tile t visible to all; everyone is done with tile t - 1's buffer
    if (t + 1 < n_tiles) load_kv(t + 1, buf ^ 1);
    cp_async_commit();
    if (t == 0) {
#pragma unroll
      for (int ks = 0; ks < KS; ++ks)
        ldmatrix_x4(qf[ks], smem_u32(sQ + (warp * 16 + (lane & 15)) * SS + ks * 16 + (lane >> 4) * 8));
    }
    // S = Q K^T for this warp's 16 rows x BC keys
    const T* ks_ = sK + buf * BC * SS;
    float s[NS][4];
#pragma unroll
    for (int n = 0; n < NS; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
#pragma unroll
      for (int n = 0; n < NS; n += 2) {
        uint32_t bk[4];
        ldmatrix_x4(bk, smem_u32(ks_ + (n * 8 + (lane & 7) + (lane >> 4) * 8) * SS + ks * 16 + ((lane >> 3) & 1) * 8));
        mma16816<T>(s[n], qf[ks], bk[0], bk[1]);
        mma16816<T>(s[n + 1], qf[ks], bk[2], bk[3]);
      }
    }
    // logits (base 2), modulation, masks, row max
    const int j0 = t * BC;
    const bool need_mask = j0 + BC > rg.unmasked_end;
    float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
    for (int n = 0; n < NS; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int jl = n * 8 + tq * 2 + e;
        float x0 = s[n][e], x1 = s[n][2 + e];
        if constexpr (MOD) {
          const float4 km = sKM[buf * BC + jl];
          x0 *= p.scale;
          x1 *= p.scale;
          if (modrow0) x0 = (x0 + km.x * fabsf(x0)) + km.y;
          if (modrow1) x1 = (x1 + km.x * fabsf(x1)) + km.y;
          x0 *= kLog2e;
          x1 *= kLog2e;
        } else {
          x0 *= a.scale_log2;
          x1 *= a.scale_log2;
        }
        if (need_mask) {
          if (j0 + jl >= lim0) x0 = -INFINITY;
          if (j0 + jl >= lim1) x1 = -INFINITY;
        }
        s[n][e] = x0;
        s[n][2 + e] = x1;
        mx0 = fmaxf(mx0, x0);
        mx1 = fmaxf(mx1, x1);
      }
    }
    mx0 = quad_max(mx0);
    mx1 = quad_max(mx1);
    const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
    // a row that has seen nothing keeps m = -inf; subtract 0 then (2^-inf = 0, never NaN)
    const float base0 = mn0 == -INFINITY ? 0.f : mn0, base1 = mn1 == -INFINITY ? 0.f : mn1;
    const float al0 = fast_exp2(m0 - base0), al1 = fast_exp2(m1 - base1);
    m0 = mn0;
    m1 = mn1;
    l0 *= al0;
    l1 *= al1;
    if constexpr (MOD) {
      lw0 *= al0;
      lw1 *= al1;
#pragma unroll
      for (int c = 0; c < 4; ++c) cm0[c] *= al0, cm1[c] *= al1;
    }
#pragma unroll
    for (int n = 0; n < NO; ++n) o[n][0] *= al0, o[n][1] *= al0, o[n][2] *= al1, o[n][3] *= al1;
#pragma unroll
    for (int n = 0; n < NS; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float p0 = fast_exp2(s[n][e] - base0), p1 = fast_exp2(s[n][2 + e] - base1);
        l0 += p0;
        l1 += p1;
        if constexpr (MOD) {
          const float4 km = sKM[buf * BC + n * 8 + tq * 2 + e];
          if (modrow0) p0 *= km.z;
          if (modrow1) p1 *= km.z;
          lw0 += p0;
          lw1 += p1;
          if (want_mass) {
            const int c = int(km.w);
#pragma unroll
            for (int cc = 0; cc < 4; ++cc) {
              cm0[cc] += c == cc ? p0 : 0.f;
              cm1[cc] += c == cc ? p1 : 0.f;
            }
          }
        }
        s[n][e] = p0;
        s[n][2 + e] = p1;
      }
    }
    // O += P V
    const T* vs_ = sV + buf * BC * SS;
#pragma unroll
    for (int kk = 0; kk < BC / 16; ++kk) {
      const uint32_t pa[4] = {pack2<T>(s[2 * kk][0], s[2 * kk][1]), pack2<T>(s[2 * kk][2], s[2 * kk][3]),
                              pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int n = 0; n < NO; n += 2) {
        uint32_t bv[4];
        ldmatrix_x4_trans(bv, smem_u32(vs_ + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * SS + n * 8 +
                                       (lane >> 4) * 8));
        mma16816<T>(o[n], pa, bv[0], bv[1]);
        mma16816<T>(o[n + 1], pa, bv[2], bv[3]);
      }
    }
  }

  // epilogue: normalise, gain, LSE, class mass; rows >= qlen are 0 / -inf
  cp_async_wait<0>();  // no copy may still target shared memory (n_tiles == 0 leaves Q in flight)
  l0 = quad_sum(l0);
  l1 = quad_sum(l1);
  float norm0 = l0, norm1 = l1;
  if constexpr (MOD) {
    lw0 = quad_sum(lw0);
    lw1 = quad_sum(lw1);
    if (p.renormalize && p.post_weight) {
      if (modrow0) norm0 = lw0;
      if (modrow1) norm1 = lw1;
    }
#pragma unroll
    for (int c = 0; c < 4; ++c) cm0[c] = quad_sum(cm0[c]), cm1[c] = quad_sum(cm1[c]);
  }
  const bool valid0 = row0 < rg.qlen, valid1 = row1 < rg.qlen;
  const float inv0 = valid0 && l0 > 0.f && norm0 > 0.f ? 1.f / norm0 : 0.f;
  const float inv1 = valid1 && l1 > 0.f && norm1 > 0.f ? 1.f / norm1 : 0.f;
  const float gain = MOD && p.head_gain ? p.head_gain[h] : 1.f;
  const int64_t stat_row = (int64_t(b) * p.hq + h) * p.lq;  // [B, Hq, Lq] row index base (class mass)
  if (tq == 0) {
    if (p.lse) {
      float* lse = p.lse + p.lse_offset(b, h, 0);
      if (row0 < p.lq) lse[row0] = valid0 && l0 > 0.f ? (m0 + __log2f(l0)) * kLn2 : -INFINITY;
      if (row1 < p.lq) lse[row1] = valid1 && l1 > 0.f ? (m1 + __log2f(l1)) * kLn2 : -INFINITY;
    }
    if constexpr (MOD) {
      if (want_mass) {
        const int C = p.num_classes;
        for (int c = 0; c < C; ++c) {
          // runtime c < 4 indexes a register array: unrolled selects keep it in registers
          float v0 = 0.f, v1 = 0.f;
#pragma unroll
          for (int cc = 0; cc < 4; ++cc) v0 = c == cc ? cm0[cc] : v0, v1 = c == cc ? cm1[cc] : v1;
          if (row0 < p.lq) p.class_mass[(stat_row + row0) * C + c] = v0 * inv0;
          if (row1 < p.lq) p.class_mass[(stat_row + row1) * C + c] = v1 * inv1;
        }
      }
    }
  }
  // stage the warp's 16 output rows in its own rows of sQ, then 16-byte coalesced stores
  T* so = sQ + warp * 16 * SS;
  const float f0 = inv0 * gain, f1 = inv1 * gain;
#pragma unroll
  for (int n = 0; n < NO; ++n) {
    const int col = n * 8 + tq * 2;
    *reinterpret_cast<uint32_t*>(so + g * SS + col) =
        pack2<T>(valid0 ? o[n][0] * f0 : 0.f, valid0 ? o[n][1] * f0 : 0.f);
    *reinterpret_cast<uint32_t*>(so + (g + 8) * SS + col) =
        pack2<T>(valid1 ? o[n][2] * f1 : 0.f, valid1 ? o[n][3] * f1 : 0.f);
  }
  __syncwarp();
  constexpr int CH = D / 8;
  T* out = static_cast<T*>(p.out);
  for (int idx = lane; idx < 16 * CH; idx += 32) {
    const int r = idx / CH, c = idx - (idx / CH) * CH;
    const int row = q0 + warp * 16 + r;
    if (row < p.lq)
      *reinterpret_cast<uint4*>(out + p.out_offset(b, row, h) + c * 8) =
          *reinterpret_cast<const uint4*>(so + r * SS + c * 8);
  }
}

template <class T, int D, bool MOD>
void flash_prefill_launch(const PrefillArgs& a, cudaStream_t s) {
  using Tr = PrefillTraits<D>;
  const size_t smem = size_t(Tr::BR + 4 * Tr::BC) * Tr::SS * sizeof(T) + (MOD ? 2 * Tr::BC * sizeof(float4) : 0);
  auto kernel = flash_prefill_kernel<T, D, MOD>;
  kernel_smem_allow(reinterpret_cast<const void*>(kernel), int(smem));
  const dim3 grid(unsigned((a.p.lq + Tr::BR - 1) / Tr::BR), unsigned(a.p.hq), unsigned(a.p.batch));
  kernel<<<grid, Tr::THREADS, smem, s>>>(a);
  MMATTN_CUDA_CHECK_LAUNCH("flash_prefill_kernel");
}

#define MMATTN_FLASH_PREFILL_INSTANTIATE(D)                                                          \
  template void flash_prefill_launch<__nv_bfloat16, D, false>(const PrefillArgs&, cudaStream_t);   \
  template void flash_prefill_launch<__nv_bfloat16, D, true>(const PrefillArgs&, cudaStream_t);    \
  template void flash_prefill_launch<__half, D, false>(const PrefillArgs&, cudaStream_t);          \
  template void flash_prefill_launch<__half, D, true>(const PrefillArgs&, cudaStream_t);

}  // namespace mmattn::flash
