// Taps on the GPU, built for parallelism over the keys (the rows are few: FastV taps one row).
//
// Pass 1, taps_keys_kernel: grid (B * Hq * R rows) x (chunks of kTapKeys keys). Inside a block,
// groups of G lanes take one key at a time (kTapUnroll keys in flight), the lanes splitting the
// head dim with 16-byte loads (a scalar fallback, G = 32, when a q or k row is not 16-byte
// aligned), reduced with shuffles. With the LSE given and no renormalisation it writes the final
// probability exp(z - lse) * w in this single pass; otherwise it writes the modulated logit z and
// pass 2, taps_finish_kernel (one block per row), computes the LSE when missing (online max/sum),
// the renormalisation sum when needed, and writes the probabilities. Keys past the row's mask get
// 0 in pass 1; chunks wholly past it skip the loads.
//
// Beside (TapParams::beside; attention_tapped, behind its attention kernel): taps_row_kernel, one
// block per row, runs both passes (the same per-key and per-row code as the two kernels, so the
// same values) in one launch that starts beside the attention kernel and fills the
// multiprocessors its last wave leaves.
//
// The row indices come by value in TapParams (kernel parameter memory): no copies, no sync.
#include <algorithm>
#include <climits>
#include <cstdint>
#include <initializer_list>
#include <utility>

#include "attention/taps_params.h"
#include "core/cuda_reduce.cuh"
#include "core/cuda_types.cuh"
#include "core/sm90.cuh"

namespace mmattn {

namespace {

constexpr int kTapThreads = 128;
constexpr int kTapKeys = 64;    // keys per block of pass 1
constexpr int kTapUnroll = 4;   // keys in flight per lane group
constexpr int kFinishThreads = 512;

template <class T, int D, bool kVec, int kThreads = kTapThreads>
struct TapGeom {
  static constexpr int kEpv = kVec ? int(16 / sizeof(T)) : 1;  // elements per load
  static constexpr int kV = D / kEpv;                           // loads per row
  static constexpr int kG = kVec ? (kV > 10 ? 16 : 8) : 32;     // lanes per key
  static constexpr int kNi = (kV + kG - 1) / kG;                // loads per lane
  static constexpr int kGroups = kThreads / kG;
  static constexpr int kRound = kGroups * kTapUnroll;           // keys per round of the block
  static constexpr int kIters = kTapKeys / kRound;              // rounds per chunk (taps_keys_kernel)
  static_assert(D % kEpv == 0 && kTapUnroll <= kG);
};

struct TapRow {
  int b, h, r;
  long long jend;  // keys [0, jend) are visible
  bool modulate;
};

__device__ __forceinline__ TapRow tap_row(const TapParams& tp, long long rid) {
  const AttentionParams& p = tp.attn;
  TapRow t;
  t.r = int(rid % p.lq);
  t.h = int((rid / p.lq) % p.hq);
  t.b = int(rid / ((long long)p.lq * p.hq));
  const long long i = tp.rows[t.r];
  const int klen = p.k_lens ? p.k_lens[t.b] : p.lk;
  const long long qlen = p.q_lens ? p.q_lens[t.b] : tp.lq_total;
  long long jend = i < qlen ? klen : 0;
  if (p.causal && i < qlen) jend = min(jend, max(0ll, i + (klen - qlen) + 1));
  t.jend = jend;
  t.modulate = i >= p.first_modulated_row;
  return t;
}

// Per-row state of pass 1: this lane's slice of q (f32) and the row's modulation tables.
template <class T, int D, bool kVec, int kThreads>
struct TapLane {
  using G = TapGeom<T, D, kVec, kThreads>;
  using V = Vec<T, G::kEpv>;
  float qf[G::kNi][G::kEpv];
  const T* kb;  // K of this row's kv head
  const uint8_t* kc;
  const float *ag, *bias, *pw;
  bool cls;
  int lg, group;

  __device__ __forceinline__ TapLane(const TapParams& tp, const TapRow& row) {
    const AttentionParams& p = tp.attn;
    lg = threadIdx.x & (G::kG - 1);
    group = threadIdx.x / G::kG;
    // q: this lane's slice of the head dim, in f32 (zero past the row for idle lanes).
    const T* qrow = static_cast<const T*>(p.q) + row.b * p.q_sb + (long long)row.r * p.q_sl + (long long)row.h * p.q_sh;
#pragma unroll
    for (int i = 0; i < G::kNi; ++i) {
      const int v = lg + i * G::kG;
      const V x = *reinterpret_cast<const V*>(qrow + min(v, G::kV - 1) * G::kEpv);
#pragma unroll
      for (int e = 0; e < G::kEpv; ++e) qf[i][e] = v < G::kV ? to_f32(x.v[e]) : 0.f;
    }
    const int C = p.num_classes;
    cls = row.modulate && p.key_class;
    kc = p.key_class ? p.key_class + row.b * p.key_class_sb : nullptr;
    ag = cls && p.logit_abs_gain ? p.logit_abs_gain + row.h * C : nullptr;
    bias = cls && p.logit_bias ? p.logit_bias + row.h * C : nullptr;
    pw = cls && p.post_weight ? p.post_weight + row.h * C : nullptr;
    kb = static_cast<const T*>(p.k) + row.b * p.k_sb + (long long)(row.h / (p.hq / p.hkv)) * p.k_sh;
  }

