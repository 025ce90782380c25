#pragma once
// CHAIR (Rohrbach et al. 2018) scoring, as OPERA's standalone chair.py computes it, re-implemented
// from the prose in shared/assets/benchmarks/chair/README.md. No NLTK: the Treebank tokenizer is
// approximated and every token is lemmatised as a noun (the README's offline approximation), so
// verb-derived mentions ("skiing" -> skis) are not produced.
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/json_reader.h"

namespace mmattn {

struct ChairVocab {
  std::set<std::string> objects;                          // mscoco_objects (surface words)
  std::map<std::string, std::string> inverse_synonyms;    // surface word -> canonical class
  std::map<std::string, std::string> double_words;        // "hot dog" -> "hot dog", "bow tie" -> "tie"
  std::set<std::string> known_words;                      // objects + words of double-word keys
};
// synonyms.txt: one line per class, split on ", " (after trimming the line); the first entry is
// the canonical name. The double-word table is the scorer's built-in one (55 entries).
ChairVocab parse_chair_synonyms(const std::string& text);
ChairVocab read_chair_synonyms(const std::string& path);
// The same vocabulary from coco_chair_gt.json's own fields (mscoco_objects, inverse_synonym_dict,
// double_word_dict).
ChairVocab chair_vocab_from_gt_json(const Json& j, const std::string& where = "chair gt");
const std::map<std::string, std::string>& chair_builtin_double_words();

struct ChairGroundTruth {
  std::unordered_map<int64_t, std::set<std::string>> imid_to_objects;
};
ChairGroundTruth chair_gt_from_json(const Json& j, const std::string& where = "chair gt");
ChairGroundTruth read_chair_gt(const std::string& path);

// Lower-cased, Treebank-like tokens: punctuation split off as tokens, clitics ('s, n't, ...) split.
std::vector<std::string> chair_tokenize(const std::string& caption);
// Noun singularisation (WordNet-style rules + an irregular list); a result is only taken when it
// is a word the scorer knows (vocab.known_words), else the word is returned unchanged.
std::string chair_singularize(const std::string& word, const ChairVocab& vocab);

struct ChairCaption {
  int64_t image_id = 0;
  std::string caption;
};
using ChairLineError = JsonLineError;
struct ChairCaptionFile {
  std::vector<ChairCaption> captions;
  std::vector<ChairLineError> errors;
};
// JSON lines {"image_id": int, "caption": str}; other keys are ignored; bad lines -> errors.
ChairCaptionFile parse_chair_captions(const std::string& text, const std::string& where = "captions");

struct ChairCaptionResult {
  int64_t image_id = 0;
  bool gt_found = false;                  // unknown ids get an empty GT (all mentions hallucinated)
  std::vector<std::string> tokens;        // after double-word merging, before the toilet-seat rule
  std::vector<std::string> mentions;      // canonical classes, with repeats, in caption order
  std::vector<std::string> hallucinated;  // mentions not in GT, with repeats
  int64_t gt_size = 0;
  int64_t gt_covered = 0;                 // distinct mentioned classes that are in GT
  int64_t len_tokens = 0;                 // CHAIR's Len (punctuation included)
  int64_t len_words = 0;                  // tokens holding a letter or digit
};
ChairCaptionResult chair_parse_caption(const ChairCaption& c, const ChairVocab& vocab, const ChairGroundTruth& gt);

struct ChairMetrics {
  int64_t n_captions = 0, n_hallucinated_captions = 0;
  int64_t n_mentions = 0, n_hallucinated_mentions = 0;
  int64_t n_gt = 0, n_covered = 0;
  int64_t n_tokens = 0, n_words = 0;
  double chair_s = 0, chair_i = 0, recall = 0, avg_len = 0, avg_words = 0;  // fractions / averages
};
struct ChairReport {
  std::vector<ChairCaptionResult> captions;
  ChairMetrics metrics;
};
ChairReport score_chair(const std::vector<ChairCaption>& captions, const ChairVocab& vocab, const ChairGroundTruth& gt);
// {"metrics": {...}, "captions": [{"image_id", "mentions", "hallucinated", ...}]} (captions optional).
Json chair_report_json(const ChairReport& r, bool per_caption = true);

}  // namespace mmattn
