#pragma once
// Reports of a batch evaluation (`mmattn eval`), made from the runner's summary.json:
// summary.md (Markdown tables) and report.html (one self-contained page: the same tables plus
// inline SVG charts; no scripts, no external resources).
//
// Input (every value may be missing; a missing or non-numeric value is shown as "-"):
//   {"model": str, "device": str, "date": str, "commit": str,
//    "benchmarks": {
//      "pope":  {"variants": [{"name", "config": {...}, "n", "errors",
//                              "splits": {split: M}, "overall": M, "mean_f1", "questions_per_s"}]},
//      "chair": {"variants": [{"name", "config": {...}, "n", "errors",
//                              "metrics": {"chair_s", "chair_i", "recall", "avg_len" (or "len"),
//                                          "avg_words", "n_captions", ...},
//                              "captions_per_s"}]},
//      "mme":   {"variants": [{"name", "config": {...}, "n", "errors",
//                              "subtasks": {subtask: {"acc", "acc_plus", "score", "questions", "images", ...}},
//                              "total", "max_total", "unparseable", "questions_per_s"}]}}}
//   M = pope_metrics_json(): {"n","tp","fp","tn","fn","unparseable","accuracy","precision",
//   "recall","f1","yes_ratio"}; ratios are fractions in [0, 1]. MME's values are in MME's units
//   (mme_report_json(): acc and acc_plus in %, score = acc + acc_plus, total = sum of the scores).
//   Any benchmark may be absent and a variants list may be empty. A summary that is not an object, "benchmarks" that is not an
//   object, or "variants" that is not an array of objects is a FormatError.
//
// Markdown (summary.md): the run's model / device / date / commit, then per benchmark one table
// with a row per variant (in summary order), then each variant's n, throughput and config:
//   POPE:  Variant | <split> Acc | <split> F1 | <split> Yes% (for each split, sorted by name) |
//          Acc | Prec | Rec | F1 | Yes% (overall, pooled over the splits) | Unparsed | Errors
//   CHAIR: Variant | CHAIR_s | CHAIR_i | Recall | Len | Errors
//   MME:   Variant | <subtask> Acc | <subtask> Acc+ | <subtask> Score (for each subtask: existence,
//          count, position, color in MME's order, then any others by name) | Total | Unparsed | Errors
//          (values as given, one decimal); each variant's line below also lists
//          "questions / images: <subtask> q / i, ...".
// Ratios are percentages with one decimal (0.8531 -> "85.3"); Len is avg_len (tokens per
// caption, one decimal); Unparsed (overall answers with no yes/no word; MME: answers parsed as
// "other") and Errors are counts.
// Text is backslash-escaped for Markdown (a variant named "a|b" stays in its cell).
//
// HTML (report.html): the same tables (POPE and MME with a grouped two-row header) and configs
// (MME's with a Counts column), and inline SVG charts, one colour per variant name throughout:
//   POPE:  (1) overall F1 per variant, bars on a fixed 0-100% axis;
//          (2) overall yes-ratio per variant, bars on 0-100% with a dashed line at 50%;
//   CHAIR: (3) CHAIR_i (x) vs Recall (y) scatter, points labelled with the variant name;
//          (4) CHAIR_s per variant, bars on a 0..nice-max % axis;
//   MME:   (5) total score per variant, bars on a fixed 0..max axis (200 per subtask, the largest
//          of that and the variants' max_total: 0-800 for the four), ticks every quarter.
// Bar plots are 200 px high: a bar's height is value / axis-max * 200 (F1 0.85 -> 170.0).
// A chart is drawn only for variants that have its value(s); a benchmark with no variants gets a
// note instead of a table and charts. All text is HTML-escaped. The output is deterministic (the
// only date is the summary's own).
#include <string>

#include "core/json_reader.h"

namespace mmattn {

std::string eval_report_markdown(const Json& summary);
std::string eval_report_html(const Json& summary);
// Writes dir/summary.md and dir/report.html (atomically; dir is created if needed). Both are
// rendered before either is written, so bad input leaves existing reports untouched.
void write_eval_reports(const Json& summary, const std::string& dir);

}  // namespace mmattn
