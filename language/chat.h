#pragma once
// LLaVA-1.5 prompts and <image> expansion.
//
// Format (llava-hf's chat template for llava-1.5-*-hf, and LLaVA's own `conv_vicuna_v1`
// SeparatorStyle.TWO with one user turn and an open assistant turn, the image first as
// "<image>\n" + question):
//   without system prompt:  "USER: <image>\n{text} ASSISTANT:"
//   with system prompt:     "{kVicunaSystemPrompt} USER: <image>\n{text} ASSISTANT:"
//   without image:          "USER: {text} ASSISTANT:"
// The system prompt is LLaVA's conv_vicuna_v1 one ("... curious user ... the user's questions."),
// the one LLaVA-1.5's own evaluation (--conv-mode vicuna_v1) uses. (The "curious human ...
// human's questions" wording is the older conv_vicuna_v0 / conv_llava_v1 template, not LLaVA-1.5's.)
//
// Tokenizing such a prompt with LlamaTokenizer::encode (legacy transformers behaviour) gives
//   [1] + sp("USER: ") + [image_token] + sp("\n{text} ASSISTANT:")
// i.e. "▁" (29871) both before and after <image>: the trailing space of "USER: " is its own piece,
// and the segment after <image> gets SentencePiece's dummy prefix. expand_image_tokens() then turns
// the one image token into the number of image features (576 for a 336px CLIP ViT-L/14).
#include <cstdint>
#include <string>
#include <vector>

namespace mmattn {

inline constexpr const char* kImageToken = "<image>";
inline constexpr const char* kVicunaSystemPrompt =
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.";
// LLaVA-1.5's short-answer instruction (POPE, VQAv2, GQA evaluation): appended as "\n" + suffix.
inline constexpr const char* kShortAnswerSuffix = "Answer the question using a single word or phrase.";

std::string llava_prompt(const std::string& user_text, bool with_image, bool system_prompt = false);

// "{question}\nAnswer the question using a single word or phrase." (LLaVA-1.5's POPE prompt).
std::string short_answer_question(const std::string& question);

// Replaces every `image_token_id` in `ids` with `count` copies (count >= 1, ShapeError otherwise).
// `num_images` is the number of images supplied: the ids must hold exactly that many image tokens
// (ConfigError otherwise: "prompt has 0 image tokens but 1 image was given").
std::vector<int64_t> expand_image_tokens(const std::vector<int64_t>& ids, int64_t image_token_id, int64_t count,
                                         int64_t num_images = 1);

// Positions of the image tokens in expanded ids: [first, first + count) per image, as a mask
// helper for key classes (text vs image). Returns the index of every image token.
std::vector<int64_t> image_token_positions(const std::vector<int64_t>& ids, int64_t image_token_id);

}  // namespace mmattn
