#pragma once
// LLaVA text-side glue: the prompt's embedding sequence with the projected image features in place
// of the image tokens (transformers' LlavaModel: get_placeholder_mask + masked_scatter).
#include <cstdint>

#include "core/tensor.h"

namespace mmattn {

class LlamaModel;

// Overwrites, in order, the rows of embeds [B, L, hidden] at the positions where input_ids [B, L]
// == image_token_index (scanned row-major: sequence 0 first) with the rows of image_features
// ([N, T, hidden] or [T, hidden], flattened in order; any dtype/device: converted). The number of
// image tokens must equal the number of feature rows: ShapeError naming both counts otherwise.
// An undefined image_features counts as 0 rows.
void merge_image_features_(const Tensor& embeds, const Tensor& input_ids, const Tensor& image_features,
                           int64_t image_token_index);

// input_ids [B, L] I32/I64 (any device) -> [B, L, hidden] on the model's device and dtype: text
// embeddings with the image features merged. Image tokens are looked up as id 0, so an
// image_token_index outside the text vocab is never indexed (their rows are overwritten anyway).
Tensor llava_input_embeds(const LlamaModel& lm, const Tensor& input_ids, const Tensor& image_features,
                          int64_t image_token_index);

// Number of entries of input_ids equal to image_token_index.
int64_t count_image_tokens(const Tensor& input_ids, int64_t image_token_index);

}  // namespace mmattn
