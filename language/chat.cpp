#include "language/chat.h"

#include "core/error.h"

namespace mmattn {

std::string llava_prompt(const std::string& user_text, bool with_image, bool system_prompt) {
  std::string p;
  if (system_prompt) p = std::string(kVicunaSystemPrompt) + " ";
  p += "USER: ";
  if (with_image) p += std::string(kImageToken) + "\n";
  p += user_text;
  p += " ASSISTANT:";
  return p;
}

std::string short_answer_question(const std::string& question) {
  return question + "\n" + kShortAnswerSuffix;
}

std::vector<int64_t> expand_image_tokens(const std::vector<int64_t>& ids, int64_t image_token_id, int64_t count,
                                         int64_t num_images) {
  MMATTN_CHECK(count >= 1, ShapeError, "expand_image_tokens: count must be >= 1, got ", count);
  MMATTN_CHECK(num_images >= 0, ShapeError, "expand_image_tokens: num_images must be >= 0, got ", num_images);
  int64_t found = 0;
  for (int64_t t : ids) found += t == image_token_id;
  MMATTN_CHECK(found == num_images, ConfigError, "expand_image_tokens: the prompt has ", found,
               " image token(s) (id ", image_token_id, ") but ", num_images, " image(s) were given");
  std::vector<int64_t> out;
  out.reserve(ids.size() + size_t(found * (count - 1)));
  for (int64_t t : ids) {
    if (t == image_token_id)
      out.insert(out.end(), size_t(count), image_token_id);
    else
      out.push_back(t);
  }
  return out;
}

std::vector<int64_t> image_token_positions(const std::vector<int64_t>& ids, int64_t image_token_id) {
  std::vector<int64_t> pos;
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] == image_token_id) pos.push_back(int64_t(i));
  return pos;
}

}  // namespace mmattn
