// Evaluation reports (summary.md, report.html) from hand-made summaries: Markdown table layout and
// number formatting worked out by hand, HTML self-containment and escaping, chart counts and bar
// geometry, partial summaries (one benchmark, no variants) and malformed structure; the MME
// columns, counts and score chart.
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "core/io.h"
#include "pipelines/eval_report.h"

namespace mmattn {
namespace {

const std::string kOddName = "x<b>&\"y";

Json pope_m(double acc, double prec, double rec, double f1, double yes, int unparseable = 0) {
  return Json{{"n", 100}, {"tp", 40}, {"fp", 5},  {"tn", 45}, {"fn", 10}, {"unparseable", unparseable},
              {"accuracy", acc}, {"precision", prec}, {"recall", rec}, {"f1", f1}, {"yes_ratio", yes}};
}

Json pope_bench() {
  Json greedy{{"name", "greedy"},
              {"config", {{"decoding", "greedy"}}},
              {"n", 300},
              {"errors", 0},
              {"splits",
               {{"random", pope_m(0.8833, 0.92, 0.84, 0.8782, 0.4567)},
                {"adversarial", pope_m(0.8533, 0.87, 0.85, 0.8612, 0.5467)},
                {"popular", pope_m(0.8712, 0.90, 0.83, 0.8641, 0.4812)}}},
              {"overall", pope_m(0.87, 0.9, 0.8, 0.85, 0.45, 3)},
              {"mean_f1", 0.8678},
              {"questions_per_s", 12.3}};
  // No "adversarial" split: its cells are "-".
  Json odd{{"name", kOddName},
           {"config", {{"pruning", "fastv"}}},
           {"n", 200},
           {"errors", 2},
           {"splits", {{"random", pope_m(0.6, 0.55, 0.9, 0.6827, 0.8)}, {"popular", pope_m(0.5, 0.5, 1.0, 0.6667, 1.0)}}},
           {"overall", pope_m(0.55, 0.52, 0.95, 0.5, 0.9)},
           {"questions_per_s", 20.0}};
  Json pai{{"name", "pai"},
           {"n", 300},
           {"errors", 0},
           {"splits", {{"random", pope_m(0.7, 0.7, 0.7, 0.7, 0.5)}}},
           {"overall", pope_m(0.7, 0.7, 0.7, 0.7, 0.5)}};
  return Json{{"variants", Json::array({greedy, odd, pai})}};
}

Json chair_bench() {
  Json greedy{{"name", "greedy"},
              {"config", {{"max_new_tokens", 512}}},
              {"n", 50},
              {"errors", 1},
              {"metrics", {{"chair_s", 0.52}, {"chair_i", 0.153}, {"recall", 0.701}, {"avg_len", 95.14}, {"avg_words", 80.2}, {"n_captions", 49}}},
              {"captions_per_s", 1.2}};
  // chair_report_json() calls the average length "len".
  Json odd{{"name", kOddName},
           {"n", 50},
           {"errors", 0},
           {"metrics", {{"chair_s", 0.4}, {"chair_i", 0.1}, {"recall", 0.65}, {"len", 80.06}}}};
  return Json{{"variants", Json::array({greedy, odd})}};
}

Json mme_sub(double acc, double acc_plus, int questions, int images) {
  return Json{{"acc", acc}, {"acc_plus", acc_plus}, {"score", acc + acc_plus}, {"questions", questions}, {"images", images}};
}

Json mme_bench() {
  // Subtasks in the JSON's (alphabetical) order; the report puts them in MME's order.
  Json greedy{{"name", "greedy"},
              {"config", {{"decoding", "greedy"}}},
              {"n", 236},
              {"errors", 4},
              {"subtasks",
               {{"color", mme_sub(85, 73.33, 60, 30)},
                {"count", mme_sub(75, 55, 60, 30)},
                {"existence", mme_sub(95, 90, 60, 30)},
                {"position", mme_sub(66.67, 40, 56, 28)}}},
              {"total", 580.0},  // 158.33 + 130 + 185 + 106.67
              {"max_total", 800.0},
              {"unparseable", 2},
              {"questions_per_s", 4.5}};
  // No position results: its cells are "-".
  Json odd{{"name", kOddName},
           {"n", 120},
           {"errors", 0},
           {"subtasks", {{"existence", mme_sub(100, 100, 60, 30)}, {"count", mme_sub(50, 0, 60, 30)}}},
           {"total", 250.0},
           {"max_total", 400.0},
           {"unparseable", 0}};
  return Json{{"variants", Json::array({greedy, odd})}};
}

Json summary_with(Json benchmarks) {
  return Json{{"model", "/models/llava-1.5-7b-hf"}, {"device", "cuda"}, {"date", "2026-11-23"}, {"commit", "abc123"},
              {"benchmarks", std::move(benchmarks)}};
}
Json full_summary() { return summary_with(Json{{"pope", pope_bench()}, {"chair", chair_bench()}}); }

size_t count_of(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + what.size())) ++n;
  return n;
}

