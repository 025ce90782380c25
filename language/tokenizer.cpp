#include "language/tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/json_reader.h"

namespace mmattn {

namespace {

constexpr const char* kSpace = "\xE2\x96\x81";  // U+2581 "▁"
constexpr const char* kReplacement = "\xEF\xBF\xBD";  // U+FFFD

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

std::string replace_spaces(const std::string& piece) {
  std::string out;
  out.reserve(piece.size());
  for (size_t i = 0; i < piece.size();) {
    if (piece.compare(i, 3, kSpace) == 0) {
      out.push_back(' ');
      i += 3;
    } else {
      out.push_back(piece[i++]);
    }
  }
  return out;
}

// Total length of the UTF-8 sequence a lead byte starts; 0 for a byte that cannot start one.
size_t utf8_len(uint8_t b) {
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b >= 0xE0 && b <= 0xEF) return 3;
  if (b >= 0xF0 && b <= 0xF4) return 4;
  return 0;
}

// Whether `b` may follow `pending` (a lead byte plus valid continuation bytes) in UTF-8 (RFC 3629:
// no overlong forms, no surrogates, nothing above U+10FFFF).
bool utf8_continues(const std::string& pending, uint8_t b) {
  if (b < 0x80 || b > 0xBF) return false;
  if (pending.size() != 1) return true;
  const uint8_t lead = uint8_t(pending[0]);
  if (lead == 0xE0) return b >= 0xA0;
  if (lead == 0xED) return b <= 0x9F;
  if (lead == 0xF0) return b >= 0x90;
  if (lead == 0xF4) return b <= 0x8F;
  return true;
}

}  // namespace

LlamaTokenizer::LlamaTokenizer(const std::string& dir) : dir_(dir) {
  namespace fs = std::filesystem;
  const std::string model_path = (fs::path(dir) / "tokenizer.model").string();
  std::ifstream f(model_path, std::ios::binary);
  MMATTN_CHECK(f.good(), IoError, "LlamaTokenizer: cannot open '", model_path, "'");
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  MMATTN_CHECK(!f.bad(), IoError, "LlamaTokenizer: cannot read '", model_path, "'");
  sp_ = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const auto st = sp_->LoadFromSerializedProto(bytes);
  MMATTN_CHECK(st.ok(), FormatError, "LlamaTokenizer: '", model_path, "' is not a SentencePiece model: ",
               st.ToString());
  sp_size_ = sp_->GetPieceSize();
  MMATTN_CHECK(sp_size_ > 0, FormatError, "LlamaTokenizer: '", model_path, "' has no pieces");
  bos_id_ = sp_->bos_id();
  eos_id_ = sp_->eos_id();
  unk_id_ = sp_->unk_id();
  // transformers registers <unk>, <s>, </s> as (special) added tokens: "<s>" in text is id 1.
  for (int i = 0; i < int(sp_size_); ++i)
    if (sp_->IsControl(i) || sp_->IsUnknown(i)) add_token(AddedToken{sp_->IdToPiece(i), i, true}, model_path);

  const fs::path d(dir);
  if (fs::exists(d / "tokenizer.json")) load_tokenizer_json((d / "tokenizer.json").string());
  if (fs::exists(d / "added_tokens.json")) load_added_tokens_json((d / "added_tokens.json").string());
  if (fs::exists(d / "tokenizer_config.json")) load_tokenizer_config((d / "tokenizer_config.json").string());
}

LlamaTokenizer::~LlamaTokenizer() = default;
LlamaTokenizer::LlamaTokenizer(LlamaTokenizer&&) noexcept = default;
LlamaTokenizer& LlamaTokenizer::operator=(LlamaTokenizer&&) noexcept = default;

