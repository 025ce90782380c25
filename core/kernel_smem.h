#pragma once
// Dynamic shared memory past the 48 KB default must be allowed per kernel and per device
// (cudaFuncSetAttribute acts on the current device: a process-wide "configured" flag leaves a second
// GPU's launches failing). kernel_smem_allow(kernel, bytes) allows `bytes` for `kernel` on the
// current device, calling the runtime only when this thread has not allowed as many there before.
namespace mmattn {

void kernel_smem_allow(const void* kernel, int bytes);

}  // namespace mmattn
