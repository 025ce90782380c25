// LlamaTokenizer (SentencePiece + added tokens, transformers legacy behaviour), the streaming
// detokenizer, LLaVA-1.5 prompts and <image> expansion, against llama.cpp's 46 llama-spm vectors
// and the tiny-LLaVA golden prompt ids.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/hf_config.h"
#include "core/json_reader.h"
#include "core/safetensors.h"
#include "language/chat.h"
#include "language/tokenizer.h"
#include "test_util.h"

using namespace mmattn;
namespace fs = std::filesystem;

namespace {

std::string llama_dir() { return test::source_dir() + "/assets/tokenizers/llama"; }

const LlamaTokenizer& llama() {
  static const LlamaTokenizer tok(llama_dir());
  return tok;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << path;
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct Case {
  std::string text;
  std::vector<int64_t> ids;
};

// assets/tokenizers/llama/llama-spm.inp/.out (llama.cpp's ggml-vocab-llama-spm test vectors).
std::vector<Case> load_cases() {
  const std::string inp = read_file(llama_dir() + "/llama-spm.inp");
  const std::string out = read_file(llama_dir() + "/llama-spm.out");
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  size_t pos = 0;
  for (size_t hit; (hit = inp.find(sep, pos)) != std::string::npos; pos = hit + sep.size())
    texts.push_back(inp.substr(pos, hit - pos));
  EXPECT_EQ(inp.substr(pos), "");  // the trailing empty piece
  std::vector<std::vector<int64_t>> ids;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream ls(line);
    std::vector<int64_t> v;
    for (int64_t x; ls >> x;) v.push_back(x);
    ids.push_back(v);
  }
  EXPECT_EQ(texts.size(), ids.size());
  std::vector<Case> cases;
  for (size_t i = 0; i < texts.size() && i < ids.size(); ++i) cases.push_back({texts[i], ids[i]});
  return cases;
}

bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const uint8_t b = uint8_t(s[i]);
    size_t n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((uint8_t(s[i + k]) & 0xC0) != 0x80) return false;
    i += n;
  }
  return true;
}

// Feeds ids one by one; every chunk must be valid UTF-8 on its own. Returns the chunks.
std::vector<std::string> stream(const LlamaTokenizer& tok, const std::vector<int64_t>& ids, bool skip_special = true) {
  IncrementalDecoder d(tok, skip_special);
  std::vector<std::string> chunks;
  for (int64_t id : ids) {
    chunks.push_back(d.push(id));
    EXPECT_TRUE(valid_utf8(chunks.back())) << "token " << id;
  }
  chunks.push_back(d.flush());
  std::string all;
  for (const auto& c : chunks) all += c;
  EXPECT_EQ(all, d.text());
  return chunks;
}
std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x;
  return s;
}

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("mmattn_tok_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  static int& counter() {
    static int c = 0;
    return c;
  }
  void write(const std::string& name, const std::string& text) const { std::ofstream(path / name) << text; }
  void copy_model() const { fs::copy_file(llama_dir() + "/tokenizer.model", path / "tokenizer.model"); }
};

template <class E, class F>
std::string expect_throw(F f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
    return {};
  }
  ADD_FAILURE() << "no exception";
  return {};
}

}  // namespace

