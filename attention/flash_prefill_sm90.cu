// Hopper fast path of flash prefill (sm_90a): bf16/f16, 16-byte aligned rows, every head dim, key
// classes and head modulation (all but class mass; MOD = false compiles it out). FlashAttention-3's
// structure:
//  - warp specialisation: warpgroup 2 is the producer (one lane issues TMA bulk tensor copies of
//    Q and of each K/V tile into a 2-stage ring, completion tracked by mbarriers with transaction
//    counts; it keeps 24 registers, setmaxnreg); warpgroups 0 and 1 are consumers of 64 query
//    rows each (Br = 128; 232 registers) that wait on "full" barriers and release stages through
//    "empty" barriers;
//  - wgmma (m64n128k16 for S = Q K^T, m64n{64,128}k16 for O += P V with P in registers), f32
//    accumulators, key tiles of Bc = 128;
//  - ping-pong: the consumers take turns issuing their GEMMs (named barriers 1 and 2), so one
//    warpgroup's softmax (bound by the SFU's exp2) runs while the other's GEMMs hold the tensor
//    cores;
//  - intra-warpgroup overlap: S_t = Q K_t^T and O += P_{t-1} V_{t-1} are issued in one turn and
//    the softmax of S_t runs while P_{t-1} V_{t-1} is still on the tensor cores (P alternates
//    between two register tiles so that an in-flight wgmma's operands are never redefined).
//
// Shared-memory tiles (Q, K and V alike): [NH halves of 64 columns][128 rows][64], rows of 128
// bytes, 16-byte chunk c of row r stored at chunk c ^ (r % 8): the TMA 128-byte swizzle and the
// wgmma canonical "Swizzle<3,4,3>" layout (tiles 1024-byte aligned). Q and K are K-major operands
// (SBO = 1024 bytes per 8 rows, a k-step is +32 bytes inside a half, +16384 to the next half). V is
// the MN-major B operand of P V (LBO = 16384 to the next 64 columns of d, SBO = 1024 per 8 keys, a
// k-step of 16 keys is +2048 bytes). NH = 1 for D = 64, else 2: D = 72/80/96 use the second half
// partly; the TMA fills the columns past D with zeros, so they add nothing to Q K^T.
//
// Modulation (MOD): per key tile, each consumer warpgroup whose rows reach first_modulated_row
// loads the class of one key per thread (issued under its GEMMs) and writes that key's entry from
// the head's class table into its own double-buffered shared set, laid out by the key pairs a
// thread holds (s[4n + e] and s[4n + 2 + e] are key 8n + 2tq + e): {A0, A1, B0, B1} per pair
// (one 16-byte load for four scores) and {W0, W1}. A = abs gain |scale log2 e|, B = bias log2 e,
// so the base-2 logit is x = A |s| + (s scale log2 e + B): two FMAs per score. With
// renormalisation, non-negative post weights, no LSE requested and no warpgroup of the block
// straddling first_modulated_row, log2 w joins B (the weighted softmax is the softmax of
// x + log2 w) and W is not read at all. A warpgroup whose rows all lie
// at or past first_modulated_row runs the "all" softmax; the one that straddles it multiplies each
// row's modulation by 0 or 1 (one more operation per score); warpgroups entirely below run the
// plain softmax, so PAI-style "last row only" costs one warpgroup per head.
//
// In-kernel taps (TAP, unmodulated calls; attention_params.h: PrefillTaps): a warpgroup owning a
// tap row runs a loop variant that stores the row's masked raw scores to a row of shared memory
// past the tiles after each tile's softmax (predicated stores); after the loop the warp holding the
// row writes its probabilities 2^(s scale log2 e - m - log2 l) from there with the row's final max
// and sum (warps without a tap row skip that epilogue).
//
// Compiled only for sm_90a (wgmma, setmaxnreg); other targets get an empty kernel that is never
// launched (flash_prefill_sm90_available() is sm90::kernels_available(): false unless the build has 90a).
#include <algorithm>
#include <type_traits>

#include "attention/flash_device.cuh"
#include "attention/flash_prefill.h"
#include "core/cuda_check.h"
#include "core/device.h"
#include "core/kernel_smem.h"
#include "core/sm90.cuh"

