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
// The row indices come by value in TapParams (kernel parameter memory): no copies, no sync.
#include <algorithm>
#include <climits>
#include <cstdint>
#include <initializer_list>
#include <utility>

#include "attention/taps_params.h"
#include "core/cuda_reduce.cuh"
#include "core/cuda_types.cuh"

namespace mmattn {

namespace {

constexpr int kTapThreads = 128;
constexpr int kTapKeys = 64;    // keys per block of pass 1
constexpr int kTapUnroll = 4;   // keys in flight per lane group
constexpr int kFinishThreads = 512;

template <class T, int D, bool kVec>
struct TapGeom {
  static constexpr int kEpv = kVec ? int(16 / sizeof(T)) : 1;  // elements per load
  static constexpr int kV = D / kEpv;                           // loads per row
  static constexpr int kG = kVec ? (kV > 10 ? 16 : 8) : 32;     // lanes per key
  static constexpr int kNi = (kV + kG - 1) / kG;                // loads per lane
  static constexpr int kGroups = kTapThreads / kG;
  static constexpr int kIters = kTapKeys / (kGroups * kTapUnroll);
  static_assert(D % kEpv == 0 && kTapKeys % (kGroups * kTapUnroll) == 0 && kTapUnroll <= kG);
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

// kFinal: write exp(z - lse) * w (the LSE is given, no renormalisation); else the logit z.
template <class T, int D, bool kVec, bool kFinal>
__global__ void __launch_bounds__(kTapThreads) taps_keys_kernel(const __grid_constant__ TapParams tp) {
  using G = TapGeom<T, D, kVec>;
  using V = Vec<T, G::kEpv>;
  constexpr int U = kTapUnroll;
  const AttentionParams& p = tp.attn;
  const long long rid = blockIdx.x;
  const TapRow row = tap_row(tp, rid);
  float* out = tp.probs + rid * p.lk;
  const long long jend = row.jend;
  const int lg = threadIdx.x & (G::kG - 1);
  const int group = threadIdx.x / G::kG;

  // q: this lane's slice of the head dim, in f32 (zero past the row for idle lanes).
  const T* qrow = static_cast<const T*>(p.q) + row.b * p.q_sb + (long long)row.r * p.q_sl + (long long)row.h * p.q_sh;
  float qf[G::kNi][G::kEpv];
#pragma unroll
  for (int i = 0; i < G::kNi; ++i) {
    const int v = lg + i * G::kG;
    const V x = *reinterpret_cast<const V*>(qrow + min(v, G::kV - 1) * G::kEpv);
#pragma unroll
    for (int e = 0; e < G::kEpv; ++e) qf[i][e] = v < G::kV ? to_f32(x.v[e]) : 0.f;
  }
  float lse = 0.f;
  if constexpr (kFinal) lse = tp.lse[row.b * tp.lse_sb + row.h * tp.lse_sh + row.r * tp.lse_sr];
  const int C = p.num_classes;
  const bool cls = row.modulate && p.key_class;
  const uint8_t* kc = p.key_class ? p.key_class + row.b * p.key_class_sb : nullptr;
  const float* ag = cls && p.logit_abs_gain ? p.logit_abs_gain + row.h * C : nullptr;
  const float* bias = cls && p.logit_bias ? p.logit_bias + row.h * C : nullptr;
  const float* pw = cls && p.post_weight ? p.post_weight + row.h * C : nullptr;
  const T* kb = static_cast<const T*>(p.k) + row.b * p.k_sb + (long long)(row.h / (p.hq / p.hkv)) * p.k_sh;

  for (long long chunk = blockIdx.y; chunk * kTapKeys < p.lk; chunk += gridDim.y) {
    const long long j0 = chunk * kTapKeys;
    if (j0 >= jend) {  // block-uniform: nothing visible in this chunk
      for (long long j = j0 + threadIdx.x; j < j0 + kTapKeys && j < p.lk; j += kTapThreads) out[j] = 0.f;
      continue;
    }
#pragma unroll
    for (int it = 0; it < G::kIters; ++it) {
      long long j[U];
      V kv[U][G::kNi];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        j[u] = j0 + group + G::kGroups * (it * U + u);
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
      // Lane u of the group finishes key u.
      float s = acc[0];
      long long jj = j[0];
#pragma unroll
      for (int u = 1; u < U; ++u)
        if (lg == u) s = acc[u], jj = j[u];
      if (lg < U && jj < p.lk) {
        float val = 0.f;
        if (jj < jend) {
          s *= p.scale;
          int c = 0;
          if (cls) {
            c = kc[jj];
            if (ag) s += ag[c] * fabsf(s);
            if (bias) s += bias[c];
          }
          if constexpr (kFinal) {
            val = expf(s - lse);
            if (pw) val *= pw[c];
          } else {
            val = s;
          }
        }
        out[jj] = val;
      }
    }
  }
}

// One block per row: the logits of pass 1 -> probabilities (LSE if missing, renormalisation).
__global__ void __launch_bounds__(kFinishThreads) taps_finish_kernel(const __grid_constant__ TapParams tp) {
  const AttentionParams& p = tp.attn;
  __shared__ float scratch[32];
  const long long rid = blockIdx.x;
  const TapRow row = tap_row(tp, rid);
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

// 16-byte loads need 16-byte aligned rows: the base and every stride that varies (size > 1).
bool rows_aligned16(const void* base, std::initializer_list<std::pair<int64_t, int64_t>> size_stride, int epv) {
  if (reinterpret_cast<uintptr_t>(base) % 16 != 0) return false;
  for (auto [n, st] : size_stride)
    if (n > 1 && st % epv != 0) return false;
  return true;
}

template <class T, int D, bool kVec>
void launch_keys(const TapParams& tp, bool final_pass, dim3 grid, StreamHandle s) {
  if (final_pass)
    taps_keys_kernel<T, D, kVec, true><<<grid, kTapThreads, 0, s>>>(tp);
  else
    taps_keys_kernel<T, D, kVec, false><<<grid, kTapThreads, 0, s>>>(tp);
}

template <class T, int D>
void launch_keys(const TapParams& tp, bool vec, bool final_pass, dim3 grid, StreamHandle s) {
  if (vec)
    launch_keys<T, D, true>(tp, final_pass, grid, s);
  else
    launch_keys<T, D, false>(tp, final_pass, grid, s);
}

template <class T>
void launch_keys(const TapParams& tp, bool vec, bool final_pass, dim3 grid, StreamHandle s) {
  switch (tp.attn.d) {
    case 64: launch_keys<T, 64>(tp, vec, final_pass, grid, s); break;
    case 72: launch_keys<T, 72>(tp, vec, final_pass, grid, s); break;
    case 80: launch_keys<T, 80>(tp, vec, final_pass, grid, s); break;
    case 96: launch_keys<T, 96>(tp, vec, final_pass, grid, s); break;
    case 128: launch_keys<T, 128>(tp, vec, final_pass, grid, s); break;
    default: MMATTN_THROW(UnsupportedError, "attention_probs: head_dim ", tp.attn.d, " is not supported");
  }
}

}  // namespace

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
  const int epv = 8;  // 16 bytes of bf16/f16
  const bool vec = rows_aligned16(p.q, {{p.batch, p.q_sb}, {p.lq, p.q_sl}, {p.hq, p.q_sh}}, epv) &&
                   rows_aligned16(p.k, {{p.batch, p.k_sb}, {p.lk, p.k_sl}, {p.hkv, p.k_sh}}, epv);
  const long long chunks = (p.lk + kTapKeys - 1) / kTapKeys;
  const dim3 grid(unsigned(nrows), unsigned(std::min<long long>(chunks, 65535)));
  switch (p.dtype) {
    case DType::BF16: launch_keys<__nv_bfloat16>(tp, vec, final_pass, grid, s); break;
    case DType::F16: launch_keys<__half>(tp, vec, final_pass, grid, s); break;
    default: MMATTN_THROW(UnsupportedError, "attention_probs: CUDA takes bf16/f16, got ", dtype_name(p.dtype));
  }
  MMATTN_CUDA_CHECK_LAUNCH("attention_probs");
  if (!final_pass) {
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
