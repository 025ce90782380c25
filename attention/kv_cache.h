#pragma once
// KVCache: the keys and values of L decoder layers for B sequences, up to max_len tokens each.
//
// Storage: one tensor [L, 2, B, max_len, Hkv, D] (dtype, device); k(l) / v(l) are contiguous views
// [B, max_len, Hkv, D] that attention() reads with k_lens = lens_tensor(l) (rows past a sequence's
// length in that layer are never read, so their content does not matter).
//
// Every (layer, sequence) has its own length: in-layer token pruning (FastV, PDrop, DART) keeps all
// tokens in the layers before the pruning layer and only the kept ones after it.
//
// A decode (or prefill-chunk) step:
//   for each layer l: append(l, k_new, v_new [B, n, Hkv, D], n_valid)  -> rows [len_lb, len_lb + n_valid[b])
//                     attention(q, k(l), v(l), {causal, k_lens = lens_tensor(l), q_lens = n_valid})
//   advance()                                                            -> len_lb += n_valid_l[b]
// Layers of one step may append different row counts (a layer after a pruning point appends fewer);
// lens_tensor(l) already includes layer l's new rows from its append on, so its attention sees the
// new tokens (bottom-right causal then lets new token i see keys j <= len_lb + i).
//
// Positions: each slot keeps the original position id of its token. Pruning removes tokens but keeps
// the positions of the survivors, so the next token's position is max(position) + 1 over all layers
// (next_position), not a length. RoPE tables are built from these.

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace mmattn {

class KVCache {
 public:
  KVCache(int layers, int64_t batch, int64_t max_len, int64_t kv_heads, int64_t head_dim, DType dtype,
          Device device = Device::cpu());
  // Copies would share the storage but not the lengths: moves only.
  KVCache(const KVCache&) = delete;
  KVCache& operator=(const KVCache&) = delete;
  KVCache(KVCache&&) = default;
  KVCache& operator=(KVCache&&) = default;

  int layers() const { return layers_; }
  int64_t batch() const { return batch_; }
  int64_t capacity() const { return max_len_; }
  int64_t kv_heads() const { return hkv_; }
  int64_t head_dim() const { return d_; }
  DType dtype() const { return storage_.dtype(); }
  Device device() const { return storage_.device(); }

  // Writes k_new / v_new [B, n, Hkv, D] (any strides; dtype and device of the cache) into layer
  // `layer` at rows [len_lb, len_lb + n_valid[b]) of each sequence b (rows >= n_valid[b] of the input
  // are padding and are not written). n_valid: B values in [0, n]; empty = n for every sequence.
  // positions: per sequence, the n_valid[b] original positions of the new rows; empty =
  // next_position(b) + 0, 1, ... (next_position as it was when the step opened).
  void append(int layer, const Tensor& k_new, const Tensor& v_new, const std::vector<int>& n_valid = {},
              const std::vector<std::vector<int32_t>>& positions = {});
  // append() with RoPE fused in (one CUDA launch for what apply_rope_ on q and k, then append, do;
  // the same values): k_new is rotated on its way into the cache and q [B, n, Hq, D] (dense last
  // dim) in place, rotate_half pairs (RopeStyle::HalfSplit), input row i by row i of cos / sin
  // (F32 [n, D/2], contiguous, on the cache's device: a RopeTable's device copy).
  void append_rope(int layer, Tensor& q, const Tensor& k_new, const Tensor& v_new, const Tensor& cos,
                   const Tensor& sin, const std::vector<int>& n_valid = {},
                   const std::vector<std::vector<int32_t>>& positions = {});
  // For a producer that writes a step's new rows itself (linear_qkv_rope: the q/k/v projection's
  // epilogue): next_rows_k / next_rows_v are layer `layer`'s rows [len, len + n) of the one sequence
  // (batch 1) as [n, Hkv * D] views; append_written() then does append()'s bookkeeping (lengths,
  // positions) without copying. Capacity is checked by next_rows_*.
  Tensor next_rows_k(int layer, int64_t n) const;
  Tensor next_rows_v(int layer, int64_t n) const;
  void append_written(int layer, int64_t n, const std::vector<std::vector<int32_t>>& positions = {});
  // Closes the step after every layer appended: len_lb += that layer's n_valid[b].
  void advance();
  bool step_open() const { return open_; }

  Tensor k(int layer) const;  // [B, max_len, Hkv, D]
  Tensor v(int layer) const;  // [B, max_len, Hkv, D]
  // Committed length of sequence b in its longest layer (what capacity checks need), per sequence.
  std::vector<int64_t> lengths() const;
  int64_t length(int64_t b) const;
  int64_t layer_length(int layer, int64_t b) const;
  // I32 [B] on the cache's device: the key lengths layer `layer`'s attention should use now
  // (committed lengths, plus the open step's rows once that layer appended them).
  Tensor lens_tensor(int layer) const;
  // I32 [L, B, max_len] on the CPU: original position of each slot, -1 past the committed length.
  const Tensor& positions() const { return pos_; }
  std::vector<int32_t> positions(int64_t b, int layer = 0) const;  // the first layer_length(layer, b) entries
  // The positions attention of layer `layer` sees now: committed plus the open step's appended rows.
  std::vector<int32_t> visible_positions(int64_t b, int layer) const;
  int64_t visible_length(int64_t b, int layer) const;  // visible_positions(b, layer).size(), no copy
  int32_t next_position(int64_t b) const;  // max position over all layers + 1; 0 when empty
  // Max position in layer `layer` + 1 (0 when empty): where that layer's next token goes when a
  // pruning method renumbered the positions of its later layers (PDrop).
  int32_t layer_next_position(int layer, int64_t b) const;

  // Keeps the first `len` tokens of sequence b in every layer (len <= length(b); shorter layers keep theirs).
  void truncate(int64_t b, int64_t len);
  // Keeps the tokens at slot indices `keep` (strictly increasing, each < the layers' length) of
  // sequence b in layers [first_layer, L), moved to the front in order, with their positions.
  // Those layers must hold the same number of tokens.
  void compact(int64_t b, const std::vector<int64_t>& keep, int first_layer = 0);
  void reset(int64_t b) { truncate(b, 0); }
  void reset_all();

  // Bytes of K and V the sequences' committed tokens occupy (all layers).
  size_t used_bytes() const;
  // Bytes of K and V storage (all layers).
  size_t bytes() const { return storage_.nbytes(); }

 private:
  struct Rope {
    Tensor* q;
    const Tensor* cos;
    const Tensor* sin;
  };
  void append_impl(int layer, const Tensor& k_new, const Tensor& v_new, const std::vector<int>& n_valid,
                   const std::vector<std::vector<int32_t>>& positions, const Rope* rope, bool copy = true);
  Tensor next_rows(int layer, int64_t n, int which, const char* fn) const;
  void check_b(int64_t b, const char* fn) const;
  void check_layer(int layer, const char* fn) const;
  void check_no_step(const char* fn) const;
  int64_t& len(int layer, int64_t b) { return len_[size_t(layer * batch_ + b)]; }
  int64_t len(int layer, int64_t b) const { return len_[size_t(layer * batch_ + b)]; }
  int32_t* pos_row(int layer, int64_t b) { return pos_.data<int32_t>() + (layer * batch_ + b) * max_len_; }
  const int32_t* pos_row(int layer, int64_t b) const { return pos_.data<int32_t>() + (layer * batch_ + b) * max_len_; }
  // lens_dev_ <- per layer [committed; committed + open step rows]; layer -1 = all layers.
  void upload_lens(int layer = -1);

  int layers_;
  int64_t batch_, max_len_, hkv_, d_;
  Tensor storage_;   // [L, 2, B, max_len, Hkv, D]
  Tensor pos_;       // I32 [L, B, max_len] CPU
  Tensor lens_dev_;  // I32 [L, 2, B] on the device: row 0 committed (write offsets), row 1 visible
  std::vector<int64_t> len_;                   // [L * B] committed lengths
  bool open_ = false;                          // a step is open
  std::vector<std::vector<int>> step_valid_;   // per layer: n_valid of its append in the open step (empty: none yet)
  std::vector<int> step_uploaded_;             // the n_valid the visible lengths were uploaded with
  std::vector<int32_t> step_next_;             // next_position(b) when the step opened
  std::vector<int32_t> next_;                  // [L * B] committed max position + 1 per layer
  std::vector<int32_t> step_max_;              // [L * B] max position + 1 appended in the open step
  void rescan_next(int layer, int64_t b);
};

}  // namespace mmattn
