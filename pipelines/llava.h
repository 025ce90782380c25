#pragma once
// The LLaVA-1.5 caption / VQA pipeline: one model folder loaded once, then any number of
// (image, prompt) requests:
//   load image -> [expand2square, mean colour] -> CLIP preprocess -> ViT + projector
//   -> llava_prompt (+ optional vicuna_v1 system prompt) -> encode -> <image> x N features
//   -> llava_input_embeds -> prefill + token-by-token decode (greedy or sampled)
//   -> stop at EOS (config.json), max_new_tokens or the first stop string -> text.
//
// Model folder: config.json (a LlavaForConditionalGeneration; anything else is a ConfigError),
// tokenizer.model (+ tokenizer.json / tokenizer_config.json / added_tokens.json when present;
// <image> = image_token_index is registered when no file declares it), the safetensors weights,
// and preprocessor_config.json when present (else CLIP's processor with shortest_edge = crop =
// vision_config.image_size and the OpenAI CLIP mean/std, what llava-hf's processors hold).
//
// Errors are thrown (the CLI catches them): IoError / FormatError from the image loader or the
// tokenizer, ConfigError for bad configs and requests (a prompt + max_new_tokens longer than
// max_position_embeddings names both numbers), WeightError for missing or mis-shaped tensors.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/hf_config.h"
#include "core/json_reader.h"
#include "language/sampler.h"
#include "pipelines/modulation.h"
#include "pipelines/pruning.h"
#include "vision/clip_preprocess.h"
#include "vision/image.h"

namespace mmattn {

class Checkpoint;
class LlamaModel;
class LlamaTokenizer;
class LlavaImageEncoder;
struct Spec;

inline constexpr const char* kDefaultCaptionPrompt = "Please describe this image in detail.";

struct LlavaRequest {
  std::string image;                  // image path (JPEG or PNG)
  std::string prompt;                 // the user's text; "" -> kDefaultCaptionPrompt
  bool system_prompt = false;         // prepend LLaVA's vicuna_v1 system prompt
  bool pad_to_square = false;         // LLaVA's expand2square (image_aspect_ratio "pad")
  int64_t max_new_tokens = 128;       // >= 1
  int64_t min_new_tokens = 0;         // EOS is masked before this many tokens
  SamplingConfig sampling;            // greedy by default
  std::vector<std::string> stop;      // generation stops at the first occurrence of any of them
  // Visual token pruning (docs/pruning.md); method none by default. Resolved against the model in
  // plan() (bad keep counts / layers are ConfigErrors naming the spec field).
  PruningConfig pruning;
  ModulationSet modulation;           // docs/modulation.md; resolved in plan()
  // VCD / RITUAL: the second branch's pixel values [1, 3, H, W] (F32, normalised) instead of the
  // noised / transformed image drawn from the seed (to reproduce another implementation's exactly).
  Tensor branch_pixels;
  std::string kept_map_path;          // non-empty: write the kept-patch PNG (save_kept_map) here
  // non-empty: write the head map (save_head_map: each layer's and head's attention mass of the
  // last prompt row on the image tokens) here, and its values beside it as JSON. Such a request
  // runs alone in run_batch; not with adhh. With vhr the map shows VHD instead.
  std::string head_map_path;
  // Newly decoded text after each token (complete UTF-8; text that could begin a stop string is
  // held back until it is known not to). The concatenation of all calls equals LlavaResult::text.
  std::function<void(const std::string&)> on_text;
};

struct LlavaTimings {
  double load_preprocess_ms = 0;  // image decode + pad + resize/crop/normalise
  double vision_ms = 0;           // CLIP tower + projector
  double prefill_ms = 0;          // time to first token: from the start of the request (image load)
                                  // to the first generated token
  double decode_ms = 0;           // from the first generated token to the last
  double decode_tokens_per_s = 0; // (generated tokens - 1) / decode time
  double total_ms = 0;
};

struct LlavaResult {
  std::string text;                 // decoded (special tokens skipped), cut at the first stop string
  std::string prompt;               // the prompt as formatted (before <image> expansion)
  std::vector<int64_t> token_ids;   // generated ids (an EOS that stopped generation included)
  int64_t prompt_tokens = 0;        // prompt length after <image> expansion (image tokens included)
  int64_t image_tokens = 0;         // number of image features
  std::string stop_reason;          // "eos" | "stop_string" | "max_new_tokens"
  LlavaTimings timings;
  size_t peak_memory_bytes = 0;     // CUDA allocator peak during the request; 0 on the CPU
  PruningReport pruning;            // stages, kept patches, KV bytes and prefill FLOPs (method "none" too)
  // VHR: per decoder layer, the heads it reinforces (empty: none), their VHD and the text-only
  // branch's head energy TA (vhr_select's inputs; empty without VHR)
  std::vector<std::vector<int>> vhr_heads;
  std::vector<std::vector<float>> vhr_vhd, vhr_ta;
  Json to_json() const;
};

// One request of a batch: ok with its result, or not ok with the error's message (result empty).
struct LlavaBatchItem {
  bool ok = false;
  std::string error;
  LlavaResult result;
};

class LlavaPipeline {
 public:
  // Loads everything from `model_dir`. CPU: f32 only.
  LlavaPipeline(const std::string& model_dir, Device device, DType dtype);
  ~LlavaPipeline();
  LlavaPipeline(LlavaPipeline&&) noexcept;
  LlavaPipeline& operator=(LlavaPipeline&&) noexcept;

