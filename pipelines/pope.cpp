#include "pipelines/pope.h"

#include <cctype>
#include <sstream>

#include "core/error.h"
#include "core/io.h"

namespace mmattn {

PopeQuestionFile parse_pope_questions(const std::string& text, const std::string& where) {
  PopeQuestionFile out;
  out.errors = for_each_json_line(text, where, [&](JsonReader& r, int64_t lineno) {
    PopeQuestion q;
    q.line = lineno;
    q.question_id = r.get<int64_t>("question_id");
    q.image = r.get<std::string>("image");
    q.text = r.get<std::string>("text");
    const std::string label = r.get<std::string>("label");
    if (label != "yes" && label != "no") r.fail_key("label", str_cat("expected \"yes\" or \"no\", got \"", label, "\""));
    q.label_yes = label == "yes";
    out.questions.push_back(std::move(q));
  });
  return out;
}

PopeQuestionFile read_pope_questions(const std::string& path) { return parse_pope_questions(read_text_file(path), path); }

PopeAnswer parse_pope_answer(const std::string& text) {
  std::string s = text;
  const size_t dot = s.find('.');
  if (dot != std::string::npos) s = s.substr(0, dot);
  std::string nc;
  for (char c : s)
    if (c != ',') nc += c;
  PopeAnswer a;
  // Split on single spaces exactly like Python's str.split(' ').
  size_t start = 0;
  bool no = false;
  while (true) {
    const size_t sp = nc.find(' ', start);
    const std::string w = nc.substr(start, sp == std::string::npos ? std::string::npos : sp - start);
    if (w == "No" || w == "not" || w == "no") no = true;
    if (sp == std::string::npos) break;
    start = sp + 1;
  }
  a.yes = !no;
  // Diagnostic: any yes/no word at all (case-folded, letters only)?
  bool any = false;
  std::string w;
  for (size_t i = 0; i <= nc.size(); ++i) {
    const char c = i < nc.size() ? nc[i] : ' ';
    if (std::isalpha((unsigned char)c)) {
      w += char(std::tolower((unsigned char)c));
    } else {
      if (w == "yes" || w == "no" || w == "not") any = true;
      w.clear();
    }
  }
  a.unparseable = !any;
  return a;
}

void PopeCounts::add(bool label_yes, const PopeAnswer& a) {
  if (a.yes) (label_yes ? tp : fp)++;
  else (label_yes ? fn : tn)++;
  if (a.unparseable) ++unparseable;
}

PopeCounts& PopeCounts::operator+=(const PopeCounts& o) {
  tp += o.tp, fp += o.fp, tn += o.tn, fn += o.fn, unparseable += o.unparseable;
  return *this;
}

PopeMetrics pope_metrics(const PopeCounts& c) {
  auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };
  PopeMetrics m;
  m.counts = c;
  m.accuracy = ratio(double(c.tp + c.tn), double(c.n()));
  m.precision = ratio(double(c.tp), double(c.tp + c.fp));
  m.recall = ratio(double(c.tp), double(c.tp + c.fn));
  m.f1 = ratio(2 * m.precision * m.recall, m.precision + m.recall);
  m.yes_ratio = ratio(double(c.tp + c.fp), double(c.n()));
  return m;
}

PopeReport score_pope(const std::vector<PopeScoredAnswer>& answers) {
  std::map<std::string, PopeCounts> counts;
  PopeCounts all;
  for (const auto& a : answers) {
    const PopeAnswer p = parse_pope_answer(a.answer);
    counts[a.split].add(a.label_yes, p);
    all.add(a.label_yes, p);
  }
  PopeReport r;
  for (const auto& [name, c] : counts) {
    r.splits[name] = pope_metrics(c);
    r.mean_f1 += r.splits[name].f1;
  }
  if (!counts.empty()) r.mean_f1 /= double(counts.size());
  r.overall = pope_metrics(all);
  return r;
}

Json pope_metrics_json(const PopeMetrics& m) {
  const auto& c = m.counts;
  return Json{{"n", c.n()},          {"tp", c.tp},
              {"fp", c.fp},          {"tn", c.tn},
              {"fn", c.fn},          {"unparseable", c.unparseable},
              {"accuracy", m.accuracy}, {"precision", m.precision},
              {"recall", m.recall},  {"f1", m.f1},
              {"yes_ratio", m.yes_ratio}};
}

Json pope_report_json(const PopeReport& r) {
  Json splits = Json::object();
  for (const auto& [name, m] : r.splits) splits[name] = pope_metrics_json(m);
  return Json{{"splits", splits}, {"overall", pope_metrics_json(r.overall)}, {"mean_f1", r.mean_f1}};
}

}  // namespace mmattn
