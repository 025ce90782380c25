#include "vision/patch_entropy.h"

#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/device.h"
#include "core/error.h"
#include "core/ops/dispatch.h"

namespace mmattn {

namespace {

// The gray level of an RGB sum: nearbyint(s / 3.0) (round half to even), as the CUDA kernel's rint.
uint8_t gray_of_sum(int s) { return uint8_t(std::nearbyint(double(s) / 3.0)); }

std::vector<double> log_terms(int64_t npx) {
  const double n = double(npx);
  std::vector<double> term(size_t(npx + 1), 0.0);
  for (int64_t c = 1; c <= npx; ++c) term[size_t(c)] = (double(c) / n) * std::log2(double(c) / n + 1e-10);
  return term;
}

void patch_gray_entropy_cpu(const PatchEntropyParams& p) {
  std::array<uint8_t, 766> gray{};
  for (int s = 0; s < 766; ++s) gray[size_t(s)] = gray_of_sum(s);
  const int64_t gw = p.width / p.patch, gh = p.height / p.patch;
  std::vector<int> hist(256);
  for (int64_t py = 0; py < gh; ++py)
    for (int64_t px = 0; px < gw; ++px) {
      std::fill(hist.begin(), hist.end(), 0);
      for (int64_t y = py * p.patch; y < (py + 1) * p.patch; ++y) {
        const uint8_t* q = p.rgb + (y * p.width + px * p.patch) * 3;
        for (int64_t x = 0; x < p.patch; ++x, q += 3) hist[gray[size_t(int(q[0]) + int(q[1]) + int(q[2]))]]++;
      }
      double e = 0;
      for (int c : hist)
        if (c) e -= p.term[c];
      p.out[py * gw + px] = float(e);
    }
}

}  // namespace

Tensor patch_gray_entropy(const Tensor& rgb, int64_t patch) {
  const char* op = "patch_gray_entropy";
  check_defined(rgb, op, "rgb");
  MMATTN_CHECK(rgb.dim() == 3 && rgb.size(2) == 3 && rgb.dtype() == DType::U8, ShapeError, op,
               ": 'rgb' must be U8 [H, W, 3], got ", rgb.desc());
  MMATTN_CHECK(patch >= 1 && rgb.size(0) % patch == 0 && rgb.size(1) % patch == 0, ShapeError, op, ": patch ", patch,
               " does not tile the ", rgb.size(1), "x", rgb.size(0), " image");
  MMATTN_CHECK(patch * patch < (int64_t(1) << 24), ShapeError, op, ": patch ", patch, " is too large");
  const Tensor x = rgb.contiguous();
  const int64_t cells = (x.size(0) / patch) * (x.size(1) / patch);
  Tensor out = Tensor::empty({cells}, DType::F32, x.device());
  if (cells == 0) return out;
  const std::vector<double> term = log_terms(patch * patch);
  PatchEntropyParams p;
  p.height = x.size(0), p.width = x.size(1), p.patch = patch;
  p.rgb = x.data<uint8_t>();
  p.out = out.data<float>();
  if (x.is_cuda()) {
    // (no f64 dtype: the table travels as bytes; device allocations are 256-byte aligned)
    std::vector<uint8_t> bytes(term.size() * sizeof(double));
    std::memcpy(bytes.data(), term.data(), bytes.size());
    const Tensor t = Tensor::from_vector(bytes, {int64_t(bytes.size())}).to(x.device());
    p.term = reinterpret_cast<const double*>(t.data<uint8_t>());
    MMATTN_IF_CUDA(patch_gray_entropy_cuda(p, current_stream()));
  } else {
    p.term = term.data();
    patch_gray_entropy_cpu(p);
  }
  return out;
}

}  // namespace mmattn
