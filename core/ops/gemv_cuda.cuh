#pragma once
// Skinny products for decoding: y [m, n] (+)= x [m, k] @ W[n, k]^T + bias, m <= 8, f16/bf16,
// f32 accumulation. Two kernels: m <= 2 on the CUDA cores (gemv_kernel, below), 3 <= m <= 8 on
// the tensor cores (gemv_mma_kernel, further below; Plain input only). The weight is read exactly once, as 16-byte streaming loads that bypass L1;
// the product is bound by the weight bytes, so the kernel's job is to keep enough loads in flight
// on every multiprocessor (4 x 16 bytes per row per lane, 4 rows per warp at a time; at m = 1 with
// many rows, 8 x 16 bytes of 2 rows: longer contiguous runs per row, see run()).
//
// Work split: a task is ROWS consecutive output rows for all m inputs, owned by `split` (1, 2 or 4)
// warps of one block, each walking one contiguous slice of K in 16-byte vectors (lane, lane + 32,
// ...): it multiplies each weight vector with the m input vectors and keeps ROWS x M f32 partial
// sums, reduced by shuffles, then across the task's warps in shared memory in warp order
// (deterministic). Blocks take groups of kWarps / split tasks over a grid of one full wave: group b
// first, then with a grid stride, or (m = 1, a staged input: RmsNorm / SwiGLU) whichever group no
// block has taken yet (a per-launch atomic queue). The host picks `split` per shape so that the
// warp-tasks fill the wave's warp slots (pick_split): at n = 4096 one warp per task would leave half
// of them idle and give each warp a long chain of dependent round trips.
//
// Inputs (GemvInput):
//   Plain   x read through the read-only path (L1/L2 hits: every warp reads all of x).
//   RmsNorm x_eff = rms_norm(x, norm_weight, eps) with the rounding of core/ops/norm (to T after
//           the scaling, to T after the weight); each block computes it once into shared memory.
//   SwiGLU  x [m, 2k] = gate | up, x_eff = T(T(silu(gate)) * up) as swiglu_fused; shared memory.
// Output (GemvOutput): y = T(acc + bias) or, accumulating, T(y + acc + bias) (one rounding, like a GEMM
// with beta = 1). The two paired outputs give each task ROWS / 2 pairs of rows instead of ROWS
// consecutive rows (task_row), so that one warp ends holding both sums its epilogue needs:
//   SwiGLU  gate row j with up row j (weight [gate | up]): y [m, n / 2] = T(T(silu(g)) * u) for
//           g, u = T(acc + bias), as swiglu_fused rounds (core/ops/activation).
//   QkvRope the rotate-half pair (i, i + D / 2) of one head: each rounded as Plain, then q and k
//           rotated by rope_pair (core/ops/rope.cuh: apply_rope_'s roundings) with row m's cos / sin,
//           and every section (q | k | v) written to its own rows (k and v into a KV cache).
// A row's sum does not depend on the task it is in (same K slices, same order), so the paired
// outputs equal the plain product followed by swiglu_fused / apply_rope_, bit for bit.
//
// Programmatic dependent launch (sm_90): the kernel is launched allowed to start before the
// kernel ahead of it in the stream has finished. Its blocks then start on their first weight bytes
// and wait (griddepcontrol.wait) before reading x or y or writing y; each block also lets its own
// successor launch at once. A parameter weight (Args::weight_static: linear() and the fused forms)
// is read for real before the wait (m = 1: the first round of loads into registers; the tensor-core
// kernel: its first ring stages); any other weight only gets L2 prefetch hints (a matmul's "weight"
// may come from the kernel ahead). So in a chain of decode products the next one's weight stream
// starts during this one's tail instead of after it (bench/NOTES.md, session 10: b1 +4%, b8 +7%
// with the row norms and the attention kernels launched the same way).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <unordered_map>

#include "core/cuda_reduce.cuh"
#include "core/cuda_types.cuh"
#include "core/mma.cuh"
#include "core/ops/linear.h"
#include "core/ops/rope.cuh"
#include "core/sm90.cuh"

