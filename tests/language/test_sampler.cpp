// Samplers: greedy, penalties, top-k/top-p support, seeded reproducibility, bad settings.
#include <map>

#include "language/sampler.h"
#include "test_util.h"

using namespace mmattn;

TEST(Sampler, GreedyAndRepetitionPenalty) {
  Sampler g(SamplingConfig{});
  EXPECT_EQ(g.next({0.1f, 2.f, 2.f, -1.f}, {}), 1);  // ties to the lowest id
  SamplingConfig c;
  c.repetition_penalty = 2.f;
  Sampler r(c);
  // 2.0 / 2 = 1.0 < 1.5 -> token 2 wins; a negative seen logit becomes more negative
  EXPECT_EQ(r.next({0.f, 2.f, 1.5f}, {1}), 2);
  EXPECT_EQ(r.next({-1.f, -0.6f}, {1}), 0);  // -0.6 * 2 = -1.2 < -1
}

TEST(Sampler, TopKAndTopPRestrictTheSupport) {
  SamplingConfig c;
  c.do_sample = true;
  c.top_k = 2;
  c.seed = 5;
  Sampler s(c);
  std::map<int64_t, int> seen;
  for (int i = 0; i < 2000; ++i) seen[s.next({3.f, 2.9f, 2.8f, 0.f}, {})]++;
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_GT(seen[0], seen[1]);
  c.top_k = 0;
  c.top_p = 0.5f;  // probs ~[0.64, 0.24, 0.09, 0.03]: only token 0 reaches 0.5 alone
  Sampler t(c);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(t.next({2.f, 1.f, 0.f, -1.f}, {}), 0);
  c.top_p = 0.8f;  // 0 then 1 (0.64 < 0.8)
  Sampler u(c);
  std::map<int64_t, int> su;
  for (int i = 0; i < 2000; ++i) su[u.next({2.f, 1.f, 0.f, -1.f}, {})]++;
  EXPECT_EQ(su.size(), 2u);
}

TEST(Sampler, SeededAndValidated) {
  SamplingConfig c;
  c.do_sample = true;
  c.temperature = 0.7f;
  c.seed = 42;
  Sampler a(c), b(c);
  std::vector<float> logits(100);
  for (int i = 0; i < 100; ++i) logits[i] = float((i * 37) % 11) * 0.3f;
  for (int i = 0; i < 50; ++i) EXPECT_EQ(a.next(logits, {}), b.next(logits, {}));
  c.temperature = 0.f;
  EXPECT_THROW(Sampler{c}, ConfigError);
  c.temperature = 1.f;
  c.top_p = 1.5f;
  EXPECT_THROW(Sampler{c}, ConfigError);
}
