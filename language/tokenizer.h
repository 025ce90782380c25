#pragma once
// The Llama / LLaVA-1.5 tokenizer: a SentencePiece model (tokenizer.model, through
// libsentencepiece) plus the checkpoint's added tokens (<image>, <pad>, ...).
//
// Loading a model folder (LlamaTokenizer(dir)):
//   - `tokenizer.model` is required (IoError naming the path when absent or unreadable,
//     FormatError naming it when libsentencepiece cannot parse it).
//   - The SentencePiece control and unknown pieces (<unk>=0, <s>=1, </s>=2 for Llama) are added
//     tokens too, as transformers registers them (so the text "<s>" encodes to id 1).
//   - Added tokens are then read, when the files exist, from `tokenizer.json` ("added_tokens":
//     [{"id", "content", "special", "lstrip", "rstrip", ...}]), `tokenizer_config.json`
//     ("added_tokens_decoder": {"32000": {"content": "<image>", "special": true, ...}}; also
//     "bos_token"/"eos_token" as a string or {"content": ...} object, and "add_bos_token") and
//     `added_tokens.json` ({"<image>": 32000}; such tokens are not special unless another file
//     says so). Malformed JSON is a FormatError naming the path; a wrong type is a ConfigError
//     naming the file and JSON path; one id with two contents or one content with two ids, or an
//     id below the SentencePiece vocabulary whose content is not that piece, is a ConfigError.
//   - A folder with only tokenizer.model (like tests/golden/tiny_llava) gets <image> from the LLaVA
//     config instead: add_special_token("<image>", config.image_token_index).
//   - bos/eos ids: SentencePiece's bos_id()/eos_id(), overridden by tokenizer_config.json's
//     bos_token/eos_token when those name a known token.
//
// Encoding (transformers' slow LlamaTokenizer with legacy=True, the mode llava-hf's checkpoints
// load in; tokenization_llama.py: `tokenize` defers to PreTrainedTokenizer.tokenize when legacy,
// and `_tokenize` returns `sp_model.encode(text)` when legacy):
//   1. The text is split on added-token contents (leftmost match, longest content first at a
//      position). An added token with lstrip/rstrip eats the whitespace before/after it.
//   2. Every non-empty text segment between them is encoded on its own with SentencePiece as is:
//      add_dummy_prefix applies to EACH segment, so a segment following an added token gets a
//      "▁" in front. E.g. "USER: <image>\nWhat" -> sp("USER: ") + [32000] + sp("\nWhat") =
//      [..., 29901 ':', 29871 '▁', 32000, 29871 '▁', 13 '\n', 5618 'What']. Empty segments (between
//      adjacent added tokens, or at the ends) produce nothing.
//   3. add_bos prepends bos_id() (transformers' add_bos_token=True default); no EOS is added.
//   The fast tokenizer of a legacy tokenizer.json (normalizer Prepend("▁") + Replace(" ", "▁"),
//   applied per segment after added tokens are split out) gives the same ids; legacy=False would
//   NOT add the "▁" after an added token.
//
// Decoding (`decode`): added tokens and SentencePiece control/unknown tokens are "special" when
// marked so (control and unknown always are); with skip_special they are dropped. Otherwise the ids
// form runs of ordinary pieces separated by added tokens rendered as their content; each run is
// decoded with SentencePiece's DecodeIds (libsentencepiece 0.1.97: a "▁" becomes a space; byte
// pieces <0xNN> become bytes, each byte of invalid UTF-8 becomes U+FFFD; only the FIRST piece of the
// run loses a leading "▁", the dummy prefix). This is the exact inverse of the legacy encoding
// above: decode(encode(x), false) == "<s>" + x, e.g. for "USER: <image>\nHi ASSISTANT:".
// `IncrementalDecoder` produces the same text token by token, emitting only complete UTF-8.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace mmattn {

struct AddedToken {
  std::string content;
  int64_t id = -1;
  bool special = true;
  bool lstrip = false;  // strip whitespace to its left when encoding
  bool rstrip = false;  // strip whitespace to its right when encoding
};

enum class TokenKind {
  kNormal,   // an ordinary SentencePiece piece ("▁" = space)
  kByte,     // a byte-fallback piece <0xNN>
  kSpecial,  // a special added token, or an SP control/unknown piece (<s>, </s>, <unk>)
  kAdded,    // a non-special added token: always rendered as its content
};

class LlamaTokenizer {
 public:
  // Loads `dir`/tokenizer.model and the added tokens of the JSON files present in `dir`.
  explicit LlamaTokenizer(const std::string& dir);
  ~LlamaTokenizer();
  LlamaTokenizer(LlamaTokenizer&&) noexcept;
  LlamaTokenizer& operator=(LlamaTokenizer&&) noexcept;