namespace mmattn::gemv_detail {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kUnroll = 4;  // 16-byte weight loads per row per lane in flight

struct Args {
  const void* x;
  const void* w;
  const void* bias;
  const void* norm_weight;
  void* y;
  int m, n, k;
  int x_stride;  // elements between rows of x
  float eps;
  bool accumulate;
  int split = 1;  // warps per task (gemv_kernel): 1, 2 or 4, dividing kWarps
  bool weight_static = false;  // w is a parameter: gemv_mma_kernel may copy it before the wait
  QkvRopeOutputs rope;  // GemvOutput::QkvRope's table and destinations
  int* queue = nullptr;  // gemv_kernel: its queue slot (gemv_queue), zero between launches; null = grid stride
};

__device__ __forceinline__ uint4 ld_stream(const uint4* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

using sm90::allow_next_grid;
using sm90::wait_for_previous_grid;

// Ints of a launch's queue slot (gemv_queue): {next item, blocks done} and, for an Extra (below),
// its counters; the last block to finish puts all of them back to zero.
constexpr int kQueueInts = 8;

// Work a gemv_kernel's blocks take from its queue besides the row groups (a template hook, so that a
// layer above core can put its own tasks between a product's row groups: attention/decode_fused).
// NoExtra: none. An active Extra X provides (all device functions run by every thread of the block):
//   X::Params                        its kernel argument
//   X::kSmem                         dynamic shared memory it needs past the staged input
//   X::row_group(xp, v, groups, grid, ppg)  item v of the queue's order: its row group (>= 0), or
//                                    -1 - e for X's item e (ppg: output rows, or pairs, per group)
//   X::extra_items(xp)               how many items of its own
//   X::row_group_done(xp, g, ppg, counters, pending)  thread 0, after a block barrier that follows
//                                    row group g's stores (it fences before counting, or adds the
//                                    group to its `pending`, a thread-0 register, to count later)
//   X::run(xp, e, counters, smem, groups, ppg, pending)  item e; smem: X::kSmem bytes
//   X::finish(xp, counters, pending) thread 0, after the block's last item
// counters: the launch's queue slot + 2 (kQueueInts - 2 ints, zero at the start). X's items may wait
// for row groups or items earlier in the queue's order (never later: every block of the one-wave
// grid is resident once the kernel ahead has finished, so the wait ends).
struct NoExtra {
  struct Params {};
  static constexpr bool kActive = false;
  static constexpr int kSmem = 0;
};

// Bytes of each of its first task's rows a warp prefetches into L2 before waiting: the first round
// of tasks (a full wave of warps x 4 rows) then brings <= ~17 MB, well inside the H100's 50 MB L2.
constexpr int kPrefetchBytesPerRow = 4096;

template <class T>
__device__ __forceinline__ void to_floats(const uint4& v, float (&f)[8]) {
  const T* e = reinterpret_cast<const T*>(&v);
#pragma unroll
  for (int i = 0; i < 8; ++i) f[i] = to_f32(e[i]);
}

template <class T>
__device__ __forceinline__ float round_t(float v) {
  return to_f32(from_f32<T>(v));
}

// Both kernels' epilogue: y[m, row] = T(acc + bias[row]) or, accumulating, T(y[m, row] + acc + bias[row]).
template <class T>
__device__ __forceinline__ void store_output(const Args& a, int m, int row, float acc) {
  T* y = static_cast<T*>(a.y);
  const T* bias = static_cast<const T*>(a.bias);
  float v = acc + (bias ? to_f32(bias[row]) : 0.f);
  if (a.accumulate) v += to_f32(y[int64_t(m) * a.n + row]);
  y[int64_t(m) * a.n + row] = from_f32<T>(v);
}

// The weight row of row r (< ROWS) of task t, clamped into the weight (a task past the end repeats a
// valid row and stores nothing).
template <GemvOutput OUT, int ROWS>
__device__ __forceinline__ int task_row(const Args& a, int t, int r) {
  if constexpr (OUT == GemvOutput::Plain) {
    return min(t * ROWS + r, a.n - 1);
  } else {
    constexpr int H = ROWS / 2;
    const int p = min(t * H + r % H, a.n / 2 - 1);  // the pair
    if constexpr (OUT == GemvOutput::SwiGLU) {
      return r < H ? p : a.n / 2 + p;
    } else {
      const int half = int(a.rope.head_dim) / 2;
      const int col = (p / half) * int(a.rope.head_dim) + p % half;
      return r < H ? col : col + half;
    }
  }
}

// The paired outputs' epilogue for pair p of input row m: s0 the sum of its first row, s1 its second.
template <class T, GemvOutput OUT>
__device__ __forceinline__ void store_pair(const Args& a, int m, int p, float s0, float s1) {
  const T* bias = static_cast<const T*>(a.bias);
  const int r0 = task_row<OUT, 2>(a, p, 0), r1 = task_row<OUT, 2>(a, p, 1);
  const T t0 = from_f32<T>(s0 + (bias ? to_f32(bias[r0]) : 0.f));
  const T t1 = from_f32<T>(s1 + (bias ? to_f32(bias[r1]) : 0.f));
  if constexpr (OUT == GemvOutput::SwiGLU) {
    const float g = to_f32(t0), u = to_f32(t1);
    static_cast<T*>(a.y)[int64_t(m) * (a.n / 2) + p] = from_f32<T>(round_t<T>(g / (1.f + expf(-g))) * u);
  } else {
    const QkvRopeOutputs& o = a.rope;
    const int sec = r0 < o.q_cols ? 0 : r0 < o.q_cols + o.k_cols ? 1 : 2;
    const int start = sec == 0 ? 0 : sec == 1 ? int(o.q_cols) : int(o.q_cols + o.k_cols);
    T* dst = static_cast<T*>(o.out[sec]) + int64_t(m) * o.ld[sec] - start;
    T y0 = t0, y1 = t1;
    if (sec < 2) {
      const int half = int(o.head_dim) / 2;
      const int64_t at = int64_t(m) * half + p % half;
      float f0, f1;
      rope_pair<T, RopeStyle::HalfSplit>(to_f32(t0), to_f32(t1), o.cos[at], o.sin[at], f0, f1);
      y0 = from_f32<T>(f0), y1 = from_f32<T>(f1);
    }
    dst[r0] = y0;
    dst[r1] = y1;
  }
}

// x_eff for all m rows into shared memory xs [m][k] (as T).
template <class T, int M, GemvInput IN>
__device__ void stage_input(const Args& a, uint4* xs, float* scratch) {
  const int kv = a.k / 8;
  const uint4* x = static_cast<const uint4*>(a.x);
  const int xsv = a.x_stride / 8;
  if constexpr (IN == GemvInput::RmsNorm) {
    float inv[M];
#pragma unroll
    for (int m = 0; m < M; ++m) {
      float s = 0.f;
      if (m < a.m)
        for (int v = threadIdx.x; v < kv; v += kThreads) {
          float f[8];
          to_floats<T>(x[m * xsv + v], f);
#pragma unroll
          for (int i = 0; i < 8; ++i) s = fmaf(f[i], f[i], s);
        }
      inv[m] = rsqrtf(block_sum(s, scratch) / float(a.k) + a.eps);
    }
    const uint4* nw = static_cast<const uint4*>(a.norm_weight);
    for (int v = threadIdx.x; v < kv; v += kThreads) {
      float wf[8];
      to_floats<T>(nw[v], wf);
#pragma unroll
      for (int m = 0; m < M; ++m) {
        if (m >= a.m) break;
        float f[8];
        to_floats<T>(x[m * xsv + v], f);
        Vec<T, 8> o;
#pragma unroll
        for (int i = 0; i < 8; ++i) o.v[i] = from_f32<T>(wf[i] * round_t<T>(f[i] * inv[m]));
        xs[m * kv + v] = *reinterpret_cast<const uint4*>(&o);
      }
    }
  } else {  // SwiGLU: gate | up
    for (int v = threadIdx.x; v < kv; v += kThreads) {
#pragma unroll
      for (int m = 0; m < M; ++m) {
        if (m >= a.m) break;
        float g[8], u[8];
        to_floats<T>(x[m * xsv + v], g);
        to_floats<T>(x[m * xsv + kv + v], u);
        Vec<T, 8> o;
#pragma unroll
        for (int i = 0; i < 8; ++i) o.v[i] = from_f32<T>(round_t<T>(g[i] / (1.f + expf(-g[i]))) * u[i]);
        xs[m * kv + v] = *reinterpret_cast<const uint4*>(&o);
      }
    }
  }
  __syncthreads();
}

// Whether a gemv_kernel takes its task groups from a queue (after the first): m = 1 with a staged
// input only (bench/NOTES.md, session 22: the norm + gate/up product gained 2 us per layer, while
// plain q/k/v lost 2.5 us).
template <int M, GemvInput IN>
constexpr bool queued_kernel = M == 1 && IN != GemvInput::Plain;

// (two blocks per multiprocessor: every variant within 128 registers; without the bound an m = 2
// one took 143)
template <class T, int M, int ROWS, GemvInput IN, int U = kUnroll, GemvOutput OUT = GemvOutput::Plain,
          class X = NoExtra>
__global__ void __launch_bounds__(kThreads, 2) gemv_kernel(Args a, typename X::Params xp) {
  static_assert(OUT == GemvOutput::Plain || ROWS % 2 == 0, "paired outputs take whole pairs of rows");
  extern __shared__ uint4 xs[];  // [m][k / 8] for RmsNorm / SwiGLU
  __shared__ float scratch[32];
  __shared__ float part_sums[kWarps][ROWS * M];  // split > 1: each warp's reduced partial sums
  constexpr bool kStaged = IN != GemvInput::Plain;
  const int kv = a.k / 8;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const uint4* w = static_cast<const uint4*>(a.w);
  const uint4* x = static_cast<const uint4*>(a.x);
  const int xsv = a.x_stride / 8;
  const int tasks = (a.n + ROWS - 1) / ROWS;
  const int per_block = kWarps / a.split;  // tasks per block and grid step
  const int group = warp / a.split, piece = warp % a.split;
  const int slice = (kv + a.split - 1) / a.split;  // vectors of K per warp
  const int k_begin = min(kv, piece * slice), k_end = min(kv, k_begin + slice);

  // A parameter weight (weight_static, m = 1): the first round of loads of this warp's first task goes
  // into the registers of the main loop's first iteration before the wait; the rest of its first
  // kPrefetchBytesPerRow bytes per row (all of them otherwise) are L2 hints.
  uint4 wv[U][ROWS];
  bool preloaded = false;
  const int ppg = per_block * (OUT == GemvOutput::Plain ? ROWS : ROWS / 2);  // rows (pairs) per group
  int first = blockIdx.x;  // the row group of the block's first item (< 0: an Extra's item)
  if constexpr (X::kActive)
    first = X::row_group(xp, blockIdx.x, (tasks + per_block - 1) / per_block, gridDim.x, ppg);
  allow_next_grid();
  if (const int t = first * per_block + group; (!X::kActive || first >= 0) && t < tasks) {
    int from = 0;  // bytes of each row already loaded
    if (M == 1 && a.weight_static) {  // (m = 2: the live registers would cost a block per SM)
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int r = 0; r < ROWS; ++r) {
          const int c = k_begin + lane + 32 * u;
          wv[u][r] = c < k_end ? ld_stream(w + int64_t(task_row<OUT, ROWS>(a, t, r)) * kv + c) : make_uint4(0, 0, 0, 0);
        }
      preloaded = true;
      from = 32 * U * 16;
    }
    const int lines = max(min((k_end - k_begin) * 16, kPrefetchBytesPerRow) - from, 0) / 128;  // per row
    for (int i = lane; i < lines * ROWS; i += 32) {
      const char* row =
          reinterpret_cast<const char*>(w + int64_t(task_row<OUT, ROWS>(a, t, i / lines)) * kv + k_begin) + from;
      asm volatile("prefetch.global.L2 [%0];" ::"l"(row + (i % lines) * 128));
    }
  }
  wait_for_previous_grid();  // x (and y, when accumulating) come from the kernels before
  if constexpr (kStaged) stage_input<T, M, IN>(a, xs, scratch);

  // Task groups (per_block consecutive tasks): block b's first is group b (its loads may start
  // before the wait); then, with a queue, whichever group is next when the block finishes one (the
  // blocks of a wave drift apart by microseconds; a static grid stride left the fast ones idle at
  // the end while the slow ones finished), else group b + gridDim.x and so on. A row's sum does not
  // depend on the block computing it, so both give the same bits. The group is uniform across the
  // block (the shared-memory broadcast below, or the grid stride). With an Extra the queue hands out
  // items, row groups and the Extra's own in the order X::row_group gives.
  constexpr bool kQueue = queued_kernel<M, IN> || X::kActive;
  __shared__ int s_next;
  int pending = 0;  // (an Extra's row groups that thread 0 has not counted yet)
  const int groups = (tasks + per_block - 1) / per_block;
  int items = groups;
  if constexpr (X::kActive) items += X::extra_items(xp);
  // the next item: the queue's answer (asked for at the start of this one), or the grid stride
  auto advance = [&](int item, int next) {
    if (kQueue && a.queue) {
      if (threadIdx.x == 0) s_next = next;
      __syncthreads();
      item = s_next;
      __syncthreads();  // (s_next is rewritten by the next item)
      return item;
    }
    return item + int(gridDim.x);
  };
  for (int item = blockIdx.x; item < items;) {
    // (the next item is asked for now, its answer read after this one's work)
    const int next = kQueue && a.queue && threadIdx.x == 0 ? int(gridDim.x) + atomicAdd(a.queue, 1) : 0;
    int g = item;
    if constexpr (X::kActive) {
      g = X::row_group(xp, item, groups, gridDim.x, ppg);
      if (g < 0) {
        X::run(xp, -1 - g, a.queue + 2, reinterpret_cast<char*>(xs + M * kv), groups, ppg, pending);
        item = advance(item, next);
        continue;
      }
    }
    const int t = g * per_block + group;
    const uint4* wr[ROWS];
    // (a paired output clamps its pair inside task_row and gets t as it is: with t clamped here too,
    // ptxas of CUDA 13 (sm_90a) fused the two clamps into one three-way max and lost the negation of
    // one operand, reading rows before the weight; bench/NOTES.md, session 21)
#pragma unroll
    for (int r = 0; r < ROWS; ++r)
      wr[r] = w + int64_t(task_row<OUT, ROWS>(a, OUT == GemvOutput::Plain ? min(t, tasks - 1) : t, r)) * kv;
    float acc[ROWS][M];
#pragma unroll
    for (int r = 0; r < ROWS; ++r)
#pragma unroll
      for (int m = 0; m < M; ++m) acc[r][m] = 0.f;

    const int c_end = t < tasks ? k_end : k_begin;  // a group past the last task reads nothing
    for (int c0 = k_begin + lane; c0 < c_end; c0 += 32 * U) {
      if (!preloaded)
#pragma unroll
        for (int u = 0; u < U; ++u)
#pragma unroll
          for (int r = 0; r < ROWS; ++r) {
            const int c = c0 + 32 * u;
            wv[u][r] = c < c_end ? ld_stream(wr[r] + c) : make_uint4(0, 0, 0, 0);
          }
      preloaded = false;
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int c = c0 + 32 * u;
        if (c >= c_end) break;
        float wf[ROWS][8];
#pragma unroll
        for (int r = 0; r < ROWS; ++r) to_floats<T>(wv[u][r], wf[r]);
#pragma unroll
        for (int m = 0; m < M; ++m) {
          if (m >= a.m) break;
          float xf[8];
          to_floats<T>(kStaged ? xs[m * kv + c] : __ldg(x + m * xsv + c), xf);
#pragma unroll
          for (int r = 0; r < ROWS; ++r)
#pragma unroll
            for (int i = 0; i < 8; ++i) acc[r][m] = fmaf(wf[r][i], xf[i], acc[r][m]);
        }
      }
    }

    preloaded = false;  // (a lane with no vector of the first task's slice never used it)
    float mine = 0.f;  // lane r * M + m ends up holding the warp's sum for (row r, input m)
#pragma unroll
    for (int r = 0; r < ROWS; ++r)
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const float s = warp_sum(acc[r][m]);
        if (lane == r * M + m) mine = s;
      }
    if (a.split > 1) {
      if (lane < ROWS * M) part_sums[warp][lane] = mine;
      __syncthreads();
      if (piece == 0) {
        mine = 0.f;
        for (int i = 0; i < a.split; ++i) mine += lane < ROWS * M ? part_sums[warp + i][lane] : 0.f;
      }
      __syncthreads();  // part_sums is rewritten by the next task group
    }
    if constexpr (OUT == GemvOutput::Plain) {
      const int row = min(t, tasks - 1) * ROWS + lane / M, m = lane % M;
      if (piece == 0 && t < tasks && lane < ROWS * M && row < a.n && m < a.m) store_output<T>(a, m, row, mine);
    } else {
      constexpr int H = ROWS / 2;
      const float second = __shfl_down_sync(0xffffffffu, mine, H * M);  // (row r + H, m) for lane r * M + m
      const int p = t * H + lane / M, m = lane % M;
      if (piece == 0 && t < tasks && lane < H * M && p < a.n / 2 && m < a.m) store_pair<T, OUT>(a, m, p, mine, second);
    }
    if constexpr (X::kActive) {  // the group's rows, visible to the Extra's items that wait for them
      __syncthreads();           // (every thread's stores, then one thread's fence and count: a release)
      if (threadIdx.x == 0) X::row_group_done(xp, g, ppg, a.queue + 2, pending);
    }
    item = advance(item, next);
  }
  if constexpr (X::kActive)
    if (threadIdx.x == 0) X::finish(xp, a.queue + 2, pending);
  // The last block to finish puts the queue back to zero (every block has taken its last item).
  if (kQueue && a.queue && threadIdx.x == 0) {
    __threadfence();
    if (atomicAdd(a.queue + 1, 1) == int(gridDim.x) - 1)
      for (int i = 0; i < (X::kActive ? kQueueInts : 2); ++i) a.queue[i] = 0;
  }
}

