#pragma once
// POPE (Li et al. 2023) scoring: question files, LLaVA/POPE's answer rule and the metrics.
// See shared/assets/benchmarks/pope/README.md for the formats and the rule.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/json_reader.h"

namespace mmattn {

struct PopeQuestion {
  int64_t question_id = 0;
  std::string image;  // "COCO_val2014_000000xxxxxx.jpg"
  std::string text;   // "Is there a <object> in the image?"
  bool label_yes = false;
  int64_t line = 0;   // 1-based line in the source file
};
// A line that could not be read: the other lines are still returned.
using PopeLineError = JsonLineError;
struct PopeQuestionFile {
  std::vector<PopeQuestion> questions;
  std::vector<PopeLineError> errors;
};

// JSON lines; blank lines are skipped. `where` prefixes error messages (usually the file name).
PopeQuestionFile parse_pope_questions(const std::string& text, const std::string& where = "pope");
PopeQuestionFile read_pope_questions(const std::string& path);  // IoError if unreadable

// POPE's rule (POPE evaluate.py / LLaVA eval_pope.py): keep the text before the first '.',
// delete commas, split on ' '; a piece equal to "No", "not" or "no" -> no, else yes.
// `unparseable` additionally flags answers whose first sentence (case-folded, split on
// non-letters) holds none of "yes", "no", "not"; they are still classified by the rule.
struct PopeAnswer {
  bool yes = true;
  bool unparseable = false;
};
PopeAnswer parse_pope_answer(const std::string& text);

struct PopeCounts {
  int64_t tp = 0, fp = 0, tn = 0, fn = 0;
  int64_t unparseable = 0;
  int64_t n() const { return tp + fp + tn + fn; }
  void add(bool label_yes, const PopeAnswer& a);
  PopeCounts& operator+=(const PopeCounts& o);
};
// Positive class = yes. Ratios with a zero denominator are 0.
struct PopeMetrics {
  PopeCounts counts;
  double accuracy = 0, precision = 0, recall = 0, f1 = 0, yes_ratio = 0;
};
PopeMetrics pope_metrics(const PopeCounts& c);

// One scored answer: the split it belongs to ("random", "popular", "adversarial", ...).
struct PopeScoredAnswer {
  std::string split;
  bool label_yes = false;
  std::string answer;
};
struct PopeReport {
  std::map<std::string, PopeMetrics> splits;  // by split name
  PopeMetrics overall;                        // pooled counts over all splits
  double mean_f1 = 0;                         // unweighted mean of the splits' F1 (LLaVA's "POPE")
};
PopeReport score_pope(const std::vector<PopeScoredAnswer>& answers);

// {"splits": {name: metrics}, "overall": metrics, "mean_f1": x}; metrics =
// {"n","tp","fp","tn","fn","unparseable","accuracy","precision","recall","f1","yes_ratio"}.
Json pope_metrics_json(const PopeMetrics& m);
Json pope_report_json(const PopeReport& r);

}  // namespace mmattn
