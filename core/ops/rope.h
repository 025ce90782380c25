#pragma once
// Rotary position embeddings.
//
// A RopeTable holds cos/sin as f32 [T, head_dim/2]: entry [t, i] belongs to frequency i at token t.
// It is built on the CPU and copied to a device on first use there (the copy is cached in the table,
// shared by its copies; thread-safe). Treat a built table as immutable: the cache never refreshes.
//
//   rope_table_llama(positions [T], head_dim, theta, scaling)        transformers LlamaRotaryEmbedding:
//       inv_freq[i] = 1 / theta^(2i/head_dim) in f32 (as torch computes it), adjusted by
//       `scaling` (rope_scaling of config.json: linear -> inv_freq / factor, which equals dividing the
//       positions; llama3 -> _compute_llama3_parameters; dynamic -> NTK base
//       theta * ((factor * L / max_pos) - (factor - 1))^(d/(d-2)) with L = max(positions) + 1 when it
//       exceeds max_pos (transformers also keeps the largest L seen so far; this is stateless));
//       cos[t, i] = cos(f32(position) * inv_freq[i]): f32 angle, cos rounded to f32.
//       Checked against transformers 5.17 on the CPU: inv_freq bit-identical for default, linear and
//       llama3, cos/sin within 1 ulp (torch's vectorised cos is not correctly rounded); dynamic
//       inv_freq within 2 ulp (torch's vectorised pow), i.e. ~1e-4 rad of angle at position 5000.
//   rope_table_axes(ids [T, n_axes], axes_dim, theta)                 diffusers FluxPosEmbed:
//       per axis a with d = axes_dim[a]: freq[j] = 1 / theta^(2j/d) in f64, angle = f32(id) * freq in
//       f64, cos/sin in f64 rounded to f32; the axes' frequencies are concatenated (sum(axes_dim) =
//       head_dim). ids may be any dtype (converted to f32 first, as `ids.float()`), on any device.
//       Bit-identical to a torch transcription of FluxPosEmbed (checked on a 512 + 64x64 id grid).
//
//   apply_rope(x [B, T, H, D], table, style) -> new tensor [B, T, H, D]; apply_rope_ rotates x in place.
//       x may be strided (e.g. a q/k slice of a fused projection) but its last dim must be dense.
//       table.length() == T and table.head_dim == D.
//     HalfSplit   (Llama rotate_half): pairs (i, i + D/2):
//         y_i = x_i cos_i - x_{i+D/2} sin_i,  y_{i+D/2} = x_{i+D/2} cos_i + x_i sin_i
//         On f16/bf16 it rounds as transformers does: cos/sin are cast to x's dtype, each product
//         and the sum are rounded to x's dtype.
//     Interleaved (FLUX / diffusers apply_rotary_emb, use_real_unbind_dim=-1): pairs (2i, 2i + 1):
//         y_2i = x_2i cos_i - x_2i+1 sin_i,  y_2i+1 = x_2i+1 cos_i + x_2i sin_i
//         computed in f32 with one rounding to x's dtype, as diffusers does.
//   CPU: f32 only.
#include <cstdint>
#include <memory>
#include <mutex>
#include <string_view>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace mmattn {

enum class RopeScalingType : uint8_t { None, Linear, Llama3, Dynamic };
// "default", "linear", "llama3", "dynamic" (the rope_type strings of config.json).
std::string_view rope_scaling_type_name(RopeScalingType t);
// Also accepts "none" for None; false for unknown names.
bool parse_rope_scaling_type(std::string_view name, RopeScalingType* out);

struct RopeScaling {
  RopeScalingType type = RopeScalingType::None;
  double factor = 1.0;                             // linear, llama3, dynamic
  double low_freq_factor = 1.0;                    // llama3
  double high_freq_factor = 4.0;                   // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3; dynamic: config.max_position_embeddings
};

enum class RopeStyle : uint8_t { HalfSplit, Interleaved };
std::string_view rope_style_name(RopeStyle s);  // "half_split", "interleaved"
bool parse_rope_style(std::string_view name, RopeStyle* out);

namespace detail {
struct RopeDeviceCache {
  std::mutex mu;
  std::vector<std::pair<Device, std::pair<Tensor, Tensor>>> entries;
};
}  // namespace detail

struct RopeTable {
  Tensor cos;                   // f32 [T, head_dim/2], CPU
  Tensor sin;                   // f32 [T, head_dim/2], CPU
  int64_t head_dim = 0;
  std::vector<double> inv_freq;  // [head_dim/2] the frequencies used (f32 values for Llama tables)

  int64_t length() const { return cos.defined() ? cos.size(0) : 0; }
  // cos/sin on `dev` (the CPU tensors themselves for the CPU); copied once per device and cached.
  std::pair<Tensor, Tensor> on(Device dev) const;

  std::shared_ptr<detail::RopeDeviceCache> cache_ = std::make_shared<detail::RopeDeviceCache>();
};

RopeTable rope_table_llama(const std::vector<int64_t>& positions, int64_t head_dim, double theta,
                           const RopeScaling& scaling = {});
// positions: I32 or I64 [T] on any device.
RopeTable rope_table_llama(const Tensor& positions, int64_t head_dim, double theta, const RopeScaling& scaling = {});
RopeTable rope_table_axes(const Tensor& ids, const std::vector<int64_t>& axes_dim, double theta);

Tensor apply_rope(const Tensor& x, const RopeTable& table, RopeStyle style);
void apply_rope_(Tensor& x, const RopeTable& table, RopeStyle style);

// x/y [B, T, H, D] with element strides (last dim dense); cos/sin f32 [T, D/2] contiguous.
// x and y may alias exactly (in place).
struct RopeParams {
  const void* x = nullptr;
  void* y = nullptr;
  const float* cos = nullptr;
  const float* sin = nullptr;
  int64_t b = 0, t = 0, h = 0, d = 0;
  int64_t x_sb = 0, x_st = 0, x_sh = 0;
  int64_t y_sb = 0, y_st = 0, y_sh = 0;
  RopeStyle style = RopeStyle::HalfSplit;
  DType dtype = DType::F32;
};
void rope_cpu(const RopeParams& p);
void rope_cuda(const RopeParams& p, StreamHandle s);

}  // namespace mmattn