// ---- 3 <= m <= 8: tensor cores (mma.sync m16n8k16, f32 accumulation) ----------------------------
// A block owns 16 output rows. The weight rows are the MMA's A operand (16 rows x 16 k), x^T its B
// operand (16 k x 8 columns = the m inputs, zero past m). The k order inside an MMA is free as long
// as A and B agree, so every lane reads whole 16-byte vectors: lane (g = lane / 4, t = lane % 4)
// takes vector 4 s + t of step s (32 k) from weight rows g and g + 8 and from x row g, and feeds
// elements 0-3 to one MMA and 4-7 to the next, into the fragment slots (2t, 2t + 1, 2t + 8, 2t + 9)
// that both operands use for the same lane.
// Loads: the 8 warps share one shared-memory ring of kRowStages stages, each stage kRowVecs 16-byte
// vectors (1 KB) of each of the 16 rows, filled by cp.async (L2 only) kRowStages - 1 stages ahead
// of the MMAs, so that each warp instruction copies 512 contiguous bytes of one row, as the CUDA-core
// gemv reads. (bench/NOTES.md, session 9: the previous kernel, each warp streaming its own K slice
// of 16 rows at 64 bytes per row per instruction, read the weight 6% slower end to end at batch 8;
// a deeper ring or 16-warp blocks made it slower still.) Warp w multiplies steps 2w and 2w + 1 of
// each stage. The ring is shared, so a block barrier per stage guards the slot being refilled (the
// classic multistage cp.async pipeline). Shared-memory rows are 1 KB apart, so the vector index is
// XOR-swizzled by the row's parity: a quarter-warp's 16-byte reads (rows g, g + 1 at the same 4
// vectors) then hit 8 distinct bank groups. The warps' partial 16 x 8 tiles are summed in shared
// memory in warp order (deterministic). Before griddepcontrol.wait: the copies of the first stages
// when the weight is a parameter (weight_static: linear() and the fused forms), else only L2
// prefetch hints (a matmul's "weight" may be written by the kernel ahead).
constexpr int kMmaRows = 16;
constexpr int kRowVecs = 64;   // vectors (16 bytes) of each row per stage
constexpr int kRowStages = 4;  // ring depth (kRowStages - 1 stages in flight)
constexpr int kRowSmem = kRowStages * kMmaRows * kRowVecs * 16;  // 64 KB

