#include "core/ops/token_merge.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/ops/dispatch.h"

namespace mmattn {

int64_t visionzip_targets(int64_t rest, int64_t contextual) {
  if (rest <= 0 || contextual <= 0) return 0;
  const int64_t step = std::max<int64_t>(1, rest / contextual);
  return std::min(contextual, (rest + step - 1) / step);
}

// The reference: the host loop VisionZip's contextual merge was first written as.
void visionzip_merge_plan_cpu(const MergePlanParams& p) {
  const int64_t T = p.tokens, d = p.d, D = p.n_dominant, C = p.targets;
  std::vector<bool> dom(size_t(T), false);
  dom[0] = true;
  for (int64_t e = 0; e + 1 < D; ++e) dom[size_t(p.dominant[e] + 1)] = true;
  std::vector<int64_t> rest;
  for (int64_t t = 0; t < T; ++t)
    if (!dom[size_t(t)]) rest.push_back(t);
  const int64_t R = int64_t(rest.size()), step = std::max<int64_t>(1, R / std::max<int64_t>(p.contextual, 1));
  // the L2-normalised metric rows
  std::vector<float> unit(size_t(T * d));
  for (int64_t t = 0; t < T; ++t) {
    const float* m = p.metric + t * d;
    double s = 0;
    for (int64_t c = 0; c < d; ++c) s += double(m[c]) * m[c];
    const float nrm = std::max(float(std::sqrt(s)), 1e-12f);
    for (int64_t c = 0; c < d; ++c) unit[size_t(t * d + c)] = m[c] / nrm;
  }
  std::vector<std::vector<int64_t>> members(static_cast<size_t>(C));
  for (int64_t i = 0; i < R; ++i) {
    if (i % step == 0 && i / step < C) continue;  // a target
    const float* ua = &unit[size_t(rest[size_t(i)] * d)];
    int64_t best = 0;
    float best_sim = -INFINITY;
    for (int64_t j = 0; j < C; ++j) {
      const float* ub = &unit[size_t(rest[size_t(j * step)] * d)];
      float s = 0;
      for (int64_t c = 0; c < d; ++c) s += ua[c] * ub[c];
      if (s > best_sim) best_sim = s, best = j;
    }
    if (C > 0) members[size_t(best)].push_back(rest[size_t(i)]);
  }
  int64_t e = 0, r = 0;
  auto entry = [&](int64_t token, float w) { p.index[e] = int32_t(token), p.weights[e] = w, ++e; };
  for (int64_t t = 0; t < T; ++t)
    if (dom[size_t(t)]) p.offsets[r] = int32_t(e), p.heads[r] = t, ++r, entry(t, 1.f);
  for (int64_t j = 0; j < C; ++j) {
    const int64_t target = rest[size_t(j * step)];
    p.offsets[r] = int32_t(e), p.heads[r] = target, ++r;
    entry(target, 1.f);
    for (int64_t a : members[size_t(j)]) entry(a, 1.f / float(members[size_t(j)].size()));
  }
  p.offsets[r] = int32_t(e);
}

MergePlan visionzip_merge_plan(const Tensor& metric, const Tensor& dominant, int64_t contextual) {
  const char* op = "visionzip_merge_plan";
  check_dim(metric, 2, op, "metric");
  check_dim(dominant, 1, op, "dominant");
  MMATTN_CHECK(metric.dtype() == DType::F32 && dominant.dtype() == DType::I64, ShapeError, op,
               ": 'metric' must be F32 and 'dominant' I64, got ", metric.desc(), " and ", dominant.desc());
  MMATTN_CHECK(metric.device() == dominant.device(), ShapeError, op, ": 'metric' is on ", metric.device().str(),
               " but 'dominant' on ", dominant.device().str());
  const int64_t T = metric.size(0), D = dominant.size(0) + 1;
  MMATTN_CHECK(T >= 1 && D <= T, ShapeError, op, ": ", D, " dominant tokens of ", T, " (metric ", metric.desc(), ")");
  MMATTN_CHECK(contextual >= 0, ShapeError, op, ": contextual must be >= 0, got ", contextual);
  MMATTN_CHECK(T < INT32_MAX, ShapeError, op, ": ", T, " tokens is too many");
  const int64_t C = visionzip_targets(T - D, contextual), entries = C > 0 ? T : D, rows = D + C;
  const Device dev = metric.device();
  const bool device = metric.is_cuda() && visionzip_merge_plan_on_device(T, metric.size(1), C);
  const Device at = device || !metric.is_cuda() ? dev : Device::cpu();  // where the plan is made
  const Tensor m = metric.to(at).contiguous(), dm = dominant.to(at).contiguous();
  MergePlan out;
  out.rows.offsets = Tensor::empty({rows + 1}, DType::I32, at);
  out.rows.index = Tensor::empty({entries}, DType::I32, at);
  out.rows.weights = Tensor::empty({entries}, DType::F32, at);
  out.heads = Tensor::empty({rows}, DType::I64, at);
  MergePlanParams p;
  p.metric = m.data<float>();
  p.dominant = dm.data<int64_t>();
  p.tokens = T, p.d = metric.size(1), p.n_dominant = D, p.contextual = contextual, p.targets = C;
  p.offsets = out.rows.offsets.data<int32_t>();
  p.index = out.rows.index.data<int32_t>();
  p.weights = out.rows.weights.data<float>();
  p.heads = out.heads.data<int64_t>();
  if (device) {
    MMATTN_IF_CUDA(visionzip_merge_plan_cuda(p, current_stream()));
    return out;
  }
  {  // (checked on the host only: a device plan trusts its input)
    for (int64_t e = 0; e + 1 < D; ++e)
      MMATTN_CHECK(p.dominant[e] >= 0 && p.dominant[e] + 1 < T && (e == 0 || p.dominant[e] > p.dominant[e - 1]),
                   ShapeError, op, ": 'dominant' must be ascending patch indices below ", T - 1, ", got ",
                   p.dominant[e], " at ", e);
  }
  visionzip_merge_plan_cpu(p);
  if (at != dev) {
    out.rows.offsets = out.rows.offsets.to(dev), out.rows.index = out.rows.index.to(dev);
    out.rows.weights = out.rows.weights.to(dev), out.heads = out.heads.to(dev);
  }
  return out;
}

}  // namespace mmattn