void LlamaTokenizer::add_token(const AddedToken& t, const std::string& where) {
  MMATTN_CHECK(!t.content.empty(), ConfigError, where, ": added token ", t.id, " has empty content");
  MMATTN_CHECK(t.id >= 0, ConfigError, where, ": added token '", t.content, "' has negative id ", t.id);
  if (t.id < sp_size_) {
    const std::string& piece = sp_->IdToPiece(int(t.id));
    MMATTN_CHECK(piece == t.content, ConfigError, where, ": added token '", t.content, "' has id ", t.id,
                 ", which is the SentencePiece piece '", piece, "'");
  }
  auto it = added_.find(t.id);
  if (it != added_.end()) {
    MMATTN_CHECK(it->second.content == t.content, ConfigError, where, ": id ", t.id, " is both '",
                 it->second.content, "' and '", t.content, "'");
    // The later file refines the flags (tokenizer.json / tokenizer_config.json know `special`).
    it->second = t;
    return;
  }
  auto jt = added_by_content_.find(t.content);
  MMATTN_CHECK(jt == added_by_content_.end(), ConfigError, where, ": added token '", t.content, "' has ids ",
               jt == added_by_content_.end() ? 0 : jt->second, " and ", t.id);
  added_[t.id] = t;
  added_by_content_[t.content] = t.id;
}

void LlamaTokenizer::add_special_token(const std::string& piece, int64_t id, bool special) {
  auto it = added_.find(id);
  if (it != added_.end() && it->second.content == piece) {
    it->second.special = special;
    return;
  }
  add_token(AddedToken{piece, id, special}, "add_special_token");
}

void LlamaTokenizer::load_tokenizer_json(const std::string& path) {
  const Json j = read_json_file(path);
  JsonReader r(j, path);
  if (!r.has("added_tokens")) return;
  for (JsonReader e : r.array("added_tokens")) {
    AddedToken t;
    t.id = e.get<int64_t>("id");
    t.content = e.get<std::string>("content");
    t.special = e.get<bool>("special", false);
    t.lstrip = e.get<bool>("lstrip", false);
    t.rstrip = e.get<bool>("rstrip", false);
    add_token(t, path);
  }
}

void LlamaTokenizer::load_added_tokens_json(const std::string& path) {
  const Json j = read_json_file(path);
  JsonReader r(j, path);
  for (auto it = j.begin(); it != j.end(); ++it) {
    const int64_t id = r.get<int64_t>(it.key());
    if (added_.count(id) && added_[id].content == it.key()) continue;  // keep known flags
    add_token(AddedToken{it.key(), id, false}, path);
  }
}

void LlamaTokenizer::load_tokenizer_config(const std::string& path) {
  const Json j = read_json_file(path);
  JsonReader r(j, path);
  if (r.has("added_tokens_decoder")) {
    JsonReader dec = r.child("added_tokens_decoder");
    for (auto it = dec.json().begin(); it != dec.json().end(); ++it) {
      int64_t id = -1;
      try {
        size_t used = 0;
        id = std::stoll(it.key(), &used);
        if (used != it.key().size()) id = -1;
      } catch (const std::exception&) {
        id = -1;
      }
      if (id < 0) dec.fail_key(it.key(), "expected a non-negative integer id as the key");
      JsonReader e = dec.child(it.key());
      AddedToken t;
      t.id = id;
      t.content = e.get<std::string>("content");
      t.special = e.get<bool>("special", false);
      t.lstrip = e.get<bool>("lstrip", false);
      t.rstrip = e.get<bool>("rstrip", false);
      add_token(t, path);
    }
  }
  auto token_of = [&](const std::string& key) -> int64_t {
    if (!r.has(key)) return -1;
    const Json& v = j[key];
    std::string content;
    if (v.is_string()) {
      content = v.get<std::string>();
    } else {
      JsonReader o = r.child(key);
      content = o.get<std::string>("content");
    }
    return piece_to_id(content);
  };
  if (const int64_t b = token_of("bos_token"); b >= 0) bos_id_ = b;
  if (const int64_t e = token_of("eos_token"); e >= 0) eos_id_ = e;
  add_bos_token_ = r.get<bool>("add_bos_token", true);
}

