#include "pipelines/eval_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/io.h"
#include "pipelines/mme.h"

namespace mmattn {
namespace {

using Opt = std::optional<double>;

// ---------------------------------------------------------------------------------------------
// Reading the summary: structure is checked, values are optional.

const Json* member(const Json* j, const char* key) {
  if (!j || !j->is_object()) return nullptr;
  const auto it = j->find(key);
  return it == j->end() || it->is_null() ? nullptr : &*it;
}

Opt number(const Json* j, const char* key) {
  const Json* v = member(j, key);
  if (!v || !v->is_number()) return std::nullopt;
  const double x = v->get<double>();
  return std::isfinite(x) ? Opt(x) : std::nullopt;
}

std::string dump_json(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

std::string text_of(const Json* v) {
  if (!v) return "";
  return v->is_string() ? v->get<std::string>() : dump_json(*v);
}

struct Variant {
  std::string name;
  std::string config;  // compact JSON, "" when absent
  Opt n, errors, rate;
};

struct PopeCell {
  Opt acc, prec, rec, f1, yes, unparsed;
};

struct PopeRow {
  Variant v;
  std::map<std::string, PopeCell> splits;
  PopeCell overall;
};

struct ChairRow {
  Variant v;
  Opt chair_s, chair_i, recall, len;
};

// MME units: acc and acc+ in % (0-100), score = acc + acc+ (0-200).
struct MmeCell {
  Opt acc, acc_plus, score, questions, images;
};

struct MmeRow {
  Variant v;
  std::map<std::string, MmeCell> subtasks;
  Opt total, max_total, unparsed;
};

struct Summary {
  std::vector<std::pair<std::string, std::string>> meta;  // label, value
  bool has_pope = false, has_chair = false, has_mme = false;
  std::vector<std::string> pope_splits;  // union over the variants, sorted
  std::vector<PopeRow> pope;
  std::vector<ChairRow> chair;
  std::vector<std::string> mme_subtasks;  // union over the variants: MME's order, then others sorted
  std::vector<MmeRow> mme;
  std::vector<std::string> other_benchmarks;  // present but not rendered
};

PopeCell pope_cell(const Json* m) {
  return {number(m, "accuracy"), number(m, "precision"), number(m, "recall"),
          number(m, "f1"),       number(m, "yes_ratio"), number(m, "unparseable")};
}

std::vector<const Json*> variants_of(const Json& bench, const std::string& name) {
  const std::string where = "eval summary: $.benchmarks." + name;
  MMATTN_CHECK(bench.is_object(), FormatError, where, ": expected an object, got ", json_type_desc(bench));
  std::vector<const Json*> out;
  const Json* vs = member(&bench, "variants");
  if (!vs) return out;
  MMATTN_CHECK(vs->is_array(), FormatError, where, ".variants: expected an array, got ", json_type_desc(*vs));
  for (size_t i = 0; i < vs->size(); ++i) {
    const Json& v = (*vs)[i];
    MMATTN_CHECK(v.is_object(), FormatError, where, ".variants[", i, "]: expected an object, got ", json_type_desc(v));
    out.push_back(&v);
  }
  return out;
}

Variant read_variant(const Json* j, size_t index, const char* rate_key) {
  Variant v;
  v.name = text_of(member(j, "name"));
  if (v.name.empty()) v.name = str_cat("variant ", index + 1);
  if (const Json* c = member(j, "config")) v.config = dump_json(*c);
  v.n = number(j, "n");
  v.errors = number(j, "errors");
  v.rate = number(j, rate_key);
  return v;
}

Summary read_summary(const Json& s) {
  MMATTN_CHECK(s.is_object(), FormatError, "eval summary: expected an object, got ", json_type_desc(s));
  Summary out;
  const std::pair<const char*, const char*> meta[] = {
      {"model", "Model"}, {"device", "Device"}, {"date", "Date"}, {"commit", "Commit"}};
  for (const auto& [key, label] : meta)
    if (const Json* v = member(&s, key)) out.meta.emplace_back(label, text_of(v));

  const Json* b = member(&s, "benchmarks");
  if (!b) return out;
  MMATTN_CHECK(b->is_object(), FormatError, "eval summary: $.benchmarks: expected an object, got ", json_type_desc(*b));
  for (const auto& [key, value] : b->items())
    if (key != "pope" && key != "chair" && key != "mme") out.other_benchmarks.push_back(key);

  if (const Json* p = member(b, "pope")) {
    out.has_pope = true;
    std::set<std::string> splits;
    const auto vs = variants_of(*p, "pope");
    for (size_t i = 0; i < vs.size(); ++i) {
      PopeRow r;
      r.v = read_variant(vs[i], i, "questions_per_s");
      if (const Json* sp = member(vs[i], "splits"); sp && sp->is_object())
        for (const auto& [name, m] : sp->items()) {
          r.splits[name] = pope_cell(&m);
          splits.insert(name);
        }
      r.overall = pope_cell(member(vs[i], "overall"));
      out.pope.push_back(std::move(r));
    }
    out.pope_splits.assign(splits.begin(), splits.end());
  }
  if (const Json* c = member(b, "chair")) {
    out.has_chair = true;
    const auto vs = variants_of(*c, "chair");
    for (size_t i = 0; i < vs.size(); ++i) {
      ChairRow r;
      r.v = read_variant(vs[i], i, "captions_per_s");
      const Json* m = member(vs[i], "metrics");
      r.chair_s = number(m, "chair_s");
      r.chair_i = number(m, "chair_i");
      r.recall = number(m, "recall");
      r.len = number(m, "avg_len");
      if (!r.len) r.len = number(m, "len");  // chair_report_json's name for it
      out.chair.push_back(std::move(r));
    }
  }
  if (const Json* m = member(b, "mme")) {
    out.has_mme = true;
    std::set<std::string> subtasks;
    const auto vs = variants_of(*m, "mme");
    for (size_t i = 0; i < vs.size(); ++i) {
      MmeRow r;
      r.v = read_variant(vs[i], i, "questions_per_s");
      if (const Json* st = member(vs[i], "subtasks"); st && st->is_object())
        for (const auto& [name, c] : st->items()) {
          r.subtasks[name] = {number(&c, "acc"), number(&c, "acc_plus"), number(&c, "score"), number(&c, "questions"),
                              number(&c, "images")};
          subtasks.insert(name);
        }
      r.total = number(vs[i], "total");
      r.max_total = number(vs[i], "max_total");
      r.unparsed = number(vs[i], "unparseable");
      out.mme.push_back(std::move(r));
    }
    for (const auto& name : mme_all_subtasks())
      if (subtasks.erase(name)) out.mme_subtasks.push_back(name);
    out.mme_subtasks.insert(out.mme_subtasks.end(), subtasks.begin(), subtasks.end());
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Number formatting and escaping.

std::string fixed(double x, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, x + 0.0);  // + 0.0: no "-0"
  return buf;
}
std::string pct(Opt x) { return x ? fixed(*x * 100, 1) : "-"; }
std::string dec1(Opt x) { return x ? fixed(*x, 1) : "-"; }
std::string count(Opt x) { return x ? fixed(*x, 0) : "-"; }

std::string html_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// Plain text inside Markdown (table cells included): punctuation that Markdown or inline HTML
// would interpret gets a backslash (CommonMark escapes); line breaks become spaces.
std::string md_escape(const std::string& s) {
  static const std::string special = "\\`*_[]<>|&~";
  std::string out;
  for (char c : s) {
    if (c == '\n' || c == '\r' || c == '\t') {
      out += ' ';
      continue;
    }
    if (special.find(c) != std::string::npos) out += '\\';
    out += c;
  }
  return out;
}

// A Markdown code span holding `s` verbatim: the fence is one backtick longer than the longest
// run of backticks inside.
std::string md_code(const std::string& s) {
  size_t longest = 0, run = 0;
  for (char c : s) {
    run = c == '`' ? run + 1 : 0;
    longest = std::max(longest, run);
  }
  const std::string fence(longest + 1, '`');
  const bool pad = !s.empty() && (s.front() == '`' || s.back() == '`');
  return fence + (pad ? " " : "") + s + (pad ? " " : "") + fence;
}

// At most `max_chars` UTF-8 characters, "..." appended when cut.
std::string truncate_utf8(const std::string& s, size_t max_chars) {
  size_t chars = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) continue;
    if (chars++ == max_chars) return s.substr(0, i) + "...";
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// Tables, rendered as Markdown or HTML. A column may belong to a group ("random", "Overall"): in
// Markdown its header is "<group> <label>", in HTML the group is a spanning header row. Labels are
// fixed text (not escaped in Markdown); groups and cells come from the summary (escaped).

struct Column {
  std::string group, label;
};
struct Table {
  std::vector<Column> columns;  // the first one holds the variant name
  std::vector<std::vector<std::string>> rows;
};

Table pope_table(const Summary& s) {
  Table t;
  t.columns.push_back({"", "Variant"});
  for (const auto& split : s.pope_splits)
    for (const char* label : {"Acc", "F1", "Yes%"}) t.columns.push_back({split, label});
  for (const char* label : {"Acc", "Prec", "Rec", "F1", "Yes%"}) t.columns.push_back({"Overall", label});
  t.columns.push_back({"", "Unparsed"});
  t.columns.push_back({"", "Errors"});
  for (const auto& r : s.pope) {
    std::vector<std::string> row = {r.v.name};
    for (const auto& split : s.pope_splits) {
      const auto it = r.splits.find(split);
      const PopeCell c = it == r.splits.end() ? PopeCell{} : it->second;
      row.insert(row.end(), {pct(c.acc), pct(c.f1), pct(c.yes)});
    }
    const PopeCell& o = r.overall;
    row.insert(row.end(), {pct(o.acc), pct(o.prec), pct(o.rec), pct(o.f1), pct(o.yes), count(o.unparsed), count(r.v.errors)});
    t.rows.push_back(std::move(row));
  }
  return t;
}

Table mme_table(const Summary& s) {
  Table t;
  t.columns.push_back({"", "Variant"});
  for (const auto& sub : s.mme_subtasks)
    for (const char* label : {"Acc", "Acc+", "Score"}) t.columns.push_back({sub, label});
  for (const char* label : {"Total", "Unparsed", "Errors"}) t.columns.push_back({"", label});
  for (const auto& r : s.mme) {
    std::vector<std::string> row = {r.v.name};
    for (const auto& sub : s.mme_subtasks) {
      const auto it = r.subtasks.find(sub);
      const MmeCell c = it == r.subtasks.end() ? MmeCell{} : it->second;
      row.insert(row.end(), {dec1(c.acc), dec1(c.acc_plus), dec1(c.score)});
    }
    row.insert(row.end(), {dec1(r.total), count(r.unparsed), count(r.v.errors)});
    t.rows.push_back(std::move(row));
  }
  return t;
}

Table chair_table(const Summary& s) {
  Table t;
  for (const char* label : {"Variant", "CHAIR_s", "CHAIR_i", "Recall", "Len", "Errors"}) t.columns.push_back({"", label});
  for (const auto& r : s.chair)
    t.rows.push_back({r.v.name, pct(r.chair_s), pct(r.chair_i), pct(r.recall), dec1(r.len), count(r.v.errors)});
  return t;
}

std::string table_markdown(const Table& t) {
  std::ostringstream os;
  os << "|";
  for (const auto& c : t.columns) os << " " << (c.group.empty() ? "" : md_escape(c.group) + " ") << c.label << " |";
  os << "\n|";
  for (size_t i = 0; i < t.columns.size(); ++i) os << (i == 0 ? ":---|" : "---:|");
  os << "\n";
  for (const auto& row : t.rows) {
    os << "|";
    for (const auto& cell : row) os << " " << md_escape(cell) << " |";
    os << "\n";
  }
  return os.str();
}

std::string table_html(const Table& t) {
  std::ostringstream os;
  os << "<table>\n<thead>\n<tr>";
  const bool grouped = std::any_of(t.columns.begin(), t.columns.end(), [](const Column& c) { return !c.group.empty(); });
  for (size_t i = 0; i < t.columns.size();) {
    const Column& c = t.columns[i];
    if (c.group.empty()) {
      os << (grouped ? "<th rowspan=\"2\">" : "<th>") << html_escape(c.label) << "</th>";
      ++i;
      continue;
    }
    size_t span = 1;
    while (i + span < t.columns.size() && t.columns[i + span].group == c.group) ++span;
    os << "<th colspan=\"" << span << "\">" << html_escape(c.group) << "</th>";
    i += span;
  }
  os << "</tr>\n";
  if (grouped) {
    os << "<tr>";
    for (const auto& c : t.columns)
      if (!c.group.empty()) os << "<th>" << html_escape(c.label) << "</th>";
    os << "</tr>\n";
  }
  os << "</thead>\n<tbody>\n";
  for (const auto& row : t.rows) {
    os << "<tr>";
    for (size_t i = 0; i < row.size(); ++i)
      os << (i == 0 ? "<td>" : "<td class=\"num\">") << html_escape(row[i]) << "</td>";
    os << "</tr>\n";
  }
  os << "</tbody>\n</table>\n";
  return os.str();
}

// n, throughput and config of each variant.
struct Details {
  std::string name, n, rate, config;  // rate "" when unknown
  std::string extra;                  // e.g. MME's questions / images per subtask; "" when none
};
std::vector<Details> details(const std::vector<Variant>& vs, const std::string& unit) {
  std::vector<Details> out;
  for (const auto& v : vs) out.push_back({v.name, count(v.n), v.rate ? fixed(*v.rate, 2) + " " + unit : "", v.config, ""});
  return out;
}

// "questions / images: existence 60 / 30, count 60 / 30" (the counts behind acc and acc+).
std::vector<Details> mme_details(const Summary& s) {
  std::vector<Details> out;
  for (const auto& r : s.mme) {
    Details d = details({r.v}, "questions/s")[0];
    for (const auto& sub : s.mme_subtasks) {
      const auto it = r.subtasks.find(sub);
      if (it == r.subtasks.end()) continue;
      d.extra += (d.extra.empty() ? "questions / images: " : ", ") + sub + " " + count(it->second.questions) + " / " +
                 count(it->second.images);
    }
    out.push_back(std::move(d));
  }
  return out;
}

std::string details_markdown(const std::vector<Details>& ds) {
  std::ostringstream os;
  os << "Variants:\n\n";
  for (const auto& d : ds) {
    os << "- " << md_escape(d.name) << ": n = " << d.n;
    if (!d.rate.empty()) os << ", " << md_escape(d.rate);
    if (!d.extra.empty()) os << ", " << md_escape(d.extra);
    if (!d.config.empty()) os << ", config " << md_code(d.config);
    os << "\n";
  }
  return os.str();
}

std::string details_html(const std::vector<Details>& ds) {
  std::ostringstream os;
  const bool extra = std::any_of(ds.begin(), ds.end(), [](const Details& d) { return !d.extra.empty(); });
  os << "<table class=\"configs\">\n<thead>\n<tr><th>Variant</th><th>N</th><th>Throughput</th>"
     << (extra ? "<th>Counts</th>" : "") << "<th>Config</th></tr>\n</thead>\n<tbody>\n";
  for (const auto& d : ds) {
    os << "<tr><td>" << html_escape(d.name) << "</td><td class=\"num\">" << d.n << "</td><td class=\"num\">"
       << (d.rate.empty() ? "-" : html_escape(d.rate)) << "</td>";
    if (extra) os << "<td>" << html_escape(d.extra) << "</td>";
    os << "<td><code>" << html_escape(d.config) << "</code></td></tr>\n";
  }
  os << "</tbody>\n</table>\n";
  return os.str();
}

template <class Row>
std::vector<Variant> variants(const std::vector<Row>& rows) {
  std::vector<Variant> out;
  for (const auto& r : rows) out.push_back(r.v);
  return out;
}

const char* const kPopeLegend =
    "Acc, F1 and Yes% per split, then overall (pooled over the splits) accuracy, precision, recall, F1 "
    "and yes-ratio, all in %. Unparsed: answers without a yes/no word (still classified by POPE's rule). "
    "Errors: questions that failed.";
const char* const kChairLegend =
    "CHAIR_s: captions with a hallucinated object; CHAIR_i: hallucinated object mentions; Recall: "
    "ground-truth objects mentioned; all in %. Len: tokens per caption. Errors: images that failed.";
const char* const kMmeLegend =
    "Per subtask, as MME's calculation.py: Acc = % of questions right, Acc+ = % of images with both "
    "questions right, Score = Acc + Acc+ (max 200); Total = sum of the subtask scores (max 800 for the "
    "four hallucination subtasks). Unparsed: answers that are neither yes nor no (counted wrong). "
    "Errors: questions that failed.";
const char* const kNoVariants = "No variants were evaluated.";

// ---------------------------------------------------------------------------------------------
// SVG charts. All values are in percent.

const char* const kPalette[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                                "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};

// One colour per variant name, by first appearance (POPE, then CHAIR, then MME).
std::map<std::string, std::string> variant_colors(const Summary& s) {
  std::map<std::string, std::string> out;
  auto add = [&](const std::string& name) {
    if (!out.count(name)) out[name] = kPalette[out.size() % std::size(kPalette)];
  };
  for (const auto& r : s.pope) add(r.v.name);
  for (const auto& r : s.chair) add(r.v.name);
  for (const auto& r : s.mme) add(r.v.name);
  return out;
}

std::string px(double x) { return fixed(x, 1); }

struct Axis {
  double lo = 0, hi = 100, step = 20;
  int decimals() const { return step >= 1 ? 0 : step >= 0.1 ? 1 : 2; }
  int ticks() const { return int(std::lround((hi - lo) / step)); }
  double tick(int k) const { return lo + k * step; }
};

// 1, 2 or 5 times a power of ten, >= raw (> 0).
double nice_step(double raw) {
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}
// 0 .. a tick at or above `max`.
Axis axis_from_zero(double max) {
  const double step = nice_step(std::max(max, 1.0) / 5);
  return {0, std::max(step, std::ceil(max / step - 1e-9) * step), step};
}
// A padded range around [lo, hi], never below 0; at least 4 points wide, so that one point or
// close points do not suggest false precision.
Axis axis_around(double lo, double hi) {
  const double pad = std::max((hi - lo) * 0.1, 2.0);
  lo = std::max(0.0, lo - pad);
  hi += pad;
  const double step = nice_step((hi - lo) / 5);
  return {std::floor(lo / step + 1e-9) * step, std::ceil(hi / step - 1e-9) * step, step};
}

std::string svg_open(double w, double h, const std::string& title) {
  std::ostringstream os;
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << px(w) << "\" height=\"" << px(h) << "\" viewBox=\"0 0 "
     << px(w) << " " << px(h) << "\" font-family=\"sans-serif\" role=\"img\" aria-label=\"" << html_escape(title) << "\">\n"
     << "<title>" << html_escape(title) << "</title>\n"
     << "<rect width=\"" << px(w) << "\" height=\"" << px(h) << "\" fill=\"#ffffff\"/>\n"
     << "<text x=\"" << px(w / 2) << "\" y=\"22.0\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">"
     << html_escape(title) << "</text>\n";
  return os.str();
}

struct Bar {
  std::string label, color;
  double value = 0;
};
struct BarChart {
  std::string title, y_title;
  std::vector<Bar> bars;
  Axis axis;
  Opt ref;                 // a dashed horizontal line at this value
  std::string unit = "%";  // after values in tooltips and the reference line
};

// Geometry of bar charts: the plot area is kPlotH high; each bar sits in a kSlot wide slot.
constexpr double kBarTop = 44, kPlotH = 200, kBarBottom = 84, kBarLeft = 60, kBarRight = 36;
constexpr double kSlot = 72, kBarW = 40, kMinPlotW = 216;

std::string svg_bar_chart(const BarChart& c) {
  const double pw = std::max(kMinPlotW, kSlot * double(c.bars.size()));
  const double w = kBarLeft + pw + kBarRight, h = kBarTop + kPlotH + kBarBottom;
  const double base = kBarTop + kPlotH;
  const Axis& a = c.axis;
  auto y_of = [&](double v) { return base - (std::clamp(v, a.lo, a.hi) - a.lo) / (a.hi - a.lo) * kPlotH; };
  std::ostringstream os;
  os << svg_open(w, h, c.title);
  for (int k = 0; k <= a.ticks(); ++k) {
    const double v = a.tick(k), y = y_of(v);
    os << "<line x1=\"" << px(kBarLeft) << "\" y1=\"" << px(y) << "\" x2=\"" << px(kBarLeft + pw) << "\" y2=\"" << px(y)
       << "\" stroke=\"#e5e7eb\"/>\n"
       << "<text x=\"" << px(kBarLeft - 6) << "\" y=\"" << px(y + 4) << "\" text-anchor=\"end\" font-size=\"11\">"
       << fixed(v, a.decimals()) << "</text>\n";
  }
  os << "<text transform=\"translate(16.0," << px(kBarTop + kPlotH / 2) << ") rotate(-90)\" text-anchor=\"middle\" "
     << "font-size=\"12\">" << html_escape(c.y_title) << "</text>\n";
  const double x0 = kBarLeft + (pw - kSlot * double(c.bars.size())) / 2;
  for (size_t i = 0; i < c.bars.size(); ++i) {
    const Bar& b = c.bars[i];
    const double cx = x0 + kSlot * (double(i) + 0.5), y = y_of(b.value);
    os << "<g>\n<title>" << html_escape(b.label) << ": " << fixed(b.value, 1) << html_escape(c.unit) << "</title>\n"
       << "<rect x=\"" << px(cx - kBarW / 2) << "\" y=\"" << px(y) << "\" width=\"" << px(kBarW) << "\" height=\""
       << px(base - y) << "\" fill=\"" << b.color << "\"/>\n"
       << "<text x=\"" << px(cx) << "\" y=\"" << px(y - 4) << "\" text-anchor=\"middle\" font-size=\"11\">"
       << fixed(b.value, 1) << "</text>\n"
       << "<text transform=\"translate(" << px(cx + 4) << "," << px(base + 14) << ") rotate(-35)\" text-anchor=\"end\" "
       << "font-size=\"11\">" << html_escape(truncate_utf8(b.label, 18)) << "</text>\n</g>\n";
  }
  if (c.ref) {
    const double y = y_of(*c.ref);
    os << "<line x1=\"" << px(kBarLeft) << "\" y1=\"" << px(y) << "\" x2=\"" << px(kBarLeft + pw) << "\" y2=\"" << px(y)
       << "\" stroke=\"#444444\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/>\n"
       << "<text x=\"" << px(kBarLeft + pw + 4) << "\" y=\"" << px(y + 4) << "\" font-size=\"11\" "
       << "fill=\"#444444\">" << fixed(*c.ref, 0) << html_escape(c.unit) << "</text>\n";
  }
  os << "<line x1=\"" << px(kBarLeft) << "\" y1=\"" << px(kBarTop) << "\" x2=\"" << px(kBarLeft) << "\" y2=\"" << px(base)
     << "\" stroke=\"#333333\"/>\n"
     << "<line x1=\"" << px(kBarLeft) << "\" y1=\"" << px(base) << "\" x2=\"" << px(kBarLeft + pw) << "\" y2=\"" << px(base)
     << "\" stroke=\"#333333\"/>\n</svg>\n";
  return os.str();
}

struct Point {
  std::string label, color;
  double x = 0, y = 0;
};
struct Scatter {
  std::string title, subtitle, x_title, y_title;
  std::vector<Point> points;
};

constexpr double kScTop = 56, kScPlotH = 260, kScBottom = 56, kScLeft = 64, kScPlotW = 400, kScRight = 32;

std::string svg_scatter(const Scatter& c) {
  const double w = kScLeft + kScPlotW + kScRight, h = kScTop + kScPlotH + kScBottom;
  const double base = kScTop + kScPlotH;
  auto range = [&](auto get) {
    double lo = get(c.points[0]), hi = lo;
    for (const auto& p : c.points) lo = std::min(lo, get(p)), hi = std::max(hi, get(p));
    return axis_around(lo, hi);
  };
  const Axis ax = range([](const Point& p) { return p.x; });
  const Axis ay = range([](const Point& p) { return p.y; });
  auto x_of = [&](double v) { return kScLeft + (v - ax.lo) / (ax.hi - ax.lo) * kScPlotW; };
  auto y_of = [&](double v) { return base - (v - ay.lo) / (ay.hi - ay.lo) * kScPlotH; };
  std::ostringstream os;
  os << svg_open(w, h, c.title);
  os << "<text x=\"" << px(w / 2) << "\" y=\"40.0\" text-anchor=\"middle\" font-size=\"11\" fill=\"#555555\">"
     << html_escape(c.subtitle) << "</text>\n";
  for (int k = 0; k <= ax.ticks(); ++k) {
    const double v = ax.tick(k), x = x_of(v);
    os << "<line x1=\"" << px(x) << "\" y1=\"" << px(kScTop) << "\" x2=\"" << px(x) << "\" y2=\"" << px(base)
       << "\" stroke=\"#e5e7eb\"/>\n"
       << "<text x=\"" << px(x) << "\" y=\"" << px(base + 16) << "\" text-anchor=\"middle\" font-size=\"11\">"
       << fixed(v, ax.decimals()) << "</text>\n";
  }
  for (int k = 0; k <= ay.ticks(); ++k) {
    const double v = ay.tick(k), y = y_of(v);
    os << "<line x1=\"" << px(kScLeft) << "\" y1=\"" << px(y) << "\" x2=\"" << px(kScLeft + kScPlotW) << "\" y2=\""
       << px(y) << "\" stroke=\"#e5e7eb\"/>\n"
       << "<text x=\"" << px(kScLeft - 6) << "\" y=\"" << px(y + 4) << "\" text-anchor=\"end\" font-size=\"11\">"
       << fixed(v, ay.decimals()) << "</text>\n";
  }
  os << "<line x1=\"" << px(kScLeft) << "\" y1=\"" << px(kScTop) << "\" x2=\"" << px(kScLeft) << "\" y2=\"" << px(base)
     << "\" stroke=\"#333333\"/>\n"
     << "<line x1=\"" << px(kScLeft) << "\" y1=\"" << px(base) << "\" x2=\"" << px(kScLeft + kScPlotW) << "\" y2=\""
     << px(base) << "\" stroke=\"#333333\"/>\n"
     << "<text x=\"" << px(kScLeft + kScPlotW / 2) << "\" y=\"" << px(base + 40) << "\" text-anchor=\"middle\" "
     << "font-size=\"12\">" << html_escape(c.x_title) << "</text>\n"
     << "<text transform=\"translate(18.0," << px(kScTop + kScPlotH / 2) << ") rotate(-90)\" text-anchor=\"middle\" "
     << "font-size=\"12\">" << html_escape(c.y_title) << "</text>\n";
  for (const auto& p : c.points) {
    const double x = x_of(p.x), y = y_of(p.y);
    const bool left = x > kScLeft + 0.65 * kScPlotW;  // label on the side with room
    os << "<g>\n<title>" << html_escape(p.label) << ": " << html_escape(c.x_title) << " " << fixed(p.x, 1) << ", "
       << html_escape(c.y_title) << " " << fixed(p.y, 1) << "</title>\n"
       << "<circle cx=\"" << px(x) << "\" cy=\"" << px(y) << "\" r=\"5.0\" fill=\"" << p.color
       << "\" stroke=\"#333333\" stroke-width=\"0.5\"/>\n"
       << "<text x=\"" << px(left ? x - 8 : x + 8) << "\" y=\"" << px(y + 4) << "\" text-anchor=\""
       << (left ? "end" : "start") << "\" font-size=\"11\">" << html_escape(truncate_utf8(p.label, 24)) << "</text>\n</g>\n";
  }
  os << "</svg>\n";
  return os.str();
}

// A chart, or a note when it has nothing to plot.
std::string chart_or_note(const std::string& svg, const std::string& what) {
  return svg.empty() ? "<p class=\"note\">No " + html_escape(what) + " values to plot.</p>\n" : svg;
}

std::string pope_charts(const Summary& s, const std::map<std::string, std::string>& colors) {
  BarChart f1{"POPE F1 (overall)", "F1 (%)", {}, {0, 100, 20}, std::nullopt};
  BarChart yes{"POPE yes-ratio (overall)", "Yes-ratio (%)", {}, {0, 100, 20}, 50.0};
  for (const auto& r : s.pope) {
    if (r.overall.f1) f1.bars.push_back({r.v.name, colors.at(r.v.name), *r.overall.f1 * 100});
    if (r.overall.yes) yes.bars.push_back({r.v.name, colors.at(r.v.name), *r.overall.yes * 100});
  }
  return chart_or_note(f1.bars.empty() ? "" : svg_bar_chart(f1), "F1") +
         chart_or_note(yes.bars.empty() ? "" : svg_bar_chart(yes), "yes-ratio");
}

std::string chair_charts(const Summary& s, const std::map<std::string, std::string>& colors) {
  Scatter sc{"CHAIR_i vs Recall", "lower CHAIR_i and higher recall is better", "CHAIR_i (%)", "Recall (%)", {}};
  BarChart bars{"CHAIR_s per variant", "CHAIR_s (%)", {}, {}, std::nullopt};
  double max_s = 0;
  for (const auto& r : s.chair) {
    if (r.chair_i && r.recall) sc.points.push_back({r.v.name, colors.at(r.v.name), *r.chair_i * 100, *r.recall * 100});
    if (r.chair_s) {
      bars.bars.push_back({r.v.name, colors.at(r.v.name), *r.chair_s * 100});
      max_s = std::max(max_s, *r.chair_s * 100);
    }
  }
  bars.axis = axis_from_zero(max_s);
  return chart_or_note(sc.points.empty() ? "" : svg_scatter(sc), "CHAIR_i / recall") +
         chart_or_note(bars.bars.empty() ? "" : svg_bar_chart(bars), "CHAIR_s");
}

std::string mme_charts(const Summary& s, const std::map<std::string, std::string>& colors) {
  // A fixed axis up to the most a variant can score: 200 per subtask (800 for the four).
  double top = 200.0 * double(std::max<size_t>(s.mme_subtasks.size(), 1));
  for (const auto& r : s.mme)
    if (r.max_total && *r.max_total > 0) top = std::max(top, *r.max_total);
  BarChart total{"MME score (total)", "Score", {}, {0, top, top / 4}, std::nullopt, ""};
  for (const auto& r : s.mme)
    if (r.total) total.bars.push_back({r.v.name, colors.at(r.v.name), *r.total});
  return chart_or_note(total.bars.empty() ? "" : svg_bar_chart(total), "MME score");
}

// One benchmark's part of the report.
struct Section {
  std::string title;
  bool empty = true;  // no variants
  Table table;
  std::string legend;
  std::vector<Details> details;
  std::string charts;  // HTML only
};

// The benchmarks present in the summary, in report order; charts only when `colors` is given.
std::vector<Section> sections(const Summary& s, const std::map<std::string, std::string>* colors) {
  std::vector<Section> out;
  if (s.has_pope)
    out.push_back({"POPE", s.pope.empty(), pope_table(s), kPopeLegend, details(variants(s.pope), "questions/s"),
                   colors && !s.pope.empty() ? pope_charts(s, *colors) : ""});
  if (s.has_chair)
    out.push_back({"CHAIR", s.chair.empty(), chair_table(s), kChairLegend, details(variants(s.chair), "captions/s"),
                   colors && !s.chair.empty() ? chair_charts(s, *colors) : ""});
  if (s.has_mme)
    out.push_back({"MME (hallucination)", s.mme.empty(), mme_table(s), kMmeLegend, mme_details(s),
                   colors && !s.mme.empty() ? mme_charts(s, *colors) : ""});
  return out;
}

const char* const kCss = R"(body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222222;
       max-width: 1400px; margin: 24px auto; padding: 0 16px; }
h1 { font-size: 24px; margin-bottom: 8px; }
h2 { font-size: 20px; margin-top: 32px; border-bottom: 1px solid #dddddd; padding-bottom: 4px; }
h3 { font-size: 15px; margin-top: 20px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #d0d0d0; padding: 4px 8px; vertical-align: top; }
th { background: #f3f4f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.meta th { text-align: left; }
table.configs code { font-size: 12px; word-break: break-all; }
.legend, .note { color: #555555; font-size: 13px; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; margin-top: 12px; }
.charts svg { border: 1px solid #e5e7eb; }
)";

}  // namespace

std::string eval_report_markdown(const Json& summary) {
  const Summary s = read_summary(summary);
  std::ostringstream os;
  os << "# mmattn evaluation report\n\n";
  for (const auto& [label, value] : s.meta)
    os << "- " << label << ": " << (label == "Model" || label == "Commit" ? md_code(value) : md_escape(value)) << "\n";
  if (!s.meta.empty()) os << "\n";
  const std::vector<Section> secs = sections(s, nullptr);
  for (const Section& sec : secs) {
    os << "## " << sec.title << "\n\n";
    if (sec.empty) {
      os << kNoVariants << "\n\n";
    } else {
      os << table_markdown(sec.table) << "\n" << sec.legend << "\n\n" << details_markdown(sec.details) << "\n";
    }
  }
  if (secs.empty()) os << "No benchmark results in this summary.\n\n";
  if (!s.other_benchmarks.empty()) {
    os << "Not rendered (no report layout yet):";
    for (const auto& b : s.other_benchmarks) os << " " << md_escape(b);
    os << "\n";
  }
  std::string out = os.str();
  while (out.size() >= 2 && out[out.size() - 1] == '\n' && out[out.size() - 2] == '\n') out.pop_back();
  return out;
}

std::string eval_report_html(const Json& summary) {
  const Summary s = read_summary(summary);
  const auto colors = variant_colors(s);
  std::ostringstream os;
  os << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
     << "<title>mmattn evaluation report</title>\n<style>\n" << kCss << "</style>\n</head>\n<body>\n"
     << "<h1>mmattn evaluation report</h1>\n";
  if (!s.meta.empty()) {
    os << "<table class=\"meta\">\n";
    for (const auto& [label, value] : s.meta) os << "<tr><th>" << label << "</th><td>" << html_escape(value) << "</td></tr>\n";
    os << "</table>\n";
  }
  const std::vector<Section> secs = sections(s, &colors);
  for (const Section& sec : secs) {
    os << "<h2>" << html_escape(sec.title) << "</h2>\n";
    if (sec.empty) {
      os << "<p class=\"note\">" << kNoVariants << "</p>\n";
    } else {
      os << table_html(sec.table) << "<p class=\"legend\">" << html_escape(sec.legend) << "</p>\n"
         << "<div class=\"charts\">\n" << sec.charts << "</div>\n"
         << "<h3>Variants</h3>\n" << details_html(sec.details);
    }
  }
  if (secs.empty()) os << "<p class=\"note\">No benchmark results in this summary.</p>\n";
  if (!s.other_benchmarks.empty()) {
    os << "<p class=\"note\">Not rendered (no report layout yet):";
    for (const auto& b : s.other_benchmarks) os << " " << html_escape(b);
    os << "</p>\n";
  }
  os << "</body>\n</html>\n";
  return os.str();
}

void write_eval_reports(const Json& summary, const std::string& dir) {
  const std::string md = eval_report_markdown(summary);
  const std::string html = eval_report_html(summary);
  write_file_atomic(resolve_path(dir, "summary.md"), md);
  write_file_atomic(resolve_path(dir, "report.html"), html);
}

}  // namespace mmattn