template <class T>
__global__ void __launch_bounds__(kThreads) gemv_mma_kernel(Args a) {
  extern __shared__ uint4 ring[];  // [stage][row][vector ^ swizzle]
  __shared__ float part[kWarps][kMmaRows][8];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int kv = a.k / 8;
  const int row0 = blockIdx.x * kMmaRows;
  const uint4* w = static_cast<const uint4*>(a.w);
  const bool has_x = g < a.m;
  const uint4* xr = static_cast<const uint4*>(a.x) + int64_t(has_x ? g : 0) * (a.x_stride / 8);
  const int stages = (kv + kRowVecs - 1) / kRowVecs;
  // copy role: this thread copies vector (tid % 64) of rows tid / 64 + 4 i, i < 4
  constexpr int kCopyRows = kMmaRows / 4;
  const int cv = threadIdx.x % kRowVecs, cr = threadIdx.x / kRowVecs;
  const uint4* src[kCopyRows];  // those rows (the last weight row for rows past n)
#pragma unroll
  for (int i = 0; i < kCopyRows; ++i) src[i] = w + int64_t(min(row0 + cr + 4 * i, a.n - 1)) * kv;
  auto slot = [&](int stage, int r, int v) -> uint4* {
    return ring + (stage * kMmaRows + r) * kRowVecs + (v ^ ((r & 1) << 2));
  };
  auto issue = [&](int st) {
    if (st < stages)
#pragma unroll
      for (int i = 0; i < kCopyRows; ++i) {
        const int v = st * kRowVecs + cv;
        const bool in = v < kv;
        cp_async16(smem_u32(slot(st % kRowStages, cr + 4 * i, cv)), src[i] + (in ? v : 0), in);
      }
    cp_async_commit();  // (an empty group past the end keeps the group count uniform)
  };

  allow_next_grid();
  if (a.weight_static) {
    // A parameter weight: the first stages are copied while the kernel ahead finishes.
#pragma unroll
    for (int st = 0; st < kRowStages - 1; ++st) issue(st);
    wait_for_previous_grid();  // x and y (when accumulating) come from the kernels before
  } else {
    if (lane % 8 == 0)  // L2 hints for the first stages (one per 128-byte line); operands are read after the wait
      for (int st = 0; st < min(stages, kRowStages - 1); ++st)
#pragma unroll
        for (int i = 0; i < kCopyRows; ++i)
          asm volatile("prefetch.global.L2 [%0];" ::"l"(src[i] + min(st * kRowVecs + cv, kv - 1)));
    wait_for_previous_grid();  // W, x and y (when accumulating) may come from the kernels before
#pragma unroll
    for (int st = 0; st < kRowStages - 1; ++st) issue(st);
  }

  float c[4] = {0.f, 0.f, 0.f, 0.f};
  for (int st = 0; st < stages; ++st) {
    uint4 vx[2];
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      const int v = st * kRowVecs + 8 * warp + 4 * u + t;
      vx[u] = has_x && v < kv ? __ldg(xr + v) : make_uint4(0, 0, 0, 0);
    }
    cp_async_wait<kRowStages - 2>();  // this thread's copies of stage st have landed
    __syncthreads();                  // everyone's; and stage st - 1 is consumed, so its slot may refill
    issue(st + kRowStages - 1);
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      const int v = 8 * warp + 4 * u + t;
      const uint4 va = *slot(st % kRowStages, g, v), vb = *slot(st % kRowStages, g + 8, v);
      mma16816<T>(c, va.x, vb.x, va.y, vb.y, vx[u].x, vx[u].y);
      mma16816<T>(c, va.z, vb.z, va.w, vb.w, vx[u].z, vx[u].w);
    }
  }
  cp_async_wait<0>();
  part[warp][g][2 * t] = c[0];
  part[warp][g][2 * t + 1] = c[1];
  part[warp][g + 8][2 * t] = c[2];
  part[warp][g + 8][2 * t + 1] = c[3];
  __syncthreads();
  if (threadIdx.x < kMmaRows * 8) {
    const int r = threadIdx.x / 8, m = threadIdx.x % 8, row = row0 + r;
    if (row < a.n && m < a.m) {
      float v = 0.f;
#pragma unroll
      for (int i = 0; i < kWarps; ++i) v += part[i][r][m];
      store_output<T>(a, m, row, v);
    }
  }
}

