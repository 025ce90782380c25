#include "core/ops/upsample.h"

#include "core/ops/dispatch.h"

namespace mmattn {

namespace {
Tensor upsample_impl(const Tensor& x, int64_t out_h, int64_t out_w, float scale_h, float scale_w) {
  const char* op = "upsample_nearest2d";
  check_dim(x, 4, op, "x");
  MMATTN_CHECK(out_h > 0 && out_w > 0, ShapeError, op, ": output size ", out_h, "x", out_w, " for 'x' ", x.desc(),
               " must be positive");
  MMATTN_CHECK(x.size(2) > 0 && x.size(3) > 0, ShapeError, op, ": 'x' ", x.desc(), " has an empty spatial dim");
  Tensor xc = x.contiguous();
  Tensor y = Tensor::empty({x.size(0), x.size(1), out_h, out_w}, x.dtype(), x.device());
  UpsampleNearestParams p;
  p.x = xc.data_ptr();
  p.y = y.data_ptr();
  p.planes = x.size(0) * x.size(1);
  p.in_h = x.size(2);
  p.in_w = x.size(3);
  p.out_h = out_h;
  p.out_w = out_w;
  p.scale_h = scale_h;
  p.scale_w = scale_w;
  p.elem_size = int(x.itemsize());
  if (p.planes == 0) return y;
  if (x.is_cuda()) {
    MMATTN_IF_CUDA(upsample_nearest2d_cuda(p, current_stream()));
  } else {
    upsample_nearest2d_cpu(p);
  }
  return y;
}
}  // namespace

Tensor upsample_nearest2d(const Tensor& x, int scale_factor) {
  check_dim(x, 4, "upsample_nearest2d", "x");
  MMATTN_CHECK(scale_factor >= 1, ShapeError, "upsample_nearest2d: scale_factor must be >= 1, got ", scale_factor);
  const float s = float(1.0 / double(scale_factor));  // PyTorch passes 1 / scale_factor as the scale
  return upsample_impl(x, x.size(2) * scale_factor, x.size(3) * scale_factor, s, s);
}

Tensor upsample_nearest2d(const Tensor& x, int64_t out_h, int64_t out_w) {
  check_dim(x, 4, "upsample_nearest2d", "x");
  return upsample_impl(x, out_h, out_w, float(x.size(2)) / float(out_h), float(x.size(3)) / float(out_w));
}

}  // namespace mmattn