// The Markdown line that starts with "| <cell> |".
std::string md_row(const std::string& md, const std::string& first_cell) {
  const std::string key = "\n| " + first_cell + " |";
  const size_t p = md.find(key);
  if (p == std::string::npos) return "";
  return md.substr(p + 1, md.find('\n', p + 1) - p - 1);
}

TEST(EvalReport, MarkdownPopeTable) {
  const std::string md = eval_report_markdown(full_summary());
  EXPECT_NE(md.find("- Model: `/models/llava-1.5-7b-hf`\n"), std::string::npos) << md;
  EXPECT_NE(md.find("- Date: 2026-11-23\n"), std::string::npos);
  EXPECT_NE(md.find("## POPE\n"), std::string::npos);
  // Splits sorted by name, then the overall columns.
  const std::string header =
      "| Variant | adversarial Acc | adversarial F1 | adversarial Yes% | popular Acc | popular F1 | popular Yes% "
      "| random Acc | random F1 | random Yes% | Overall Acc | Overall Prec | Overall Rec | Overall F1 | Overall Yes% "
      "| Unparsed | Errors |";
  EXPECT_NE(md.find(header + "\n|:---|---:|"), std::string::npos) << md;
  // 0.8533 -> 85.3, 0.8612 -> 86.1, 0.5467 -> 54.7; popular 87.1 86.4 48.1; random 88.3 87.8 45.7;
  // overall 87.0 90.0 80.0 85.0 45.0; 3 unparsed; 0 errors.
  EXPECT_EQ(md_row(md, "greedy"),
            "| greedy | 85.3 | 86.1 | 54.7 | 87.1 | 86.4 | 48.1 | 88.3 | 87.8 | 45.7 | 87.0 | 90.0 | 80.0 | 85.0 | 45.0 | 3 | 0 |");
  // The odd name is backslash-escaped; its missing adversarial split shows "-".
  EXPECT_EQ(md_row(md, "x\\<b\\>\\&\"y"),
            "| x\\<b\\>\\&\"y | - | - | - | 50.0 | 66.7 | 100.0 | 60.0 | 68.3 | 80.0 | 55.0 | 52.0 | 95.0 | 50.0 | 90.0 | 0 | 2 |");
  EXPECT_EQ(md_row(md, "pai"),
            "| pai | - | - | - | - | - | - | 70.0 | 70.0 | 50.0 | 70.0 | 70.0 | 70.0 | 70.0 | 50.0 | 0 | 0 |");
  // One row per variant in the POPE table: header + separator + 3 rows before the blank line.
  const size_t start = md.find(header);
  const std::string table = md.substr(start, md.find("\n\n", start) - start);
  EXPECT_EQ(count_of(table, "\n"), 4u);
  EXPECT_NE(md.find("- greedy: n = 300, 12.30 questions/s, config `{\"decoding\":\"greedy\"}`"), std::string::npos);
}

TEST(EvalReport, MarkdownChairTable) {
  const std::string md = eval_report_markdown(full_summary());
  EXPECT_NE(md.find("## CHAIR\n\n| Variant | CHAIR_s | CHAIR_i | Recall | Len | Errors |\n"), std::string::npos) << md;
  EXPECT_EQ(md_row(md.substr(md.find("## CHAIR")), "greedy"), "| greedy | 52.0 | 15.3 | 70.1 | 95.1 | 1 |");
  EXPECT_EQ(md_row(md.substr(md.find("## CHAIR")), "x\\<b\\>\\&\"y"), "| x\\<b\\>\\&\"y | 40.0 | 10.0 | 65.0 | 80.1 | 0 |");
}