namespace mmattn::flash {

namespace {

using namespace sm90;

constexpr int kBR = 128, kThreads = 384;  // query rows per block (2 x 64), threads (3 warpgroups)
constexpr int kHalfBytes = 128 * 128;  // one [128 rows][64] half tile of 16-bit elements
template <int NH>
constexpr int tile_bytes() {
  return NH * kHalfBytes;
}
// MOD: key entries (see the header): 64 key pairs {A0, A1, B0, B1} then 64 {W0, W1} per set; sets
// [2 warpgroups][2 tiles]; then the [kNumClassSlots] table of this head,
// {A, B, W, fold} per class.
constexpr int kNumClassSlots = 4;  // = kMaxKeyClasses (attention.h)
constexpr int kPairs = 64;
constexpr int kModSetBytes = kPairs * 16 + kPairs * 8;
constexpr int kModKeyBytes = 4 * kModSetBytes;
constexpr int kModBytes = kModKeyBytes + kNumClassSlots * 16;
template <int NH, bool MOD>
constexpr int smem_bytes() {
  // Q, K[2], V[2], alignment slack, mbarriers (128 bytes), modulation
  return 5 * tile_bytes<NH>() + 1024 + 128 + (MOD ? kModBytes : 0);
}

struct TmaMaps {
  CUtensorMap q, k, v;
  int8_t pos_q[3], pos_k[3], pos_v[3];  // tensor-map dim (1..3) of the head, row and batch coords
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
constexpr int kBC = 128;  // keys per tile

// Byte offset of element (r, c) in a swizzled tile.
__device__ __forceinline__ uint32_t sw128(int r, int c) {
  return uint32_t((c >> 6) * kHalfBytes + r * 128 + ((((c & 63) >> 3) ^ (r & 7)) << 4) + (c & 7) * 2);
}

// One tile = NH boxes of [128 rows][64 columns] at rows [row, row + 128) (zeros past the tensor).
template <int NH>
__device__ __forceinline__ void tma_tile(uint32_t dst, const CUtensorMap* map, const int8_t (&pos)[3], uint32_t bar,
                                         int h, int row, int b) {
  const int c1 = pos[0] == 1 ? h : pos[1] == 1 ? row : b;
  const int c2 = pos[0] == 2 ? h : pos[1] == 2 ? row : b;
  const int c3 = pos[0] == 3 ? h : pos[1] == 3 ? row : b;
#pragma unroll
  for (int i = 0; i < NH; ++i) tma_load_4d(dst + i * kHalfBytes, map, bar, 64 * i, c1, c2, c3);
}
// Generated (m64nNk16 wgmma, f32 accumulators): O += P V with P in registers and V MN-major
// (imm-trans-b = 1). S = Q K^T uses core/sm90.cuh's wgmma_ss<T, 128>.
template <class T, int N>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t db);
template <>
__device__ __forceinline__ void wgmma_rs<__nv_bfloat16, 128>(float (&d)[64], const uint32_t (&a)[4], uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "{%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "n"(1));
}
template <>
__device__ __forceinline__ void wgmma_rs<__half, 128>(float (&d)[64], const uint32_t (&a)[4], uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "{%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "n"(1));
}
template <>
__device__ __forceinline__ void wgmma_rs<__nv_bfloat16, 64>(float (&d)[32], const uint32_t (&a)[4], uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "{%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "n"(1));
}
template <>
__device__ __forceinline__ void wgmma_rs<__half, 64>(float (&d)[32], const uint32_t (&a)[4], uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
      "{%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "n"(1));
}

// When pred: ptr[8n + e] = v[4n + e] (half = 0) or v[4n + 2 + e] (half = 1), n < 16, e < 2: one
// row of a thread's S fragment, as predicated stores (a branch inside the softmax, between a wgmma
// and its wait, would make ptxas serialise every wgmma). ptr: a shared-memory address.
template <int half>
__device__ __forceinline__ void store_row_if(bool pred, uint32_t ptr, const float (&v)[64]) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %0, 0;\n"
      "@p st.shared.v2.f32 [%1+0], {%2, %3};\n"
      "@p st.shared.v2.f32 [%1+32], {%4, %5};\n"
      "@p st.shared.v2.f32 [%1+64], {%6, %7};\n"
      "@p st.shared.v2.f32 [%1+96], {%8, %9};\n"
      "@p st.shared.v2.f32 [%1+128], {%10, %11};\n"
      "@p st.shared.v2.f32 [%1+160], {%12, %13};\n"
      "@p st.shared.v2.f32 [%1+192], {%14, %15};\n"
      "@p st.shared.v2.f32 [%1+224], {%16, %17};\n"
      "@p st.shared.v2.f32 [%1+256], {%18, %19};\n"
      "@p st.shared.v2.f32 [%1+288], {%20, %21};\n"
      "@p st.shared.v2.f32 [%1+320], {%22, %23};\n"
      "@p st.shared.v2.f32 [%1+352], {%24, %25};\n"
      "@p st.shared.v2.f32 [%1+384], {%26, %27};\n"
      "@p st.shared.v2.f32 [%1+416], {%28, %29};\n"
      "@p st.shared.v2.f32 [%1+448], {%30, %31};\n"
      "@p st.shared.v2.f32 [%1+480], {%32, %33};\n"
      "}\n" ::"r"(int(pred)),
      "r"(ptr), "f"(v[0 + 2 * half]), "f"(v[1 + 2 * half]), "f"(v[4 + 2 * half]), "f"(v[5 + 2 * half]),
      "f"(v[8 + 2 * half]), "f"(v[9 + 2 * half]), "f"(v[12 + 2 * half]), "f"(v[13 + 2 * half]),
      "f"(v[16 + 2 * half]), "f"(v[17 + 2 * half]), "f"(v[20 + 2 * half]), "f"(v[21 + 2 * half]),
      "f"(v[24 + 2 * half]), "f"(v[25 + 2 * half]), "f"(v[28 + 2 * half]), "f"(v[29 + 2 * half]),
      "f"(v[32 + 2 * half]), "f"(v[33 + 2 * half]), "f"(v[36 + 2 * half]), "f"(v[37 + 2 * half]),
      "f"(v[40 + 2 * half]), "f"(v[41 + 2 * half]), "f"(v[44 + 2 * half]), "f"(v[45 + 2 * half]),
      "f"(v[48 + 2 * half]), "f"(v[49 + 2 * half]), "f"(v[52 + 2 * half]), "f"(v[53 + 2 * half]),
      "f"(v[56 + 2 * half]), "f"(v[57 + 2 * half]), "f"(v[60 + 2 * half]), "f"(v[61 + 2 * half]));
}

// Sets the scores of keys j >= lim0 (row g) / lim1 (row g + 8) to -inf.
__device__ __forceinline__ void mask_tile(float (&s)[64], int j0, int tq, int lim0, int lim1) {
#pragma unroll
  for (int n = 0; n < 16; ++n)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int j = j0 + n * 8 + tq * 2 + e;
      if (j >= lim0) s[4 * n + e] = -INFINITY;
      if (j >= lim1) s[4 * n + 2 + e] = -INFINITY;
    }
}

