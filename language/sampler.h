#pragma once
// Next-token selection from logits, as transformers' generate() does it: repetition penalty
// (CTRL-style: a seen token's logit is divided by the penalty when positive, multiplied when
// negative), then temperature, top-k, top-p (nucleus), then sampling with a seeded RNG; greedy when
// do_sample is false (argmax, ties to the lowest id).
#include <cstdint>
#include <random>
#include <vector>

#include "core/tensor.h"

namespace mmattn {

struct SamplingConfig {
  bool do_sample = false;
  float temperature = 1.f;         // > 0
  int top_k = 0;                   // 0 = off
  float top_p = 1.f;               // (0, 1]; 1 = off
  float repetition_penalty = 1.f;  // >= 1 typical; 1 = off
  uint64_t seed = 0;
};
// Throws ConfigError naming the field for out-of-range values.
void validate_sampling(const SamplingConfig& c);

class Sampler {
 public:
  explicit Sampler(const SamplingConfig& c);
  // logits: F32 values of one row (vocab); history: token ids seen so far (prompt + generated).
  int64_t next(std::vector<float> logits, const std::vector<int64_t>& history);
  const SamplingConfig& config() const { return c_; }

 private:
  SamplingConfig c_;
  std::mt19937_64 rng_;
};

}  // namespace mmattn