// The dynamic shared memory a staged kernel may use on the current device: the per-block opt-in
// limit less a margin for the kernels' static scratch.
inline int staged_smem_limit() { return cuda_smem_optin() - 1024; }

// Resident blocks of `Kernel` per SM with `smem` bytes of dynamic shared memory, queried once (per
// thread, kernel, device and size). max_smem > 0 sets the kernel's dynamic shared-memory ceiling (a
// process-wide attribute: each kernel always gets the same value, so no thread lowers it under
// another): the device's opt-in limit for the staged gemv kernels, the ring size for the
// tensor-core kernel.
template <auto Kernel>
int blocks_per_sm(int smem, int max_smem) {
  auto kernel = Kernel;
  struct Cache {
    int device = -1;
    std::unordered_map<int, int> per_sm;  // dynamic shared memory -> blocks per SM
  };
  thread_local Cache c;
  int device = 0;
  MMATTN_CUDA_CHECK(cudaGetDevice(&device));
  if (device != c.device) {
    if (max_smem > 0)
      MMATTN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_smem));
    c = Cache{device, {}};  // (after the attribute: a failure leaves the next call to retry)
  }
  auto it = c.per_sm.find(smem);
  if (it == c.per_sm.end()) {
    int per_sm = 0;
    MMATTN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, size_t(smem)));
    MMATTN_CHECK(per_sm >= 1, CudaError, "gemv: no block of ", kThreads, " threads with ", smem,
                 " bytes of shared memory fits on a multiprocessor");
    it = c.per_sm.emplace(smem, per_sm).first;
  }
  return it->second;
}