// The online max step of a tile: the rows' maxima of s times sc (> 0) update the running maxima m
// and give the factors al by which O and l are rescaled; returns what each row subtracts before its
// exp2 (0 for a row that has seen nothing: m stays -inf, 2^-inf = 0, never NaN).
__device__ __forceinline__ float2 update_max(const float (&s)[64], float sc, float& m0, float& m1, float& al0,
                                             float& al1) {
  float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
  for (int n = 0; n < 16; ++n) {
    mx0 = fmaxf(mx0, fmaxf(s[4 * n], s[4 * n + 1]));
    mx1 = fmaxf(mx1, fmaxf(s[4 * n + 2], s[4 * n + 3]));
  }
  mx0 = quad_max(mx0);
  mx1 = quad_max(mx1);
  const float mn0 = fmaxf(m0, mx0 * sc), mn1 = fmaxf(m1, mx1 * sc);
  const float base0 = mn0 == -INFINITY ? 0.f : mn0, base1 = mn1 == -INFINITY ? 0.f : mn1;
  al0 = fast_exp2(m0 - base0);
  al1 = fast_exp2(m1 - base1);
  m0 = mn0;
  m1 = mn1;
  return make_float2(base0, base1);
}

// P of key columns 8n + 2tq + {0, 1} (rows g: p0, p1; g + 8: p2, p3) into the registers that are
// the A operand of P V.
template <class T>
__device__ __forceinline__ void put_p(uint32_t (&pa)[8][4], int n, float p0, float p1, float p2, float p3) {
  pa[n >> 1][(n & 1) * 2] = pack2<T>(p0, p1);
  pa[n >> 1][(n & 1) * 2 + 1] = pack2<T>(p2, p3);
}

// Modulated online softmax of one 64 x 128 S tile (see softmax_tile below for the plain one and
// the register layout). ab: the key entries {A0, A1, B0, B1} per key pair, w: {W0, W1}. SOME:
// the warpgroup straddles first_modulated_row; am0 / am1 (1 or 0) say whether row g / g + 8 is
// modulated (x = s sl2 + am (A |s| + B), weight am ? w : 1: one more operation per score than
// when every row is). W: P is multiplied by the post weights and lw accumulates the weighted sum,
// l the unweighted one (LSE and the default normaliser); without W the weights are either absent
// or folded into B.
template <class T, bool SOME, bool W>
__device__ __forceinline__ void softmax_mod_tile(float (&s)[64], uint32_t (&pa)[8][4], float& m0, float& m1,
                                                 float& l0, float& l1, float& al0, float& al1, bool mask, int j0,
                                                 int tq, int lim0, int lim1, float sl2, const float4* ab,
                                                 const float2* w, float am0, float am1, float& lw0, float& lw1) {
#pragma unroll
  for (int n = 0; n < 16; ++n) {
    const float4 e = ab[n * 4 + tq];
    if constexpr (SOME) {
      s[4 * n] = fmaf(am0, fmaf(e.x, fabsf(s[4 * n]), e.z), s[4 * n] * sl2);
      s[4 * n + 1] = fmaf(am0, fmaf(e.y, fabsf(s[4 * n + 1]), e.w), s[4 * n + 1] * sl2);
      s[4 * n + 2] = fmaf(am1, fmaf(e.x, fabsf(s[4 * n + 2]), e.z), s[4 * n + 2] * sl2);
      s[4 * n + 3] = fmaf(am1, fmaf(e.y, fabsf(s[4 * n + 3]), e.w), s[4 * n + 3] * sl2);
    } else {
      s[4 * n] = fmaf(e.x, fabsf(s[4 * n]), fmaf(s[4 * n], sl2, e.z));
      s[4 * n + 1] = fmaf(e.y, fabsf(s[4 * n + 1]), fmaf(s[4 * n + 1], sl2, e.w));
      s[4 * n + 2] = fmaf(e.x, fabsf(s[4 * n + 2]), fmaf(s[4 * n + 2], sl2, e.z));
      s[4 * n + 3] = fmaf(e.y, fabsf(s[4 * n + 3]), fmaf(s[4 * n + 3], sl2, e.w));
    }
  }
  if (mask) mask_tile(s, j0, tq, lim0, lim1);
  const float2 base = update_max(s, 1.f, m0, m1, al0, al1);
  const float base0 = base.x, base1 = base.y;
  float ps0 = 0.f, ps1 = 0.f, pw0 = 0.f, pw1 = 0.f;
#pragma unroll
  for (int n = 0; n < 16; ++n) {
    float p0 = fast_exp2(s[4 * n] - base0), p1 = fast_exp2(s[4 * n + 1] - base0);
    float p2 = fast_exp2(s[4 * n + 2] - base1), p3 = fast_exp2(s[4 * n + 3] - base1);
    ps0 += p0 + p1;
    ps1 += p2 + p3;
    if constexpr (W) {
      const float2 v = w[n * 4 + tq];
      if constexpr (SOME) {  // am ? w : 1
        p0 *= fmaf(am0, v.x - 1.f, 1.f), p1 *= fmaf(am0, v.y - 1.f, 1.f);
        p2 *= fmaf(am1, v.x - 1.f, 1.f), p3 *= fmaf(am1, v.y - 1.f, 1.f);
      } else {
        p0 *= v.x, p1 *= v.y, p2 *= v.x, p3 *= v.y;
      }
      pw0 += p0 + p1;
      pw1 += p2 + p3;
    }
    put_p<T>(pa, n, p0, p1, p2, p3);
  }
  l0 = l0 * al0 + ps0;
  l1 = l1 * al1 + ps1;
  if constexpr (W) {
    lw0 = lw0 * al0 + pw0;
    lw1 = lw1 * al1 + pw1;
  }
}