  // One round: the lane groups take keys j0 + group + kGroups * u (u < kTapUnroll), each dotting q
  // with its keys; lane u of a group finishes key u: true when that key is in [0, Lk), with its
  // index jj and, when visible (jj < jend), its modulated logit z and class c.
  __device__ __forceinline__ bool round(const TapParams& tp, long long jend, long long j0, long long& jj, float& z,
                                        int& c) const {
    constexpr int U = kTapUnroll;
    const AttentionParams& p = tp.attn;
    long long j[U];
    V kv[U][G::kNi];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      j[u] = j0 + group + G::kGroups * u;
      // Masked or past-the-end keys load a visible key (in bounds, no branch); never written.
      const T* kr = kb + min(j[u], jend - 1) * p.k_sl;
#pragma unroll
      for (int i = 0; i < G::kNi; ++i)
        kv[u][i] = *reinterpret_cast<const V*>(kr + min(lg + i * G::kG, G::kV - 1) * G::kEpv);
    }
    float acc[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      acc[u] = 0.f;
#pragma unroll
      for (int i = 0; i < G::kNi; ++i)
#pragma unroll
        for (int e = 0; e < G::kEpv; ++e) acc[u] = fmaf(qf[i][e], to_f32(kv[u][i].v[e]), acc[u]);
    }
#pragma unroll
    for (int o = G::kG / 2; o > 0; o >>= 1)
#pragma unroll
      for (int u = 0; u < U; ++u) acc[u] += __shfl_xor_sync(0xffffffffu, acc[u], o);
    float s = acc[0];
    jj = j[0];
#pragma unroll
    for (int u = 1; u < U; ++u)
      if (lg == u) s = acc[u], jj = j[u];
    if (lg >= U || jj >= p.lk) return false;
    c = 0;
    if (jj < jend) {
      s *= p.scale;
      if (cls) {
        c = kc[jj];
        if (ag) s += ag[c] * fabsf(s);
        if (bias) s += bias[c];
      }
    }
    z = s;
    return true;
  }
};

// kFinal: write exp(z - lse) * w (the LSE is given, no renormalisation); else the logit z.
template <class T, int D, bool kVec, bool kFinal>
__global__ void __launch_bounds__(kTapThreads) taps_keys_kernel(const __grid_constant__ TapParams tp) {
  using G = TapGeom<T, D, kVec>;
  static_assert(kTapKeys % G::kRound == 0);
  const AttentionParams& p = tp.attn;
  const long long rid = blockIdx.x;
  const TapRow row = tap_row(tp, rid);
  float* out = tp.probs + rid * p.lk;
  const long long jend = row.jend;
  const TapLane<T, D, kVec, kTapThreads> lane(tp, row);
  float lse = 0.f;
  if constexpr (kFinal) lse = tp.lse[row.b * tp.lse_sb + row.h * tp.lse_sh + row.r * tp.lse_sr];

  for (long long chunk = blockIdx.y; chunk * kTapKeys < p.lk; chunk += gridDim.y) {
    const long long j0 = chunk * kTapKeys;
    if (j0 >= jend) {  // block-uniform: nothing visible in this chunk
      for (long long j = j0 + threadIdx.x; j < j0 + kTapKeys && j < p.lk; j += kTapThreads) out[j] = 0.f;
      continue;
    }
#pragma unroll
    for (int it = 0; it < G::kIters; ++it) {
      long long jj;
      float z;
      int c;
      if (lane.round(tp, jend, j0 + it * G::kRound, jj, z, c)) {
        float val = 0.f;
        if (jj < jend) {
          if constexpr (kFinal) {
            val = expf(z - lse);
            if (lane.pw) val *= lane.pw[c];
          } else {
            val = z;
          }
        }
        out[jj] = val;
      }
    }
  }
}

// Pass 2 of one row, by a block of kFinishThreads: the logits in out -> probabilities (LSE if
// missing, renormalisation).
__device__ __forceinline__ void tap_finish_row(const TapParams& tp, long long rid, const TapRow& row,
                                               float (&scratch)[32]) {
  const AttentionParams& p = tp.attn;
  float* out = tp.probs + rid * p.lk;
  const long long jend = row.jend;
  if (jend <= 0) return;  // pass 1 wrote zeros
  float lse;
  if (tp.lse) {
    lse = tp.lse[row.b * tp.lse_sb + row.h * tp.lse_sh + row.r * tp.lse_sr];
  } else {
    float m = -INFINITY, l = 0.f;
    for (long long j = threadIdx.x; j < jend; j += blockDim.x) {
      const float z = out[j];
      if (z > m) {
        l = l * expf(m - z) + 1.f;
        m = z;
      } else {
        l += expf(z - m);
      }
    }
    const float mb = block_max(m, scratch);
    l = m == -INFINITY ? 0.f : l * expf(m - mb);
    l = block_sum(l, scratch);
    lse = mb + logf(l);
  }
  const int C = p.num_classes;
  const bool post = row.modulate && p.post_weight && p.key_class;
  const uint8_t* kc = post ? p.key_class + row.b * p.key_class_sb : nullptr;
  const float* pw = post ? p.post_weight + row.h * C : nullptr;
  float inv = 1.f;
  if (post && p.renormalize) {
    float n = 0.f;
    for (long long j = threadIdx.x; j < jend; j += blockDim.x) n += expf(out[j] - lse) * pw[kc[j]];
    n = block_sum(n, scratch);
    if (n > 0.f) inv = 1.f / n;
  }
  for (long long j = threadIdx.x; j < jend; j += blockDim.x) {
    float w = expf(out[j] - lse);
    if (post) w *= pw[kc[j]];
    out[j] = w * inv;
  }
}

// One block per row: the logits of pass 1 -> probabilities.
__global__ void __launch_bounds__(kFinishThreads) taps_finish_kernel(const __grid_constant__ TapParams tp) {
  __shared__ float scratch[32];
  const long long rid = blockIdx.x;
  tap_finish_row(tp, rid, tap_row(tp, rid), scratch);
}

// Both passes of one row per block (no LSE given): the logits of the visible keys, zeros past
// them, then pass 2 on what the block wrote. Launched beside the attention kernel (TapParams::
// beside): it reads q and k at once and waits for that kernel only before exiting.
template <class T, int D, bool kVec>
__global__ void __launch_bounds__(kFinishThreads) taps_row_kernel(const __grid_constant__ TapParams tp) {
  using G = TapGeom<T, D, kVec, kFinishThreads>;
  __shared__ float scratch[32];
  const AttentionParams& p = tp.attn;
  const long long rid = blockIdx.x;
  const TapRow row = tap_row(tp, rid);
  float* out = tp.probs + rid * p.lk;
  const TapLane<T, D, kVec, kFinishThreads> lane(tp, row);
  for (long long j0 = 0; j0 < row.jend; j0 += G::kRound) {
    long long jj;
    float z;
    int c;
    if (lane.round(tp, row.jend, j0, jj, z, c) && jj < row.jend) out[jj] = z;
  }
  for (long long j = row.jend + threadIdx.x; j < p.lk; j += kFinishThreads) out[j] = 0.f;
  __syncthreads();  // the block's logits are visible to all its threads
  tap_finish_row(tp, rid, row, scratch);
  if (tp.beside) sm90::wait_for_previous_grid();  // completing implies the attention kernel's completion
}

// 16-byte loads need 16-byte aligned rows: the base and every stride that varies (size > 1).
bool rows_aligned16(const void* base, std::initializer_list<std::pair<int64_t, int64_t>> size_stride, int epv) {
  if (reinterpret_cast<uintptr_t>(base) % 16 != 0) return false;
  for (auto [n, st] : size_stride)
    if (n > 1 && st % epv != 0) return false;
  return true;
}

// Pass 1 (kFinal or not) on a (rows x chunks) grid, or both passes on one block per row (row).
enum class TapLaunch { keys, keys_final, row };

template <class T, int D, bool kVec>
void launch_taps(const TapParams& tp, TapLaunch kind, dim3 grid, StreamHandle s) {
  switch (kind) {
    case TapLaunch::keys: taps_keys_kernel<T, D, kVec, false><<<grid, kTapThreads, 0, s>>>(tp); break;
    case TapLaunch::keys_final: taps_keys_kernel<T, D, kVec, true><<<grid, kTapThreads, 0, s>>>(tp); break;
    case TapLaunch::row:
      if (tp.beside) sm90::launch_pdl(taps_row_kernel<T, D, kVec>, dim3(grid.x), dim3(kFinishThreads), 0, s, tp);
      else taps_row_kernel<T, D, kVec><<<grid.x, kFinishThreads, 0, s>>>(tp);
      break;
  }
}

template <class T, int D>
void launch_taps(const TapParams& tp, bool vec, TapLaunch kind, dim3 grid, StreamHandle s) {
  if (vec)
    launch_taps<T, D, true>(tp, kind, grid, s);
  else
    launch_taps<T, D, false>(tp, kind, grid, s);
}

template <class T>
void launch_taps(const TapParams& tp, bool vec, TapLaunch kind, dim3 grid, StreamHandle s) {
  switch (tp.attn.d) {
    case 64: launch_taps<T, 64>(tp, vec, kind, grid, s); break;
    case 72: launch_taps<T, 72>(tp, vec, kind, grid, s); break;
    case 80: launch_taps<T, 80>(tp, vec, kind, grid, s); break;
    case 96: launch_taps<T, 96>(tp, vec, kind, grid, s); break;
    case 128: launch_taps<T, 128>(tp, vec, kind, grid, s); break;
    default: MMATTN_THROW(UnsupportedError, "attention_probs: head_dim ", tp.attn.d, " is not supported");
  }
}

}  // namespace