  // Registers an added token (e.g. "<image>" = image_token_index when the folder has no
  // tokenizer.json). Re-registering the same (piece, id) is a no-op; a conflicting one (same piece
  // with another id, same id with another piece, or an id < sp_vocab_size() that is not that
  // piece) is a ConfigError. Negative ids are a ConfigError.
  void add_special_token(const std::string& piece, int64_t id, bool special = true);

  // Legacy transformers encoding (see the header comment); add_bos prepends bos_id().
  std::vector<int64_t> encode(const std::string& text, bool add_bos = true) const;
  // SentencePiece alone on the whole text (no added-token splitting), as `sp.encode(text)`.
  std::vector<int64_t> encode_sp(const std::string& text) const;

  std::string decode(const std::vector<int64_t>& ids, bool skip_special = true) const;

  // The surface text of one token on its own: "▁" -> " " everywhere (no prefix stripping), a byte
  // piece -> its single raw byte (possibly an incomplete UTF-8 sequence), added/control tokens ->
  // their content (<s>), unknown -> "<unk>". For streaming, prefer IncrementalDecoder.
  std::string decode_piece(int64_t id) const;

  // The vocabulary entry: "▁Hello", "<0x0A>", "<image>". ShapeError when out of range / unknown.
  std::string id_to_piece(int64_t id) const;
  // The id of a piece or added token; -1 when there is none.
  int64_t piece_to_id(const std::string& piece) const;

  TokenKind kind(int64_t id) const;  // ShapeError when out of range
  bool is_special(int64_t id) const { return kind(id) == TokenKind::kSpecial; }
  // For kByte tokens: the byte value.
  uint8_t byte_value(int64_t id) const;

  // max(SentencePiece pieces, highest added id + 1): 32000 for Llama, 32002 for llava-hf.
  int64_t vocab_size() const;
  int64_t sp_vocab_size() const;
  int64_t bos_id() const { return bos_id_; }
  int64_t eos_id() const { return eos_id_; }
  int64_t unk_id() const { return unk_id_; }
  void set_bos_id(int64_t id);
  void set_eos_id(int64_t id);
  // tokenizer_config.json's add_bos_token (default true); informational for callers.
  bool add_bos_token() const { return add_bos_token_; }

  // Added tokens, by id (includes <unk>, <s>, </s>).
  const std::map<int64_t, AddedToken>& added_tokens() const { return added_; }
  const std::string& dir() const { return dir_; }

 private:
  void load_tokenizer_json(const std::string& path);
  void load_tokenizer_config(const std::string& path);
  void load_added_tokens_json(const std::string& path);
  void add_token(const AddedToken& t, const std::string& where);
  void check_id(int64_t id) const;

  std::string dir_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  int64_t sp_size_ = 0;
  std::map<int64_t, AddedToken> added_;
  std::map<std::string, int64_t> added_by_content_;
  int64_t bos_id_ = -1, eos_id_ = -1, unk_id_ = -1;
  bool add_bos_token_ = true;
};

// Streaming detokenizer: push() one generated id at a time and get the newly completed UTF-8 text.
// Concatenating every push() result and a final flush() equals tokenizer.decode(ids, skip_special).
// Byte pieces are buffered until they form a complete UTF-8 character (an emoji split into four
// <0x..> tokens comes out whole on the fourth); a byte that cannot continue the pending sequence
// turns each pending byte into U+FFFD, as SentencePiece's decoder does. The leading "▁" of the first
// piece of a run (the start of the text, or after a rendered added token) is dropped, matching
// decode(); so the first generated "▁The" yields "The", and a later "▁cat" " cat".
// The tokenizer must outlive the decoder.
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const LlamaTokenizer& tok, bool skip_special = true);
  std::string push(int64_t id);
  // Emits U+FFFD for each byte of an unfinished UTF-8 sequence (end of generation).
  std::string flush();
  // All text emitted so far (by push and flush).
  const std::string& text() const { return text_; }
  // True when bytes are buffered awaiting the rest of a UTF-8 character.
  bool pending() const { return !pending_.empty(); }
  void reset();

 private:
  std::string emit(std::string s);
  std::string push_byte(uint8_t b);
  std::string flush_pending();

  const LlamaTokenizer* tok_;
  bool skip_special_;
  std::string pending_;   // bytes of an incomplete UTF-8 character
  size_t need_ = 0;       // total length of the pending character
  bool run_start_ = true; // no piece of the current run seen yet
  std::string text_;
};

}  // namespace mmattn