// Online softmax of one 64 x 128 S tile of a warpgroup: masks keys j >= lim (when `mask`),
// updates the running max m (base-2, scaled) and sum l, writes P (as the A operand of P V) and
// the factors by which O must be rescaled. s[4n + e]: (row g, key 8n + 2tq + e); s[4n + 2 + e]:
// row g + 8.
template <class T>
__device__ __forceinline__ void softmax_tile(float (&s)[64], uint32_t (&pa)[8][4], float& m0, float& m1, float& l0,
                                             float& l1, float& al0, float& al1, bool mask, int j0, int tq, int lim0,
                                             int lim1, float sl2) {
  if (mask) mask_tile(s, j0, tq, lim0, lim1);
  const float2 base = update_max(s, sl2, m0, m1, al0, al1);
  const float base0 = base.x, base1 = base.y;
  float ps0 = 0.f, ps1 = 0.f;
#pragma unroll
  for (int n = 0; n < 16; ++n) {
    const float p0 = fast_exp2(fmaf(s[4 * n], sl2, -base0)), p1 = fast_exp2(fmaf(s[4 * n + 1], sl2, -base0));
    const float p2 = fast_exp2(fmaf(s[4 * n + 2], sl2, -base1)), p3 = fast_exp2(fmaf(s[4 * n + 3], sl2, -base1));
    ps0 += p0 + p1;
    ps1 += p2 + p3;
    put_p<T>(pa, n, p0, p1, p2, p3);
  }
  l0 = l0 * al0 + ps0;
  l1 = l1 * al1 + ps1;
}

template <int N>
__device__ __forceinline__ void rescale(float (&o)[N], float al0, float al1) {
#pragma unroll
  for (int n = 0; n < N / 4; ++n) o[4 * n] *= al0, o[4 * n + 1] *= al0, o[4 * n + 2] *= al1, o[4 * n + 3] *= al1;
}

// Issues S = Q K^T (4 NH k-steps) for the warpgroup; not committed.
template <class T, int NH>
__device__ __forceinline__ void issue_qk(float (&s)[64], uint64_t dq, uint64_t dk) {
#pragma unroll
  for (int ks = 0; ks < 4 * NH; ++ks) {
    const uint32_t off = ((ks >> 2) * kHalfBytes + (ks & 3) * 32) >> 4;
    wgmma_ss<T, 128>(s, dq + off, dk + off, ks > 0);
  }
}
// Issues O += P V (8 k-steps of 16 keys); not committed.
template <class T, int NH>
__device__ __forceinline__ void issue_pv(float (&o)[32 * NH], const uint32_t (&pa)[8][4], uint64_t dv) {
#pragma unroll
  for (int ks = 0; ks < 8; ++ks) wgmma_rs<T, 64 * NH>(o, pa[ks], dv + ((ks * 2048) >> 4));
}
#endif  // __CUDA_ARCH_FEAT_SM90_ALL

