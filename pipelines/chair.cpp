#include "pipelines/chair.h"

#include <algorithm>
#include <cctype>
#include <sstream>

#include "core/error.h"
#include "core/io.h"

namespace mmattn {

namespace {

std::string trim(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && std::isspace((unsigned char)s[a])) ++a;
  while (b > a && std::isspace((unsigned char)s[b - 1])) --b;
  return s.substr(a, b - a);
}

std::vector<std::string> split_on(const std::string& s, const std::string& sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t p = s.find(sep, start);
    out.push_back(s.substr(start, p == std::string::npos ? std::string::npos : p - start));
    if (p == std::string::npos) return out;
    start = p + sep.size();
  }
}

void finish_vocab(ChairVocab& v) {
  v.objects.erase("");           // blank lines of the inlined synonym text; never a token
  v.inverse_synonyms.erase("");
  v.known_words = v.objects;
  for (const auto& [k, val] : v.double_words)
    for (const auto& w : split_on(k, " ")) v.known_words.insert(w);
}

bool is_alnum(char c) { return std::isalnum((unsigned char)c) != 0; }

}  // namespace

const std::map<std::string, std::string>& chair_builtin_double_words() {
  static const std::map<std::string, std::string> d = [] {
    std::map<std::string, std::string> m;
    for (const char* w : {"motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal",
                          "stop light", "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball",
                          "baseball bat", "baseball glove", "tennis racket", "wine glass", "hot dog", "cell phone",
                          "mobile phone", "teddy bear", "hair drier", "potted plant", "laptop computer",
                          "stove top oven", "home plate", "train track"})
      m[w] = w;
    for (const char* a : {"bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe",
                          "animal", "cub"}) {
      m[std::string("baby ") + a] = a;
      m[std::string("adult ") + a] = a;
    }
    m["passenger jet"] = "jet";
    m["passenger train"] = "train";
    m["bow tie"] = "tie";
    m["toilet seat"] = "toilet";
    m["wine glas"] = "wine glass";
    return m;
  }();
  return d;
}

ChairVocab parse_chair_synonyms(const std::string& text) {
  ChairVocab v;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    line = trim(line);
    if (line.empty()) continue;
    const auto parts = split_on(line, ", ");
    for (const auto& p : parts) {
      v.objects.insert(p);
      v.inverse_synonyms[p] = parts[0];
    }
  }
  v.double_words = chair_builtin_double_words();
  finish_vocab(v);
  return v;
}

ChairVocab read_chair_synonyms(const std::string& path) { return parse_chair_synonyms(read_text_file(path)); }

ChairVocab chair_vocab_from_gt_json(const Json& j, const std::string& where) {
  JsonReader r(j, where);
  ChairVocab v;
  for (const auto& s : r.get<std::vector<std::string>>("mscoco_objects")) v.objects.insert(s);
  auto read_map = [&](const std::string& key, std::map<std::string, std::string>& out) {
    const Json m = r.get<Json>(key);
    if (!m.is_object()) r.fail_key(key, "expected an object, got " + json_type_desc(m));
    for (auto it = m.begin(); it != m.end(); ++it) {
      if (!it.value().is_string()) r.fail_key(key + "." + it.key(), "expected a string, got " + json_type_desc(it.value()));
      out[it.key()] = it.value().get<std::string>();
    }
  };
  read_map("inverse_synonym_dict", v.inverse_synonyms);
  read_map("double_word_dict", v.double_words);
  finish_vocab(v);
  return v;
}

ChairGroundTruth chair_gt_from_json(const Json& j, const std::string& where) {
  JsonReader r(j, where);
  const Json m = r.get<Json>("imid_to_objects");
  if (!m.is_object()) r.fail_key("imid_to_objects", "expected an object, got " + json_type_desc(m));
  ChairGroundTruth gt;
  gt.imid_to_objects.reserve(m.size());
  for (auto it = m.begin(); it != m.end(); ++it) {
    const std::string& k = it.key();
    int64_t id = 0;
    bool ok = !k.empty() && k.size() < 19;
    for (char c : k) ok = ok && std::isdigit((unsigned char)c);
    if (!ok) r.fail_key("imid_to_objects", str_cat("key \"", k, "\" is not a decimal image id"));
    id = std::stoll(k);
    if (!it.value().is_array()) r.fail_key("imid_to_objects." + k, "expected an array, got " + json_type_desc(it.value()));
    auto& set = gt.imid_to_objects[id];
    for (const auto& o : it.value()) {
      if (!o.is_string()) r.fail_key("imid_to_objects." + k, "expected strings, got " + json_type_desc(o));
      set.insert(o.get<std::string>());
    }
  }
  return gt;
}

