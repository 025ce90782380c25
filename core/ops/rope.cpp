// RoPE tables (CPU, following the reference implementations' precision step by step) and the
// apply_rope launchers.
#include "core/ops/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "core/ops/dispatch.h"

namespace mmattn {

namespace {

constexpr std::string_view kScalingNames[] = {"default", "linear", "llama3", "dynamic"};
constexpr std::string_view kStyleNames[] = {"half_split", "interleaved"};

// Llama: inv_freq = 1.0 / (base ** (arange(0, d, 2).float() / d)), all in f32 as torch does.
std::vector<float> default_inv_freq(int64_t d, float base) {
  std::vector<float> inv(size_t(d / 2));
  for (int64_t i = 0; i < d / 2; ++i) inv[size_t(i)] = 1.f / std::pow(base, float(2 * i) / float(d));
  return inv;
}

// transformers _compute_llama3_parameters, in f32 tensor arithmetic. Python scalars meet f32 tensors
// as f32 values; `scalar / tensor` is `tensor.reciprocal() * scalar` (Tensor.__rtruediv__).
void apply_llama3(std::vector<float>& inv, const RopeScaling& s) {
  const float factor = float(s.factor);
  const float old_ctx = float(s.original_max_position_embeddings);
  const float low_wavelen = float(double(s.original_max_position_embeddings) / s.low_freq_factor);
  const float high_wavelen = float(double(s.original_max_position_embeddings) / s.high_freq_factor);
  const float two_pi = float(2.0 * std::numbers::pi);
  const float span = float(s.high_freq_factor - s.low_freq_factor);
  for (float& f : inv) {
    const float wavelen = (1.f / f) * two_pi;
    float llama = wavelen > low_wavelen ? f / factor : f;
    const float smooth = ((1.f / wavelen) * old_ctx - float(s.low_freq_factor)) / span;
    const float smoothed = (1.f - smooth) * llama / factor + smooth * llama;
    const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
    f = medium ? smoothed : llama;
  }
}

RopeTable make_table(int64_t t, int64_t cols) {
  RopeTable tab;
  tab.cos = Tensor::empty({t, cols}, DType::F32);
  tab.sin = Tensor::empty({t, cols}, DType::F32);
  tab.head_dim = 2 * cols;
  return tab;
}

// Rows (cos | sin of position x inv_freq) of the positions (-kMemoPositions, kMemoPositions),
// computed once per thread and inverse-frequency vector and copied afterwards: a prefill, every
// pruning stage that moves positions (PDrop's deltas are negative) and every request of a batch
// evaluation ask for the same rows again (a 640-row table of a 128-dim head is 82k sin/cos, about
// half a millisecond of host time). Same arithmetic as a direct computation, so the copies are
// bit-identical to it.
constexpr int64_t kMemoPositions = int64_t(1) << 15;
constexpr size_t kMemoVectors = 8;  // distinct inv_freq vectors kept (dynamic scaling makes many)

void rope_row(float pos, const std::vector<float>& inv, float* c, float* s) {
  for (size_t i = 0; i < inv.size(); ++i) {
    const float ang = pos * inv[i];  // f32 product, as the f32 matmul of inv_freq and positions
    c[i] = float(std::cos(double(ang)));
    s[i] = float(std::sin(double(ang)));
  }
}

// One inverse-frequency vector's memoised rows, each cos | sin (2 x cols floats): side 0 holds the
// positions 0, 1, ..., side 1 the positions -1, -2, ... (PDrop's position deltas).
struct RopeRows {
  std::vector<float> inv;
  std::vector<float> side[2];
  // The row of position p (computed with every row before it on its side when first asked for),
  // or nullptr outside the memo. Valid until the next call.
  const float* row(int64_t p) {
    const size_t cols = inv.size(), k = p < 0;
    const int64_t i = p < 0 ? -p - 1 : p;
    if (i >= kMemoPositions) return nullptr;
    std::vector<float>& v = side[k];
    for (int64_t j = int64_t(v.size() / (2 * cols)); j <= i; ++j) {
      v.resize(size_t(j + 1) * 2 * cols);
      float* r = v.data() + size_t(j) * 2 * cols;
      rope_row(float(k ? -(j + 1) : j), inv, r, r + cols);
    }
    return v.data() + size_t(i) * 2 * cols;
  }
};

RopeRows& rope_rows(const std::vector<float>& inv) {
  thread_local std::vector<RopeRows> memo;
  for (RopeRows& r : memo)
    if (r.inv == inv) return r;
  if (memo.size() >= kMemoVectors) memo.clear();
  memo.push_back(RopeRows{inv, {}});
  return memo.back();
}

void check_head_dim(int64_t d, const char* op) {
  MMATTN_CHECK(d >= 2 && d % 2 == 0, ShapeError, op, ": head_dim must be even and >= 2, got ", d);
}

}  // namespace

std::string_view rope_scaling_type_name(RopeScalingType t) { return kScalingNames[int(t)]; }
bool parse_rope_scaling_type(std::string_view name, RopeScalingType* out) {
  if (name == "none") {
    *out = RopeScalingType::None;
    return true;
  }
  for (int i = 0; i < 4; ++i)
    if (kScalingNames[i] == name) {
      *out = RopeScalingType(i);
      return true;
    }
  return false;
}
std::string_view rope_style_name(RopeStyle s) { return kStyleNames[int(s)]; }
bool parse_rope_style(std::string_view name, RopeStyle* out) {
  for (int i = 0; i < 2; ++i)
    if (kStyleNames[i] == name) {
      *out = RopeStyle(i);
      return true;
    }
  return false;
}

std::pair<Tensor, Tensor> RopeTable::on(Device dev) const {
  MMATTN_CHECK(cos.defined() && sin.defined(), ShapeError, "RopeTable: table is empty (build it with rope_table_*)");
  if (dev == cos.device()) return {cos, sin};
  MMATTN_CHECK(cache_ != nullptr, ShapeError, "RopeTable: no device cache");
  std::lock_guard<std::mutex> lock(cache_->mu);
  for (auto& [d, cs] : cache_->entries)
    if (d == dev) return cs;
  auto cs = std::make_pair(cos.to(dev).contiguous(), sin.to(dev).contiguous());
  cache_->entries.emplace_back(dev, cs);
  return cs;
}

RopeTable rope_table_llama(const std::vector<int64_t>& positions, int64_t head_dim, double theta,
                           const RopeScaling& scaling) {
  const char* op = "rope_table_llama";
  check_head_dim(head_dim, op);
  MMATTN_CHECK(theta > 0, ShapeError, op, ": theta must be > 0, got ", theta);
  const int64_t cols = head_dim / 2;
  std::vector<float> inv;
  switch (scaling.type) {
    case RopeScalingType::None: inv = default_inv_freq(head_dim, float(theta)); break;
    case RopeScalingType::Linear:
      MMATTN_CHECK(scaling.factor > 0, ShapeError, op, ": linear scaling factor must be > 0, got ", scaling.factor);
      inv = default_inv_freq(head_dim, float(theta));
      for (float& f : inv) f /= float(scaling.factor);
      break;
    case RopeScalingType::Llama3:
      MMATTN_CHECK(scaling.factor > 0 && scaling.high_freq_factor > scaling.low_freq_factor &&
                       scaling.low_freq_factor > 0 && scaling.original_max_position_embeddings > 0,
                   ShapeError, op, ": llama3 scaling needs factor > 0, 0 < low_freq_factor < high_freq_factor and ",
                   "original_max_position_embeddings > 0; got factor ", scaling.factor, ", low ",
                   scaling.low_freq_factor, ", high ", scaling.high_freq_factor, ", original ",
                   scaling.original_max_position_embeddings);
      inv = default_inv_freq(head_dim, float(theta));
      apply_llama3(inv, scaling);
      break;
    case RopeScalingType::Dynamic: {
      MMATTN_CHECK(scaling.factor > 0 && scaling.original_max_position_embeddings > 0, ShapeError, op,
                   ": dynamic scaling needs factor > 0 and original_max_position_embeddings > 0");
      MMATTN_CHECK(head_dim > 2, ShapeError, op, ": dynamic scaling needs head_dim > 2");
      int64_t seq_len = 0;
      for (int64_t p : positions) seq_len = std::max(seq_len, p + 1);
      const int64_t max_pos = scaling.original_max_position_embeddings;
      float base = float(theta);
      if (seq_len > max_pos) {
        // seq_len is a 0-d int64 tensor in transformers, so this runs in f32
        float r = float(scaling.factor) * float(seq_len) / float(max_pos) - float(scaling.factor - 1.0);
        base = float(theta) * std::pow(r, float(double(head_dim) / double(head_dim - 2)));
      }
      inv = default_inv_freq(head_dim, base);
      break;
    }
  }
  const int64_t t = int64_t(positions.size());
  RopeTable tab = make_table(t, cols);
  float* c = tab.cos.data<float>();
  float* s = tab.sin.data<float>();
  // (dynamic scaling changes inv_freq with the sequence length, i.e. every decode step past the
  // original context: no memo there)
  RopeRows* memo = scaling.type == RopeScalingType::Dynamic ? nullptr : &rope_rows(inv);
  for (int64_t r = 0; r < t; ++r) {
    const int64_t p = positions[size_t(r)];
    if (const float* m = memo ? memo->row(p) : nullptr) {
      std::copy_n(m, cols, c + r * cols);
      std::copy_n(m + cols, cols, s + r * cols);
    } else {
      rope_row(float(p), inv, c + r * cols, s + r * cols);
    }
  }
  tab.inv_freq.assign(inv.begin(), inv.end());
  return tab;
}

RopeTable rope_table_llama(const Tensor& positions, int64_t head_dim, double theta, const RopeScaling& scaling) {
  const char* op = "rope_table_llama";
  check_defined(positions, op, "positions");
  MMATTN_CHECK(positions.dim() == 1, ShapeError, op, ": 'positions' must be [T], got ", positions.desc());
  MMATTN_CHECK(positions.dtype() == DType::I32 || positions.dtype() == DType::I64, ShapeError, op,
               ": 'positions' must be I32 or I64, got ", positions.desc());
  Tensor p = positions.to(Device::cpu()).to(DType::I64).contiguous();
  const int64_t* d = p.data<int64_t>();
  return rope_table_llama(std::vector<int64_t>(d, d + p.numel()), head_dim, theta, scaling);
}

RopeTable rope_table_axes(const Tensor& ids, const std::vector<int64_t>& axes_dim, double theta) {
  const char* op = "rope_table_axes";
  check_defined(ids, op, "ids");
  MMATTN_CHECK(ids.dim() == 2, ShapeError, op, ": 'ids' must be [T, n_axes], got ", ids.desc());
  MMATTN_CHECK(ids.size(1) == int64_t(axes_dim.size()), ShapeError, op, ": 'ids' ", ids.shape_str(), " has ",
               ids.size(1), " axes but 'axes_dim' has ", axes_dim.size());
  MMATTN_CHECK(theta > 0, ShapeError, op, ": theta must be > 0, got ", theta);
  int64_t cols = 0;
  for (int64_t d : axes_dim) {
    MMATTN_CHECK(d >= 2 && d % 2 == 0, ShapeError, op, ": every 'axes_dim' entry must be even and >= 2, got ", d);
    cols += d / 2;
  }
  // freqs per axis, f64: 1.0 / theta ** (arange(0, d, 2, float64) / d)
  std::vector<double> freq;
  for (int64_t d : axes_dim)
    for (int64_t j = 0; j < d / 2; ++j) freq.push_back(1.0 / std::pow(theta, double(2 * j) / double(d)));
  const std::vector<float> pos = ids.to_floats();  // ids.float()
  const int64_t t = ids.size(0), n_axes = ids.size(1);
  RopeTable tab = make_table(t, cols);
  float* c = tab.cos.data<float>();
  float* s = tab.sin.data<float>();
  for (int64_t r = 0; r < t; ++r) {
    int64_t col = 0;
    for (int64_t a = 0; a < n_axes; ++a) {
      const double p = pos[size_t(r * n_axes + a)];
      for (int64_t j = 0; j < axes_dim[size_t(a)] / 2; ++j, ++col) {
        const double ang = p * freq[size_t(col)];
        c[r * cols + col] = float(std::cos(ang));
        s[r * cols + col] = float(std::sin(ang));
      }
    }
  }
  tab.inv_freq = std::move(freq);
  return tab;
}

namespace {

RopeParams rope_params(const char* op, const Tensor& x, const RopeTable& table, RopeStyle style) {
  check_float(x, op, "x");
  MMATTN_CHECK(x.dim() == 4, ShapeError, op, ": 'x' must be [B, T, H, D], got ", x.desc());
  MMATTN_CHECK(table.cos.defined() && table.sin.defined(), ShapeError, op, ": 'table' is empty");
  MMATTN_CHECK(table.head_dim == x.size(3), ShapeError, op, ": 'table' has head_dim ", table.head_dim, " but 'x' ",
               x.shape_str(), " has D = ", x.size(3));
  MMATTN_CHECK(table.length() == x.size(1), ShapeError, op, ": 'table' has ", table.length(), " positions but 'x' ",
               x.shape_str(), " has T = ", x.size(1));
  MMATTN_CHECK(table.cos.dim() == 2 && table.cos.size(1) == table.head_dim / 2 && table.sin.shape() == table.cos.shape(),
               ShapeError, op, ": 'table' cos/sin must be [T, head_dim/2], got ", table.cos.desc(), " / ",
               table.sin.desc());
  check_cpu_f32(x, op, "x");
  RopeParams p;
  p.b = x.size(0);
  p.t = x.size(1);
  p.h = x.size(2);
  p.d = x.size(3);
  p.style = style;
  p.dtype = x.dtype();
  return p;
}

void run_rope(RopeParams& p, const Tensor& x, const RopeTable& table) {
  if (p.b * p.t * p.h * p.d == 0) return;
  auto [c, s] = table.on(x.device());
  Tensor cc = c.contiguous(), sc = s.contiguous();
  p.cos = cc.data<float>();
  p.sin = sc.data<float>();
  if (x.is_cuda()) {
    MMATTN_IF_CUDA(rope_cuda(p, current_stream()));
  } else {
    rope_cpu(p);
  }
}

}  // namespace

Tensor apply_rope(const Tensor& x, const RopeTable& table, RopeStyle style) {
  check_defined(x, "apply_rope", "x");
  RopeParams p = rope_params("apply_rope", x, table, style);
  Tensor xs = x.stride(3) == 1 ? x : x.contiguous();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  p.x = xs.numel() ? xs.data_ptr() : nullptr;
  p.y = y.numel() ? y.data_ptr() : nullptr;
  p.x_sb = xs.stride(0), p.x_st = xs.stride(1), p.x_sh = xs.stride(2);
  p.y_sb = y.stride(0), p.y_st = y.stride(1), p.y_sh = y.stride(2);
  run_rope(p, xs, table);
  return y;
}

void apply_rope_(Tensor& x, const RopeTable& table, RopeStyle style) {
  check_defined(x, "apply_rope_", "x");
  RopeParams p = rope_params("apply_rope_", x, table, style);
  MMATTN_CHECK(x.stride(3) == 1 || x.size(3) <= 1, ShapeError, "apply_rope_: 'x' ", x.desc(),
               " must have a dense last dim (stride 1), got strides ", shape_str(x.strides()));
  p.x = x.numel() ? x.data_ptr() : nullptr;
  p.y = x.numel() ? x.data_ptr() : nullptr;
  p.x_sb = p.y_sb = x.stride(0);
  p.x_st = p.y_st = x.stride(1);
  p.x_sh = p.y_sh = x.stride(2);
  run_rope(p, x, table);
}

}  // namespace mmattn