template <class T, int NH, bool MOD, bool TAP>
__global__ void __launch_bounds__(kThreads, 1)
    flash_prefill_sm90_kernel(const __grid_constant__ PrefillArgs a, const __grid_constant__ TmaMaps tm) {
  static_assert(!(MOD && TAP), "in-kernel taps are for unmodulated calls");
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int TB = tile_bytes<NH>();
  constexpr int NO = 32 * NH;  // O accumulators per thread
  const AttentionParams& p = a.p;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t base = (raw + 1023u) & ~1023u;
  unsigned char* smem = smem_raw + (base - raw);  // generic pointer to `base`
  const uint32_t sQ = base, sK = base + TB, sV = base + 3 * TB;  // sK[2], sV[2]
  const uint32_t bars = base + 5 * TB;
  const uint32_t q_full = bars;
  auto k_full = [&](int s) { return bars + 8 + 8 * s; };
  auto k_empty = [&](int s) { return bars + 24 + 8 * s; };
  auto v_full = [&](int s) { return bars + 40 + 8 * s; };
  auto v_empty = [&](int s) { return bars + 56 + 8 * s; };

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const TileCoord tc = tile_coord(p.causal, a.order == PrefillOrder::tiles_by_head);
  const int b = tc.b, h = tc.h, qtile = tc.qtile;
  const int q0 = qtile * kBR;
  const int hk = h / a.group;
  const BlockRange rg = block_range(p, b, q0, kBR);
  const int n_tiles = (rg.n_end + kBC - 1) / kBC;

  const uint32_t sKM = bars + 128, sTab = sKM + kModKeyBytes;  // MOD only
  if constexpr (MOD) {
    if (tid < kNumClassSlots) {
      // fold: renormalised, non-negative post weights, no LSE wanted and no warpgroup of this block
      // straddling first_modulated_row (its am = 0 rows would compute 0 x log2 0): log2 w joins the bias
      const int C = p.num_classes;
      const int64_t first = p.first_modulated_row;
      const bool straddles = first > q0 && first <= q0 + kBR - 1 && first != q0 + 64;
      bool fold = p.post_weight && p.renormalize && !p.lse && !straddles;
      for (int c = 0; fold && c < C; ++c) fold = p.post_weight[h * C + c] >= 0.f;
      float4 e = make_float4(0.f, 0.f, 1.f, fold ? 1.f : 0.f);
      if (tid < C) {
        const int hc = h * C + tid;
        if (p.logit_abs_gain) e.x = p.logit_abs_gain[hc] * fabsf(a.scale_log2);
        if (p.logit_bias) e.y = p.logit_bias[hc] * kLog2e;
        if (p.post_weight) {
          const float w = p.post_weight[hc];
          if (fold) e.y += log2f(w);  // w = 0: -inf, the key drops out
          else e.z = w;
        }
      }
      *reinterpret_cast<float4*>(smem + (sTab - base) + tid * 16) = e;
    }
  }
  if (tid == 0) {
    mbar_init(q_full, 1);
    for (int s = 0; s < 2; ++s) {
      mbar_init(k_full(s), 1);
      mbar_init(v_full(s), 1);
      mbar_init(k_empty(s), 8);  // one arrival per consumer warp
      mbar_init(v_empty(s), 8);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    fence_proxy_async();
  }
  __syncthreads();

  if (warp >= 8) {  // producer warpgroup
    asm volatile("setmaxnreg.dec.sync.aligned.u32 24;\n" ::: "memory");
    if (warp == 8 && lane == 0) {
      mbar_expect_tx(q_full, TB);
      tma_tile<NH>(sQ, &tm.q, tm.pos_q, q_full, h, q0, b);
      for (int t = 0; t < n_tiles; ++t) {
        const int s = t & 1, u = t >> 1;
        if (u > 0) mbar_wait(k_empty(s), (u - 1) & 1);
        mbar_expect_tx(k_full(s), TB);
        tma_tile<NH>(sK + s * TB, &tm.k, tm.pos_k, k_full(s), hk, t * kBC, b);
        if (u > 0) mbar_wait(v_empty(s), (u - 1) & 1);
        mbar_expect_tx(v_full(s), TB);
        tma_tile<NH>(sV + s * TB, &tm.v, tm.pos_v, v_full(s), hk, t * kBC, b);
      }
    }
    return;
  }
  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");

  // consumers: warpgroup wg owns local rows [64 wg, 64 wg + 64); this thread rows rloc, rloc + 8
  const int wg = warp >> 2, wl = warp & 3;
  const int g = lane >> 2, tq = lane & 3;
  const int rloc = wg * 64 + wl * 16 + g;
  const int row0 = q0 + rloc, row1 = row0 + 8;
  const int lim0 = rg.lim(row0, p.causal), lim1 = rg.lim(row1, p.causal);
  const float sl2 = a.scale_log2;
  auto masked = [&](int t) { return t * kBC + kBC > rg.unmasked_end; };
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f, al0, al1;
  float o[NO], s[64];
#pragma unroll
  for (int i = 0; i < NO; ++i) o[i] = 0.f;
#pragma unroll
  for (int i = 0; i < 64; ++i) s[i] = 0.f;
  // MOD: warpgroups with a row >= first_modulated_row (and key classes) run a modulated softmax:
  // 1 when all their rows are modulated, 2 when some are; 0 (plain) for the others. Recomputed
  // where used, from parameters and shared memory: values kept live across the loop spill there.
  auto wg_mode = [&]() -> int {
    if (!MOD || p.key_class == nullptr || q0 + wg * 64 + 63 < p.first_modulated_row) return 0;
    return q0 + wg * 64 >= p.first_modulated_row ? 1 : 2;
  };
  // the post weights were folded into the bias (the class table's fourth entry)
  auto folded = [&] { return reinterpret_cast<const float4*>(smem + (sTab - base))->w != 0.f; };
  const int wtid = tid & 127;
  // class of key t * kBC + wtid (loaded early), then its entry into this warpgroup's buffer t & 1
  auto fetch_class = [&](int t) -> int {
    const int j = t * kBC + wtid;
    return j < p.lk ? int(__ldg(p.key_class + int64_t(b) * p.key_class_sb + j)) : -1;
  };
  auto km_set = [&](int t) { return smem + (sKM - base) + (wg * 2 + (t & 1)) * kModSetBytes; };
  auto fill_km = [&](int t, int c) {
    const float4 e = c >= 0 ? *reinterpret_cast<const float4*>(smem + (sTab - base) + c * 16)
                            : make_float4(0.f, 0.f, 1.f, 0.f);
    float* ab = reinterpret_cast<float*>(km_set(t));  // [kPairs] {A0, A1, B0, B1}, then [kPairs] {W0, W1}
    const int pr = wtid >> 1, e1 = wtid & 1;
    ab[pr * 4 + e1] = e.x;
    ab[pr * 4 + 2 + e1] = e.y;
    ab[kPairs * 4 + pr * 2 + e1] = e.z;
    named_sync(5 + wg, 128);
  };
  uint32_t pa[8][4], pb[8][4];
  const uint64_t dq = make_desc(sQ + wg * 64 * 128, 16, 1024);
  auto dk = [&](int t) { return make_desc(sK + (t & 1) * TB, 16, 1024); };
  auto dv = [&](int t) { return make_desc(sV + (t & 1) * TB, kHalfBytes, 1024); };
  // Turn-taking: each warpgroup waits for its turn before issuing its GEMMs and then passes the
  // turn on; the last pass of warpgroup 1 is skipped so that no barrier is left half-arrived.
  auto my_turn = [&] { named_sync(1 + wg, 256); };
  auto pass_turn = [&](int t) {
    if (!(wg == 1 && t == n_tiles - 1)) named_arrive(2 - wg, 256);
  };
  auto release = [&](uint32_t bar) {
    __syncwarp();
    if (lane == 0) mbar_arrive(bar);
  };

  // TAP: a row's index among the tap rows (-1: none); whether this warpgroup holds one
  auto tap_of = [&](int row) {
    int k = -1;
    if constexpr (TAP)
      for (int i = 0; i < a.n_taps; ++i) k = a.tap_rows[i] == row ? i : k;
    return k;
  };
  bool wg_tap = false;
  if constexpr (TAP)
    for (int i = 0; i < a.n_taps; ++i)
      wg_tap = wg_tap || (a.tap_rows[i] >= q0 + wg * 64 && a.tap_rows[i] < q0 + wg * 64 + 64);
  auto tap_row = [&](int i) { return (int64_t(b) * p.hq + h) * a.n_taps + max(i, 0); };
  // the logits of tap i: a row of this block's shared memory past everything else (smem_bytes
  // counts the alignment slack, so the offset from the unaligned start is safe), in floats from that
  // start; as a generic pointer (the epilogue's reads) and a shared address (the loop's stores)
  auto tap_float = [&](int i) { return smem_bytes<NH, MOD>() / 4 + max(i, 0) * a.tap_ld; };
  auto tap_scratch = [&](int i) { return reinterpret_cast<const float*>(smem_raw) + tap_float(i); };
  auto tap_addr = [&](int i) { return raw + 4u * uint32_t(tap_float(i)); };
  // The main loop, instantiated per softmax variant K: 0 plain, 1 every row modulated, 2 the same
  // with post weights, 3 some rows modulated (with post weights, 1 for rows below the first), 4
  // plain plus the raw scores of the tap rows stored to the scratch rows (TAP). The
  // choice is made once, outside it: a branch between a wgmma and its wait makes ptxas serialise
  // every wgmma (C7520). Returns the weighted sums lw (K = 2, 3; 0 otherwise), this thread's columns.
  auto main_loop = [&](auto variant) -> float2 {
    constexpr int K = decltype(variant)::value;
    constexpr bool M = K >= 1 && K <= 3, W = K == 2 || K == 3;
    float lw0 = 0.f, lw1 = 0.f;  // W: sum of w 2^(x - m)
    // K = 4: where this thread's part of its rows' logits goes (0: not a tap row; the scratch never
    // starts at shared address 0)
    uint32_t ta0 = 0, ta1 = 0;
    if constexpr (K == 4) {
      const int i0 = tap_of(row0), i1 = tap_of(row1);
      ta0 = i0 >= 0 ? tap_addr(i0) + 8u * uint32_t(tq) : 0u;
      ta1 = i1 >= 0 ? tap_addr(i1) + 8u * uint32_t(tq) : 0u;
    }
    auto softmax = [&](int t, uint32_t(&pn)[8][4]) {
      if constexpr (M) {
        const unsigned char* set = km_set(t);
        const float am0 = row0 >= p.first_modulated_row ? 1.f : 0.f, am1 = row1 >= p.first_modulated_row ? 1.f : 0.f;
        softmax_mod_tile<T, K == 3, W>(s, pn, m0, m1, l0, l1, al0, al1, masked(t), t * kBC, tq, lim0, lim1, sl2,
                                       reinterpret_cast<const float4*>(set),
                                       reinterpret_cast<const float2*>(set + kPairs * 16), am0, am1, lw0, lw1);
      } else {
        softmax_tile<T>(s, pn, m0, m1, l0, l1, al0, al1, masked(t), t * kBC, tq, lim0, lim1, sl2);
        if constexpr (K == 4) {  // s: the masked raw scores
          store_row_if<0>(ta0 != 0u, ta0 + 4u * uint32_t(t * kBC), s);
          store_row_if<1>(ta1 != 0u, ta1 + 4u * uint32_t(t * kBC), s);
        }
      }
    };
    if (wg == 1) named_arrive(1, 256);  // warpgroup 0 goes first
    mbar_wait(k_full(0), 0);
    my_turn();
    wg_fence();
    issue_qk<T, NH>(s, dq, dk(0));
    wg_commit();
    pass_turn(0);
    if constexpr (M) fill_km(0, fetch_class(0));  // under the GEMM
    wg_wait<0>();
    fence_regs(s);
    release(k_empty(0));
    softmax(0, pa);
    // tile t: S_t and P_{t-1} V_{t-1} in one turn, softmax of S_t while P_{t-1} V_{t-1} runs
    auto step = [&](int t, uint32_t(&pprev)[8][4], uint32_t(&pnext)[8][4]) {
      const int st = t & 1, sp = (t - 1) & 1;
      mbar_wait(v_full(sp), ((t - 1) >> 1) & 1);  // V_{t-1} was copied before K_t
      mbar_wait(k_full(st), (t >> 1) & 1);
      my_turn();
      wg_fence();
      issue_qk<T, NH>(s, dq, dk(t));
      wg_commit();
      issue_pv<T, NH>(o, pprev, dv(t - 1));
      wg_commit();
      pass_turn(t);
      if constexpr (M) fill_km(t, fetch_class(t));  // under the GEMMs
      wg_wait<1>();  // S_t done; P_{t-1} V_{t-1} may still run (and still reads pprev)
      fence_regs(s);
      release(k_empty(st));
      softmax(t, pnext);
      wg_wait<0>();
      fence_regs(o);
      release(v_empty(sp));
      rescale(o, al0, al1);
    };
    int t = 1;
    for (; t + 1 < n_tiles; t += 2) {
      step(t, pa, pb);
      step(t + 1, pb, pa);
    }
    const bool last_in_b = t < n_tiles;
    if (last_in_b) step(t, pa, pb);
    const int tl = n_tiles - 1;
    mbar_wait(v_full(tl & 1), (tl >> 1) & 1);
    wg_fence();
    if (last_in_b) issue_pv<T, NH>(o, pb, dv(tl));
    else issue_pv<T, NH>(o, pa, dv(tl));
    wg_commit();
    wg_wait<0>();
    fence_regs(o);
    release(v_empty(tl & 1));
    return make_float2(lw0, lw1);
  };
  mbar_wait(q_full, 0);
  float2 lw = make_float2(0.f, 0.f);
  if (n_tiles > 0) {
    const int mode = wg_mode();
    const bool weights = mode != 0 && p.post_weight && !folded();
    if (TAP && wg_tap) lw = main_loop(std::integral_constant<int, 4>{});
    else if (mode == 0) lw = main_loop(std::integral_constant<int, 0>{});
    else if (mode == 2) lw = main_loop(std::integral_constant<int, 3>{});
    else if (weights) lw = main_loop(std::integral_constant<int, 2>{});
    else lw = main_loop(std::integral_constant<int, 1>{});
  }

  // epilogue: normalise (MOD: by sum w p when renormalising, unless the weights were folded into
  // the logits, which makes l that sum; then the head gain); rows >= qlen
  // (and rows that saw nothing) are 0 with LSE -inf
  l0 = quad_sum(l0);
  l1 = quad_sum(l1);
  const bool valid0 = row0 < rg.qlen, valid1 = row1 < rg.qlen;
  float n0 = l0, n1 = l1;
  if constexpr (MOD) {
    if (wg_mode() != 0 && p.renormalize && p.post_weight && !folded()) {
      const float lw0 = quad_sum(lw.x), lw1 = quad_sum(lw.y);
      if (row0 >= p.first_modulated_row) n0 = lw0;
      if (row1 >= p.first_modulated_row) n1 = lw1;
    }
  }
  float f0 = valid0 && l0 > 0.f && n0 > 0.f ? 1.f / n0 : 0.f, f1 = valid1 && l1 > 0.f && n1 > 0.f ? 1.f / n1 : 0.f;
  {  // head gain: also without key classes, which run the MOD = false instantiation
    if (p.head_gain) {
      const float gain = p.head_gain[h];
      f0 *= gain;
      f1 *= gain;
    }
  }
  if (p.lse && tq == 0) {
    const int64_t sr = p.lse_offset(b, h, 0);
    if (row0 < p.lq) p.lse[sr + row0] = valid0 && l0 > 0.f ? (m0 + __log2f(l0)) * kLn2 : -INFINITY;
    if (row1 < p.lq) p.lse[sr + row1] = valid1 && l1 > 0.f ? (m1 + __log2f(l1)) * kLn2 : -INFINITY;
  }
  if constexpr (TAP) {
    // the tap rows' probabilities 2^(x sl2 - m - log2 l) from the scratch logits, each row by the
    // whole warp holding it (rows g and g + 8 of lanes 4g..4g+3); keys a row does not see are 0
    const float L0 = valid0 && l0 > 0.f ? m0 + __log2f(l0) : INFINITY;
    const float L1 = valid1 && l1 > 0.f ? m1 + __log2f(l1) : INFINITY;
    const int e0 = valid0 ? lim0 : 0, e1 = valid1 ? lim1 : 0;
    const int tap0 = tap_of(row0), tap1 = tap_of(row1);
    // this warp's tap rows, bit 4g for row g (half 0) or g + 8 (half 1): most warps have none and
    // skip the rest (a loop over all 16 rows with dependent shuffles made every block of the TAP
    // kernel ~10% longer at 640 tokens: bench/NOTES.md, session 16)
    const unsigned rows_lo = __ballot_sync(0xffffffffu, tq == 0 && tap0 >= 0);
    const unsigned rows_hi = __ballot_sync(0xffffffffu, tq == 0 && tap1 >= 0);
    if ((rows_lo | rows_hi) != 0u) __syncwarp();  // the scratch rows were written by other lanes
    for (int half = 0; half < 2; ++half)
      for (unsigned rows = half ? rows_hi : rows_lo; rows != 0u; rows &= rows - 1u) {  // warp-uniform
        const int src = __ffs(rows) - 1;
        const bool hi = half != 0;
        const int tr = __shfl_sync(0xffffffffu, hi ? tap1 : tap0, src);
        const float lse2 = __shfl_sync(0xffffffffu, hi ? L1 : L0, src);
        const int lim = __shfl_sync(0xffffffffu, hi ? e1 : e0, src);
        const float* x = tap_scratch(tr);
        float* pr = a.tap_probs + tap_row(tr) * p.lk;
        // 8 shared-memory loads in flight per lane
        for (int j0 = 0; j0 < p.lk; j0 += 8 * 32) {
          float xv[8];
#pragma unroll
          for (int u = 0; u < 8; ++u) {
            const int j = j0 + u * 32 + lane;
            xv[u] = j < lim ? x[j] : -INFINITY;
          }
#pragma unroll
          for (int u = 0; u < 8; ++u) {
            const int j = j0 + u * 32 + lane;
            if (j < p.lk) pr[j] = fast_exp2(fmaf(xv[u], sl2, -lse2));
          }
        }
      }
  }
  // stage the warpgroup's 64 rows in its own (swizzled) rows of the Q tile, then 16-byte stores
#pragma unroll
  for (int n = 0; n < NO / 4; ++n) {
    const int col = n * 8 + tq * 2;
    *reinterpret_cast<uint32_t*>(smem + sw128(rloc, col)) = pack2<T>(o[4 * n] * f0, o[4 * n + 1] * f0);
    *reinterpret_cast<uint32_t*>(smem + sw128(rloc + 8, col)) = pack2<T>(o[4 * n + 2] * f1, o[4 * n + 3] * f1);
  }
  named_sync(3 + wg, 128);
  T* out = static_cast<T*>(p.out);
  const int D = p.d, CH = D / 8;  // 16-byte chunks per output row
  for (int idx = tid & 127; idx < 64 * CH; idx += 128) {
    const int r = wg * 64 + idx / CH, ch = idx - (idx / CH) * CH;
    const int row = q0 + r;
    if (row < p.lq)
      *reinterpret_cast<uint4*>(out + p.out_offset(b, row, h) + ch * 8) =
          *reinterpret_cast<const uint4*>(smem + sw128(r, ch * 8));
  }
#endif
}

// Tensor map of a [B, L, H, D] strided 16-bit tensor, boxes of 128 rows x 64 columns, 128-byte
// swizzle, zeros out of bounds. The three outer dims are ordered by stride (size-1 dims last) so
// that the map describes nested strides for any view; pos says where h, l and b went.
bool make_tensor_map(CUtensorMap* map, int8_t (&pos)[3], const void* ptr, DType dt, int64_t D, int64_t H,
                     int64_t L, int64_t B, int64_t sh, int64_t sl, int64_t sb) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = sm90::tensor_map_encoder();
  if (!encode) return false;
  struct Dim {
    uint64_t size, stride;
    int which;
  } dims[3] = {{uint64_t(H), uint64_t(sh) * 2, 0}, {uint64_t(L), uint64_t(sl) * 2, 1}, {uint64_t(B), uint64_t(sb) * 2, 2}};
  uint64_t span = uint64_t(D) * 2;
  for (const Dim& d : dims)
    if (d.size > 1) span = std::max(span, d.size * d.stride);
  for (Dim& d : dims)
    if (d.size == 1) d.stride = span;
  std::stable_sort(dims, dims + 3, [](const Dim& x, const Dim& y) { return x.stride < y.stride; });
  cuuint64_t gdim[4] = {cuuint64_t(D), dims[0].size, dims[1].size, dims[2].size};
  cuuint64_t gstride[3] = {dims[0].stride, dims[1].stride, dims[2].stride};
  cuuint32_t box[4] = {64, 1, 1, 1};
  cuuint32_t estride[4] = {1, 1, 1, 1};
  for (int i = 0; i < 3; ++i) {
    pos[dims[i].which] = int8_t(i + 1);
    if (dims[i].which == 1) box[i + 1] = 128;  // Br = Bc = 128: one box shape for Q, K and V
  }
  const CUresult r =
      encode(map, dt == DType::BF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 4,
             const_cast<void*>(ptr), gdim, gstride, box, estride, CU_TENSOR_MAP_INTERLEAVE_NONE,
             CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS;
}

int64_t tap_smem_bytes(int n, int64_t lk) { return int64_t(n) * PrefillTaps::scratch_ld(lk) * 4; }

template <class T, int NH, bool MOD, bool TAP>
bool launch(const PrefillArgs& a, cudaStream_t s) {
  const AttentionParams& p = a.p;
  TmaMaps tm;
  if (!make_tensor_map(&tm.q, tm.pos_q, p.q, p.dtype, p.d, p.hq, p.lq, p.batch, p.q_sh, p.q_sl, p.q_sb) ||
      !make_tensor_map(&tm.k, tm.pos_k, p.k, p.dtype, p.d, p.hkv, p.lk, p.batch, p.k_sh, p.k_sl, p.k_sb) ||
      !make_tensor_map(&tm.v, tm.pos_v, p.v, p.dtype, p.d, p.hkv, p.lk, p.batch, p.v_sh, p.v_sl, p.v_sb))
    return false;
  auto kernel = flash_prefill_sm90_kernel<T, NH, MOD, TAP>;
  // TAP: the tap rows' logits follow the tiles (flash_prefill_sm90_taps_fit said they fit)
  const int smem = smem_bytes<NH, MOD>() + (TAP ? int(tap_smem_bytes(a.n_taps, p.lk)) : 0);
  kernel_smem_allow(reinterpret_cast<const void*>(kernel), TAP ? cuda_smem_optin() : smem_bytes<NH, MOD>());
  const dim3 grid(unsigned((p.lq + kBR - 1) / kBR), unsigned(p.hq), unsigned(p.batch));
  kernel<<<grid, kThreads, size_t(smem), s>>>(a, tm);
  MMATTN_CUDA_CHECK_LAUNCH("flash_prefill_sm90_kernel");
  return true;
}

}  // namespace