  LlavaResult run(const LlavaRequest& req) const;

  // Many requests with continuous batching: `max_batch` slots of one KV cache [max_batch, max_len]
  // (max_len: the longest prompt + max_new_tokens of the batch). Free slots are filled in input
  // order (prompt, image, vision tower, prompt embeddings); the newly admitted requests are
  // prefilled together in one right-padded forward, then every active slot decodes one token per
  // step, each with its own sampler (its request's seed), min/max_new_tokens, EOS and stop strings
  // (and on_text); a finished slot is freed and refilled at the next step. Greedy requests give the
  // ids run() gives. A request that throws before it gets a slot (bad request, unreadable image,
  // too long) becomes an error item (the message names the file) and the others go on; errors of
  // the batched forward itself are thrown. The result keeps the input order; on_done(index, item)
  // is called once per request as it finishes (error items as they are found). Timings are per
  // request (from its admission); peak_memory_bytes is the batch's peak so far.
  std::vector<LlavaBatchItem> run_batch(const std::vector<LlavaRequest>& reqs, int max_batch,
                                        std::function<void(size_t index, const LlavaBatchItem&)> on_done = {}) const;

  const LlavaConfig& config() const { return cfg_; }
  const ClipPreprocessConfig& preprocess_config() const { return pre_; }
  const LlamaTokenizer& tokenizer() const { return *tok_; }
  const LlamaModel& language_model() const { return *lm_; }
  const LlavaImageEncoder& image_encoder() const { return *encoder_; }
  Device device() const { return device_; }
  DType dtype() const { return dtype_; }
  std::vector<int64_t> eos_token_ids() const { return cfg_.text_config.eos_token_ids; }
  double load_ms() const { return load_ms_; }

