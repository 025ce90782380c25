#include "core/ops/conv2d.h"

#include "core/ops/dispatch.h"

namespace mmattn {

namespace {
thread_local const char* t_backend = "none";
thread_local bool t_force_direct = false;
}  // namespace

const char* conv2d_cuda_backend() { return t_backend; }
#if MMATTN_HAS_CUDA && MMATTN_HAS_CUDNN
bool conv2d_has_cudnn() { return true; }
#else
bool conv2d_has_cudnn() { return false; }
#endif
void conv2d_force_direct(bool force) { t_force_direct = force; }

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, std::array<int, 2> stride,
              std::array<int, 2> padding, std::array<int, 2> dilation, int groups) {
  const char* op = "conv2d";
  check_defined(x, op, "x");
  check_defined(weight, op, "weight");
  check_float(x, op, "x");
  MMATTN_CHECK(x.dim() == 4, ShapeError, op, ": 'x' must be [N, C, H, W], got ", x.desc());
  MMATTN_CHECK(weight.dim() == 4, ShapeError, op, ": 'weight' must be [O, C/groups, kh, kw], got ", weight.desc());
  MMATTN_CHECK(weight.dtype() == x.dtype(), ShapeError, op, ": 'weight' is ", weight.desc(), " but 'x' is ",
               x.desc(), " (dtypes must match)");
  check_same_device(x, weight, op, "x", "weight");
  MMATTN_CHECK(groups >= 1, ShapeError, op, ": groups must be >= 1, got ", groups);
  MMATTN_CHECK(stride[0] >= 1 && stride[1] >= 1, ShapeError, op, ": stride must be >= 1, got {", stride[0], ", ",
               stride[1], "}");
  MMATTN_CHECK(dilation[0] >= 1 && dilation[1] >= 1, ShapeError, op, ": dilation must be >= 1, got {", dilation[0],
               ", ", dilation[1], "}");
  MMATTN_CHECK(padding[0] >= 0 && padding[1] >= 0, ShapeError, op, ": padding must be >= 0, got {", padding[0], ", ",
               padding[1], "}");
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t o = weight.size(0), kh = weight.size(2), kw = weight.size(3);
  MMATTN_CHECK(c % groups == 0 && o % groups == 0, ShapeError, op, ": 'x' ", x.shape_str(), " has ", c,
               " channels and 'weight' ", weight.shape_str(), " has ", o, " outputs; both must divide into ", groups,
               " groups");
  MMATTN_CHECK(weight.size(1) == c / groups, ShapeError, op, ": 'weight' ", weight.shape_str(), " must have ",
               c / groups, " input channels per group for 'x' ", x.shape_str(), " and groups=", groups);
  MMATTN_CHECK(kh >= 1 && kw >= 1, ShapeError, op, ": 'weight' ", weight.shape_str(), " has an empty kernel");
  if (bias.defined()) {
    MMATTN_CHECK(bias.dim() == 1 && bias.size(0) == o, ShapeError, op, ": 'bias' must be [", o, "] for 'weight' ",
                 weight.shape_str(), ", got ", bias.desc());
    MMATTN_CHECK(bias.dtype() == x.dtype(), ShapeError, op, ": 'bias' is ", bias.desc(), " but 'x' is ", x.desc(),
                 " (dtypes must match)");
    check_same_device(x, bias, op, "x", "bias");
  }
  const int64_t oh = (h + 2 * padding[0] - int64_t(dilation[0]) * (kh - 1) - 1) / stride[0] + 1;
  const int64_t ow = (w + 2 * padding[1] - int64_t(dilation[1]) * (kw - 1) - 1) / stride[1] + 1;
  MMATTN_CHECK(h + 2 * padding[0] >= int64_t(dilation[0]) * (kh - 1) + 1 &&
                   w + 2 * padding[1] >= int64_t(dilation[1]) * (kw - 1) + 1,
               ShapeError, op, ": kernel ", weight.shape_str(), " (dilation {", dilation[0], ", ", dilation[1],
               "}) is larger than the padded input of 'x' ", x.shape_str(), " (padding {", padding[0], ", ",
               padding[1], "})");
  check_cpu_f32(x, op, "x");

  Tensor y = Tensor::empty({n, o, oh, ow}, x.dtype(), x.device());
  if (y.numel() == 0) return y;
  Tensor xc = x.contiguous();
  Tensor wc = weight.contiguous();
  Tensor bc = bias.defined() ? bias.contiguous() : bias;
  Conv2dParams p;
  p.x = c > 0 ? xc.data_ptr() : nullptr;
  p.w = wc.numel() > 0 ? wc.data_ptr() : nullptr;
  p.bias = bc.defined() ? bc.data_ptr() : nullptr;
  p.y = y.data_ptr();
  p.n = n;
  p.c = c;
  p.h = h;
  p.w_in = w;
  p.o = o;
  p.kh = kh;
  p.kw = kw;
  p.oh = oh;
  p.ow = ow;
  p.stride_h = stride[0];
  p.stride_w = stride[1];
  p.pad_h = padding[0];
  p.pad_w = padding[1];
  p.dil_h = dilation[0];
  p.dil_w = dilation[1];
  p.groups = groups;
  p.dtype = x.dtype();
  p.allow_cudnn = !t_force_direct;
  if (c == 0) {  // nothing to sum: bias or zeros
    if (bc.defined())
      y.copy_from(bc.as_strided({n, o, oh, ow}, {0, 1, 0, 0}, bc.offset()));
    else
      y.fill_(0.f);
    return y;
  }
  if (x.is_cuda()) {
    MMATTN_IF_CUDA(t_backend = conv2d_cuda(p, current_stream()));
  } else {
    conv2d_cpu(p);
  }
  return y;
}

}  // namespace mmattn
