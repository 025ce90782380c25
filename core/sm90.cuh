#pragma once
// Hopper (sm_90a) building blocks shared by the wgmma kernels (attention/flash_prefill_sm90.cu,
// core/ops/gemm_sm90.cuh): mbarriers, TMA bulk tensor copies, wgmma with both operands in shared
// memory, programmatic dependent launch, and the host's tensor-map encoder.
//
// The wgmma / TMA helpers exist only when compiling for sm_90a (__CUDA_ARCH_FEAT_SM90_ALL); the
// kernels using them guard their bodies the same way. Shared-memory operands use the 128-byte
// swizzle (TMA CU_TENSOR_MAP_SWIZZLE_128B = the wgmma canonical Swizzle<3,4,3> layout): rows of
// 128 bytes, 16-byte chunk c of row r stored at chunk c ^ (r % 8), tiles 1024-byte aligned.
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include "core/cuda_check.h"

namespace mmattn::sm90 {

// griddepcontrol: no-ops when the grid was launched without programmatic dependencies.
__device__ __forceinline__ void wait_for_previous_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void allow_next_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// Shared-memory matrix descriptor, 128-byte swizzle (for K-major operands lbo is unused, sbo =
// 1024 bytes per 8 rows; a k-step of 16 elements is +32 bytes on the start address).
__device__ __forceinline__ uint64_t make_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return uint64_t((addr & 0x3FFFF) >> 4) | (uint64_t((lbo >> 4) & 0x3FFF) << 16) |
         (uint64_t((sbo >> 4) & 0x3FFF) << 32) | (uint64_t(1) << 62);
}

__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wg_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from moving accesses of accumulators across the asynchronous wgmma.
template <int N>
__device__ __forceinline__ void fence_regs(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// After the initialising thread's mbar_init calls, before the block synchronises.
__device__ __forceinline__ void mbar_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  fence_proxy_async();
}
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}
// TMA tile copies global -> shared (completion counted on `bar`, zeros outside the tensor) and
// L2-only prefetches of a tile (hints: no completion, no ordering).
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap* map, uint32_t bar, int c0, int c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
          dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}
__device__ __forceinline__ void tma_prefetch_2d(const CUtensorMap* map, int c0, int c1) {
  asm volatile("cp.async.bulk.prefetch.tensor.2d.L2.global.tile [%0, {%1, %2}];\n" ::"l"(
                   reinterpret_cast<uint64_t>(map)),
               "r"(c0), "r"(c1)
               : "memory");
}
__device__ __forceinline__ void tma_load_4d(uint32_t dst, const CUtensorMap* map, uint32_t bar, int c0, int c1,
                                            int c2, int c3) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], "
      "[%6];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
      : "memory");
}
__device__ __forceinline__ void named_sync(int id, int n) { asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }
__device__ __forceinline__ void named_arrive(int id, int n) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}

// D (64 x N, f32) = A B^T (+ D when scale_d != 0): m64nNk16 with both operands K-major in shared
// memory (descriptors da, db). Thread layout of d: warp w of the warpgroup, lane (g = lane / 4,
// t = lane % 4): d[4j + e] is (row 16w + g, column 8j + 2t + e), d[4j + 2 + e] row 16w + g + 8.
// Generated for N = 8, 16, 32, 64, 128 and bf16 / f16.
template <class T, int N>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 2], uint64_t da, uint64_t db, int scale_d);
// One specialisation: T and its PTX name, N, then the operand numbers of da, db and scale_d (after
// the N / 2 accumulators), the accumulator list, and the accumulator operands.
#define MMATTN_WGMMA_SS(T, PTX_T, N, DA, DB, SCALE, REGS, ...)                                              \
  template <>                                                                                               \
  __device__ __forceinline__ void wgmma_ss<T, N>(float (&d)[N / 2], uint64_t da, uint64_t db, int scale_d) { \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" #SCALE ", 0;\n"                                       \
                 "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." PTX_T "." PTX_T " " REGS ", "            \
                 "%" #DA ", %" #DB ", p, 1, 1, 0, 0;\n}\n"                                                  \
                 : __VA_ARGS__                                                                              \
                 : "l"(da), "l"(db), "r"(scale_d));                                                         \
  }
#define MMATTN_WGMMA_SS_BOTH(N, DA, DB, SCALE, REGS, ...)                           \
  MMATTN_WGMMA_SS(__nv_bfloat16, "bf16", N, DA, DB, SCALE, REGS, __VA_ARGS__)       \
  MMATTN_WGMMA_SS(__half, "f16", N, DA, DB, SCALE, REGS, __VA_ARGS__)
MMATTN_WGMMA_SS_BOTH(8, 4, 5, 6, "{%0, %1, %2, %3}",
                     "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]))
MMATTN_WGMMA_SS_BOTH(16, 8, 9, 10, "{%0, %1, %2, %3, %4, %5, %6, %7}",
                     "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]))
MMATTN_WGMMA_SS_BOTH(32, 16, 17, 18, "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}",
                     "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]))
MMATTN_WGMMA_SS_BOTH(64, 32, 33, 34, "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}",
                     "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]))
MMATTN_WGMMA_SS_BOTH(128, 64, 65, 66, "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}",
                     "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]))
#undef MMATTN_WGMMA_SS_BOTH
#undef MMATTN_WGMMA_SS
#endif  // __CUDA_ARCH_FEAT_SM90_ALL

// Whether `kernel` may be launched with programmatic dependencies on the current device: compute
// capability >= 9 and code built from PTX >= 9.0 (a JIT from older PTX has no griddepcontrol, so
// its wait would be a no-op and the kernel would race with the one before). Cached per thread,
// device and kernel (core/sm90.cu). MMATTN_PDL=0 turns programmatic launches off everywhere (A/B).
bool pdl_supported(const void* kernel);
template <class... P>
bool pdl_supported(void (*kernel)(P...)) {
  return pdl_supported(reinterpret_cast<const void*>(kernel));
}

// Launches `kernel` on stream s with programmatic dependent launch where pdl_supported(kernel):
// allowed to start before the kernel ahead of it has finished, for kernels that wait with
// wait_for_previous_grid() before reading what that kernel writes.
template <class... P, class... A>
void launch_pdl(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, A&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_supported(kernel) ? 1 : 0;
  MMATTN_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<A>(args)...));
}

// Whether this build carries the sm_90a kernels (MMATTN_CUDA_ARCHS contains 90a) and the current
// device runs them (compute capability 9.0, a driver that encodes tensor maps); cached per device.
bool kernels_available();  // core/sm90.cu

// cuTensorMapEncodeTiled through the runtime's driver entry point (no libcuda link); null when the
// driver lacks it.
inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      f = nullptr;
    cudaGetLastError();  // a failed lookup must not linger as the sticky "last error"
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// A tensor map over a row-major [rows, k] matrix of 16-bit elements (bf16, else f16) in boxes of
// 64 k x box_rows rows with the 128-byte swizzle (wgmma's K-major operand tiles; zeros outside the
// matrix); false when the driver cannot encode it (no encoder, k % 8 != 0, a misaligned pointer).
bool encode_rows_map(CUtensorMap* map, const void* ptr, bool bf16, int64_t rows, int64_t k, int box_rows);

}  // namespace mmattn::sm90