 private:
  struct Sequence;  // one request's generation state (llava.cpp)
  // Validates the request and tokenizes its prompt; ConfigError when it cannot fit the context.
  std::unique_ptr<Sequence> plan(const LlavaRequest& req) const;
  // Image -> preprocess -> vision tower -> prompt embeddings [1, L, hidden] (and the timings).
  // Image -> pixels on the device (s.crop when needed, timings). `source`: the request's image
  // already decoded (run_batch decodes on worker threads); null = load it here.
  Tensor prepare_pixels(Sequence& s, std::future<Image>* source = nullptr) const;
  // Vision tower + projector for several requests (one batched pass for those without a stage
  // before the LLM), then each one's prompt embeddings.
  void encode_batch(const std::vector<Sequence*>& seqs, const std::vector<Tensor>& pixels) const;
  void finish_encode(Sequence& s, VisualTokens vt) const;
  // Prefill of right-padded prompts [B, L, hidden] (n_valid rows each): one forward, or with an
  // attention modulator and prompts of different lengths, all rows but the last, then the last
  // rows (PAI modulates each prompt's last row). Returns the logits [B, 1, V].
  Tensor prefill(const Tensor& embeds, const std::vector<int>& n_valid, KVCache& cache, LlamaForwardOptions& opt) const;
  // run() with a contrastive method: the request and its negative branch decoded as one batch.
  LlavaResult run_contrastive(std::unique_ptr<Sequence> s, const ModulationConfig& cd) const;
  void decode_greedy_on_device(Sequence& s, Tensor logits, KVCache& cache, const LlamaForwardOptions& opt) const;
  // The CPU part of a request's image path: decode, [RITUAL's transform of the raw image]
  // (thread-safe).
  Image load_source(const LlavaRequest& req, const ModulationConfig* ritual = nullptr) const;
  // The request's CLIP preprocessing (its pad_to_square) on the pipeline's device: pixels
  // [1, 3, H, W] in the pipeline's dtype; `crop` / `crop_pixels`, when given, get the 8-bit crop (on
  // the host / as a U8 [S, S, 3] tensor on the pipeline's device).
  Tensor preprocess(const Image& img, const LlavaRequest& req, Image* crop = nullptr,
                    Tensor* crop_pixels = nullptr) const;
  void finish_pruning(Sequence& s, const KVCache& cache, int64_t b, const LlavaTokenPruner* pruner) const;
  // VHR's selection inside the prefill of batch slots `seqs` (nullptr: not in this prefill; a batch
  // of seqs.size()): the text-only branch of each prompt, wrapped around the request's modulator.
  std::unique_ptr<VhrSelector> vhr_selector(const ModulationConfig& c, AttentionModulator* inner,
                                            const std::vector<Sequence*>& seqs) const;
  // After that prefill: each selecting slot's heads, VHD and TA into its result, its gains into `modulator`.
  static void keep_vhr_heads(const std::vector<Sequence*>& seqs, const VhrSelector& sel, LlavaModulator& modulator,
                             const ModulationConfig& c);

  std::string dir_;
  Device device_;
  DType dtype_ = DType::F32;
  LlavaConfig cfg_;
  ClipPreprocessConfig pre_;
  std::unique_ptr<Checkpoint> ckpt_;  // kept alive: loaded tensors may be views of its mapping
  std::unique_ptr<LlamaTokenizer> tok_;
  std::unique_ptr<LlavaImageEncoder> encoder_;
  std::unique_ptr<LlamaModel> lm_;
  double load_ms_ = 0;
};

// Stop-string bookkeeping for streamed text (exposed for tests): feed() the text decoded so far
// grows by; it returns the part that is safe to emit now and sets stopped() once a stop string
// appears (the text is then cut just before it).
class StopStringFilter {
 public:
  explicit StopStringFilter(std::vector<std::string> stop) : stop_(std::move(stop)) {}
  std::string feed(const std::string& more);
  // End of generation: everything held back is emitted.
  std::string finish();
  bool stopped() const { return stopped_; }
  // The text emitted so far (the final text once finished or stopped).
  const std::string& text() const { return emitted_; }

 private:
  std::vector<std::string> stop_;
  std::string full_;     // all text fed (until a stop)
  std::string emitted_;  // prefix of full_ already returned
  bool stopped_ = false;
};

// The spec's "llava" block (strict; defaults in docs/specs.md).
struct LlavaOptions {
  std::string image;  // as written (the run resolves it against the spec's folder)
  std::string prompt;
  // Batch mode ("requests" instead of "image"): each (image, prompt) pair, the prompt defaulting to
  // the top-level one; every other option is shared. They run through run_batch, batch_size at a
  // time; a bad item is reported in the results and the rest go on.
  struct Item {
    std::string image, prompt;
  };
  std::vector<Item> requests;
  int batch_size = 8;
  std::string task = "caption";
  bool system_prompt = false;
  bool pad_to_square = false;
  int64_t max_new_tokens = 128;
  int64_t min_new_tokens = 0;
  SamplingConfig sampling;
  std::vector<std::string> stop;
  bool stream = true;
  PruningConfig pruning;       // "pruning": {...}
  ModulationSet modulation;    // "modulation": [...]
  std::string save_kept_map;   // "save_kept_map": PNG path
  std::string save_head_map;   // "save_head_map": PNG path (+ .json)
  // Reads and validates every key (ConfigError naming the JSON path), then finish().
  static LlavaOptions parse(JsonReader& r);
};

void validate_llava_options(JsonReader& r);
Json run_llava(const Spec& spec);

}  // namespace mmattn