TEST(LlamaTokenizer, LoadsTheLlamaModel) {
  const auto& t = llama();
  EXPECT_EQ(t.sp_vocab_size(), 32000);
  EXPECT_EQ(t.vocab_size(), 32000);
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.unk_id(), 0);
  EXPECT_EQ(t.id_to_piece(1), "<s>");
  EXPECT_EQ(t.id_to_piece(29871), "\xE2\x96\x81");  // "▁"
  EXPECT_EQ(t.id_to_piece(13), "<0x0A>");
  EXPECT_EQ(t.id_to_piece(15043), "\xE2\x96\x81Hello");
  EXPECT_EQ(t.piece_to_id("\xE2\x96\x81Hello"), 15043);
  EXPECT_EQ(t.piece_to_id("no-such-piece"), -1);
  EXPECT_EQ(t.piece_to_id("<unk>"), 0);
  EXPECT_EQ(t.kind(13), TokenKind::kByte);
  EXPECT_EQ(t.byte_value(13), 0x0A);
  EXPECT_EQ(t.kind(3), TokenKind::kByte);
  EXPECT_EQ(t.byte_value(3), 0x00);
  EXPECT_EQ(t.byte_value(258), 0xFF);
  EXPECT_EQ(t.kind(1), TokenKind::kSpecial);
  EXPECT_EQ(t.kind(0), TokenKind::kSpecial);
  EXPECT_EQ(t.kind(15043), TokenKind::kNormal);
  EXPECT_EQ(t.added_tokens().size(), 3u);  // <unk>, <s>, </s>
}

// llama.cpp's 46 llama-spm vectors: ids are sp.encode(text) without BOS. With no added token in
// the text, encode(text, false) is exactly SentencePiece's encoding.
TEST(LlamaTokenizer, MatchesTheLlamaSpmVectors) {
  const auto cases = load_cases();
  ASSERT_EQ(cases.size(), 46u);
  int matched = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    const auto got = llama().encode(c.text, /*add_bos=*/false);
    EXPECT_EQ(got, c.ids) << "case " << i << ": '" << c.text << "'";
    EXPECT_EQ(llama().encode_sp(c.text), c.ids) << "case " << i;
    matched += got == c.ids;
    auto with_bos = llama().encode(c.text, true);
    ASSERT_FALSE(with_bos.empty());
    EXPECT_EQ(with_bos[0], 1);
    EXPECT_EQ(std::vector<int64_t>(with_bos.begin() + 1, with_bos.end()), c.ids);
  }
  EXPECT_EQ(matched, 46);
}

// The streaming detokenizer reproduces decode() (SentencePiece's DecodeIds) on every vector, one
// token at a time, and never emits a partial UTF-8 character.
TEST(LlamaTokenizer, IncrementalDecodingMatchesDecodeOnTheVectors) {
  for (const auto& c : load_cases()) {
    const std::string full = llama().decode(c.ids);
    EXPECT_EQ(join(stream(llama(), c.ids)), full) << "'" << c.text << "'";
    // Round trip: decoding drops exactly the dummy-prefix space that encoding added.
    EXPECT_EQ(full, c.text);
  }
}

TEST(LlamaTokenizer, RoundTripsText) {
  for (const std::string s : {"Hello world", "Hello, y'all! How are you 😁 ?我想在apple工作1314151天～",
                              "   leading spaces", "tabs\tand\nnewlines\n\n", "3333333 1.5e-9 ---"}) {
    const auto ids = llama().encode(s, true);
    const std::string back = llama().decode(ids);
    EXPECT_EQ(back, s);
    EXPECT_EQ(join(stream(llama(), ids)), back);
  }
  EXPECT_EQ(llama().decode({}), "");
  // libsentencepiece drops the "▁" of the first non-control piece only (checked against its
  // DecodeIds): <s> does not count, a lone "▁" or a byte piece does.
  for (const auto& [ids, want] : std::vector<std::pair<std::vector<int64_t>, std::string>>{
           {{29871, 15043}, " Hello"}, {{1, 15043}, "Hello"}, {{1, 29871, 15043}, " Hello"},
           {{13, 15043}, "\n Hello"}, {{29871, 29871, 15043}, "  Hello"}, {{29871, 13}, "\n"}}) {
    EXPECT_EQ(llama().decode(ids), want);
    EXPECT_EQ(join(stream(llama(), ids)), want);
  }
  EXPECT_EQ(llama().decode({1, 15043, 3186, 2}, true), "Hello world");
  EXPECT_EQ(llama().decode({1, 15043, 3186, 2}, false), "<s>Hello world</s>");
  EXPECT_EQ(llama().decode_piece(15043), " Hello");
  EXPECT_EQ(llama().decode_piece(13), "\n");
  EXPECT_EQ(llama().decode_piece(2), "</s>");
}

