// Host side of the Hopper skinny product (kernel: gemm_sm90.cuh; instantiated per dtype in
// gemm_sm90_bf16.cu / gemm_sm90_f16.cu): when it applies, the mode switch, tensor maps and the
// per-stream stream-K workspace.
#include <atomic>
#include <cstdlib>

#include "core/ops/gemm_sm90.cuh"
#include "core/stream_scratch.h"

namespace mmattn {

void skinny_run_bf16(const GemmParams& p, StreamHandle s);
void skinny_run_f16(const GemmParams& p, StreamHandle s);

namespace {

int initial_mode() {
  const char* e = std::getenv("MMATTN_SKINNY_GEMM");
  if (!e || !*e) return 0;  // off: measured slower than the gemv and cuBLASLt (bench/NOTES.md, session 7)
  const int v = std::atoi(e);
  return v < 0 ? 0 : v > 2 ? 2 : v;
}
std::atomic<int> g_mode{initial_mode()};

}  // namespace

void set_skinny_gemm_mode(int mode) { g_mode = mode < 0 ? 0 : mode > 2 ? 2 : mode; }
int skinny_gemm_mode() { return g_mode; }

bool skinny_gemm_sm90_supported(const GemmParams& p) {
  if (g_mode == 0) return false;
  if (p.dtype != DType::BF16 && p.dtype != DType::F16) return false;
  if (p.batch != 1 || !p.trans_b || p.m < 1 || p.m > skinny::kMaxM) return false;
  if (p.n < 128 || p.k < 8 || p.k % 8 != 0) return false;  // tiny n: cuBLAS; rows of 16-byte multiples for the TMA
  if (p.n > int64_t(skinny::kMaxCounters) * 64 || p.k > INT32_MAX / 2) return false;  // a counter per row tile
  if (!p.a || !p.b || !p.c || !aligned16(p.a) || !aligned16(p.b)) return false;
  return sm90::kernels_available();
}

bool skinny_gemm_sm90(const GemmParams& p, StreamHandle s) {
  if (!skinny_gemm_sm90_supported(p)) return false;
  if (p.dtype == DType::BF16)
    skinny_run_bf16(p, s);
  else
    skinny_run_f16(p, s);
  return true;
}

namespace skinny {

// One workspace per stream (core/stream_scratch.h; persistent, so a captured graph keeps valid
// pointers, like gemm_cuda's cuBLASLt workspace): the partials, and the counters (zeroed once; each
// launch leaves them zero).
Workspace workspace_for(StreamHandle s) {
  static const char partial_owner = 0, counter_owner = 0;
  Workspace w;
  w.partial = static_cast<float*>(stream_scratch(&partial_owner, s, kPartialBytes));
  w.counter = static_cast<int*>(stream_scratch(&counter_owner, s, size_t(kMaxCounters) * sizeof(int), /*zeroed=*/true));
  return w;
}

}  // namespace skinny
}  // namespace mmattn