// gemv_kernel's task queue for a launch on stream s (gemv_cuda.cu): the next of a per-stream ring of
// zeroed slots of kQueueInts ints ({next item, blocks done, an Extra's counters}), so that kernels in
// flight together (programmatic launch) never share one; each launch leaves its slot at zero. Null
// when MMATTN_GEMV_QUEUE=0 (A/B: the static grid stride) unless `always`.
int* gemv_queue(StreamHandle s, bool always = false);

// Warps per task for gemv_kernel: the split (1, 2 or 4) whose blocks fill their last wave best,
// each warp keeping at least two rounds of `unroll` loads per lane (a shorter slice is all ramp-up
// and reduction). Ties go to the smaller split. MMATTN_GEMV_SPLIT=1|2|4 forces one (benchmark A/B).
inline int pick_split(int tasks, int kv, int wave_blocks, int unroll = kUnroll) {
  static const int forced = [] {
    const char* e = std::getenv("MMATTN_GEMV_SPLIT");
    const int v = e ? std::atoi(e) : 0;
    return v == 1 || v == 2 || v == 4 ? v : 0;
  }();
  if (forced) return forced;
  int best = 1;
  double best_fill = 0.0;
  for (int split : {1, 2, 4}) {
    if (kv < split * 2 * 32 * unroll) break;
    const int64_t blocks = (int64_t(tasks) * split + kWarps - 1) / kWarps;
    const int64_t waves = (blocks + wave_blocks - 1) / wave_blocks;
    const double fill = double(blocks) / double(waves * wave_blocks);
    if (fill > best_fill + 0.02) best = split, best_fill = fill;
  }
  return best;
}