ChairGroundTruth read_chair_gt(const std::string& path) { return chair_gt_from_json(read_json_file(path), path); }

std::vector<std::string> chair_tokenize(const std::string& caption) {
  std::string s;
  s.reserve(caption.size());
  for (char c : caption) s += char(std::tolower((unsigned char)c));
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string chunk;
  while (in >> chunk) {
    // Split chunk into pieces: alnum runs glued by internal - . / ' and separate punctuation.
    std::vector<std::string> pieces;
    std::string cur;
    auto flush = [&] {
      if (!cur.empty()) pieces.push_back(cur);
      cur.clear();
    };
    for (size_t i = 0; i < chunk.size(); ++i) {
      const char c = chunk[i];
      const bool prev_an = i > 0 && is_alnum(chunk[i - 1]);
      const bool next_an = i + 1 < chunk.size() && is_alnum(chunk[i + 1]);
      if (is_alnum(c) || (c & 0x80)) {
        cur += c;
      } else if ((c == '-' || c == '/' || c == '.' || c == '\'') && prev_an && next_an && !cur.empty()) {
        cur += c;  // t-shirt, 1/2, e.g, woman's (clitics handled below)
      } else if ((c == ',' || c == ':') && prev_an && next_an && std::isdigit((unsigned char)chunk[i - 1]) &&
                 std::isdigit((unsigned char)chunk[i + 1])) {
        cur += c;  // 1,000 and 10:30
      } else {
        flush();
        if (c == '.' && !pieces.empty() && pieces.back().find_first_not_of('.') == std::string::npos) {
          pieces.back() += c;  // "..." stays one token
        } else {
          pieces.push_back(std::string(1, c));
        }
      }
    }
    flush();
    for (const auto& p : pieces) {
      // Clitics: 's 're 've 'll 'd 'm and n't become separate tokens.
      bool done = false;
      for (const char* cl : {"'s", "'re", "'ve", "'ll", "'d", "'m", "n't"}) {
        const std::string c(cl);
        if (p.size() > c.size() && p.compare(p.size() - c.size(), c.size(), c) == 0) {
          out.push_back(p.substr(0, p.size() - c.size()));
          out.push_back(c);
          done = true;
          break;
        }
      }
      if (!done) out.push_back(p);
    }
  }
  return out;
}

std::string chair_singularize(const std::string& word, const ChairVocab& vocab) {
  if (vocab.known_words.count(word)) return word;
  static const std::map<std::string, std::string> irregular = {
      {"knives", "knife"},     {"wives", "wife"},       {"lives", "life"},       {"calves", "calf"},
      {"halves", "half"},      {"shelves", "shelf"},    {"loaves", "loaf"},      {"leaves", "leaf"},
      {"wolves", "wolf"},      {"mice", "mouse"},       {"geese", "goose"},      {"children", "child"},
      {"oxen", "ox"},          {"feet", "foot"},        {"teeth", "tooth"},      {"men", "man"},
      {"women", "woman"},      {"buffaloes", "buffalo"}, {"tomatoes", "tomato"}, {"potatoes", "potato"},
      {"dice", "die"},         {"cacti", "cactus"},     {"mangoes", "mango"},    {"dominoes", "domino"},
      {"grandchildren", "grandchild"}, {"policemen", "policeman"}, {"servicemen", "serviceman"},
      {"gentlemen", "gentleman"}, {"firemen", "fireman"}};
  if (auto it = irregular.find(word); it != irregular.end()) return it->second;
  // WordNet's noun detachment rules; take the shortest known candidate (as NLTK's min by length).
  static const std::vector<std::pair<std::string, std::string>> rules = {
      {"s", ""}, {"ses", "s"}, {"xes", "x"}, {"zes", "z"}, {"ches", "ch"}, {"shes", "sh"}, {"men", "man"}, {"ies", "y"}};
  std::string best;
  for (const auto& [suf, rep] : rules) {
    if (word.size() <= suf.size() || word.compare(word.size() - suf.size(), suf.size(), suf) != 0) continue;
    const std::string cand = word.substr(0, word.size() - suf.size()) + rep;
    if (vocab.known_words.count(cand) && (best.empty() || cand.size() < best.size())) best = cand;
  }
  return best.empty() ? word : best;
}