TEST(EvalReport, HtmlSelfContainedAndEscaped) {
  const std::string html = eval_report_html(full_summary());
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_EQ(count_of(html, "<svg"), 4u);
  EXPECT_EQ(count_of(html, "</svg>"), 4u);
  // The only URLs are the SVG namespace declarations.
  EXPECT_EQ(count_of(html, "http://"), count_of(html, "xmlns=\"http://www.w3.org/2000/svg\""));
  EXPECT_EQ(count_of(html, "https://"), 0u);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<link"), std::string::npos);
  EXPECT_EQ(html.find("url("), std::string::npos);
  EXPECT_EQ(html.find("<b>"), std::string::npos);
  EXPECT_NE(html.find("x&lt;b&gt;&amp;&quot;y"), std::string::npos);
  EXPECT_NE(html.find("2026-11-23"), std::string::npos);
  // Grouped POPE header: the splits and "Overall" span their metric columns.
  EXPECT_NE(html.find("<th rowspan=\"2\">Variant</th><th colspan=\"3\">adversarial</th>"), std::string::npos);
  EXPECT_NE(html.find("<th colspan=\"5\">Overall</th><th rowspan=\"2\">Unparsed</th>"), std::string::npos);
  EXPECT_NE(html.find("<td>greedy</td><td class=\"num\">85.3</td>"), std::string::npos);
  // Chart titles, the 50% reference line, axis titles.
  for (const char* s : {"POPE F1 (overall)", "POPE yes-ratio (overall)", "CHAIR_i vs Recall", "CHAIR_s per variant",
                        "stroke-dasharray=\"6 4\"", "CHAIR_i (%)", "Recall (%)"})
    EXPECT_NE(html.find(s), std::string::npos) << s;
  // Deterministic.
  EXPECT_EQ(html, eval_report_html(full_summary()));
}

TEST(EvalReport, BarHeightsProportional) {
  const std::string html = eval_report_html(full_summary());
  // F1 axis 0..100% over 200 px: F1 0.85 -> 170 px high, top at 44 + 200 - 170 = 74.
  EXPECT_NE(html.find("y=\"74.0\" width=\"40.0\" height=\"170.0\""), std::string::npos);
  EXPECT_NE(html.find("height=\"100.0\""), std::string::npos);  // F1 0.5
  EXPECT_NE(html.find("height=\"140.0\""), std::string::npos);  // F1 0.7
  // Yes-ratio 0.45 -> 90 px; the 50% line at y = 244 - 100 = 144.
  EXPECT_NE(html.find("height=\"90.0\""), std::string::npos);
  EXPECT_NE(html.find("y1=\"144.0\" x2=\"276.0\" y2=\"144.0\" stroke=\"#444444\""), std::string::npos);
  // CHAIR_s axis: max 52% -> step 20, top 60%; 52% -> 52 / 60 * 200 = 173.3 px, 40% -> 133.3 px.
  EXPECT_NE(html.find("height=\"173.3\""), std::string::npos);
  EXPECT_NE(html.find("height=\"133.3\""), std::string::npos);
  EXPECT_NE(html.find("y=\"48.0\" text-anchor=\"end\" font-size=\"11\">60</text>"), std::string::npos);  // top tick
}

TEST(EvalReport, OnlyOneBenchmark) {
  const Json pope_only = summary_with(Json{{"pope", pope_bench()}});
  std::string md = eval_report_markdown(pope_only), html = eval_report_html(pope_only);
  EXPECT_NE(md.find("## POPE"), std::string::npos);
  EXPECT_EQ(md.find("## CHAIR"), std::string::npos);
  EXPECT_EQ(count_of(html, "<svg"), 2u);
  EXPECT_EQ(html.find("CHAIR"), std::string::npos);

  const Json chair_only = summary_with(Json{{"chair", chair_bench()}});
  md = eval_report_markdown(chair_only), html = eval_report_html(chair_only);
  EXPECT_EQ(md.find("## POPE"), std::string::npos);
  EXPECT_NE(md.find("## CHAIR"), std::string::npos);
  EXPECT_EQ(count_of(html, "<svg"), 2u);
  EXPECT_EQ(html.find("POPE"), std::string::npos);
}

