#pragma once
// MME (Fu et al. 2023) hallucination subset: question reading (the official release folder or a
// JSON-lines export of lmms-lab/MME), MME's answer rule and its scores, as in MME's
// eval_tool/calculation.py.
//
// MME asks two yes/no questions about every image, normally one whose answer is "Yes" and one
// whose answer is "No". The hallucination subset is the four perception subtasks existence,
// count, position and color (MME's spelling).
//
// Inputs:
//   (a) The release folder MME_Benchmark_release_version/: for each subtask a folder <subtask>/
//       holding the images and, beside each image, a same-named .txt of two lines
//       "question<TAB>answer" (answer "Yes" / "No"); some subtasks use <subtask>/images/ and
//       <subtask>/questions_answers_YN/ instead (both are read). The image is the file of the
//       image folder with the .txt's stem and another extension (the first by name if several).
//   (b) JSON lines {"question_id": any, "image": "relative/path.jpg", "question": str,
//       "answer": "Yes"|"No", "category": "existence"} ("text" is accepted for "question" and
//       "label" for "answer"; answers are case-insensitive; without "category" the subtask is the
//       first folder of "image"). Lines of other categories are skipped. The two questions of an
//       image are the lines with the same (category, image).
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/json_reader.h"

namespace mmattn {

// existence, count, position, color: MME's hallucination subtasks in MME's order.
const std::vector<std::string>& mme_hallucination_subtasks();
// All 14 MME subtasks (the ten perception ones, then the four cognition ones), MME's spelling.
const std::vector<std::string>& mme_all_subtasks();

// The prompt for a question. MME's questions already end in "Please answer yes or no.", so by
// default the question is used as is, with `suffix` (if not empty) after a newline. `llava_style`
// reproduces LLaVA-1.5's llava_mme.jsonl: a trailing "Please answer yes or no." (and the white
// space before it) is removed first; LLaVA then appends "Answer the question using a single word
// or phrase." as the suffix (its convert_answer_to_mme.py undoes both to find MME's question).
std::string mme_prompt(const std::string& question, bool llava_style, const std::string& suffix);

// One question, or one entry that could not be read (`error` non-empty; the other fields hold
// what is known). Entries come in source order: subtasks as asked, files sorted by name, lines
// in file order.
struct MmeQuestion {
  std::string subtask;
  std::string image;  // relative to the root (a) or the images folder (b): "existence/0001.jpg"
  std::string text;   // the question as MME ships it ("... Please answer yes or no.")
  bool label_yes = false;
  Json question_id;   // (b) only; null in the release folder
  std::string file;   // the .txt (a) or the JSON-lines file (b)
  int64_t line = 0;   // 1-based line in `file`; 0 = the file as a whole
  std::string error;
};

// (a) One subtask folder after the other. A missing subtask folder, an unreadable .txt, a .txt
// whose number of non-blank lines is not two (one entry, line 0), a line that is not
// "question<TAB>yes|no" (one entry with its line) and a .txt without an image are errors.
std::vector<MmeQuestion> read_mme_folder(const std::string& root, const std::vector<std::string>& subtasks);
// (b) Blank lines are skipped; a malformed line is an error with its line. An image that does not
// have exactly two questions makes each of its lines an error. `where` prefixes messages.
std::vector<MmeQuestion> parse_mme_jsonl(const std::string& text, const std::vector<std::string>& subtasks,
                                         const std::string& where = "mme");
std::vector<MmeQuestion> read_mme_jsonl(const std::string& path, const std::vector<std::string>& subtasks);  // IoError

// MME's rule (calculation.py parse_pred_ans), on the answer lower-cased and trimmed of white
// space (LLaVA's answer files are stripped): exactly "yes" / "no" is taken; otherwise the first 4
// characters decide: containing "yes" -> yes, else containing "no" -> no, else other (wrong).
enum class MmeAnswer { Yes, No, Other };
const char* mme_answer_name(MmeAnswer a);  // "yes", "no", "other"
MmeAnswer parse_mme_answer(const std::string& text);

struct MmeScoredAnswer {
  std::string subtask;
  std::string image;  // the pair's key within the subtask
  bool label_yes = false;
  std::string answer;
};
// In MME's units: acc and acc_plus are percentages (0-100), score = acc + acc_plus (0-200).
// acc = 100 * correct / questions (an "other" answer is wrong); acc_plus = 100 * images with both
// questions right / images. Only images with exactly two scored answers count for acc+ (an image
// whose other question failed to run is left out of `images`); all answers count for acc.
struct MmeSubtaskMetrics {
  int64_t questions = 0, correct = 0, unparseable = 0;  // unparseable = "other" answers
  int64_t images = 0, images_correct = 0;
  double acc = 0, acc_plus = 0, score = 0;
};
struct MmeReport {
  std::map<std::string, MmeSubtaskMetrics> subtasks;  // subtasks that have answers
  double total = 0;  // sum of the subtasks' scores (the hallucination total: at most 800)
  int64_t questions = 0, images = 0, unparseable = 0;
};
MmeReport score_mme(const std::vector<MmeScoredAnswer>& answers);

// {"subtasks": {name: {"questions","images","correct","images_correct","unparseable","acc",
//  "acc_plus","score"}}, "total", "max_total" (200 per subtask present), "questions", "images",
//  "unparseable"}.
Json mme_report_json(const MmeReport& r);

}  // namespace mmattn
