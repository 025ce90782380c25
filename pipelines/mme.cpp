#include "pipelines/mme.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/io.h"

namespace mmattn {

namespace {

namespace fs = std::filesystem;

// Python's str.strip() for ASCII white space.
std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The first n UTF-8 characters (Python slices code points, not bytes).
std::string first_chars(const std::string& s, size_t n) {
  size_t chars = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) continue;
    if (chars++ == n) return s.substr(0, i);
  }
  return s;
}

// Regular files of `dir`, sorted by name; a listing error is thrown as IoError.
std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_regular_file(ec)) names.push_back(it->path().filename().string());
  MMATTN_CHECK(!ec, IoError, dir, ": cannot list: ", ec.message());
  std::sort(names.begin(), names.end());
  return names;
}

// One .txt of the release folder: its two questions, or errors.
void read_mme_txt(const std::string& path, const MmeQuestion& base, std::vector<MmeQuestion>& out) {
  auto error = [&](int64_t line, const std::string& msg) {
    MmeQuestion e = base;
    e.line = line;
    e.error = line > 0 ? str_cat(path, ":", line, ": ", msg) : str_cat(path, ": ", msg);
    out.push_back(std::move(e));
  };
  std::string text;
  try {
    text = read_text_file(path);
  } catch (const Error& e) {
    error(0, e.what());
    return;
  }
  std::vector<std::pair<int64_t, std::string>> lines;  // non-blank, stripped
  std::istringstream in(text);
  int64_t lineno = 0;
  for (std::string line; std::getline(in, line);) {
    ++lineno;
    line = trim(line);
    if (!line.empty()) lines.emplace_back(lineno, line);
  }
  if (lines.size() != 2) {
    error(0, str_cat("holds ", lines.size(), " question lines; MME asks exactly two per image (question<TAB>Yes|No)"));
    return;
  }
  for (const auto& [n, line] : lines) {
    const size_t tab = line.find('\t');
    if (tab == std::string::npos || line.find('\t', tab + 1) != std::string::npos) {
      error(n, "expected \"question<TAB>answer\"");
      continue;
    }
    const std::string answer = lower(trim(line.substr(tab + 1)));
    if (answer != "yes" && answer != "no") {
      error(n, str_cat("expected the answer \"Yes\" or \"No\", got \"", line.substr(tab + 1), "\""));
      continue;
    }
    MmeQuestion q = base;
    q.line = n;
    q.text = line.substr(0, tab);
    q.label_yes = answer == "yes";
    out.push_back(std::move(q));
  }
}

}  // namespace

const std::vector<std::string>& mme_hallucination_subtasks() {
  static const std::vector<std::string> k = {"existence", "count", "position", "color"};
  return k;
}

const std::vector<std::string>& mme_all_subtasks() {
  static const std::vector<std::string> k = {
      "existence", "count",         "position",      "color",                 "posters",          "celebrity", "scene",
      "landmark",  "artwork",       "OCR",           "commonsense_reasoning", "numerical_calculation",
      "text_translation", "code_reasoning"};
  return k;
}

std::string mme_prompt(const std::string& question, bool llava_style, const std::string& suffix) {
  std::string q = question;
  static const std::string kYesNo = "Please answer yes or no.";
  if (llava_style && q.size() >= kYesNo.size() && q.compare(q.size() - kYesNo.size(), kYesNo.size(), kYesNo) == 0)
    q = trim(q.substr(0, q.size() - kYesNo.size()));
  return suffix.empty() ? q : q + "\n" + suffix;
}

std::vector<MmeQuestion> read_mme_folder(const std::string& root, const std::vector<std::string>& subtasks) {
  std::vector<MmeQuestion> out;
  for (const std::string& sub : subtasks) {
    const std::string dir = resolve_path(root, sub);
    MmeQuestion base;
    base.subtask = sub;
    // LLaVA's get_gt: an images/ subfolder means the questions are in questions_answers_YN/.
    const bool split = is_directory(dir + "/images");
    const std::string image_dir = split ? dir + "/images" : dir;
    const std::string qa_dir = split ? dir + "/questions_answers_YN" : dir;
    try {
      MMATTN_CHECK(is_directory(qa_dir), IoError, qa_dir, ": MME subtask folder not found");
      std::map<std::string, std::string> image_of;  // stem -> file name (first by name)
      for (const std::string& f : files_in(image_dir))
        if (fs::path(f).extension() != ".txt") image_of.emplace(fs::path(f).stem().string(), f);
      for (const std::string& f : files_in(qa_dir)) {
        if (fs::path(f).extension() != ".txt") continue;
        const std::string stem = fs::path(f).stem().string();
        MmeQuestion b = base;
        b.file = qa_dir + "/" + f;
        const auto img = image_of.find(stem);
        b.image = sub + (split ? "/images/" : "/") + (img == image_of.end() ? stem : img->second);
        const size_t first = out.size();
        read_mme_txt(b.file, b, out);
        if (img == image_of.end())
          for (size_t i = first; i < out.size(); ++i)
            if (out[i].error.empty())
              out[i].error = str_cat(out[i].file, ":", out[i].line, ": no image named ", stem, ".* in ", image_dir);
      }
    } catch (const Error& e) {  // a missing or unlistable subtask folder: one error, the others go on
      MmeQuestion x = base;
      x.file = qa_dir;
      x.error = e.what();
      out.push_back(std::move(x));
    }
  }
  return out;
}