// The dynamic shared memory of gemv_kernel<T, M, ...> with Extra X for k columns.
template <class T, int M, GemvInput IN, class X = NoExtra>
constexpr int gemv_smem(int k) {
  return (IN == GemvInput::Plain ? 0 : M * k * int(sizeof(T))) + X::kSmem;
}

// extra_items: X::extra_items for xp (the grid covers them too).
template <class T, int M, int ROWS, GemvInput IN, int U = kUnroll, GemvOutput OUT = GemvOutput::Plain,
          class X = NoExtra>
void launch(Args a, StreamHandle s, const typename X::Params& xp = {}, int extra_items = 0) {
  constexpr auto kernel = gemv_kernel<T, M, ROWS, IN, U, OUT, X>;
  const int smem = gemv_smem<T, M, IN, X>(a.k);
  const int per_sm = blocks_per_sm<kernel>(smem, smem > 0 ? staged_smem_limit() : 0);
  const int tasks = (a.n + ROWS - 1) / ROWS;
  const int wave = cuda_sm_count() * per_sm;
  a.split = pick_split(tasks, a.k / 8, wave, U);
  const int per_block = kWarps / a.split;
  const int groups = (tasks + per_block - 1) / per_block;
  const int blocks = std::max(1, std::min(groups + extra_items, wave));  // one wave
  // (an Extra's counters live in the queue's slot: it always takes one)
  a.queue = X::kActive ? gemv_queue(s, /*always=*/true)
                       : queued_kernel<M, IN> && groups > blocks ? gemv_queue(s) : nullptr;
  sm90::launch_pdl(kernel, dim3(unsigned(blocks)), dim3(kThreads), size_t(smem), s, a, xp);
}

