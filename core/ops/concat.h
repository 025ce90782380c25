#pragma once
// Layout ops (torch.cat / torch.split / torch.chunk).
//   concat(xs, dim)                          xs[i]: same dtype, device and rank; equal sizes except in
//                                            `dim` -> the sizes in `dim` summed; contiguous; any dtype
//                                            (one strided copy per input, Tensor::copy_from).
//   split(x, split_size, dim)                views of split_size along dim (the last may be shorter)
//   split_with_sizes(x, sizes, dim)          views with the given sizes (must sum to x.size(dim))
//   chunk(x, chunks, dim)                    views of ceil(n / chunks) along dim (may give fewer than
//                                            `chunks` tensors, as torch.chunk)
// dim may be negative. The views share x's storage.
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace mmattn {

Tensor concat(const std::vector<Tensor>& xs, int dim);
std::vector<Tensor> split(const Tensor& x, int64_t split_size, int dim);
std::vector<Tensor> split_with_sizes(const Tensor& x, const std::vector<int64_t>& sizes, int dim);
std::vector<Tensor> chunk(const Tensor& x, int chunks, int dim);

}  // namespace mmattn