// Multi-byte UTF-8 through byte-fallback pieces: 🦙 (4 bytes) is not in the vocabulary, so it is
// four <0x..> tokens; the decoder emits nothing for the first three and the whole emoji on the
// fourth. CJK characters that are pieces come out at once.
TEST(LlamaTokenizer, IncrementalDecodingOfMultiByteCharacters) {
  const std::string text = "Llamas \xF0\x9F\xA6\x99 like \xE4\xBD\xA0\xE5\xA5\xBD and \xF0\x9F\x98\x81!";  // 🦙 你好 😁
  const auto ids = llama().encode(text, false);
  int byte_tokens = 0;
  for (int64_t id : ids) byte_tokens += llama().kind(id) == TokenKind::kByte;
  EXPECT_GE(byte_tokens, 4);
  const auto chunks = stream(llama(), ids);
  EXPECT_EQ(join(chunks), text);
  // Find the llama's four byte tokens and check the first three emit nothing.
  IncrementalDecoder d(llama());
  bool saw_llama = false;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (llama().kind(ids[i]) == TokenKind::kByte && llama().byte_value(ids[i]) == 0xF0 && !saw_llama) {
      ASSERT_LE(i + 4, ids.size());
      EXPECT_EQ(d.push(ids[i]), "");
      EXPECT_TRUE(d.pending());
      EXPECT_EQ(d.push(ids[i + 1]), "");
      EXPECT_EQ(d.push(ids[i + 2]), "");
      EXPECT_EQ(d.push(ids[i + 3]), "\xF0\x9F\xA6\x99");
      EXPECT_FALSE(d.pending());
      saw_llama = true;
      i += 3;
    } else {
      d.push(ids[i]);
    }
  }
  EXPECT_TRUE(saw_llama);
  EXPECT_EQ(d.text() + d.flush(), text);

  // The first generated token "▁The" yields "The" (the run's leading space is dropped), the rest
  // keep their spaces.
  IncrementalDecoder g(llama());
  const auto the_cat = llama().encode("The cat", false);
  ASSERT_EQ(the_cat.size(), 2u);
  EXPECT_EQ(g.push(the_cat[0]), "The");
  EXPECT_EQ(g.push(the_cat[1]), " cat");
  EXPECT_EQ(g.push(2), "");  // </s> skipped
}

// An unfinished UTF-8 sequence: each pending byte becomes U+FFFD, as SentencePiece decodes it.
TEST(LlamaTokenizer, IncompleteUtf8BecomesReplacementCharacters) {
  const int64_t b_f0 = 3 + 0xF0, b_9f = 3 + 0x9F, b_a6 = 3 + 0xA6;
  const std::string fffd = "\xEF\xBF\xBD";
  const std::vector<int64_t> trunc = {b_f0, b_9f, b_a6};
  EXPECT_EQ(llama().decode(trunc), fffd + fffd + fffd);
  EXPECT_EQ(join(stream(llama(), trunc)), fffd + fffd + fffd);
  // ... followed by an ordinary piece: flushed before it.
  const std::vector<int64_t> then_word = {b_f0, b_9f, 15043};
  EXPECT_EQ(join(stream(llama(), then_word)), llama().decode(then_word));
  // A stray continuation byte, then a valid 'A' byte.
  const std::vector<int64_t> stray = {3 + 0x80, 3 + 0x41};
  EXPECT_EQ(llama().decode(stray), fffd + "A");
  EXPECT_EQ(join(stream(llama(), stray)), fffd + "A");
  // A lead byte interrupted by another lead byte that completes.
  const std::vector<int64_t> interrupted = {3 + 0xE4, 3 + 0xC3, 3 + 0xA9};
  EXPECT_EQ(join(stream(llama(), interrupted)), llama().decode(interrupted));
  EXPECT_EQ(llama().decode(interrupted), fffd + "\xC3\xA9");
}