// The tensor-core kernel: one block per 16 output rows.
template <class T>
void launch_mma(const Args& a, StreamHandle s) {
  constexpr auto kernel = gemv_mma_kernel<T>;
  blocks_per_sm<kernel>(kRowSmem, kRowSmem);  // sets the ring's shared-memory ceiling
  const int blocks = std::max(1, (a.n + kMmaRows - 1) / kMmaRows);
  sm90::launch_pdl(kernel, dim3(unsigned(blocks)), dim3(kThreads), size_t(kRowSmem), s, a);
}

// The kernels' arguments for a product (gemv_bf16.cu / gemv_f16.cu).
inline Args args_of(const GemvParams& p) {
  Args a{p.x, p.weight, p.bias, p.norm_weight, p.y, int(p.m), int(p.n), int(p.k), int(p.x_stride), p.eps, p.accumulate};
  a.weight_static = p.weight_static;
  a.rope = p.rope;
  return a;
}

// The m = 1 shape: 2 rows x 8 loads per lane when every resident warp gets at least two tasks of 2
// rows (n >= ~8.4K on an H100: q/k/v, gate/up, the vocabulary head): 4 KB of a row per round instead
// of 4 rows x 2 KB (bench/NOTES.md, session 11: q/k/v 37.1 -> 35.6 us, gate_up 64.4 -> 62.6 us at 7B
// shapes; o_proj and down, n = 4096, one task per warp, were slower that way).
// MMATTN_GEMV_SHAPE=4x4|2x8 forces one (A/B).
inline bool two_row_tasks(int n) {
  static const int forced = [] {
    const char* e = std::getenv("MMATTN_GEMV_SHAPE");
    return !e ? 0 : std::string(e) == "2x8" ? 2 : std::string(e) == "4x4" ? 4 : 0;
  }();
  const int64_t wave_warps = int64_t(cuda_sm_count()) * 2 * kWarps;  // the m = 1 kernels: 2 blocks per SM
  return forced ? forced == 2 : (int64_t(n) + 1) / 2 >= 2 * wave_warps;
}

// The paired outputs (m = 1; gemv_fused_bf16.cu / gemv_fused_f16.cu): RmsNorm input for SwiGLU,
// RmsNorm or Plain for QkvRope.
template <class T>
void run_paired(const Args& a, GemvInput in, GemvOutput out, StreamHandle s) {
  auto go = [&]<int M, int ROWS, int U = kUnroll>() {
    if (out == GemvOutput::SwiGLU)
      launch<T, M, ROWS, GemvInput::RmsNorm, U, GemvOutput::SwiGLU>(a, s);
    else if (in == GemvInput::RmsNorm)
      launch<T, M, ROWS, GemvInput::RmsNorm, U, GemvOutput::QkvRope>(a, s);
    else
      launch<T, M, ROWS, GemvInput::Plain, U, GemvOutput::QkvRope>(a, s);
  };
  if (two_row_tasks(a.n)) go.template operator()<1, 2, 8>();
  else go.template operator()<1, 4>();
}

// Dispatch on m (rounded up to the next instantiated width) and the input kind.
template <class T>
void run(const Args& a, GemvInput in, StreamHandle s) {
  auto go = [&]<int M, int ROWS, int U = kUnroll>() {
    switch (in) {
      case GemvInput::Plain: launch<T, M, ROWS, GemvInput::Plain, U>(a, s); break;
      case GemvInput::RmsNorm: launch<T, M, ROWS, GemvInput::RmsNorm, U>(a, s); break;
      case GemvInput::SwiGLU: launch<T, M, ROWS, GemvInput::SwiGLU, U>(a, s); break;
    }
  };
  // Wider m on the CUDA cores is a template argument away, but measured slower than cuBLAS at m = 8
  // (bench/NOTES.md): per weight element the f32 FMAs and conversions grow with m while the bytes
  // do not. From m = 3 the tensor-core kernel (Plain input) takes over.
  if (a.m <= 1 && two_row_tasks(a.n)) go.template operator()<1, 2, 8>();
  else if (a.m <= 1) go.template operator()<1, 4>();
  else if (a.m <= 2) go.template operator()<2, 4>();
  else {
    MMATTN_CHECK(in == GemvInput::Plain, UnsupportedError, "gemv: m = ", a.m,
                 " takes the tensor-core kernel, which has no fused input (gemv_cuda_supported)");
    launch_mma<T>(a, s);
  }
}

}  // namespace mmattn::gemv_detail
