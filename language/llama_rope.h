#pragma once
// RoPE for the Llama decoder: the bridge between LlamaConfig's rope settings and core/ops/rope.h.
//
// Pitfall: core/hf_config.h and core/ops/rope.h both define a struct mmattn::RopeScaling, so no
// translation unit may include both. This header includes neither; llama_rope.cpp includes only
// rope.h and llama.cpp only hf_config.h, and the settings travel in LlamaRope.
#include <cstdint>
#include <string>
#include <memory>
#include <vector>

#include "core/tensor.h"

namespace mmattn {

struct LlamaRope {
  int64_t head_dim = 128;
  double theta = 10000.0;
  std::string scaling_type = "default";  // "default" | "linear" | "llama3" | "dynamic"
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  // llama3: required; dynamic: the config's original_max_position_embeddings when written, else
  // max_position_embeddings (as transformers' _compute_dynamic_ntk_parameters).
  int64_t original_max_position_embeddings = 0;
  int64_t max_position_embeddings = 2048;
  // Round the (scaled) inverse frequencies through bf16 before building cos/sin. transformers keeps
  // LlamaRotaryEmbedding.inv_freq in f32 (from_pretrained with any dtype), but model.to(torch.bfloat16)
  // (or .half()) casts that non-persistent buffer too, and a later .to(torch.float32) does not undo
  // the rounding: outputs of such a model need this to match (~1e-3 relative logits otherwise at
  // positions ~600). Off by default: outputs of from_pretrained models need f32 frequencies.
  bool bf16_inv_freq = false;
};

// ConfigError naming `where` for an unknown scaling type or bad values.
void validate_llama_rope(const LlamaRope& r, const std::string& where);

// Rotates q [B, n, Hq, D] and k [B, n, Hkv, D] in place (rotate_half / RopeStyle::HalfSplit, as
// transformers' apply_rotary_pos_emb). positions[b] holds the n position ids of sequence b (rows of
// a right-padded batch past its valid length may hold any value). Last dims must be dense.
void llama_rope_(Tensor& q, Tensor& k, const std::vector<std::vector<int64_t>>& positions, const LlamaRope& r);

// llama_rope_ that keeps its cos/sin tables (host and device) while the positions stay the same:
// every layer of a forward step reuses the first layer's (the tables cost T x head_dim/2 sincos
// on the host plus an upload, per layer, otherwise).
class LlamaRopeCache {
 public:
  LlamaRopeCache();
  ~LlamaRopeCache();
  LlamaRopeCache(LlamaRopeCache&&) noexcept;
  LlamaRopeCache& operator=(LlamaRopeCache&&) noexcept;
  void apply_(Tensor& q, Tensor& k, const std::vector<std::vector<int64_t>>& positions, const LlamaRope& r);
  // When every sequence shares one table (B = 1, or aligned sequences): its cos / sin (F32
  // [T, head_dim/2]) on `dev`, for a fused consumer (KVCache::append_rope); false otherwise.
  bool shared_table(const std::vector<std::vector<int64_t>>& positions, const LlamaRope& r, Device dev, Tensor* cos,
                    Tensor* sin);

 private:
  void build(const std::vector<std::vector<int64_t>>& positions, const LlamaRope& r);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mmattn