std::vector<MmeQuestion> parse_mme_jsonl(const std::string& text, const std::vector<std::string>& subtasks,
                                         const std::string& where) {
  const std::set<std::string> wanted(subtasks.begin(), subtasks.end());
  std::vector<MmeQuestion> qs;
  const std::vector<JsonLineError> errors = for_each_json_line(text, where, [&](JsonReader& r, int64_t lineno) {
    MmeQuestion q;
    q.file = where;
    q.line = lineno;
    q.image = r.get<std::string>("image");
    if (r.has("category")) {
      q.subtask = r.get<std::string>("category");
    } else {
      const size_t slash = q.image.find('/');
      if (slash == std::string::npos) r.fail_key("category", "is required when \"image\" has no subtask folder");
      q.subtask = q.image.substr(0, slash);
    }
    if (!wanted.count(q.subtask)) return;
    if (r.has("question_id")) q.question_id = r.get<Json>("question_id");
    auto either = [&](const char* key, const char* alias) {
      if (r.has(key) && r.has(alias)) r.fail_key(alias, str_cat("must not be given together with \"", key, "\""));
      if (!r.has(key) && !r.has(alias)) r.fail_key(key, str_cat("is required (or \"", alias, "\")"));
      return r.has(key) ? key : alias;
    };
    const char* qk = either("question", "text");
    q.text = r.get<std::string>(qk);
    const char* ak = either("answer", "label");
    const std::string answer = r.get<std::string>(ak);
    const std::string a = lower(trim(answer));
    if (a != "yes" && a != "no") r.fail_key(ak, str_cat("expected \"Yes\" or \"No\", got \"", answer, "\""));
    q.label_yes = a == "yes";
    qs.push_back(std::move(q));
  });
  // MME scores questions in pairs: an image without exactly two questions cannot be scored.
  std::map<std::pair<std::string, std::string>, int64_t> per_image;
  for (const auto& q : qs) ++per_image[{q.subtask, q.image}];
  for (auto& q : qs) {
    const int64_t n = per_image[{q.subtask, q.image}];
    if (n != 2)
      q.error = str_cat(where, ":", q.line, ": image \"", q.image, "\" (", q.subtask, ") has ", n,
                        " questions; MME asks exactly two per image");
  }
  for (const auto& e : errors) {
    MmeQuestion x;
    x.file = where;
    x.line = e.line;
    x.error = e.message;
    qs.push_back(std::move(x));
  }
  std::stable_sort(qs.begin(), qs.end(), [](const MmeQuestion& a, const MmeQuestion& b) { return a.line < b.line; });
  return qs;
}

std::vector<MmeQuestion> read_mme_jsonl(const std::string& path, const std::vector<std::string>& subtasks) {
  return parse_mme_jsonl(read_text_file(path), subtasks, path);
}

const char* mme_answer_name(MmeAnswer a) {
  switch (a) {
    case MmeAnswer::Yes: return "yes";
    case MmeAnswer::No: return "no";
    case MmeAnswer::Other: return "other";
  }
  return "?";
}

MmeAnswer parse_mme_answer(const std::string& text) {
  const std::string s = lower(trim(text));
  if (s == "yes") return MmeAnswer::Yes;
  if (s == "no") return MmeAnswer::No;
  const std::string prefix = first_chars(s, 4);
  if (prefix.find("yes") != std::string::npos) return MmeAnswer::Yes;
  if (prefix.find("no") != std::string::npos) return MmeAnswer::No;
  return MmeAnswer::Other;
}

MmeReport score_mme(const std::vector<MmeScoredAnswer>& answers) {
  struct Pair {
    int64_t n = 0, right = 0;
  };
  std::map<std::string, std::map<std::string, Pair>> pairs;  // subtask -> image -> answers
  MmeReport r;
  for (const auto& a : answers) {
    const MmeAnswer p = parse_mme_answer(a.answer);
    const bool right = p == (a.label_yes ? MmeAnswer::Yes : MmeAnswer::No);
    MmeSubtaskMetrics& m = r.subtasks[a.subtask];
    ++m.questions;
    m.correct += right;
    m.unparseable += p == MmeAnswer::Other;
    Pair& pr = pairs[a.subtask][a.image];
    ++pr.n;
    pr.right += right;
  }
  for (auto& [name, m] : r.subtasks) {
    for (const auto& [image, pr] : pairs[name])
      if (pr.n == 2) {
        ++m.images;
        m.images_correct += pr.right == 2;
      }
    // calculation.py: accuracy_score(...) * 100 and acc_plus_correct_num / img_num * 100.
    m.acc = m.questions > 0 ? double(m.correct) / double(m.questions) * 100 : 0.0;
    m.acc_plus = m.images > 0 ? double(m.images_correct) / double(m.images) * 100 : 0.0;
    m.score = m.acc + m.acc_plus;
    r.total += m.score;
    r.questions += m.questions;
    r.images += m.images;
    r.unparseable += m.unparseable;
  }
  return r;
}

Json mme_report_json(const MmeReport& r) {
  Json subtasks = Json::object();
  for (const auto& [name, m] : r.subtasks)
    subtasks[name] = Json{{"questions", m.questions}, {"images", m.images},           {"correct", m.correct},
                          {"images_correct", m.images_correct}, {"unparseable", m.unparseable},
                          {"acc", m.acc},             {"acc_plus", m.acc_plus},       {"score", m.score}};
  return Json{{"subtasks", subtasks},   {"total", r.total},   {"max_total", 200.0 * double(r.subtasks.size())},
              {"questions", r.questions}, {"images", r.images}, {"unparseable", r.unparseable}};
}

}  // namespace mmattn