TEST(EvalReport, OneVariant) {
  Json pope = pope_bench();
  pope["variants"].erase(2);
  pope["variants"].erase(1);
  Json chair = chair_bench();
  chair["variants"].erase(1);
  const Json s = summary_with(Json{{"pope", pope}, {"chair", chair}});
  const std::string html = eval_report_html(s);
  EXPECT_EQ(count_of(html, "<svg"), 4u);
  EXPECT_EQ(count_of(html, "<circle"), 1u);
  EXPECT_EQ(count_of(html, "<rect x="), 3u);  // F1, yes-ratio and CHAIR_s bars
  EXPECT_EQ(count_of(eval_report_markdown(s), "| greedy |"), 2u);
}

TEST(EvalReport, NoVariants) {
  const Json s = summary_with(Json{{"pope", {{"variants", Json::array()}}}, {"chair", Json::object()}});
  const std::string md = eval_report_markdown(s), html = eval_report_html(s);
  EXPECT_EQ(count_of(md, "No variants were evaluated."), 2u) << md;
  EXPECT_EQ(md.find("| Variant"), std::string::npos);
  EXPECT_EQ(count_of(html, "<svg"), 0u);
  EXPECT_EQ(count_of(html, "No variants were evaluated."), 2u);
  EXPECT_EQ(html.find("<thead>"), std::string::npos);

  const Json none{{"date", "2026-11-23"}};
  EXPECT_NE(eval_report_markdown(none).find("No benchmark results"), std::string::npos);
  EXPECT_NE(eval_report_html(none).find("No benchmark results"), std::string::npos);
}

TEST(EvalReport, MissingValuesAndOtherBenchmarks) {
  // A variant that failed entirely: no metrics; its bars are left out, its cells are "-".
  Json pope{{"variants", Json::array({Json{{"name", "broken"}, {"n", 0}, {"errors", 300}}})}};
  const Json s = summary_with(Json{{"pope", pope}, {"amber", Json::object()}});
  const std::string md = eval_report_markdown(s), html = eval_report_html(s);
  EXPECT_EQ(md_row(md, "broken"), "| broken | - | - | - | - | - | - | 300 |");
  EXPECT_EQ(count_of(html, "<svg"), 0u);
  EXPECT_NE(html.find("No F1 values to plot."), std::string::npos);
  EXPECT_NE(md.find("Not rendered (no report layout yet): amber"), std::string::npos);
}

TEST(EvalReport, MarkdownEscapesTableBreakers) {
  Json chair = chair_bench();
  chair["variants"][0]["name"] = "a|b\nc";
  const std::string md = eval_report_markdown(summary_with(Json{{"chair", chair}}));
  EXPECT_EQ(md_row(md, "a\\|b c"), "| a\\|b c | 52.0 | 15.3 | 70.1 | 95.1 | 1 |");
}

TEST(EvalReport, MalformedStructure) {
  EXPECT_THROW(eval_report_markdown(Json::array()), FormatError);
  EXPECT_THROW(eval_report_html(Json{{"benchmarks", 3}}), FormatError);
  EXPECT_THROW(eval_report_html(Json{{"benchmarks", {{"pope", {{"variants", "x"}}}}}}), FormatError);
  EXPECT_THROW(eval_report_markdown(Json{{"benchmarks", {{"chair", {{"variants", {1, 2}}}}}}}), FormatError);
}

TEST(EvalReport, WritesBothFiles) {
  const std::string dir = ::testing::TempDir() + "/eval_report_out/run1";
  write_eval_reports(full_summary(), dir);
  EXPECT_EQ(read_text_file(dir + "/summary.md"), eval_report_markdown(full_summary()));
  EXPECT_EQ(read_text_file(dir + "/report.html"), eval_report_html(full_summary()));
  // Bad input: nothing is overwritten.
  EXPECT_THROW(write_eval_reports(Json{{"benchmarks", 3}}, dir), FormatError);
  EXPECT_EQ(read_text_file(dir + "/summary.md"), eval_report_markdown(full_summary()));
}

