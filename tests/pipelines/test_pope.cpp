// POPE scoring: question-file parsing (bad lines become errors with their line number), POPE's
// answer rule (as LLaVA's eval_pope.py applies it) and the metrics, on hand-made inputs whose
// results are worked out in the comments; plus the first lines of the real random split.
#include <gtest/gtest.h>

#include "pipelines/pope.h"
#include "test_util.h"

namespace mmattn {
namespace {

TEST(Pope, AnswerRule) {
  // First sentence only, commas removed, split on ' ': "No"/"no"/"not" -> no, else yes.
  EXPECT_TRUE(parse_pope_answer("Yes, there is.").yes);
  EXPECT_FALSE(parse_pope_answer("No.").yes);
  EXPECT_FALSE(parse_pope_answer("There is no dog.").yes);
  EXPECT_FALSE(parse_pope_answer("No, there is not.").yes);
  EXPECT_FALSE(parse_pope_answer("not sure").yes);
  EXPECT_TRUE(parse_pope_answer("I cannot tell").yes);          // "cannot" is not "not"
  EXPECT_TRUE(parse_pope_answer("NO").yes);                     // upper case is not matched
  EXPECT_TRUE(parse_pope_answer("").yes);                       // empty -> yes
  EXPECT_TRUE(parse_pope_answer("There is a cat. No dog.").yes);  // only the first sentence counts
  EXPECT_TRUE(parse_pope_answer("No,there").yes);               // commas deleted: one piece "Nothere"
  EXPECT_FALSE(parse_pope_answer("Yes no").yes);
  EXPECT_TRUE(parse_pope_answer("Yes\nno").yes);                // split on ' ' only: "Yes\nno"
  // Unparseable: no yes/no/not word (case-folded) in the first sentence.
  EXPECT_FALSE(parse_pope_answer("Yes, there is.").unparseable);
  EXPECT_FALSE(parse_pope_answer("NO").unparseable);
  EXPECT_TRUE(parse_pope_answer("I cannot tell").unparseable);
  EXPECT_TRUE(parse_pope_answer("").unparseable);
  EXPECT_TRUE(parse_pope_answer("There is a cat. No dog.").unparseable);
}

TEST(Pope, MetricsByHand) {
  // split "random", 10 answers:            label  pred  unparseable  outcome
  std::vector<PopeScoredAnswer> a = {
      {"random", true, "Yes, there is."},      // yes    yes   -            TP
      {"random", false, "No."},                // no     no    -            TN
      {"random", false, "There is no dog."},   // no     no    -            TN
      {"random", true, "I cannot tell"},       // yes    yes   x            TP
      {"random", true, "No, there is not."},   // yes    no    -            FN
      {"random", false, "Yes"},                // no     yes   -            FP
      {"random", false, "NO"},                 // no     yes   -            FP
      {"random", true, ""},                    // yes    yes   x            TP
      {"random", false, "There is a cat. No dog though."},  // no yes x     FP
      {"random", false, "not sure"},           // no     no    -            TN
      // split "popular", 2 answers: TP, TN.
      {"popular", true, "Yes"},
      {"popular", false, "No"},
  };
  const PopeReport r = score_pope(a);
  ASSERT_EQ(r.splits.size(), 2u);
  const PopeMetrics& m = r.splits.at("random");
  // TP 3, TN 3, FP 3, FN 1, N 10, unparseable 3.
  EXPECT_EQ(m.counts.tp, 3);
  EXPECT_EQ(m.counts.tn, 3);
  EXPECT_EQ(m.counts.fp, 3);
  EXPECT_EQ(m.counts.fn, 1);
  EXPECT_EQ(m.counts.n(), 10);
  EXPECT_EQ(m.counts.unparseable, 3);
  EXPECT_DOUBLE_EQ(m.accuracy, 0.6);   // 6/10
  EXPECT_DOUBLE_EQ(m.precision, 0.5);  // 3/6
  EXPECT_DOUBLE_EQ(m.recall, 0.75);    // 3/4
  EXPECT_DOUBLE_EQ(m.f1, 0.6);         // 2*.5*.75/1.25
  EXPECT_DOUBLE_EQ(m.yes_ratio, 0.6);  // 6/10
  const PopeMetrics& p = r.splits.at("popular");
  EXPECT_DOUBLE_EQ(p.accuracy, 1.0);
  EXPECT_DOUBLE_EQ(p.f1, 1.0);
  EXPECT_DOUBLE_EQ(p.yes_ratio, 0.5);
  // Overall pooled: TP 4, TN 4, FP 3, FN 1, N 12.
  EXPECT_EQ(r.overall.counts.n(), 12);
  EXPECT_DOUBLE_EQ(r.overall.accuracy, 8.0 / 12);
  EXPECT_DOUBLE_EQ(r.overall.precision, 4.0 / 7);
  EXPECT_DOUBLE_EQ(r.overall.recall, 0.8);
  EXPECT_NEAR(r.overall.f1, 2.0 / 3, 1e-12);  // (32/35)/(48/35)
  EXPECT_DOUBLE_EQ(r.overall.yes_ratio, 7.0 / 12);
  EXPECT_DOUBLE_EQ(r.mean_f1, 0.8);  // (0.6 + 1.0) / 2

  const Json j = pope_report_json(r);
  EXPECT_EQ(j["splits"]["random"]["tp"].get<int>(), 3);
  EXPECT_EQ(j["splits"]["random"]["unparseable"].get<int>(), 3);
  EXPECT_DOUBLE_EQ(j["splits"]["random"]["f1"].get<double>(), 0.6);
  EXPECT_EQ(j["overall"]["n"].get<int>(), 12);
  EXPECT_DOUBLE_EQ(j["mean_f1"].get<double>(), 0.8);
}

TEST(Pope, EmptyCountsGiveZeros) {
  const PopeMetrics m = pope_metrics(PopeCounts{});
  EXPECT_EQ(m.accuracy, 0);
  EXPECT_EQ(m.precision, 0);
  EXPECT_EQ(m.f1, 0);
  // All "no" predictions: precision has a zero denominator -> 0, F1 -> 0.
  PopeCounts c;
  c.add(true, parse_pope_answer("No"));
  c.add(false, parse_pope_answer("No"));
  const PopeMetrics n = pope_metrics(c);
  EXPECT_DOUBLE_EQ(n.accuracy, 0.5);
  EXPECT_EQ(n.precision, 0);
  EXPECT_EQ(n.f1, 0);
  EXPECT_EQ(n.yes_ratio, 0);
}

TEST(Pope, QuestionFileWithBadLines) {
  const std::string text =
      "{\"question_id\": 1, \"image\": \"a.jpg\", \"text\": \"Is there a dog in the image?\", \"label\": \"yes\"}\n"
      "{\"question_id\": 2, \"image\": \"a.jpg\", \"text\": \"Is there a cat in the image?\", \"label\": \"no\"}\r\n"
      "\n"                                                               // line 3: blank, skipped
      "{\"question_id\": 3, \"image\": \n"                                // line 4: malformed JSON
      "{\"question_id\": 4, \"image\": \"b.jpg\", \"text\": \"x\", \"label\": \"maybe\"}\n"  // line 5: bad label
      "{\"question_id\": 5, \"image\": \"b.jpg\", \"label\": \"no\"}\n"    // line 6: no text
      "[1, 2]\n"                                                          // line 7: not an object
      "{\"question_id\": 8, \"image\": \"c.jpg\", \"text\": \"Is there a car in the image?\", \"label\": \"no\"}";
  const PopeQuestionFile f = parse_pope_questions(text, "q.jsonl");
  ASSERT_EQ(f.questions.size(), 3u);
  EXPECT_EQ(f.questions[0].question_id, 1);
  EXPECT_TRUE(f.questions[0].label_yes);
  EXPECT_EQ(f.questions[0].line, 1);
  EXPECT_EQ(f.questions[1].text, "Is there a cat in the image?");
  EXPECT_FALSE(f.questions[1].label_yes);
  EXPECT_EQ(f.questions[2].question_id, 8);
  EXPECT_EQ(f.questions[2].line, 8);
  ASSERT_EQ(f.errors.size(), 4u);
  EXPECT_EQ(f.errors[0].line, 4);
  EXPECT_NE(f.errors[0].message.find("q.jsonl:4"), std::string::npos) << f.errors[0].message;
  EXPECT_EQ(f.errors[1].line, 5);
  EXPECT_NE(f.errors[1].message.find("label"), std::string::npos) << f.errors[1].message;
  EXPECT_EQ(f.errors[2].line, 6);
  EXPECT_NE(f.errors[2].message.find("text"), std::string::npos) << f.errors[2].message;
  EXPECT_EQ(f.errors[3].line, 7);
}

TEST(Pope, RealFileHead) {
  // First 12 lines of shared/assets/benchmarks/pope/coco_pope_random.json (6 yes, 6 no).
  const auto f = read_pope_questions(test::golden_dir() + "/bench_data/coco_pope_random_head12.json");
  EXPECT_TRUE(f.errors.empty());
  ASSERT_EQ(f.questions.size(), 12u);
  EXPECT_EQ(f.questions[0].question_id, 1);
  EXPECT_EQ(f.questions[0].image, "COCO_val2014_000000310196.jpg");
  EXPECT_EQ(f.questions[0].text, "Is there a snowboard in the image?");
  EXPECT_TRUE(f.questions[0].label_yes);
  EXPECT_FALSE(f.questions[1].label_yes);
  EXPECT_EQ(f.questions[11].question_id, 12);
  EXPECT_EQ(f.questions[11].text, "Is there a cell phone in the image?");
  int yes = 0;
  for (const auto& q : f.questions) yes += q.label_yes;
  EXPECT_EQ(yes, 6);
  // Always answering "Yes": recall 1, precision = yes-share of labels, yes_ratio 1.
  std::vector<PopeScoredAnswer> a;
  for (const auto& q : f.questions) a.push_back({"random", q.label_yes, "Yes"});
  const auto r = score_pope(a);
  EXPECT_DOUBLE_EQ(r.overall.recall, 1.0);
  EXPECT_DOUBLE_EQ(r.overall.precision, 0.5);
  EXPECT_DOUBLE_EQ(r.overall.yes_ratio, 1.0);
  EXPECT_DOUBLE_EQ(r.overall.f1, 2.0 / 3);
}

}  // namespace
}  // namespace mmattn
