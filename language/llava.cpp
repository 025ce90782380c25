#include "language/llava.h"

#include <vector>

#include "language/llama.h"

namespace mmattn {

namespace {

// input_ids as host int64 values, checked to be [B, L] integers.
std::vector<int64_t> host_ids(const Tensor& ids, const char* fn) {
  check_defined(ids, fn, "input_ids");
  MMATTN_CHECK(ids.dim() == 2 && (ids.dtype() == DType::I64 || ids.dtype() == DType::I32), ShapeError, fn,
               ": input_ids must be I32/I64 [B, L], got ", ids.desc());
  const Tensor c = ids.to(Device::cpu()).to(DType::I64).contiguous();
  const int64_t* p = c.data<int64_t>();
  return std::vector<int64_t>(p, p + c.numel());
}

}  // namespace

int64_t count_image_tokens(const Tensor& input_ids, int64_t image_token_index) {
  int64_t n = 0;
  for (int64_t v : host_ids(input_ids, "count_image_tokens")) n += v == image_token_index;
  return n;
}

void merge_image_features_(const Tensor& embeds, const Tensor& input_ids, const Tensor& image_features,
                           int64_t image_token_index) {
  const char* fn = "merge_image_features";
  check_defined(embeds, fn, "embeds");
  const std::vector<int64_t> ids = host_ids(input_ids, fn);
  MMATTN_CHECK(embeds.dim() == 3 && embeds.size(0) == input_ids.size(0) && embeds.size(1) == input_ids.size(1),
               ShapeError, fn, ": embeds ", embeds.desc(), " must be [B, L, hidden] for input_ids ",
               input_ids.desc());
  const int64_t B = embeds.size(0), L = embeds.size(1), H = embeds.size(2);
  Tensor feats;  // [T, hidden]
  int64_t n_feat = 0;
  if (image_features.defined()) {
    MMATTN_CHECK((image_features.dim() == 3 || image_features.dim() == 2) && image_features.size(-1) == H,
                 ShapeError, fn, ": image_features must be [N, T, ", H, "] or [T, ", H, "], got ",
                 image_features.desc());
    feats = image_features.reshape({-1, H});
    n_feat = feats.size(0);
  }
  int64_t n_tok = 0;
  for (int64_t v : ids) n_tok += v == image_token_index;
  MMATTN_CHECK(n_tok == n_feat, ShapeError, fn, ": image features and image tokens do not match: ", n_tok,
               " image tokens (id ", image_token_index, ") in input_ids, ", n_feat, " image feature rows");
  if (n_feat && feats.device() != embeds.device()) feats = feats.to(embeds.device());
  // One strided copy per run of consecutive image tokens (LLaVA-1.5: one run of 576 per image).
  int64_t next = 0;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < L;) {
      if (ids[size_t(b * L + i)] != image_token_index) {
        ++i;
        continue;
      }
      int64_t j = i;
      while (j < L && ids[size_t(b * L + j)] == image_token_index) ++j;
      embeds.select(0, b).slice(0, i, j).copy_from(feats.slice(0, next, next + (j - i)));
      next += j - i;
      i = j;
    }
  }
}

Tensor llava_input_embeds(const LlamaModel& lm, const Tensor& input_ids, const Tensor& image_features,
                          int64_t image_token_index) {
  std::vector<int64_t> ids = host_ids(input_ids, "llava_input_embeds");
  for (int64_t& v : ids)
    if (v == image_token_index) v = 0;
  const Tensor text_ids = Tensor::from_vector<int64_t>(ids, input_ids.shape());
  Tensor e = lm.embed(text_ids);  // [B, L, hidden]
  merge_image_features_(e, input_ids, image_features, image_token_index);
  return e;
}

}  // namespace mmattn