TEST(EvalReport, MmeTableCountsAndChart) {
  const Json s = summary_with(Json{{"mme", mme_bench()}});
  const std::string md = eval_report_markdown(s);
  EXPECT_NE(md.find("## MME (hallucination)\n"), std::string::npos) << md;
  EXPECT_EQ(md.find("## POPE"), std::string::npos);
  // MME's subtask order, then the total.
  const std::string header =
      "| Variant | existence Acc | existence Acc+ | existence Score | count Acc | count Acc+ | count Score "
      "| position Acc | position Acc+ | position Score | color Acc | color Acc+ | color Score | Total | Unparsed | Errors |";
  EXPECT_NE(md.find(header + "\n|:---|---:|"), std::string::npos) << md;
  // Values in MME's units, one decimal: 66.67 -> 66.7, 73.33 -> 73.3, 158.33 -> 158.3.
  EXPECT_EQ(md_row(md, "greedy"),
            "| greedy | 95.0 | 90.0 | 185.0 | 75.0 | 55.0 | 130.0 | 66.7 | 40.0 | 106.7 | 85.0 | 73.3 | 158.3 | 580.0 | 2 | 4 |");
  EXPECT_EQ(md_row(md, "x\\<b\\>\\&\"y"),
            "| x\\<b\\>\\&\"y | 100.0 | 100.0 | 200.0 | 50.0 | 0.0 | 50.0 | - | - | - | - | - | - | 250.0 | 0 | 0 |");
  EXPECT_NE(md.find("- greedy: n = 236, 4.50 questions/s, questions / images: existence 60 / 30, count 60 / 30, "
                    "position 56 / 28, color 60 / 30, config `{\"decoding\":\"greedy\"}`"),
            std::string::npos)
      << md;

  const std::string html = eval_report_html(s);
  EXPECT_EQ(count_of(html, "<svg"), 1u);
  EXPECT_NE(html.find("MME score (total)"), std::string::npos);
  EXPECT_NE(html.find("<th rowspan=\"2\">Variant</th><th colspan=\"3\">existence</th><th colspan=\"3\">count</th>"),
            std::string::npos);
  EXPECT_NE(html.find("<th>Counts</th>"), std::string::npos);
  EXPECT_NE(html.find("<td>questions / images: existence 60 / 30, count 60 / 30, position 56 / 28, color 60 / 30</td>"),
            std::string::npos);
  // Axis 0-800 (the larger max_total) over 200 px, ticks every 200: total 580 -> 145 px high, top
  // at 44 + 200 - 145 = 99; 250 -> 62.5 px. Scores carry no "%".
  EXPECT_NE(html.find("y=\"99.0\" width=\"40.0\" height=\"145.0\""), std::string::npos);
  EXPECT_NE(html.find("height=\"62.5\""), std::string::npos);
  EXPECT_NE(html.find("<title>greedy: 580.0</title>"), std::string::npos);
  EXPECT_NE(html.find("text-anchor=\"end\" font-size=\"11\">800</text>"), std::string::npos);
  EXPECT_NE(html.find("text-anchor=\"end\" font-size=\"11\">200</text>"), std::string::npos);
  EXPECT_EQ(html.find("Not rendered"), std::string::npos);

  // With POPE and CHAIR: one colour per name across the three, 5 charts.
  const Json all = summary_with(Json{{"pope", pope_bench()}, {"chair", chair_bench()}, {"mme", mme_bench()}});
  const std::string h = eval_report_html(all);
  EXPECT_EQ(count_of(h, "<svg"), 5u);
  EXPECT_LT(h.find("<h2>CHAIR</h2>"), h.find("<h2>MME (hallucination)</h2>"));
  // No MME variants: a note.
  const std::string none = eval_report_markdown(summary_with(Json{{"mme", {{"variants", Json::array()}}}}));
  EXPECT_NE(none.find("## MME (hallucination)\n\nNo variants were evaluated."), std::string::npos) << none;
}

}  // namespace
}  // namespace mmattn
