#pragma once
// Strided copy with dtype conversion (the kernel behind Tensor::contiguous/to/copy_from/permute
// materialisation) and fill. Shapes up to kMaxDims dims; strides in elements, any sign-free layout.
#include <cstdint>

#include "core/device.h"
#include "core/dtype.h"

namespace mmattn {

constexpr int kMaxDims = 8;

struct CopyParams {
  int ndim = 0;
  int64_t numel = 0;
  int64_t shape[kMaxDims] = {};
  int64_t src_strides[kMaxDims] = {};
  int64_t dst_strides[kMaxDims] = {};
  const void* src = nullptr;
  void* dst = nullptr;
  DType src_dtype = DType::F32;
  DType dst_dtype = DType::F32;
};
void copy_cpu(const CopyParams& p);
void copy_cuda(const CopyParams& p, StreamHandle stream);

struct FillParams {
  void* dst = nullptr;  // contiguous
  int64_t numel = 0;
  DType dtype = DType::F32;
  float value = 0.f;
};
void fill_cpu(const FillParams& p);
void fill_cuda(const FillParams& p, StreamHandle stream);

}  // namespace mmattn