// transformers' LlamaTokenizer docstring, legacy=True: "Hello <s>." -> [1, 15043, 29871, 1, 869]
// ("<s>" is an added token; the "." after it is encoded on its own, with the dummy prefix: "▁.").
TEST(LlamaTokenizer, LegacyEncodingAfterSpecialTokens) {
  EXPECT_EQ(llama().encode("Hello <s>.", true), (std::vector<int64_t>{1, 15043, 29871, 1, 869}));
  EXPECT_EQ(llama().encode("</s>", false), (std::vector<int64_t>{2}));
  EXPECT_EQ(llama().encode("", true), (std::vector<int64_t>{1}));
  EXPECT_EQ(llama().encode("", false), (std::vector<int64_t>{}));
}

// A tokenizer.json / tokenizer_config.json / added_tokens.json as llava-hf ships them.
TEST(LlamaTokenizer, AddedTokensFromTheJsonFiles) {
  TempDir d;
  d.copy_model();
  d.write("tokenizer.json", R"({"version": "1.0", "added_tokens": [
    {"id": 0, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 2, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 32000, "content": "<image>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 32001, "content": "<pad>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
    "model": {"type": "BPE"}})");
  d.write("tokenizer_config.json", R"({"add_bos_token": true, "bos_token": "<s>",
    "eos_token": {"content": "</s>", "lstrip": false}, "pad_token": "<pad>", "legacy": true,
    "added_tokens_decoder": {"32000": {"content": "<image>", "special": true},
                             "32001": {"content": "<pad>", "special": true}}})");
  LlamaTokenizer t(d.path.string());
  EXPECT_EQ(t.vocab_size(), 32002);
  EXPECT_EQ(t.piece_to_id("<image>"), 32000);
  EXPECT_EQ(t.piece_to_id("<pad>"), 32001);
  EXPECT_EQ(t.id_to_piece(32001), "<pad>");
  EXPECT_TRUE(t.is_special(32000));
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  // Split out, with the legacy dummy prefix on the segment after it.
  const auto ids = t.encode("USER: <image>\nHi<pad><pad>", true);
  std::vector<int64_t> want = {1};
  for (auto x : llama().encode_sp("USER: ")) want.push_back(x);
  want.push_back(32000);
  for (auto x : llama().encode_sp("\nHi")) want.push_back(x);
  want.push_back(32001);
  want.push_back(32001);
  EXPECT_EQ(ids, want);
  EXPECT_EQ(t.decode(ids, false), "<s>USER: <image>\nHi<pad><pad>");  // the exact inverse
  EXPECT_EQ(join(stream(t, ids, false)), "<s>USER: <image>\nHi<pad><pad>");
  EXPECT_EQ(t.decode(ids, true), "USER:  \nHi");  // runs merge once the specials are dropped
  EXPECT_EQ(join(stream(t, ids, true)), "USER:  \nHi");
  EXPECT_THROW(t.id_to_piece(32002), ShapeError);
  EXPECT_THROW(t.kind(-1), ShapeError);

  // added_tokens.json alone (older slow-tokenizer checkpoints); lstrip/rstrip from tokenizer.json.
  TempDir d2;
  d2.copy_model();
  d2.write("added_tokens.json", R"({"<image>": 32000, "<pad>": 32001})");
  LlamaTokenizer t2(d2.path.string());
  EXPECT_EQ(t2.vocab_size(), 32002);
  EXPECT_EQ(t2.kind(32000), TokenKind::kAdded);  // not marked special there
  EXPECT_EQ(t2.decode({1, 32000, 15043}, true), "<image>Hello");

  TempDir d3;
  d3.copy_model();
  d3.write("tokenizer.json", R"({"added_tokens": [
    {"id": 32000, "content": "<image>", "lstrip": true, "rstrip": true, "special": true}]})");
  LlamaTokenizer t3(d3.path.string());
  std::vector<int64_t> w3 = llama().encode_sp("a");
  w3.push_back(32000);
  for (auto x : llama().encode_sp("b")) w3.push_back(x);
  EXPECT_EQ(t3.encode("a  <image>\n b", false), w3);
}

