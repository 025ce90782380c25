#pragma once
// KVCache: the keys and values of L decoder layers for B sequences, up to max_len tokens each.
//
// Storage: one tensor [L, 2, B, max_len, Hkv, D] (dtype, device); k(l) / v(l) are contiguous views
// [B, max_len, Hkv, D] that attention() reads with k_lens = lens_tensor() (rows past a sequence's
// length are never read, so their content does not matter).
//
// A decode (or prefill-chunk) step:
//   for each layer l: append(l, k_new, v_new [B, n, Hkv, D], n_valid)  -> rows [len_b, len_b + n_valid[b])
//                     attention(q, k(l), v(l), {causal, k_lens = lens_tensor(), q_lens = n_valid})
//   advance()                                                            -> len_b += n_valid[b]
// Every layer of a step writes at the same offsets (the committed lengths); lens_tensor() already
// includes the open step's rows from its first append on, so the attention of each layer sees the
// new tokens (bottom-right causal then lets new token i see keys j <= len_b + i).
//
// Positions: each slot keeps the original position id of its token. Pruning (compact) removes
// tokens but keeps the positions of the survivors, so the next token's position is
// max(position) + 1 (next_position), not the length. RoPE tables are built from these.
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
  // `layer` at rows [len_b, len_b + n_valid[b]) of each sequence b (rows >= n_valid[b] of the input
  // are padding and are not written). n_valid: B values in [0, n]; empty = n for every sequence.
  // The first append of a step fixes n_valid; the other layers must pass the same one.
  void append(int layer, const Tensor& k_new, const Tensor& v_new, const std::vector<int>& n_valid = {});
  // Closes the step after every layer appended: len_b += n_valid[b]. n_valid, when given, must equal
  // the step's. positions: per sequence, n_valid[b] original positions of the new tokens; empty =
  // next_position(b) + 0, 1, ...
  void advance(const std::vector<int>& n_valid = {}, const std::vector<std::vector<int32_t>>& positions = {});
  bool step_open() const { return !step_valid_.empty(); }

  Tensor k(int layer) const;  // [B, max_len, Hkv, D]
  Tensor v(int layer) const;  // [B, max_len, Hkv, D]
  // Committed lengths (host).
  const std::vector<int64_t>& lengths() const { return len_; }
  int64_t length(int64_t b) const;
  // I32 [B] on the cache's device: the key lengths attention should use now (committed lengths,
  // plus the open step's n_valid once its first append happened).
  Tensor lens_tensor() const { return lens_dev_.select(0, 1); }
  // I32 [B, max_len] on the CPU: original position of each slot, -1 past the committed length.
  const Tensor& positions() const { return pos_; }
  std::vector<int32_t> positions(int64_t b) const;  // the first length(b) entries
  int32_t next_position(int64_t b) const;           // max position + 1; 0 when empty

  // Keeps the first `len` tokens of sequence b (len <= length(b)).
  void truncate(int64_t b, int64_t len);
  // Keeps the tokens at slot indices `keep` (strictly increasing, each < length(b)) of sequence b in
  // every layer, moved to the front in order, with their positions (FastV / PDrop pruning).
  void compact(int64_t b, const std::vector<int64_t>& keep);
  void reset(int64_t b) { truncate(b, 0); }
  void reset_all();

  // Bytes of K and V storage (all layers).
  size_t bytes() const { return storage_.nbytes(); }

 private:
  void check_b(int64_t b, const char* fn) const;
  void check_no_step(const char* fn) const;
  void upload_lens();  // lens_dev_ <- [committed; committed + open step]

  int layers_;
  int64_t batch_, max_len_, hkv_, d_;
  Tensor storage_;   // [L, 2, B, max_len, Hkv, D]
  Tensor pos_;       // I32 [B, max_len] CPU
  Tensor lens_dev_;  // I32 [2, B] on the device: row 0 committed (write offsets), row 1 visible
  std::vector<int64_t> len_;
  std::vector<int> step_valid_;        // n_valid of the open step (empty: no step open)
  std::vector<bool> step_appended_;    // per layer, in the open step
  int64_t step_n_ = 0;
};

}  // namespace mmattn
