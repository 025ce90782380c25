#include "language/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_set>

namespace mmattn {

void validate_sampling(const SamplingConfig& c) {
  MMATTN_CHECK(c.temperature > 0.f, ConfigError, "sampling.temperature must be > 0, got ", c.temperature);
  MMATTN_CHECK(c.top_k >= 0, ConfigError, "sampling.top_k must be >= 0, got ", c.top_k);
  MMATTN_CHECK(c.top_p > 0.f && c.top_p <= 1.f, ConfigError, "sampling.top_p must be in (0, 1], got ", c.top_p);
  MMATTN_CHECK(c.repetition_penalty > 0.f, ConfigError, "sampling.repetition_penalty must be > 0, got ",
               c.repetition_penalty);
}

Sampler::Sampler(const SamplingConfig& c) : c_(c), rng_(c.seed) { validate_sampling(c); }

int64_t Sampler::next(std::vector<float> logits, const std::vector<int64_t>& history) {
  const int64_t V = int64_t(logits.size());
  MMATTN_CHECK(V > 0, ShapeError, "Sampler::next: empty logits");
  if (c_.repetition_penalty != 1.f) {
    std::unordered_set<int64_t> seen(history.begin(), history.end());
    for (int64_t t : seen)
      if (t >= 0 && t < V) logits[t] = logits[t] > 0 ? logits[t] / c_.repetition_penalty : logits[t] * c_.repetition_penalty;
  }
  if (!c_.do_sample) return int64_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  for (float& x : logits) x /= c_.temperature;
  // candidates sorted by logit, descending (stable: ties keep the lower id first)
  std::vector<int64_t> idx(static_cast<size_t>(V));
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return logits[a] > logits[b]; });
  size_t keep = idx.size();
  if (c_.top_k > 0) keep = std::min(keep, size_t(c_.top_k));
  const float mx = logits[idx[0]];
  std::vector<double> p(keep);
  double sum = 0;
  for (size_t i = 0; i < keep; ++i) sum += p[i] = std::exp(double(logits[idx[i]] - mx));
  if (c_.top_p < 1.f) {
    // smallest prefix whose mass reaches top_p (always at least one token), as transformers'
    // TopPLogitsWarper keeps tokens while the cumulative mass before them is below top_p
    double cum = 0;
    size_t n = 0;
    while (n < keep && cum < double(c_.top_p) * sum) cum += p[n++];
    keep = std::max<size_t>(n, 1);
    p.resize(keep);
  }
  std::discrete_distribution<size_t> d(p.begin(), p.end());
  return idx[d(rng_)];
}

}  // namespace mmattn
