#include "pipelines/llava.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <numeric>

#include "core/checkpoint.h"
#include "core/host_readback.h"
#include "core/io.h"
#include "core/log.h"
#include "core/ops/concat.h"
#include "core/ops/linear.h"
#include "core/ops/reduce.h"
#include "language/chat.h"
#include "language/llama.h"
#include "language/llava.h"
#include "language/tokenizer.h"
#include "pipelines/spec.h"
#include "vision/image.h"
#include "vision/image_transforms.h"
#include "vision/projector.h"

namespace mmattn {

namespace {

using Clock = std::chrono::steady_clock;
double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// Image features per image: the tower's patches (+ [CLS] with the "full" strategy). Known before
// the encoder runs, so the context-length check fails before any work.
int64_t expected_image_features(const LlavaConfig& c) {
  return c.vision_config.num_patches() + (c.vision_feature_select_strategy == "full" ? 1 : 0);
}

}  // namespace

// --- StopStringFilter ---------------------------------------------------------------------------

std::string StopStringFilter::feed(const std::string& more) {
  if (stopped_) return "";
  full_ += more;
  size_t best = std::string::npos;
  for (const auto& s : stop_) {
    if (s.empty()) continue;
    const size_t p = full_.find(s);
    if (p < best) best = p;
  }
  if (best != std::string::npos) {
    // Invariant: nothing at or after a stop string's start was emitted (held back below), so
    // best >= emitted_.size(); max() keeps the text consistent even if that were violated.
    stopped_ = true;
    full_.resize(std::max(best, emitted_.size()));
    std::string out = full_.substr(emitted_.size());
    emitted_ = full_;
    return out;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string.
  size_t hold = 0;
  for (const auto& s : stop_) {
    for (size_t k = std::min(s.size() - (s.empty() ? 0 : 1), full_.size()); k > hold; --k)
      if (full_.compare(full_.size() - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
  }
  size_t safe = full_.size() - hold;
  // never split a UTF-8 character between two chunks
  while (safe > emitted_.size() && safe < full_.size() && (uint8_t(full_[safe]) & 0xC0) == 0x80) --safe;
  if (safe <= emitted_.size()) return "";
  std::string out = full_.substr(emitted_.size(), safe - emitted_.size());
  emitted_ += out;
  return out;
}

std::string StopStringFilter::finish() {
  if (stopped_) return "";
  std::string out = full_.substr(emitted_.size());
  emitted_ = full_;
  return out;
}

// --- LlavaResult ----------------------------------------------------------------------------------

Json LlavaResult::to_json() const {
  Json j{{"text", text},
              {"prompt", prompt},
              {"token_ids", token_ids},
              {"num_generated_tokens", token_ids.size()},
              {"prompt_tokens", prompt_tokens},
              {"image_tokens", image_tokens},
              {"stop_reason", stop_reason},
              {"timings", {{"load_preprocess_ms", timings.load_preprocess_ms},
                           {"vision_ms", timings.vision_ms},
                           {"prefill_ms", timings.prefill_ms},
                           {"decode_ms", timings.decode_ms},
                           {"decode_tokens_per_s", timings.decode_tokens_per_s},
                           {"total_ms", timings.total_ms}}},
              {"peak_memory_bytes", peak_memory_bytes},
              {"pruning", pruning.to_json()}};
  if (!vhr_heads.empty()) j["vhr"] = {{"heads", vhr_heads}, {"vhd", vhr_vhd}, {"ta", vhr_ta}};
  return j;
}

// --- LlavaPipeline ----------------------------------------------------------------------------

LlavaPipeline::~LlavaPipeline() = default;
LlavaPipeline::LlavaPipeline(LlavaPipeline&&) noexcept = default;
LlavaPipeline& LlavaPipeline::operator=(LlavaPipeline&&) noexcept = default;

LlavaPipeline::LlavaPipeline(const std::string& model_dir, Device device, DType dtype)
    : dir_(model_dir), device_(device), dtype_(dtype) {
  const auto t0 = Clock::now();
  MMATTN_CHECK(!device.is_cpu() || dtype == DType::F32, ConfigError, "llava: the CPU path computes in f32, got ",
               dtype_name(dtype));
  const ModelConfig mc = read_model_config(model_dir);
  MMATTN_CHECK(mc.kind == ModelKind::Llava, ConfigError, mc.path, ": architecture '",
               mc.architecture.empty() ? std::string("(none)") : mc.architecture,
               "' is not a LLaVA model (expected LlavaForConditionalGeneration / model_type llava)");
  cfg_ = mc.llava();

  tok_ = std::make_unique<LlamaTokenizer>(model_dir);
  const int64_t have = tok_->piece_to_id(kImageToken);
  if (have < 0) tok_->add_special_token(kImageToken, cfg_.image_token_index);
  else
    MMATTN_CHECK(have == cfg_.image_token_index, ConfigError, model_dir, ": the tokenizer has ", kImageToken, " = ",
                 have, " but config.json's image_token_index is ", cfg_.image_token_index);

  const std::string pre_path = model_dir + "/preprocessor_config.json";
  if (path_exists(pre_path)) {
    pre_ = ClipPreprocessConfig::from_json_file(pre_path);
  } else {
    pre_ = ClipPreprocessConfig{};
    pre_.shortest_edge = int(cfg_.vision_config.image_size);
    pre_.crop_h = pre_.crop_w = int(cfg_.vision_config.image_size);
  }
  pre_.validate();

  ckpt_ = std::make_unique<Checkpoint>(model_dir);
  encoder_ = std::make_unique<LlavaImageEncoder>(LlavaImageEncoder::load(*ckpt_, cfg_, device, dtype));
  lm_ = std::make_unique<LlamaModel>(LlamaModel::load(*ckpt_, detect_llama_weight_names(*ckpt_), cfg_.text_config,
                                                      device, dtype));
  if (device.is_cuda()) synchronize();
  load_ms_ = ms_between(t0, Clock::now());
  MMATTN_DEBUG("llava: loaded ", model_dir, " on ", device.str(), " in ", load_ms_, " ms");
}

// Whether greedy requests take their tokens from the device's argmax (run(): the host one step
// behind; run_batch(): B ids per step come back instead of B x V logits). MMATTN_DEVICE_GREEDY=0
// keeps the host's argmax (benchmark A/B).
static bool device_greedy() {
  static const bool on = [] {
    const char* e = std::getenv("MMATTN_DEVICE_GREEDY");
    return !(e && std::string(e) == "0");
  }();
  return on;
}

// One request's generation state: shared by run() (B = 1) and run_batch() (one slot each).
struct LlavaPipeline::Sequence {
  Sequence(const LlavaRequest& r, const LlamaTokenizer& tok, const std::vector<int64_t>& eos_ids)
      : req(r), eos(eos_ids), sampler(r.sampling), dec(tok, /*skip_special=*/true), filter(r.stop) {}

  const LlavaRequest& req;
  const std::vector<int64_t>& eos;
  LlavaResult res;
  std::vector<int64_t> ids;      // the prompt's ids (one <image>), from plan()
  int64_t n_prompt = 0;          // prompt length after <image> expansion (expected)
  Tensor embeds;                 // [1, L, hidden], from encode(); released after the prefill
  PruningConfig pruning;         // the request's, resolved against the model
  ModulationSet modulation;
  Image crop;                    // the preprocessed 8-bit image, when needs_crop()
  Tensor crop_pixels;            // the same as U8 [S, S, 3] on the model's device, when needs_crop_pixels()
  std::vector<int64_t> patch;    // per image row of the prompt: its patch (-1: [CLS] / merged)
  std::vector<float> row_importance;
  std::pair<int64_t, int64_t> span{0, 0};  // image rows [first, first + count) of the prompt
  std::vector<uint8_t> image_classes;      // PAINT: class of each image row (empty: none)
  std::vector<int64_t> history;  // expanded prompt + generated (the repetition penalty sees the prompt)
  Sampler sampler;
  IncrementalDecoder dec;
  StopStringFilter filter;
  // The host copy of the preprocessed image is needed by the kept map and the VCD / DAMRO branches
  // (everything else uses the device pixels only); VFlowOpt's patch entropy reads it on the device.
  bool needs_crop() const {
    const ModulationConfig* cd = modulation.contrastive();
    return !req.kept_map_path.empty() || (cd && (cd->method == ModMethod::VCD || cd->method == ModMethod::DAMRO));
  }
  bool needs_crop_pixels() const { return pruning.method == PruneMethod::VFlowOpt && pruning.entropy_weight != 0; }
  Clock::time_point t0, t1, t2, t_first;

  void emit(const std::string& s) const {
    if (!s.empty() && req.on_text) req.on_text(s);
  }
  // Picks the next token from this sequence's logits row (vocab); true when generation ends with
  // it (stop string, EOS or max_new_tokens: the last token needs no forward pass).
  bool step(std::vector<float> row) {
    if (eos_banned(int64_t(res.token_ids.size()))) {
      const float neg_inf = -std::numeric_limits<float>::infinity();
      for (int64_t e : eos)
        if (e >= 0 && e < int64_t(row.size())) row[size_t(e)] = neg_inf;
    }
    return accept(sampler.next(std::move(row), history));
  }
  // Whether generated token i may not be EOS (min_new_tokens).
  bool eos_banned(int64_t i) const { return i < req.min_new_tokens; }
  // The same ban on a device logits row [..., V] (the device-greedy paths): EOS columns to -inf.
  void mask_eos(const Tensor& row) const {
    const int64_t V = row.size(-1);
    for (int64_t e : eos)
      if (e >= 0 && e < V) row.slice(row.dim() - 1, e, e + 1).fill_(-std::numeric_limits<float>::infinity());
  }
  // Greedy decoding without a repetition penalty: the argmax of the logits, which the device can
  // take itself (run()'s device-greedy loop).
  bool greedy() const { return !req.sampling.do_sample && req.sampling.repetition_penalty == 1.f; }
  // Records the next token (chosen by step() or on the device); true when generation ends with it.
  bool accept(int64_t tok) {
    const int64_t i = int64_t(res.token_ids.size());
    if (i == 0) t_first = Clock::now();
    res.token_ids.push_back(tok);
    history.push_back(tok);
    emit(filter.feed(dec.push(tok)));
    if (filter.stopped()) {
      res.stop_reason = "stop_string";
      return true;
    }
    if (std::find(eos.begin(), eos.end(), tok) != eos.end()) {
      res.stop_reason = "eos";
      return true;
    }
    return i + 1 == req.max_new_tokens;
  }
  int64_t last_token() const { return res.token_ids.back(); }
  // End of generation (the device synchronized by the caller): the held-back text and the timings.
  void finish() {
    if (!filter.stopped()) {
      emit(filter.feed(dec.flush()));
      if (filter.stopped()) res.stop_reason = "stop_string";
      emit(filter.finish());
    }
    res.text = filter.text();
    const auto t_end = Clock::now();
    LlavaTimings& tm = res.timings;
    tm.load_preprocess_ms = ms_between(t0, t1);
    tm.vision_ms = ms_between(t1, t2);
    tm.prefill_ms = ms_between(t0, t_first);
    tm.decode_ms = ms_between(t_first, t_end);
    const size_t n = res.token_ids.size();
    tm.decode_tokens_per_s = n > 1 && tm.decode_ms > 0 ? double(n - 1) / (tm.decode_ms / 1000.0) : 0.0;
    tm.total_ms = ms_between(t0, t_end);
  }
};

std::unique_ptr<LlavaPipeline::Sequence> LlavaPipeline::plan(const LlavaRequest& req) const {
  MMATTN_CHECK(req.max_new_tokens >= 1, ConfigError, "llava: max_new_tokens must be >= 1, got ", req.max_new_tokens);
  MMATTN_CHECK(req.min_new_tokens >= 0, ConfigError, "llava: min_new_tokens must be >= 0, got ", req.min_new_tokens);
  validate_sampling(req.sampling);
  auto s = std::make_unique<Sequence>(req, *tok_, cfg_.text_config.eos_token_ids);
  LlavaResult& res = s->res;
  res.stop_reason = "max_new_tokens";

  // Prompt first: a request too long for the context fails before any work.
  res.prompt = llava_prompt(req.prompt.empty() ? std::string(kDefaultCaptionPrompt) : req.prompt,
                            /*with_image=*/true, req.system_prompt);
  s->ids = tok_->encode(res.prompt, tok_->add_bos_token());
  const int64_t n_img_expected = expected_image_features(cfg_);
  const int64_t n_prompt = int64_t(s->ids.size()) - 1 + n_img_expected;
  const int64_t ctx = cfg_.text_config.max_position_embeddings;
  MMATTN_CHECK(n_prompt + req.max_new_tokens <= ctx, ConfigError, "llava: the prompt (", n_prompt, " tokens, ",
               n_img_expected, " of them image tokens) + max_new_tokens (", req.max_new_tokens, ") = ",
               n_prompt + req.max_new_tokens, " exceeds max_position_embeddings (", ctx, ") of ", dir_,
               "/config.json");
  s->n_prompt = n_prompt;
  s->pruning = req.pruning;
  const int64_t grid = cfg_.vision_config.image_size / cfg_.vision_config.patch_size;
  s->pruning.resolve(cfg_.vision_config.num_patches(), lm_->num_layers(), grid);
  require_cls_attention(s->pruning, *encoder_);  // before any image is read (a batch goes on)
  s->modulation = req.modulation;
  s->modulation.resolve(lm_->num_layers(), int(lm_->num_heads()));
  if (const ModulationConfig* cd = s->modulation.contrastive())
    MMATTN_CHECK(!s->pruning.enabled(), ConfigError, cd->path, ": contrastive decoding (",
                 mod_method_name(cd->method), ") with visual token pruning is not supported");
  return s;
}

Image LlavaPipeline::load_source(const LlavaRequest& req, const ModulationConfig* ritual) const {
  Image img = load_image(req.image);
  MMATTN_CHECK(!img.empty(), FormatError, req.image, ": empty image (", img.width, "x", img.height, ")");
  if (ritual) {
    const ImageTransform t =
        ritual_transform(*ritual, img.width, img.height, pre_.crop_w, pre_.crop_h, req.sampling.seed);
    MMATTN_DEBUG("ritual: ", req.image, ": ", t.describe());
    img = apply_image_transform(img, t);
  }
  return img;
}

Tensor LlavaPipeline::preprocess(const Image& img, const LlavaRequest& req, Image* crop, Tensor* crop_pixels) const {
  ClipPreprocessConfig pre = pre_;
  pre.pad_to_square = req.pad_to_square;
  return clip_preprocess_to(img, pre, device_, dtype_, crop, crop_pixels).unsqueeze(0);  // [1, 3, H, W]
}

Tensor LlavaPipeline::prepare_pixels(Sequence& s, std::future<Image>* source) const {
  s.t0 = Clock::now();
  const Image img = source ? source->get() : load_source(s.req);
  Tensor px = preprocess(img, s.req, s.needs_crop() ? &s.crop : nullptr,
                         s.needs_crop_pixels() ? &s.crop_pixels : nullptr);
  if (device_.is_cuda()) synchronize();
  s.t1 = Clock::now();
  return px;
}

void LlavaPipeline::encode_batch(const std::vector<Sequence*>& seqs, const std::vector<Tensor>& pixels) const {
  // PAINT's token sets come from the [CLS] attention of ViT layer 0 and of the feature-producing
  // layer. `o`: the image's own pass with its hidden states kept (then those two rows come from it);
  // null: the two layers are run again for them.
  const ClipVisionTower& tower = encoder_->tower();
  const int64_t paint_layer =
      ClipVisionTower::layers_for_feature_layer(cfg_.vision_config, encoder_->feature_layers()[0]) - 1;
  auto done = [&](Sequence& s, VisualTokens vt, const Tensor& px, const ClipVisionOutput* o) {
    if (const ModulationConfig* pc = s.modulation.find(ModMethod::PAINT)) {
      auto head_sum = [&](int64_t layer) {
        return sum_over_heads(o ? tower.cls_attention_at(o->hidden_states[size_t(layer)], layer)
                                : tower.cls_attention(px, layer));  // [1, H, 1 + N] -> [1 + N]
      };
      const std::vector<uint8_t> per_patch = paint_classes(*pc, head_sum(0), head_sum(paint_layer));
      s.image_classes.clear();
      for (int64_t p : vt.patch) s.image_classes.push_back(p >= 0 ? per_patch[size_t(p)] : uint8_t(1));
    }
    if (device_.is_cuda()) synchronize();
    s.t2 = Clock::now();
    finish_encode(s, std::move(vt));
  };
  std::vector<size_t> plain;
  for (size_t i = 0; i < seqs.size(); ++i) {
    Sequence& s = *seqs[i];
    if (s.pruning.before_llm()) {
      done(s, encode_visual_tokens(s.pruning, *encoder_, pixels[i], s.crop_pixels), pixels[i], nullptr);
    } else if (s.modulation.find(ModMethod::PAINT)) {
      // its own pass gives the features and both [CLS] rows (cls_attention_at on its hidden states:
      // the values cls_attention gives, without running the layers again)
      ClipVisionOutput o;
      const Tensor feats = encoder_->encode(pixels[i], &o);  // [1, N, hidden]
      done(s, unpruned_visual_tokens(s.pruning, feats.select(0, 0)), pixels[i], &o);
    } else {
      plain.push_back(i);
    }
  }
  if (plain.empty()) return;
  std::vector<Tensor> px;
  for (size_t i : plain) px.push_back(pixels[i]);
  const Tensor feats = encoder_->encode(px.size() == 1 ? px[0] : concat(px, 0));  // [k, N, hidden]
  if (device_.is_cuda()) synchronize();
  for (size_t j = 0; j < plain.size(); ++j) {
    Sequence& s = *seqs[plain[j]];
    done(s, unpruned_visual_tokens(s.pruning, feats.select(0, int64_t(j))), pixels[plain[j]], nullptr);
  }
}

void LlavaPipeline::finish_encode(Sequence& s, VisualTokens vt) const {
  LlavaResult& res = s.res;
  s.t_first = s.t2;
  const Tensor feats = vt.features.unsqueeze(0);  // [1, n, hidden]
  res.image_tokens = feats.size(1);
  MMATTN_CHECK(s.pruning.before_llm() || res.image_tokens == expected_image_features(cfg_), ShapeError,
               "llava: the image encoder gave ", res.image_tokens, " features, config.json implies ",
               expected_image_features(cfg_));
  res.pruning = std::move(vt.report);
  s.patch = std::move(vt.patch);
  s.row_importance = std::move(vt.row_importance);
  const auto img_at = std::find(s.ids.begin(), s.ids.end(), cfg_.image_token_index);
  s.span = {int64_t(img_at - s.ids.begin()), res.image_tokens};

  std::vector<int64_t> expanded = expand_image_tokens(s.ids, cfg_.image_token_index, res.image_tokens, 1);
  const int64_t L = int64_t(expanded.size());
  res.prompt_tokens = L;
  const Tensor input_ids = Tensor::from_vector<int64_t>(expanded, {1, L});
  s.embeds = llava_input_embeds(*lm_, input_ids, feats, cfg_.image_token_index);  // [1, L, hidden]
  s.history = std::move(expanded);
}

// After the prefill of sequence b of `cache`: the in-LLM stages, kept patches, KV bytes, FLOPs, and
// the kept map when asked for.
void LlavaPipeline::finish_pruning(Sequence& s, const KVCache& cache, int64_t b, const LlavaTokenPruner* pruner) const {
  PruningReport& rep = s.res.pruning;
  std::vector<int64_t> rows(size_t(lm_->num_layers()), s.res.prompt_tokens);
  if (pruner) {
    for (const auto& st : pruner->stages(size_t(b))) rep.stages.push_back(st);
    rows = pruner->rows_per_layer(size_t(b), s.res.prompt_tokens, lm_->num_layers());
    std::vector<int64_t> kept;
    for (int64_t r : pruner->kept_rows(size_t(b)))
      if (s.patch[size_t(r)] >= 0) kept.push_back(s.patch[size_t(r)]);
    std::sort(kept.begin(), kept.end());
    rep.kept_patches = kept;
    if (rep.importance.empty()) rep.importance = pruner->scores(size_t(b));
    if (int64_t(rep.importance.size()) != cfg_.vision_config.num_patches()) rep.importance.clear();
  } else if (!s.pruning.before_llm()) {
    rep.kept_patches = s.patch;
  }
  rep.prefill_flops = llama_prefill_flops(*lm_, rows);
  int64_t kv_rows = 0;
  for (int l = 0; l < lm_->num_layers(); ++l) kv_rows += cache.layer_length(l, b);
  rep.kv_bytes = size_t(kv_rows) * 2 * size_t(lm_->num_kv_heads() * lm_->attn_head_dim()) * dtype_size(dtype_);
  if (!s.req.kept_map_path.empty())
    save_kept_map(s.crop, cfg_.vision_config.patch_size, rep, s.req.kept_map_path);
}

LlavaResult LlavaPipeline::run(const LlavaRequest& req) const {
  std::unique_ptr<Sequence> s = plan(req);
  const bool cuda = device_.is_cuda();
  if (cuda) {
    synchronize();
    cuda_reset_peak();
  }
  encode_batch({s.get()}, {prepare_pixels(*s)});
  if (const ModulationConfig* cd = s->modulation.contrastive()) return run_contrastive(std::move(s), *cd);

  // Prefill + decode: generate()'s loop (language/llama.cpp), with a per-token hook for streaming
  // and stop strings.
  KVCache cache = lm_->make_cache(1, s->res.prompt_tokens + req.max_new_tokens);
  LlamaForwardOptions last;
  last.last_only = true;
  std::unique_ptr<LlavaTokenPruner> pruner;
  if (s->pruning.in_llm())
    pruner = std::make_unique<LlavaTokenPruner>(s->pruning, *lm_, std::vector<std::pair<int64_t, int64_t>>{s->span},
                                                std::vector<std::vector<float>>{s->row_importance});
  last.pruner = pruner.get();
  std::unique_ptr<LlavaModulator> modulator;
  const bool head_map = !req.head_map_path.empty();
  if (s->modulation.attention() || head_map)
    modulator = std::make_unique<LlavaModulator>(s->modulation, *lm_, std::vector<std::pair<int64_t, int64_t>>{s->span});
  if (modulator) modulator->set_image_classes(0, s->image_classes);
  const ModulationConfig* vhr = s->modulation.find(ModMethod::VHR);
  if (head_map && !vhr) modulator->record_image_mass(0);
  std::unique_ptr<VhrSelector> vhr_sel;
  if (vhr) vhr_sel = vhr_selector(*vhr, modulator.get(), {s.get()});
  last.modulator = vhr_sel ? static_cast<AttentionModulator*>(vhr_sel.get()) : modulator.get();
  Tensor logits = lm_->forward(s->embeds, cache, last);  // [1, 1, V]
  last.pruner = nullptr;
  last.modulator = modulator.get();
  if (vhr) keep_vhr_heads({s.get()}, *vhr_sel, *modulator, *vhr);
  vhr_sel.reset();
  s->embeds = Tensor();
  finish_pruning(*s, cache, 0, pruner.get());
  if (head_map) {
    const size_t H = size_t(lm_->num_heads());
    std::vector<float> map = vhr ? std::vector<float>(s->res.vhr_vhd.size() * H, 0.f) : modulator->image_mass(0);
    if (vhr)  // layer-major VHD, 0 outside VHR's layers
      for (size_t l = 0; l < s->res.vhr_vhd.size(); ++l)
        std::copy(s->res.vhr_vhd[l].begin(), s->res.vhr_vhd[l].end(), map.begin() + std::ptrdiff_t(l * H));
    save_head_map(map, lm_->num_layers(), int(H), req.head_map_path, vhr != nullptr);
  }
  if (cuda && device_greedy() && s->greedy())
    decode_greedy_on_device(*s, logits, cache, last);
  else
    while (!s->step(logits.to_floats()))
      logits = lm_->forward(lm_->embed(Tensor::from_vector<int64_t>({s->last_token()}, {1, 1})), cache, last);
  if (cuda) synchronize();
  s->finish();
  s->res.peak_memory_bytes = cuda ? cuda_allocator_stats().peak_allocated_bytes : 0;
  return std::move(s->res);
}

// Greedy decoding with the token ids kept on the device and the host one step behind: the argmax
// of each step's logits feeds the next step's embedding directly, and step t + 1 is queued before
// token t reaches the host (an 8-byte copy into pinned memory per step), so the GPU never waits for
// the host between steps (the host reads token t, streams its text and checks the stop conditions
// while step t + 1 runs). When token t ends the request (EOS, a stop string), step t + 1 was
// computed for nothing: one step per request. The first token is read before step 1 is queued, so
// the time to it is not delayed by the host's queueing. The tokens are those of step()'s host
// argmax (same logits, same tie rule: the first largest).
void LlavaPipeline::decode_greedy_on_device(Sequence& s, Tensor logits, KVCache& cache,
                                            const LlamaForwardOptions& opt) const {
  const int64_t V = logits.size(-1);
  HostReadback read[2] = {HostReadback(sizeof(int64_t)), HostReadback(sizeof(int64_t))};
  // the device id of generated token i from a step's logits [1, 1, V], its copy queued into read[slot]
  auto choose = [&](Tensor l, int64_t i, int slot) {
    if (s.eos_banned(i)) s.mask_eos(l);
    Tensor id = argmax(l.view({1, 1, V}));  // I64 [1, 1]
    read[slot].enqueue(id.data_ptr(), sizeof(int64_t));
    return id;
  };
  auto forward = [&](const Tensor& id, int64_t i, int slot) {  // the step that feeds token i - 1 in
    return choose(lm_->forward(lm_->embed(id, /*check_ids=*/false), cache, opt), i, slot);
  };
  Tensor id = choose(std::move(logits), 0, 0);
  for (int slot = 0;; slot ^= 1) {
    // id: token t on the device, its copy in read[slot]; no step queued for it yet
    const int64_t t = int64_t(s.res.token_ids.size());
    const bool last = t + 1 == s.req.max_new_tokens;  // token t ends the request by count
    Tensor next;
    if (t > 0 && !last) next = forward(id, t + 1, slot ^ 1);  // step t + 1, queued before token t is read
    if (s.accept(*static_cast<const int64_t*>(read[slot].wait()))) break;
    if (!next.defined()) next = forward(id, t + 1, slot ^ 1);
    id = std::move(next);
  }
}

Tensor LlavaPipeline::prefill(const Tensor& embeds, const std::vector<int>& n_valid, KVCache& cache,
                              LlamaForwardOptions& opt) const {
  const int64_t B = embeds.size(0), L = embeds.size(1);
  bool differ = false;
  for (int v : n_valid) differ = differ || (v > 0 && v != int(L));
  opt.n_valid = n_valid;
  if (!opt.modulator || !differ || !opt.modulator->last_row_only()) return lm_->forward(embeds, cache, opt);
  MMATTN_CHECK(!opt.pruner, UnsupportedError,
               "llava: in-LLM pruning with attention modulation needs prompts of equal length in a batch");
  AttentionModulator* mod = opt.modulator;
  std::vector<int> head(n_valid), tail_valid(size_t(B), 0);
  Tensor tail = Tensor::zeros({B, 1, lm_->hidden_size()}, dtype_, device_);
  for (int64_t b = 0; b < B; ++b) {
    if (n_valid[size_t(b)] == 0) continue;
    const int64_t r = n_valid[size_t(b)] - 1;
    head[size_t(b)] = int(r);
    tail_valid[size_t(b)] = 1;
    tail.slice(0, b, b + 1).copy_from(embeds.slice(0, b, b + 1).slice(1, r, r + 1));
  }
  opt.n_valid = head;
  opt.modulator = nullptr;
  lm_->forward(embeds, cache, opt);
  opt.n_valid = tail_valid;
  opt.modulator = mod;
  return lm_->forward(tail, cache, opt);  // [B, 1, V]
}

std::unique_ptr<VhrSelector> LlavaPipeline::vhr_selector(const ModulationConfig& c, AttentionModulator* inner,
                                                         const std::vector<Sequence*>& seqs) const {
  // each prompt without its image token (VHR's text-only input), right-padded
  std::vector<std::vector<int64_t>> txt(seqs.size());
  int64_t Lt = 1;
  for (size_t b = 0; b < seqs.size(); ++b) {
    if (!seqs[b]) continue;
    for (int64_t id : seqs[b]->ids)
      if (id != cfg_.image_token_index) txt[b].push_back(id);
    Lt = std::max(Lt, int64_t(txt[b].size()));
  }
  std::vector<int64_t> ids(seqs.size() * size_t(Lt), 0);
  std::vector<int> valid(seqs.size(), 0);
  for (size_t b = 0; b < seqs.size(); ++b) {
    std::copy(txt[b].begin(), txt[b].end(), ids.begin() + std::ptrdiff_t(b * size_t(Lt)));
    valid[b] = int(txt[b].size());
  }
  const Tensor embeds = lm_->embed(Tensor::from_vector<int64_t>(ids, {int64_t(seqs.size()), Lt}));
  return std::make_unique<VhrSelector>(c, *lm_, inner, embeds, std::move(valid));
}

void LlavaPipeline::keep_vhr_heads(const std::vector<Sequence*>& seqs, const VhrSelector& sel,
                                   LlavaModulator& modulator, const ModulationConfig& c) {
  for (size_t b = 0; b < seqs.size(); ++b) {
    if (!seqs[b]) continue;
    seqs[b]->res.vhr_heads = sel.heads(int64_t(b));
    seqs[b]->res.vhr_vhd = sel.vhd(int64_t(b));
    seqs[b]->res.vhr_ta = sel.ta(int64_t(b));
    modulator.set_head_gains(int64_t(b), seqs[b]->res.vhr_heads, c.gain);
  }
}

LlavaResult LlavaPipeline::run_contrastive(std::unique_ptr<Sequence> s, const ModulationConfig& cd) const {
  const LlavaRequest& req = s->req;
  const bool cuda = device_.is_cuda();
  // The second branch: the prompt without its image (PAI's guidance), or the same prompt with the
  // image's diffusion-noised pixels (VCD) or with the raw image randomly transformed (RITUAL).
  Tensor neg;
  std::pair<int64_t, int64_t> neg_span{0, 0};
  if (cd.method == ModMethod::VCD || cd.method == ModMethod::RITUAL) {
    Tensor px = req.branch_pixels.defined() ? req.branch_pixels
                : cd.method == ModMethod::VCD
                    ? vcd_noised_pixels(clip_normalize(s->crop, pre_).unsqueeze(0), cd.noise_step, req.sampling.seed)
                    : preprocess(load_source(req, &cd), req);
    const Tensor feats = encoder_->encode(px.to(device_, dtype_));  // [1, N, hidden]
    const Tensor ids = Tensor::from_vector<int64_t>(s->history, {1, int64_t(s->history.size())});
    neg = llava_input_embeds(*lm_, ids, feats, cfg_.image_token_index);
    neg_span = s->span;
  } else if (cd.method == ModMethod::DAMRO) {
    // the top-k "outlier" patches of the feature-producing ViT layer's [CLS] attention (one
    // attention over all dims), in descending attention order, as the only image tokens
    MMATTN_CHECK(!encoder_->feature_layer_is_list() && encoder_->drops_cls(), ConfigError, cd.path,
                 ": damro needs a single vision_feature_layer and the 'default' feature strategy");
    const Tensor px = clip_normalize(s->crop, pre_).unsqueeze(0).to(device_, dtype_);
    const auto taps = encoder_->tower().feature_taps(px, encoder_->feature_layers()[0], ClipVisionTower::kTapClsJoint);
    const std::vector<float> att = taps.cls_joint.to_floats();  // [1 + N]
    const int64_t N = int64_t(att.size()) - 1, k = std::min<int64_t>(cd.topk, N);
    std::vector<int64_t> order(static_cast<size_t>(N));
    std::iota(order.begin(), order.end(), int64_t(0));
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return att[size_t(a + 1)] > att[size_t(b + 1)]; });
    std::vector<float> sel(size_t(k * (N + 1)), 0.f);  // rows: one-hot over the [CLS] + N tokens
    for (int64_t i = 0; i < k; ++i) sel[size_t(i * (N + 1) + order[size_t(i)] + 1)] = 1.f;
    const Tensor h = taps.features.select(0, 0);  // [1 + N, Dv]
    const Tensor picked = matmul(Tensor::from_vector(sel, {k, N + 1}).to(device_), h.to(DType::F32)).to(dtype_);
    const Tensor feats = encoder_->projector().forward(picked);  // [k, hidden]
    const std::vector<int64_t> ex = expand_image_tokens(s->ids, cfg_.image_token_index, k, 1);
    neg = llava_input_embeds(*lm_, Tensor::from_vector<int64_t>(ex, {1, int64_t(ex.size())}), feats.unsqueeze(0),
                             cfg_.image_token_index);
    neg_span = {s->span.first, k};
  } else {
    std::vector<int64_t> txt;
    for (int64_t id : s->ids)
      if (id != cfg_.image_token_index) txt.push_back(id);
    neg = lm_->embed(Tensor::from_vector<int64_t>(txt, {1, int64_t(txt.size())}));
  }
  const int64_t L0 = s->embeds.size(1), L1 = neg.size(1), Lmax = std::max(L0, L1);
  Tensor embeds = Tensor::zeros({2, Lmax, lm_->hidden_size()}, dtype_, device_);
  embeds.slice(0, 0, 1).slice(1, 0, L0).copy_from(s->embeds);
  embeds.slice(0, 1, 2).slice(1, 0, L1).copy_from(neg);
  s->embeds = Tensor();
  KVCache cache = lm_->make_cache(2, Lmax + req.max_new_tokens);
  LlamaForwardOptions opt;
  opt.last_only = true;
  std::unique_ptr<LlavaModulator> modulator;
  const bool head_map = !req.head_map_path.empty();
  if (s->modulation.attention() || head_map)
    modulator = std::make_unique<LlavaModulator>(s->modulation, *lm_,
                                                 std::vector<std::pair<int64_t, int64_t>>{s->span, neg_span});
  if (modulator) modulator->set_image_classes(0, s->image_classes);
  if (head_map) modulator->record_image_mass(0);
  opt.modulator = modulator.get();
  Tensor logits = prefill(embeds, {int(L0), int(L1)}, cache, opt);  // [2, 1, V]
  finish_pruning(*s, cache, 0, nullptr);
  if (head_map) save_head_map(modulator->image_mass(0), lm_->num_layers(), int(lm_->num_heads()), req.head_map_path);
  opt.n_valid.clear();
  while (true) {
    const std::vector<float> all = logits.to_floats();
    const size_t V = all.size() / 2;
    const std::vector<float> img(all.begin(), all.begin() + std::ptrdiff_t(V)), ng(all.begin() + std::ptrdiff_t(V), all.end());
    if (s->step(contrastive_scores(cd, img, ng))) break;
    const int64_t tok = s->last_token();
    logits = lm_->forward(lm_->embed(Tensor::from_vector<int64_t>({tok, tok}, {2, 1})), cache, opt);
  }
  if (cuda) synchronize();
  s->finish();
  s->res.peak_memory_bytes = cuda ? cuda_allocator_stats().peak_allocated_bytes : 0;
  return std::move(s->res);
}

std::vector<LlavaBatchItem> LlavaPipeline::run_batch(
    const std::vector<LlavaRequest>& reqs, int max_batch,
    std::function<void(size_t index, const LlavaBatchItem&)> on_done) const {
  MMATTN_CHECK(max_batch >= 1, ConfigError, "llava: max_batch must be >= 1, got ", max_batch);
  const bool cuda = device_.is_cuda();
  std::vector<LlavaBatchItem> out(reqs.size());
  auto fail = [&](size_t i, const std::exception& e) {
    out[i].ok = false;
    out[i].error = e.what();
    if (on_done) on_done(i, out[i]);
  };

  // Validation and prompts first (cheap): the cache is sized by the longest request that fits.
  std::vector<std::unique_ptr<Sequence>> planned(reqs.size());
  int64_t max_len = 0;
  size_t n_ok = 0;
  for (size_t i = 0; i < reqs.size(); ++i) {
    try {
      planned[i] = plan(reqs[i]);
      max_len = std::max(max_len, planned[i]->n_prompt + reqs[i].max_new_tokens);
      ++n_ok;
    } catch (const std::exception& e) {
      fail(i, e);
    }
  }
  // Contrastive decoding doubles each request into two branches, and a head map needs the request's
  // own modulator: those requests run one at a time.
  for (size_t i = 0; i < reqs.size(); ++i) {
    if (!planned[i] || (!planned[i]->modulation.contrastive() && reqs[i].head_map_path.empty())) continue;
    planned[i].reset();
    --n_ok;
    try {
      out[i].result = run(reqs[i]);
      out[i].ok = true;
      if (on_done) on_done(i, out[i]);
    } catch (const std::exception& e) {
      fail(i, e);
    }
  }
  // One attention modulation for the whole batch: a step's modulator acts on every sequence in it,
  // so a request with another method (or with none, beside one that has one) would be modulated
  // wrongly. The first batched request decides; the others are reported and skipped.
  {
    const size_t none = reqs.size();
    size_t first = none;
    Json want;
    for (size_t i = 0; i < reqs.size(); ++i) {
      if (!planned[i]) continue;
      const ModulationSet& m = planned[i]->modulation;
      const Json j = m.attention() ? m.to_json() : Json("none");
      if (first == none) {
        first = i, want = j;
        continue;
      }
      if (j == want) continue;
      planned[i].reset();
      --n_ok;
      fail(i, ConfigError(str_cat("llava: request ", i, "'s attention modulation (", j.dump(), ") differs from request ",
                                  first, "'s (", want.dump(),
                                  "); requests of one batch share one (run them in separate batches)")));
    }
  }
  if (n_ok == 0) return out;
  if (cuda) {
    synchronize();
    cuda_reset_peak();
  }

  const int64_t B = std::min<int64_t>(max_batch, int64_t(n_ok));
  // Images are decoded on worker threads, up to 2 B requests ahead of admission, so the CPU part
  // overlaps the GPU work of the requests before them.
  std::vector<std::future<Image>> sources(reqs.size());
  size_t prefetched = 0;
  auto prefetch = [&](size_t upto) {
    for (; prefetched < std::min(upto, reqs.size()); ++prefetched)
      if (planned[prefetched])
        sources[prefetched] =
            std::async(std::launch::async, [this, &reqs, i = prefetched] { return load_source(reqs[i]); });
  };
  prefetch(size_t(2 * B));
  KVCache cache = lm_->make_cache(B, max_len);
  LlamaForwardOptions opt;
  opt.last_only = true;
  std::unique_ptr<LlavaModulator> modulator;  // created by the first admitted request with modulation
  Json mod_json;
  std::vector<std::unique_ptr<Sequence>> slot(static_cast<size_t>(B));
  std::vector<size_t> slot_req(size_t(B), 0);
  size_t next = 0;

  auto finish_slot = [&](int64_t b) {
    Sequence& s = *slot[size_t(b)];
    s.finish();
    s.res.peak_memory_bytes = cuda ? cuda_allocator_stats().peak_allocated_bytes : 0;
    const size_t i = slot_req[size_t(b)];
    out[i].ok = true;
    out[i].result = std::move(s.res);
    slot[size_t(b)].reset();
    if (on_done) on_done(i, out[i]);
  };
  // Samples one token for every slot in `rows` from logits [B, 1, V]; finished slots are freed.
  // When every such slot is greedy, the device takes the argmax (EOS banned in the rows still
  // under min_new_tokens) and only B ids come back.
  auto step_slots = [&](Tensor logits, const std::vector<int64_t>& rows) {
    const int64_t V = logits.size(2);
    bool greedy = cuda && device_greedy();
    for (int64_t b : rows) greedy = greedy && slot[size_t(b)]->greedy();
    std::vector<float> all;
    Tensor ids;
    if (greedy) {
      for (int64_t b : rows) {
        const Sequence& s = *slot[size_t(b)];
        if (s.eos_banned(int64_t(s.res.token_ids.size()))) s.mask_eos(logits.slice(0, b, b + 1));
      }
      ids = argmax(logits).to(Device::cpu());  // [B, 1]
    } else {
      all = logits.to_floats();
    }
    std::vector<int64_t> done;
    for (int64_t b : rows) {
      Sequence& s = *slot[size_t(b)];
      const bool end = greedy ? s.accept(ids.data<int64_t>()[b])
                              : s.step(std::vector<float>(all.begin() + std::ptrdiff_t(b * V),
                                                          all.begin() + std::ptrdiff_t((b + 1) * V)));
      if (end) done.push_back(b);
    }
    if (!done.empty() && cuda) synchronize();
    for (int64_t b : done) finish_slot(b);
  };

  while (true) {
    // Admit requests into the free slots (a request that fails here takes no slot), then run the
    // vision tower once for all of them.
    std::vector<int64_t> admitted;
    std::vector<Sequence*> admitted_seqs;
    std::vector<Tensor> admitted_px;
    for (int64_t b = 0; b < B; ++b) {
      if (slot[size_t(b)]) continue;
      while (next < reqs.size()) {
        const size_t i = next++;
        if (!planned[i]) continue;  // failed validation: already reported
        prefetch(i + 1 + size_t(2 * B));
        try {
          admitted_px.push_back(prepare_pixels(*planned[i], &sources[i]));
        } catch (const std::exception& e) {
          planned[i].reset();
          fail(i, e);
          continue;
        }
        slot[size_t(b)] = std::move(planned[i]);
        slot_req[size_t(b)] = i;
        cache.reset(b);
        admitted.push_back(b);
        admitted_seqs.push_back(slot[size_t(b)].get());
        break;
      }
    }
    if (!admitted.empty()) encode_batch(admitted_seqs, admitted_px);

    // Prefill the admitted requests together: right-padded [B, Lmax, hidden], n_valid 0 elsewhere.
    if (!admitted.empty()) {
      int64_t Lmax = 0;
      for (int64_t b : admitted) Lmax = std::max(Lmax, slot[size_t(b)]->embeds.size(1));
      Tensor embeds = Tensor::zeros({B, Lmax, lm_->hidden_size()}, dtype_, device_);
      opt.n_valid.assign(size_t(B), 0);
      std::vector<std::pair<int64_t, int64_t>> spans(size_t(B), {0, 0});
      std::vector<std::vector<float>> imp(static_cast<size_t>(B));
      // One pruning configuration per prefill: requests of a batch share the pipeline's spec.
      const PruningConfig* pc = nullptr;
      for (int64_t b : admitted) {
        Sequence& s = *slot[size_t(b)];
        const int64_t L = s.embeds.size(1);
        embeds.slice(0, b, b + 1).slice(1, 0, L).copy_from(s.embeds);
        opt.n_valid[size_t(b)] = int(L);
        s.embeds = Tensor();
        if (s.pruning.in_llm()) {
          MMATTN_CHECK(!pc || pc->to_json() == s.pruning.to_json(), ConfigError,
                       "llava: requests of one batch must use the same in-LLM pruning");
          pc = &s.pruning;
          spans[size_t(b)] = s.span;
          imp[size_t(b)] = s.row_importance;
        }
      }
      std::unique_ptr<LlavaTokenPruner> pruner;
      if (pc) pruner = std::make_unique<LlavaTokenPruner>(*pc, *lm_, spans, imp);
      opt.pruner = pruner.get();
      // Attention modulation: one modulator for the batch (the requests share the method);
      // the admitted slots' image spans replace their predecessors'.
      for (int64_t b : admitted) {
        Sequence& s = *slot[size_t(b)];
        if (!s.modulation.attention()) continue;
        MMATTN_CHECK(!modulator || mod_json == s.modulation.to_json(), ConfigError,
                     "llava: requests of one batch must use the same attention modulation");
        if (!modulator) {
          mod_json = s.modulation.to_json();
          modulator = std::make_unique<LlavaModulator>(s.modulation, *lm_, std::vector<std::pair<int64_t, int64_t>>{});
        }
        modulator->set_span(b, s.span);
        modulator->set_image_classes(b, s.image_classes);
      }
      // VHR selects the heads of the admitted requests that have it inside this prefill.
      const ModulationConfig* vhr = nullptr;
      std::vector<Sequence*> vhr_seqs(size_t(B), nullptr);
      for (int64_t b : admitted)
        if (const ModulationConfig* v = slot[size_t(b)]->modulation.find(ModMethod::VHR)) {
          vhr = v;
          vhr_seqs[size_t(b)] = slot[size_t(b)].get();
        }
      std::unique_ptr<VhrSelector> vhr_sel;
      if (vhr) vhr_sel = vhr_selector(*vhr, modulator.get(), vhr_seqs);
      opt.modulator = vhr_sel ? static_cast<AttentionModulator*>(vhr_sel.get()) : modulator.get();
      const Tensor logits = prefill(embeds, opt.n_valid, cache, opt);  // [B, 1, V]
      opt.pruner = nullptr;
      opt.modulator = modulator.get();
      if (vhr) keep_vhr_heads(vhr_seqs, *vhr_sel, *modulator, *vhr);
      vhr_sel.reset();
      for (int64_t b : admitted) finish_pruning(*slot[size_t(b)], cache, b, pruner.get());
      step_slots(logits, admitted);
    }

    // One decode step for every active slot (n_valid 1; 0 for free slots).
    std::vector<int64_t> active;
    std::vector<int64_t> toks(size_t(B), 0);
    opt.n_valid.assign(size_t(B), 0);
    for (int64_t b = 0; b < B; ++b)
      if (slot[size_t(b)]) {
        active.push_back(b);
        toks[size_t(b)] = slot[size_t(b)]->last_token();
        opt.n_valid[size_t(b)] = 1;
      }
    if (active.empty()) {
      if (next >= reqs.size()) break;
      continue;
    }
    const Tensor logits = lm_->forward(lm_->embed(Tensor::from_vector<int64_t>(toks, {B, 1})), cache, opt);
    step_slots(logits, active);
  }
  return out;
}

// --- spec --------------------------------------------------------------------------------------

LlavaOptions LlavaOptions::parse(JsonReader& r) {
  LlavaOptions o;
  const bool batch = r.has("requests");
  if (batch && r.has("image")) r.fail_key("image", "and requests are exclusive: one image, or a list of requests");
  if (!batch) {
    o.image = r.get<std::string>("image");
    if (o.image.empty()) r.fail_key("image", "must not be empty");
  }
  o.task = r.get<std::string>("task", std::string("caption"));
  if (o.task != "caption" && o.task != "vqa") r.fail_key("task", "is '" + o.task + "', expected caption or vqa");
  if (r.has("prompt")) {
    o.prompt = r.get<std::string>("prompt");
    if (o.prompt.empty()) r.fail_key("prompt", "must not be empty");
  } else if (o.task == "vqa" && !batch) {
    r.fail_key("prompt", "is required when task is vqa (the question)");
  } else {
    r.ignore("prompt");
    if (o.task == "caption") o.prompt = kDefaultCaptionPrompt;
  }
  if (batch) {
    if (!r.json()["requests"].is_array() || r.json()["requests"].empty())
      r.fail_key("requests", "must be a non-empty array of {\"image\", \"prompt\"}");
    for (JsonReader& e : r.array("requests")) {
      Item it;
      it.image = e.get<std::string>("image");
      if (it.image.empty()) e.fail_key("image", "must not be empty");
      it.prompt = e.get<std::string>("prompt", o.prompt);
      if (it.prompt.empty())
        e.fail_key("prompt", o.task == "vqa" ? "is required when task is vqa and no top-level prompt is given"
                                             : "must not be empty");
      e.finish();
      o.requests.push_back(std::move(it));
    }
    o.batch_size = r.get<int>("batch_size", o.batch_size);
    if (o.batch_size < 1 || o.batch_size > 1024) r.fail_key("batch_size", "must be in [1, 1024]");
    for (const char* k : {"save_kept_map", "save_head_map"})
      if (r.has(k)) r.fail_key(k, "writes one image's map: not with requests (run that image alone)");
  }
  o.system_prompt = r.get<bool>("system_prompt", false);
  o.pad_to_square = r.get<bool>("pad_to_square", false);
  o.max_new_tokens = r.get<int64_t>("max_new_tokens", 128);
  if (o.max_new_tokens < 1 || o.max_new_tokens > 4096)
    r.fail_key("max_new_tokens", "must be in [1, 4096], got " + std::to_string(o.max_new_tokens));
  o.min_new_tokens = r.get<int64_t>("min_new_tokens", 0);
  if (o.min_new_tokens < 0 || o.min_new_tokens > o.max_new_tokens)
    r.fail_key("min_new_tokens", "must be in [0, max_new_tokens = " + std::to_string(o.max_new_tokens) + "], got " +
                                     std::to_string(o.min_new_tokens));
  SamplingConfig& s = o.sampling;
  s.do_sample = r.get<bool>("do_sample", false);
  const double temperature = r.get<double>("temperature", 1.0);
  if (!(temperature > 0) || !std::isfinite(temperature))
    r.fail_key("temperature", "must be > 0, got " + str_cat(temperature));
  s.temperature = float(temperature);
  s.top_k = r.get<int>("top_k", 0);
  if (s.top_k < 0) r.fail_key("top_k", "must be >= 0 (0 = off), got " + std::to_string(s.top_k));
  const double top_p = r.get<double>("top_p", 1.0);
  if (!(top_p > 0 && top_p <= 1)) r.fail_key("top_p", "must be in (0, 1], got " + str_cat(top_p));
  s.top_p = float(top_p);
  const double rp = r.get<double>("repetition_penalty", 1.0);
  if (!(rp > 0) || !std::isfinite(rp)) r.fail_key("repetition_penalty", "must be > 0, got " + str_cat(rp));
  s.repetition_penalty = float(rp);
  o.stop = r.get<std::vector<std::string>>("stop", {});
  for (size_t i = 0; i < o.stop.size(); ++i)
    if (o.stop[i].empty()) r.fail_key("stop[" + std::to_string(i) + "]", "must not be empty");
  o.stream = r.get<bool>("stream", true);
  if (r.has("pruning")) {
    JsonReader pr = r.child("pruning");
    o.pruning = PruningConfig::parse(pr);
  }
  o.modulation = ModulationSet::parse(r, "modulation");
  o.save_kept_map = r.get<std::string>("save_kept_map", std::string());
  o.save_head_map = r.get<std::string>("save_head_map", std::string());
  r.finish();
  return o;
}

void validate_llava_options(JsonReader& r) { LlavaOptions::parse(r); }

namespace {

// The request of a spec's options for one image and prompt (seed: the sampling seed).
LlavaRequest spec_request(const Spec& spec, const LlavaOptions& o, const std::string& image, const std::string& prompt,
                          uint64_t seed) {
  LlavaRequest req;
  req.image = resolve_path(spec.base_dir, image);
  req.prompt = prompt;
  req.system_prompt = o.system_prompt;
  req.pad_to_square = o.pad_to_square;
  req.max_new_tokens = o.max_new_tokens;
  req.min_new_tokens = o.min_new_tokens;
  req.sampling = o.sampling;
  req.sampling.seed = seed;
  req.stop = o.stop;
  req.pruning = o.pruning;
  req.modulation = o.modulation;
  return req;
}

// The report fields every llava run shares.
Json spec_report(const Spec& spec, const LlavaOptions& o, const LlavaPipeline& pipe) {
  return Json{{"pipeline", "llava"},
              {"task", o.task},
              {"model", spec.model},
              {"device", spec.device.str()},
              {"dtype", compute_dtype_name(spec.dtype)},
              {"seed", spec.seed},
              {"load_ms", pipe.load_ms()},
              {"options",
               {{"system_prompt", o.system_prompt}, {"pad_to_square", o.pad_to_square},
                {"max_new_tokens", o.max_new_tokens}, {"min_new_tokens", o.min_new_tokens},
                {"do_sample", o.sampling.do_sample}, {"temperature", o.sampling.temperature},
                {"top_k", o.sampling.top_k}, {"top_p", o.sampling.top_p},
                {"repetition_penalty", o.sampling.repetition_penalty}, {"stop", o.stop},
                {"pruning", o.pruning.to_json()}, {"modulation", o.modulation.to_json()}}}};
}

// Batch mode: every request through run_batch (request i samples with seed + i); results in
// request order, a failed request as {"ok": false, "error"} with the rest going on.
Json run_llava_requests(const Spec& spec, const LlavaOptions& o) {
  const LlavaPipeline pipe(spec.model, spec.device, spec.dtype);
  std::vector<LlavaRequest> reqs;
  for (size_t i = 0; i < o.requests.size(); ++i)
    reqs.push_back(spec_request(spec, o, o.requests[i].image, o.requests[i].prompt, spec.seed + uint64_t(i)));
  const bool text_out = !spec.report_on_stdout;
  const std::vector<LlavaBatchItem> items = pipe.run_batch(reqs, o.batch_size, [&](size_t i, const LlavaBatchItem& it) {
    if (!it.ok) {
      MMATTN_WARN("request ", i, " (", reqs[i].image, "): ", it.error);
    } else if (text_out) {
      std::printf("[%zu] %s\n", i, it.result.text.c_str());
      std::fflush(stdout);
    }
  });
  Json results = Json::array();
  int64_t failed = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    Json row = items[i].ok ? items[i].result.to_json() : Json{{"error", items[i].error}};
    row["index"] = i, row["image"] = reqs[i].image, row["prompt"] = reqs[i].prompt, row["ok"] = items[i].ok;
    failed += items[i].ok ? 0 : 1;
    results.push_back(std::move(row));
  }
  Json report = spec_report(spec, o, pipe);
  report["batch_size"] = o.batch_size;
  report["requests"] = int64_t(reqs.size());
  report["failed"] = failed;
  report["results"] = std::move(results);
  return report;
}

}  // namespace

Json run_llava(const Spec& spec) {
  JsonReader r(spec.options, spec.source, "$.llava");
  const LlavaOptions o = LlavaOptions::parse(r);
  if (!o.requests.empty()) return run_llava_requests(spec, o);
  const std::string image = resolve_path(spec.base_dir, o.image);
  // A missing image fails before the (possibly slow) model load, with the image loader's own error.
  if (!path_exists(image)) load_image(image);

  const LlavaPipeline pipe(spec.model, spec.device, spec.dtype);
  LlavaRequest req = spec_request(spec, o, o.image, o.prompt, spec.seed);
  if (!o.save_kept_map.empty()) req.kept_map_path = resolve_path(spec.base_dir, o.save_kept_map);
  if (!o.save_head_map.empty()) req.head_map_path = resolve_path(spec.base_dir, o.save_head_map);
  const bool text_out = !spec.report_on_stdout;  // stdout carries the report alone with --json
  if (text_out && o.stream)
    req.on_text = [](const std::string& s) {
      std::fputs(s.c_str(), stdout);
      std::fflush(stdout);
    };
  const LlavaResult res = pipe.run(req);
  if (text_out) {
    if (!o.stream) std::fputs(res.text.c_str(), stdout);
    std::fputs("\n", stdout);
    std::fflush(stdout);
    const LlavaTimings& t = res.timings;
    MMATTN_INFO(str_cat(res.token_ids.size(), " tokens (", res.stop_reason, "), prompt ", res.prompt_tokens, " (",
                        res.image_tokens, " image) | load ", int64_t(pipe.load_ms()), " ms, preprocess ",
                        int64_t(t.load_preprocess_ms), " ms, vision ", int64_t(t.vision_ms), " ms, TTFT ",
                        int64_t(t.prefill_ms), " ms, decode ", int64_t(t.decode_ms), " ms (",
                        int64_t(t.decode_tokens_per_s * 10) / 10.0, " tok/s)",
                        spec.device.is_cuda() ? str_cat(", peak ", res.peak_memory_bytes >> 20, " MiB") : ""));
  }
  if (!req.head_map_path.empty())
    MMATTN_INFO("head map written to ", req.head_map_path, " (values: ", head_map_json_path(req.head_map_path), ")");
  Json report = res.to_json();
  report.update(spec_report(spec, o, pipe));
  report["image"] = image;
  return report;
}

}  // namespace mmattn