std::vector<int64_t> LlamaTokenizer::encode_sp(const std::string& text) const {
  std::vector<int> ids;
  const auto st = sp_->Encode(text, &ids);
  MMATTN_CHECK(st.ok(), Error, "LlamaTokenizer: SentencePiece encode failed: ", st.ToString());
  return std::vector<int64_t>(ids.begin(), ids.end());
}

std::vector<int64_t> LlamaTokenizer::encode(const std::string& text, bool add_bos) const {
  std::vector<int64_t> out;
  if (add_bos) {
    MMATTN_CHECK(bos_id_ >= 0, ConfigError, "LlamaTokenizer: add_bos requested but the tokenizer has no BOS token");
    out.push_back(bos_id_);
  }
  // Added tokens, longest content first (so "<image>" would win over a shorter "<im" at a position).
  std::vector<const AddedToken*> toks;
  for (const auto& [id, t] : added_) toks.push_back(&t);
  std::stable_sort(toks.begin(), toks.end(),
                   [](const AddedToken* a, const AddedToken* b) { return a->content.size() > b->content.size(); });

  size_t seg_begin = 0;  // start of the pending text segment
  size_t i = 0;
  bool strip_left_next = false;  // the previous added token has rstrip
  auto flush_segment = [&](size_t end, bool rstrip_ws) {
    size_t b = seg_begin, e = end;
    if (strip_left_next)
      while (b < e && is_ws(text[b])) ++b;
    if (rstrip_ws)
      while (e > b && is_ws(text[e - 1])) --e;
    if (e > b) {
      const auto ids = encode_sp(text.substr(b, e - b));
      out.insert(out.end(), ids.begin(), ids.end());
    }
  };
  while (i < text.size()) {
    const AddedToken* hit = nullptr;
    for (const AddedToken* t : toks)
      if (text.compare(i, t->content.size(), t->content) == 0) {
        hit = t;
        break;
      }
    if (!hit) {
      ++i;
      continue;
    }
    flush_segment(i, hit->lstrip);
    out.push_back(hit->id);
    i += hit->content.size();
    seg_begin = i;
    strip_left_next = hit->rstrip;
  }
  flush_segment(text.size(), false);
  return out;
}

void LlamaTokenizer::check_id(int64_t id) const {
  MMATTN_CHECK(id >= 0 && id < vocab_size() && (id < sp_size_ || added_.count(id)), ShapeError,
               "LlamaTokenizer: token id ", id, " is not in the vocabulary (size ", vocab_size(), ")");
}

TokenKind LlamaTokenizer::kind(int64_t id) const {
  check_id(id);
  auto it = added_.find(id);
  if (it != added_.end()) return it->second.special ? TokenKind::kSpecial : TokenKind::kAdded;
  if (sp_->IsControl(int(id)) || sp_->IsUnknown(int(id))) return TokenKind::kSpecial;
  if (sp_->IsByte(int(id))) return TokenKind::kByte;
  return TokenKind::kNormal;
}

uint8_t LlamaTokenizer::byte_value(int64_t id) const {
  MMATTN_CHECK(kind(id) == TokenKind::kByte, ShapeError, "LlamaTokenizer: token ", id, " is not a byte piece");
  const std::string& p = sp_->IdToPiece(int(id));  // "<0xAB>"
  return uint8_t(std::stoul(p.substr(3, 2), nullptr, 16));
}

std::string LlamaTokenizer::id_to_piece(int64_t id) const {
  check_id(id);
  auto it = added_.find(id);
  if (it != added_.end()) return it->second.content;
  return sp_->IdToPiece(int(id));
}

int64_t LlamaTokenizer::piece_to_id(const std::string& piece) const {
  auto it = added_by_content_.find(piece);
  if (it != added_by_content_.end()) return it->second;
  const int id = sp_->PieceToId(piece);
  // PieceToId returns unk_id for unknown pieces.
  if (id == sp_->unk_id() && piece != sp_->IdToPiece(id)) return -1;
  return id;
}

