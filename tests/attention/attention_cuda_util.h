#pragma once
// Helpers shared by the CUDA attention tests.
#include "attention/attention_kernels.h"
#include "attention_ref.h"

namespace mmattn::test {

// Forces a kernel (set_attention_kernel_override) for the scope of a test.
struct KernelOverride {
  explicit KernelOverride(int which) { set_attention_kernel_override(which); }
  ~KernelOverride() { set_attention_kernel_override(0); }
};

}  // namespace mmattn::test