ChairCaptionFile parse_chair_captions(const std::string& text, const std::string& where) {
  ChairCaptionFile out;
  out.errors = for_each_json_line(text, where, [&](JsonReader& r, int64_t) {
    ChairCaption c;
    c.image_id = r.get<int64_t>("image_id");
    c.caption = r.get<std::string>("caption");
    out.captions.push_back(std::move(c));
  });
  return out;
}

ChairCaptionResult chair_parse_caption(const ChairCaption& c, const ChairVocab& vocab, const ChairGroundTruth& gt) {
  ChairCaptionResult r;
  r.image_id = c.image_id;
  std::vector<std::string> lemmas;
  for (const auto& t : chair_tokenize(c.caption)) lemmas.push_back(chair_singularize(t, vocab));
  for (size_t i = 0; i < lemmas.size();) {
    if (i + 1 < lemmas.size()) {
      auto it = vocab.double_words.find(lemmas[i] + " " + lemmas[i + 1]);
      if (it != vocab.double_words.end()) {
        r.tokens.push_back(it->second);
        i += 2;
        continue;
      }
    }
    r.tokens.push_back(lemmas[i]);
    ++i;
  }
  r.len_tokens = int64_t(r.tokens.size());
  for (const auto& t : r.tokens)
    if (std::any_of(t.begin(), t.end(), is_alnum)) ++r.len_words;
  const bool toilet = std::find(r.tokens.begin(), r.tokens.end(), "toilet") != r.tokens.end();
  const std::set<std::string>* g = nullptr;
  static const std::set<std::string> empty;
  if (auto it = gt.imid_to_objects.find(c.image_id); it != gt.imid_to_objects.end()) {
    g = &it->second;
    r.gt_found = true;
  } else {
    g = &empty;
  }
  std::set<std::string> covered;
  for (const auto& t : r.tokens) {
    if (toilet && t == "seat") continue;
    if (!vocab.objects.count(t)) continue;
    auto it = vocab.inverse_synonyms.find(t);
    const std::string cls = it != vocab.inverse_synonyms.end() ? it->second : t;
    r.mentions.push_back(cls);
    if (g->count(cls)) covered.insert(cls);
    else r.hallucinated.push_back(cls);
  }
  r.gt_size = int64_t(g->size());
  r.gt_covered = int64_t(covered.size());
  return r;
}

ChairReport score_chair(const std::vector<ChairCaption>& captions, const ChairVocab& vocab, const ChairGroundTruth& gt) {
  ChairReport rep;
  auto& m = rep.metrics;
  for (const auto& c : captions) {
    rep.captions.push_back(chair_parse_caption(c, vocab, gt));
    const auto& r = rep.captions.back();
    ++m.n_captions;
    if (!r.hallucinated.empty()) ++m.n_hallucinated_captions;
    m.n_mentions += int64_t(r.mentions.size());
    m.n_hallucinated_mentions += int64_t(r.hallucinated.size());
    m.n_gt += r.gt_size;
    m.n_covered += r.gt_covered;
    m.n_tokens += r.len_tokens;
    m.n_words += r.len_words;
  }
  auto ratio = [](int64_t a, int64_t b) { return b > 0 ? double(a) / double(b) : 0.0; };
  m.chair_s = ratio(m.n_hallucinated_captions, m.n_captions);
  m.chair_i = ratio(m.n_hallucinated_mentions, m.n_mentions);
  m.recall = ratio(m.n_covered, m.n_gt);
  m.avg_len = ratio(m.n_tokens, m.n_captions);
  m.avg_words = ratio(m.n_words, m.n_captions);
  return rep;
}

Json chair_report_json(const ChairReport& r, bool per_caption) {
  const auto& m = r.metrics;
  Json out{{"metrics",
            {{"chair_s", m.chair_s},
             {"chair_i", m.chair_i},
             {"recall", m.recall},
             {"len", m.avg_len},
             {"avg_words", m.avg_words},
             {"n_captions", m.n_captions},
             {"n_hallucinated_captions", m.n_hallucinated_captions},
             {"n_mentions", m.n_mentions},
             {"n_hallucinated_mentions", m.n_hallucinated_mentions},
             {"n_gt", m.n_gt},
             {"n_covered", m.n_covered}}}};
  if (per_caption) {
    Json caps = Json::array();
    for (const auto& c : r.captions)
      caps.push_back({{"image_id", c.image_id},
                      {"gt_found", c.gt_found},
                      {"mentions", c.mentions},
                      {"hallucinated", c.hallucinated},
                      {"gt_size", c.gt_size},
                      {"gt_covered", c.gt_covered},
                      {"len", c.len_tokens},
                      {"words", c.len_words}});
    out["captions"] = caps;
  }
  return out;
}

}  // namespace mmattn