std::string LlamaTokenizer::decode_piece(int64_t id) const {
  switch (kind(id)) {
    case TokenKind::kByte:
      return std::string(1, char(byte_value(id)));
    case TokenKind::kSpecial:
    case TokenKind::kAdded:
      return id_to_piece(id);
    case TokenKind::kNormal:
      break;
  }
  return replace_spaces(sp_->IdToPiece(int(id)));
}

std::string LlamaTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special) const {
  std::string out;
  std::vector<int> run;
  auto flush = [&] {
    if (run.empty()) return;
    std::string s;
    const auto st = sp_->Decode(run, &s);
    MMATTN_CHECK(st.ok(), Error, "LlamaTokenizer: SentencePiece decode failed: ", st.ToString());
    out += s;
    run.clear();
  };
  for (int64_t id : ids) {
    const TokenKind k = kind(id);
    if (k == TokenKind::kSpecial && skip_special) continue;
    if (k == TokenKind::kSpecial || k == TokenKind::kAdded) {
      flush();
      out += id_to_piece(id);
    } else {
      run.push_back(int(id));
    }
  }
  flush();
  return out;
}

int64_t LlamaTokenizer::vocab_size() const {
  return added_.empty() ? sp_size_ : std::max(sp_size_, added_.rbegin()->first + 1);
}
int64_t LlamaTokenizer::sp_vocab_size() const { return sp_size_; }

void LlamaTokenizer::set_bos_id(int64_t id) {
  check_id(id);
  bos_id_ = id;
}
void LlamaTokenizer::set_eos_id(int64_t id) {
  check_id(id);
  eos_id_ = id;
}

// ---------------------------------------------------------------------------------------------

IncrementalDecoder::IncrementalDecoder(const LlamaTokenizer& tok, bool skip_special)
    : tok_(&tok), skip_special_(skip_special) {}

void IncrementalDecoder::reset() {
  pending_.clear();
  need_ = 0;
  run_start_ = true;
  text_.clear();
}

std::string IncrementalDecoder::emit(std::string s) {
  text_ += s;
  return s;
}

std::string IncrementalDecoder::flush_pending() {
  std::string s;
  for (size_t i = 0; i < pending_.size(); ++i) s += kReplacement;
  pending_.clear();
  need_ = 0;
  return s;
}

std::string IncrementalDecoder::push_byte(uint8_t b) {
  std::string s;
  if (!pending_.empty()) {
    if (utf8_continues(pending_, b)) {
      pending_.push_back(char(b));
      if (pending_.size() == need_) {
        s = pending_;
        pending_.clear();
        need_ = 0;
      }
      return s;
    }
    s = flush_pending();  // the pending bytes can never complete: one U+FFFD each
  }
  const size_t n = utf8_len(b);
  if (n == 0) return s + kReplacement;
  if (n == 1) return s + std::string(1, char(b));
  pending_.assign(1, char(b));
  need_ = n;
  return s;
}

std::string IncrementalDecoder::push(int64_t id) {
  const TokenKind k = tok_->kind(id);
  if (k == TokenKind::kSpecial && skip_special_) return {};
  if (k == TokenKind::kByte) {
    run_start_ = false;
    return emit(push_byte(tok_->byte_value(id)));
  }
  std::string s = flush_pending();
  if (k == TokenKind::kSpecial || k == TokenKind::kAdded) {
    s += tok_->id_to_piece(id);
    std::string r = emit(std::move(s));
    run_start_ = true;  // the next ordinary piece starts a new run (see LlamaTokenizer::decode)
    return r;
  }
  std::string piece = tok_->id_to_piece(id);
  if (run_start_ && piece.compare(0, 3, kSpace) == 0) piece.erase(0, 3);
  run_start_ = false;
  s += replace_spaces(piece);
  return emit(std::move(s));
}

std::string IncrementalDecoder::flush() { return emit(flush_pending()); }

}  // namespace mmattn
