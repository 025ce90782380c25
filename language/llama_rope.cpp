#include "language/llama_rope.h"

#include <cmath>
#include <cstring>
#include <tuple>

#include "core/ops/rope.h"  // never together with core/hf_config.h (see llama_rope.h)

namespace mmattn {

namespace {

RopeScaling to_scaling(const LlamaRope& r, const std::string& where) {
  RopeScaling s;
  MMATTN_CHECK(parse_rope_scaling_type(r.scaling_type, &s.type), ConfigError, where, ": rope scaling type '",
               r.scaling_type, "' is not supported (default, linear, llama3, dynamic)");
  s.factor = r.factor;
  s.low_freq_factor = r.low_freq_factor;
  s.high_freq_factor = r.high_freq_factor;
  if (s.type == RopeScalingType::Llama3) {
    s.original_max_position_embeddings = r.original_max_position_embeddings;
  } else if (s.type == RopeScalingType::Dynamic) {
    s.original_max_position_embeddings =
        r.original_max_position_embeddings > 0 ? r.original_max_position_embeddings : r.max_position_embeddings;
  }
  return s;
}

// rope_table_llama, or with the frequencies rounded through bf16 first (see LlamaRope::bf16_inv_freq):
// cos/sin of f32(position) * f32(bf16(inv_freq)), as transformers' LlamaRotaryEmbedding computes
// them from its (cast) inv_freq buffer.
RopeTable make_table(const std::vector<int64_t>& pos, const LlamaRope& r, const RopeScaling& s) {
  RopeTable t = rope_table_llama(pos, r.head_dim, r.theta, s);
  if (!r.bf16_inv_freq) return t;
  const int64_t T = t.cos.size(0), h = t.cos.size(1);
  float* c = t.cos.data<float>();
  float* sn = t.sin.data<float>();
  for (int64_t i = 0; i < h; ++i) {
    float f = float(t.inv_freq[size_t(i)]);
    uint32_t u;
    std::memcpy(&u, &f, 4);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;  // round to nearest even (finite values)
    std::memcpy(&f, &u, 4);
    t.inv_freq[size_t(i)] = f;
    for (int64_t j = 0; j < T; ++j) {
      const float a = float(pos[size_t(j)]) * f;
      c[j * h + i] = std::cos(a);
      sn[j * h + i] = std::sin(a);
    }
  }
  return t;
}

}  // namespace

void validate_llama_rope(const LlamaRope& r, const std::string& where) {
  MMATTN_CHECK(r.head_dim >= 2 && r.head_dim % 2 == 0, ConfigError, where, ": RoPE needs an even head_dim, got ",
               r.head_dim);
  MMATTN_CHECK(r.theta > 0, ConfigError, where, ": rope_theta must be > 0, got ", r.theta);
  const RopeScaling s = to_scaling(r, where);
  if (s.type != RopeScalingType::None)
    MMATTN_CHECK(r.factor > 0, ConfigError, where, ": rope scaling factor must be > 0, got ", r.factor);
  if (s.type == RopeScalingType::Llama3)
    MMATTN_CHECK(r.original_max_position_embeddings > 0, ConfigError, where,
                 ": llama3 rope scaling needs original_max_position_embeddings > 0");
}

struct LlamaRopeCache::Impl {
  std::vector<std::vector<int64_t>> positions;
  std::vector<RopeTable> tables;  // one (shared by the batch) or one per sequence
};

LlamaRopeCache::LlamaRopeCache() : impl_(std::make_unique<Impl>()) {}
LlamaRopeCache::~LlamaRopeCache() = default;
LlamaRopeCache::LlamaRopeCache(LlamaRopeCache&&) noexcept = default;
LlamaRopeCache& LlamaRopeCache::operator=(LlamaRopeCache&&) noexcept = default;

void LlamaRopeCache::build(const std::vector<std::vector<int64_t>>& positions, const LlamaRope& r) {
  const int64_t B = int64_t(positions.size());
  if (impl_->tables.empty() || impl_->positions != positions) {
    const RopeScaling s = to_scaling(r, "llama rope");
    // One table per distinct position list (B = 1, or a batch whose sequences are aligned, share one).
    bool same = true;
    for (int64_t b = 1; b < B; ++b) same = same && positions[size_t(b)] == positions[0];
    impl_->tables.clear();
    for (int64_t b = 0; b < (same ? 1 : B); ++b) impl_->tables.push_back(make_table(positions[size_t(b)], r, s));
    impl_->positions = positions;
  }
}

bool LlamaRopeCache::shared_table(const std::vector<std::vector<int64_t>>& positions, const LlamaRope& r, Device dev,
                                  Tensor* cos, Tensor* sin) {
  build(positions, r);
  if (impl_->tables.size() != 1) return false;
  std::tie(*cos, *sin) = impl_->tables[0].on(dev);
  return true;
}

void LlamaRopeCache::apply_(Tensor& q, Tensor& k, const std::vector<std::vector<int64_t>>& positions,
                            const LlamaRope& r) {
  const int64_t B = q.size(0);
  MMATTN_CHECK(int64_t(positions.size()) == B, ShapeError, "llama_rope_: ", positions.size(),
               " position lists for a batch of ", B);
  build(positions, r);
  if (impl_->tables.size() == 1) {
    // q and k as neighbouring head slices of one buffer (the fused projection's q | k | v): one
    // launch over both (decode runs this per layer per token)
    const bool adjacent = q.dim() == 4 && k.dim() == 4 && q.dtype() == k.dtype() && q.device() == k.device() &&
                          q.strides() == k.strides() && q.size(0) == k.size(0) && q.size(1) == k.size(1) &&
                          q.size(3) == k.size(3) && k.offset() == q.offset() + q.size(2) * q.stride(2) &&
                          static_cast<const char*>(k.data_ptr()) - static_cast<const char*>(q.data_ptr()) ==
                              q.size(2) * q.stride(2) * int64_t(dtype_size(q.dtype()));
    if (adjacent && q.numel() > 0) {
      Tensor qk = q.as_strided({q.size(0), q.size(1), q.size(2) + k.size(2), q.size(3)}, q.strides(), q.offset());
      apply_rope_(qk, impl_->tables[0], RopeStyle::HalfSplit);
      return;
    }
    apply_rope_(q, impl_->tables[0], RopeStyle::HalfSplit);
    apply_rope_(k, impl_->tables[0], RopeStyle::HalfSplit);
    return;
  }
  for (int64_t b = 0; b < B; ++b) {
    Tensor qb = q.slice(0, b, b + 1);  // [1, n, Hq, D]
    Tensor kb = k.slice(0, b, b + 1);  // [1, n, Hkv, D]
    apply_rope_(qb, impl_->tables[size_t(b)], RopeStyle::HalfSplit);
    apply_rope_(kb, impl_->tables[size_t(b)], RopeStyle::HalfSplit);
  }
}

void llama_rope_(Tensor& q, Tensor& k, const std::vector<std::vector<int64_t>>& positions, const LlamaRope& r) {
  LlamaRopeCache().apply_(q, k, positions, r);
}

}  // namespace mmattn
