#pragma once
// Helpers shared by the CUDA attention tests.
#include <cstdint>
#include <vector>

#include "attention/attention.h"
#include "attention/attention_kernels.h"
#include "attention_ref.h"
#include "test_util.h"

namespace mmattn::test {

// Forces a kernel (set_attention_kernel_override) for the scope of a test.
struct KernelOverride {
  explicit KernelOverride(int which) { set_attention_kernel_override(which); }
  ~KernelOverride() { set_attention_kernel_override(0); }
};

// Every modulation feature at random over key classes cls ([B, Lk], C classes): abs gains, biases,
// post weights and head gains for Hq heads (renormalize and first_modulated_row left to the test).
inline HeadModulation random_modulation(const std::vector<uint8_t>& cls, int64_t B, int64_t Lk, int64_t Hq, int64_t C,
                                        uint64_t& seed) {
  HeadModulation m;
  m.key_class = Tensor::from_vector(cls, {B, Lk});
  m.num_classes = int(C);
  m.logit_abs_gain = rand_tensor({Hq, C}, seed++, 0.f, 0.5f);
  m.logit_bias = rand_tensor({Hq, C}, seed++);
  m.post_weight = rand_tensor({Hq, C}, seed++, 0.f, 2.f);
  m.head_gain = rand_tensor({Hq}, seed++, 0.5f, 2.f);
  return m;
}

}  // namespace mmattn::test