// tests/golden/tiny_llava has tokenizer.model only: <image> comes from config.json's
// image_token_index. The golden `input_ids` were built as
//   [1] + sp.encode("USER: ") + [32000]*576 + sp.encode("\nWhat is unusual about this image? ASSISTANT:")
// and llava_prompt + encode + expand_image_tokens reproduces them exactly. That is also what
// llava-hf's real processor gives: LlavaProcessor expands "<image>" to 576 "<image>" strings in the
// text and then calls the tokenizer, whose added-token split leaves "USER: " (trailing space ->
// its own "▁" piece 29871) before the first image token and "\nWhat ... ASSISTANT:" after the last,
// each encoded separately with SentencePiece's dummy prefix (legacy=True in the slow tokenizer;
// the legacy tokenizer.json's Prepend("▁") normalizer in the fast one, applied per split) -> the
// segment after <image> starts with 29871, 13. Original LLaVA's tokenizer_image_token also encodes
// each chunk around "<image>" separately, with the same result.
TEST(LlavaPrompt, MatchesTheGoldenInputIds) {
  const std::string dir = test::golden_dir() + "/tiny_llava";
  const Json cfg_json = read_json_file(dir + "/config.json");
  const LlavaConfig cfg = parse_llava_config(cfg_json, dir + "/config.json");
  LlamaTokenizer tok(dir);
  EXPECT_EQ(tok.piece_to_id("<image>"), -1);
  tok.add_special_token(kImageToken, cfg.image_token_index);
  EXPECT_EQ(tok.piece_to_id("<image>"), 32000);
  tok.add_special_token(kImageToken, cfg.image_token_index);  // idempotent

  const std::string q = "What is unusual about this image?";
  const std::string prompt = llava_prompt(q, true, false);
  EXPECT_EQ(prompt, "USER: <image>\nWhat is unusual about this image? ASSISTANT:");
  const auto ids = tok.encode(prompt, true);
  const auto expanded = expand_image_tokens(ids, cfg.image_token_index, cfg.image_seq_length);

  // The recipe the golden was built with.
  std::vector<int64_t> recipe = {1};
  for (auto x : tok.encode_sp("USER: ")) recipe.push_back(x);
  recipe.insert(recipe.end(), 576, 32000);
  for (auto x : tok.encode_sp("\nWhat is unusual about this image? ASSISTANT:")) recipe.push_back(x);
  EXPECT_EQ(expanded, recipe);
  // The spaces around <image>: "▁" before it (end of "USER: ") and "▁" + "\n" after it.
  ASSERT_GT(ids.size(), 8u);
  EXPECT_EQ(ids[4], 29871);
  EXPECT_EQ(ids[5], 32000);
  EXPECT_EQ(ids[6], 29871);
  EXPECT_EQ(ids[7], 13);

  SafeTensorsFile golden(test::golden_dir() + "/tiny_llava_golden.safetensors");
  const Tensor g = golden.get("input_ids");
  ASSERT_EQ(g.dtype(), DType::I64);
  ASSERT_EQ(g.dim(), 2);
  ASSERT_EQ(g.size(0), 1);
  std::vector<int64_t> gids(g.data<int64_t>(), g.data<int64_t>() + g.numel());
  EXPECT_EQ(expanded, gids);
  EXPECT_EQ(int64_t(gids.size()), int64_t(ids.size()) + 575);
  EXPECT_EQ(image_token_positions(expanded, 32000).size(), 576u);
  EXPECT_EQ(image_token_positions(expanded, 32000).front(), 5);
}