bool attention_probs_beside_available() {
  return sm90::pdl_supported(taps_row_kernel<__nv_bfloat16, 128, true>);
}

void attention_probs_cuda(const TapParams& tp, StreamHandle s) {
  const AttentionParams& p = tp.attn;
  const long long nrows = (long long)p.batch * p.hq * p.lq;
  if (nrows == 0 || p.lk == 0) return;
  MMATTN_CHECK(nrows <= INT_MAX, UnsupportedError, "attention_probs: ", nrows, " rows (B * Hq * R) is too many");
  MMATTN_CHECK(p.lq <= kMaxTapRows, ShapeError, "attention_probs: 'rows' has ", p.lq, " entries; at most ",
               kMaxTapRows);
  // Renormalised rows need the sum of all their weights first: then pass 1 writes logits.
  bool renorm_rows = false;
  if (p.post_weight && p.key_class && p.renormalize)
    for (int r = 0; r < p.lq; ++r) renorm_rows |= tp.rows[r] >= p.first_modulated_row;
  const bool final_pass = tp.lse != nullptr && !renorm_rows;
  // beside the attention kernel: both passes in one launch (no LSE is given then)
  const bool one_launch = tp.beside && tp.lse == nullptr;
  const int epv = 8;  // 16 bytes of bf16/f16
  const bool vec = rows_aligned16(p.q, {{p.batch, p.q_sb}, {p.lq, p.q_sl}, {p.hq, p.q_sh}}, epv) &&
                   rows_aligned16(p.k, {{p.batch, p.k_sb}, {p.lk, p.k_sl}, {p.hkv, p.k_sh}}, epv);
  const long long chunks = (p.lk + kTapKeys - 1) / kTapKeys;
  const dim3 grid(unsigned(nrows), unsigned(std::min<long long>(chunks, 65535)));
  const TapLaunch kind = one_launch ? TapLaunch::row : final_pass ? TapLaunch::keys_final : TapLaunch::keys;
  switch (p.dtype) {
    case DType::BF16: launch_taps<__nv_bfloat16>(tp, vec, kind, grid, s); break;
    case DType::F16: launch_taps<__half>(tp, vec, kind, grid, s); break;
    default: MMATTN_THROW(UnsupportedError, "attention_probs: CUDA takes bf16/f16, got ", dtype_name(p.dtype));
  }
  MMATTN_CUDA_CHECK_LAUNCH("attention_probs");
  if (!final_pass && !one_launch) {
    taps_finish_kernel<<<unsigned(nrows), kFinishThreads, 0, s>>>(tp);
    MMATTN_CUDA_CHECK_LAUNCH("attention_probs (finish)");
  }
}

namespace {
__global__ void head_mean_kernel(const HeadMeanParams p) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, b = blockIdx.y;
  if (i >= p.row_len) return;
  const float H = float(p.heads);
  float acc = 0.f;
  for (int64_t h = 0; h < p.heads; ++h) acc = __fadd_rn(acc, __fdiv_rn(p.probs[(b * p.heads + h) * p.row_len + i], H));
  p.out[b * p.row_len + i] = acc;
}
}  // namespace

void head_mean_cuda(const HeadMeanParams& p, StreamHandle s) {
  MMATTN_CHECK(p.batch <= 65535, UnsupportedError, "head_mean: batch ", p.batch, " > 65535");
  head_mean_kernel<<<dim3(unsigned((p.row_len + 255) / 256), unsigned(p.batch)), 256, 0, s>>>(p);
  MMATTN_CUDA_CHECK_LAUNCH("head_mean");
}

}  // namespace mmattn