bool flash_prefill_sm90_available() { return sm90::kernels_available(); }

bool flash_prefill_sm90_taps_fit(int n, int64_t lk, int64_t d) {
  const int base = d <= 64 ? smem_bytes<1, false>() : smem_bytes<2, false>();
  return flash_prefill_sm90_available() && base + tap_smem_bytes(n, lk) <= cuda_smem_optin();
}

template <bool MOD, bool TAP>
bool launch_kind(const PrefillArgs& a, cudaStream_t s) {
  const bool bf = a.p.dtype == DType::BF16;
  if (a.p.d <= 64) return bf ? launch<__nv_bfloat16, 1, MOD, TAP>(a, s) : launch<__half, 1, MOD, TAP>(a, s);
  return bf ? launch<__nv_bfloat16, 2, MOD, TAP>(a, s) : launch<__half, 2, MOD, TAP>(a, s);
}

bool flash_prefill_sm90_launch(const PrefillArgs& a, cudaStream_t s) {
  if (a.p.class_mass) return false;  // the general kernel accumulates class mass
  // Without key classes, or with first_modulated_row past the last row, nothing is modulated per
  // key (attention.cpp requires classes for the logit and post tables); the head gain alone is
  // applied by the epilogue of either instantiation. The MOD = true kernel's plain warpgroups run
  // 4-14% slower than MOD = false (measured; the cause is not established), so it is launched
  // only when needed.
  const bool mod = a.p.key_class != nullptr && a.p.first_modulated_row < a.p.lq;
  // in-kernel taps: flash_prefill_cuda passes them for calls without key classes only
  if (a.n_taps > 0) return launch_kind<false, true>(a, s);
  return mod ? launch_kind<true, false>(a, s) : launch_kind<false, false>(a, s);
}

}  // namespace mmattn::flash