TEST(LlavaPrompt, Formats) {
  EXPECT_EQ(llava_prompt("Describe it.", false, false), "USER: Describe it. ASSISTANT:");
  EXPECT_EQ(llava_prompt("Describe it.", true, true),
            "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
            "detailed, and polite answers to the user's questions. USER: <image>\nDescribe it. ASSISTANT:");
  EXPECT_EQ(short_answer_question("Is there a cat in the image?"),
            "Is there a cat in the image?\nAnswer the question using a single word or phrase.");
  EXPECT_EQ(llava_prompt(short_answer_question("Is there a dog?"), true),
            "USER: <image>\nIs there a dog?\nAnswer the question using a single word or phrase. ASSISTANT:");
}

TEST(LlavaPrompt, ExpandImageTokens) {
  EXPECT_EQ(expand_image_tokens({1, 5, 32000, 7}, 32000, 3), (std::vector<int64_t>{1, 5, 32000, 32000, 32000, 7}));
  EXPECT_EQ(expand_image_tokens({1, 5}, 32000, 3, 0), (std::vector<int64_t>{1, 5}));
  EXPECT_EQ(expand_image_tokens({32000, 2, 32000}, 32000, 2, 2), (std::vector<int64_t>{32000, 32000, 2, 32000, 32000}));
  const std::string none = expect_throw<ConfigError>([] { expand_image_tokens({1, 5}, 32000, 576); });
  EXPECT_NE(none.find("0 image token"), std::string::npos) << none;
  const std::string two = expect_throw<ConfigError>([] { expand_image_tokens({32000, 32000}, 32000, 576); });
  EXPECT_NE(two.find("2 image token"), std::string::npos) << two;
  EXPECT_THROW(expand_image_tokens({32000}, 32000, 0), ShapeError);
}

TEST(LlamaTokenizer, Errors) {
  TempDir empty;
  const std::string missing = expect_throw<IoError>([&] { LlamaTokenizer t(empty.path.string()); });
  EXPECT_NE(missing.find((empty.path / "tokenizer.model").string()), std::string::npos) << missing;

  TempDir garbage;
  garbage.write("tokenizer.model", "this is not a protobuf");
  const std::string bad_model = expect_throw<FormatError>([&] { LlamaTokenizer t(garbage.path.string()); });
  EXPECT_NE(bad_model.find("tokenizer.model"), std::string::npos) << bad_model;

  TempDir bad_json;
  bad_json.copy_model();
  bad_json.write("tokenizer.json", "{\"added_tokens\": [");
  const std::string fmt = expect_throw<FormatError>([&] { LlamaTokenizer t(bad_json.path.string()); });
  EXPECT_NE(fmt.find((bad_json.path / "tokenizer.json").string()), std::string::npos) << fmt;

  TempDir bad_cfg;
  bad_cfg.copy_model();
  bad_cfg.write("tokenizer_config.json", "{\"added_tokens_decoder\": {\"32000\": {\"content\": 5}}}");
  const std::string cfg = expect_throw<ConfigError>([&] { LlamaTokenizer t(bad_cfg.path.string()); });
  EXPECT_NE(cfg.find("added_tokens_decoder"), std::string::npos) << cfg;

  TempDir clash;
  clash.copy_model();
  clash.write("tokenizer.json", R"({"added_tokens": [{"id": 5, "content": "<image>", "special": true}]})");
  EXPECT_THROW(LlamaTokenizer t(clash.path.string()), ConfigError);  // id 5 is the piece <0x02>

  LlamaTokenizer t(llama_dir());
  t.add_special_token("<image>", 32000);
  EXPECT_THROW(t.add_special_token("<image>", 32001), ConfigError);
  EXPECT_THROW(t.add_special_token("<other>", 32000), ConfigError);
  EXPECT_THROW(t.add_special_token("<neg>", -1), ConfigError);
  EXPECT_THROW(t.decode({32001}), ShapeError);  // a gap in the vocabulary
  EXPECT_THROW(t.decode({40000}), ShapeError);
  EXPECT_THROW(t.byte_value(15043), ShapeError);
}
