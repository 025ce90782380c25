// MME hallucination subset: MME's answer rule (calculation.py parse_pred_ans) on hand-made
// answers, acc / acc+ / score on a hand-made answer set worked out in the comments, the prompt
// styles, and both input layouts (the release folder, flat and images/ + questions_answers_YN/,
// and lmms-lab JSON lines) read from folders made here, with their error entries.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <unistd.h>

#include "core/io.h"
#include "pipelines/mme.h"
#include "test_util.h"

namespace mmattn {
namespace {

namespace fs = std::filesystem;

TEST(Mme, AnswerRule) {
  // Lower-cased and trimmed; exactly "yes" / "no", else the first 4 characters decide.
  EXPECT_EQ(parse_mme_answer("Yes"), MmeAnswer::Yes);
  EXPECT_EQ(parse_mme_answer("no"), MmeAnswer::No);
  EXPECT_EQ(parse_mme_answer("NO"), MmeAnswer::No);
  EXPECT_EQ(parse_mme_answer("  yes \n"), MmeAnswer::Yes);
  EXPECT_EQ(parse_mme_answer("Yes, there is a dog."), MmeAnswer::Yes);  // "yes,"
  EXPECT_EQ(parse_mme_answer("No, there is not."), MmeAnswer::No);      // "no, "
  EXPECT_EQ(parse_mme_answer("Not at all"), MmeAnswer::No);             // "not " holds "no"
  EXPECT_EQ(parse_mme_answer("nope"), MmeAnswer::No);
  EXPECT_EQ(parse_mme_answer("Snow"), MmeAnswer::No);                   // "snow" holds "no" (MME's quirk)
  EXPECT_EQ(parse_mme_answer("Yesno"), MmeAnswer::Yes);                 // "yesn": yes is tested first
  EXPECT_EQ(parse_mme_answer("Noyes"), MmeAnswer::No);                  // "noye" has no "yes"
  EXPECT_EQ(parse_mme_answer("There is no dog."), MmeAnswer::Other);    // "ther"
  EXPECT_EQ(parse_mme_answer("I think yes"), MmeAnswer::Other);         // "i th"
  EXPECT_EQ(parse_mme_answer("Cannot tell"), MmeAnswer::Other);         // "cann"
  EXPECT_EQ(parse_mme_answer("Y E S"), MmeAnswer::Other);               // "y e "
  EXPECT_EQ(parse_mme_answer(""), MmeAnswer::Other);
  // Python slices characters, not bytes: "\u00e9 no" -> "\u00e9 no" (4 characters, 5 bytes) holds "no".
  EXPECT_EQ(parse_mme_answer("\xc3\xa9 no"), MmeAnswer::No);
  EXPECT_EQ(parse_mme_answer("\xc3\xa9\xc3\xa9\xc3\xa9 yes"), MmeAnswer::Other);  // "ééé " holds nothing
  EXPECT_STREQ(mme_answer_name(MmeAnswer::Other), "other");
}

TEST(Mme, ScoresByHand) {
  const std::vector<MmeScoredAnswer> a = {
      // existence: 3 images.                                 right?
      {"existence", "e1", true, "Yes"},                    // yes   x
      {"existence", "e1", false, "No"},                    // no    x    -> image e1 both right
      {"existence", "e2", true, "Yes, there is."},         // yes   x
      {"existence", "e2", false, "Yes"},                   // yes   -
      {"existence", "e3", true, "There is a dog."},        // other -    (unparseable)
      {"existence", "e3", false, "no"},                    // no    x
      // -> 4 of 6 right: acc 66.67; 1 of 3 images: acc+ 33.33; score 100.
      // count: 2 images, all right: acc 100, acc+ 100, score 200.
      {"count", "c1", true, "yes"},
      {"count", "c1", false, "No."},
      {"count", "c2", false, "no"},
      {"count", "c2", true, "YES"},
      // position: 2 complete images and one with a single answer (its other question failed).
      {"position", "p1", true, "Yes"},                     // x
      {"position", "p1", false, "No"},                     // x    -> both right
      {"position", "p2", true, "No"},                      // -
      {"position", "p2", false, "No"},                     // x
      {"position", "p3", true, "Yes"},                     // x    (p3 counts for acc only)
      // -> 4 of 5 right: acc 80; 1 of 2 complete images: acc+ 50; score 130.
      // color: 1 image, both wrong: acc 0, acc+ 0, score 0.
      {"color", "k1", true, "No"},
      {"color", "k1", false, "Yes"},
  };
  const MmeReport r = score_mme(a);
  ASSERT_EQ(r.subtasks.size(), 4u);
  const MmeSubtaskMetrics& e = r.subtasks.at("existence");
  EXPECT_EQ(e.questions, 6);
  EXPECT_EQ(e.correct, 4);
  EXPECT_EQ(e.unparseable, 1);
  EXPECT_EQ(e.images, 3);
  EXPECT_EQ(e.images_correct, 1);
  EXPECT_NEAR(e.acc, 200.0 / 3, 1e-9);
  EXPECT_NEAR(e.acc_plus, 100.0 / 3, 1e-9);
  EXPECT_NEAR(e.score, 100.0, 1e-9);
  const MmeSubtaskMetrics& c = r.subtasks.at("count");
  EXPECT_DOUBLE_EQ(c.acc, 100);
  EXPECT_DOUBLE_EQ(c.acc_plus, 100);
  EXPECT_DOUBLE_EQ(c.score, 200);
  const MmeSubtaskMetrics& p = r.subtasks.at("position");
  EXPECT_EQ(p.questions, 5);
  EXPECT_EQ(p.correct, 4);
  EXPECT_EQ(p.images, 2);
  EXPECT_EQ(p.images_correct, 1);
  EXPECT_DOUBLE_EQ(p.acc, 80);
  EXPECT_DOUBLE_EQ(p.acc_plus, 50);
  EXPECT_DOUBLE_EQ(p.score, 130);
  const MmeSubtaskMetrics& k = r.subtasks.at("color");
  EXPECT_EQ(k.questions, 2);
  EXPECT_EQ(k.images, 1);
  EXPECT_DOUBLE_EQ(k.score, 0);
  // Total 100 + 200 + 130 + 0 = 430 of 800; 6 + 4 + 5 + 2 = 17 questions; 3 + 2 + 2 + 1 = 8 images.
  EXPECT_NEAR(r.total, 430, 1e-9);
  EXPECT_EQ(r.questions, 17);
  EXPECT_EQ(r.images, 8);
  EXPECT_EQ(r.unparseable, 1);

  const Json j = mme_report_json(r);
  EXPECT_NEAR(j["total"].get<double>(), 430, 1e-9);
  EXPECT_DOUBLE_EQ(j["max_total"].get<double>(), 800);
  EXPECT_EQ(j["subtasks"]["position"]["questions"], 5);
  EXPECT_EQ(j["subtasks"]["position"]["images"], 2);
  EXPECT_EQ(j["subtasks"]["existence"]["unparseable"], 1);
  EXPECT_DOUBLE_EQ(j["subtasks"]["position"]["acc_plus"].get<double>(), 50);

  // Nothing to score: zeros, no subtasks.
  const MmeReport none = score_mme({});
  EXPECT_TRUE(none.subtasks.empty());
  EXPECT_EQ(none.total, 0);
}

TEST(Mme, Prompts) {
  const std::string q = "Is there a dog in this image? Please answer yes or no.";
  EXPECT_EQ(mme_prompt(q, false, ""), q);
  EXPECT_EQ(mme_prompt(q, false, "Be brief."), q + "\nBe brief.");
  // LLaVA's llava_mme.jsonl form (some MME questions have two spaces before "Please").
  const std::string llava = "Is there a dog in this image?\nAnswer the question using a single word or phrase.";
  EXPECT_EQ(mme_prompt(q, true, "Answer the question using a single word or phrase."), llava);
  EXPECT_EQ(mme_prompt("Is there a dog in this image?  Please answer yes or no.", true,
                       "Answer the question using a single word or phrase."),
            llava);
  EXPECT_EQ(mme_prompt("Is there a dog?", true, ""), "Is there a dog?");
  EXPECT_EQ(mme_hallucination_subtasks(), (std::vector<std::string>{"existence", "count", "position", "color"}));
  EXPECT_EQ(mme_all_subtasks().size(), 14u);
}

// A scratch folder removed at the end.
struct TempDir {
  std::string path;
  explicit TempDir(const std::string& name) {
    path = ::testing::TempDir() + "/mme_" + name + "_" + std::to_string(::getpid());
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  void write(const std::string& rel, const std::string& text) const {
    fs::create_directories(fs::path(path + "/" + rel).parent_path());
    std::ofstream(path + "/" + rel, std::ios::binary) << text;
  }
  void image(const std::string& rel) const {
    fs::create_directories(fs::path(path + "/" + rel).parent_path());
    fs::copy_file(test::source_dir() + "/assets/images/waterview.jpg", path + "/" + rel);
  }
};

TEST(Mme, ReleaseFolderBothLayouts) {
  TempDir t("folder");
  // existence/: flat layout (images beside their .txt).
  t.image("existence/a.jpg");
  t.write("existence/a.txt",  // CRLF and a trailing blank line are fine
          "Is there a car in this image? Please answer yes or no.\tYes\r\n"
          "Is there a boat in this image? Please answer yes or no.\tNo\r\n\r\n");
  t.image("existence/b.png");
  t.write("existence/b.txt", "Q1?\tYes\nQ2?\tNo\nQ3?\tNo\n");  // three questions: one file error
  t.write("existence/c.txt", "Q1?\tYes\nQ2?\tNo\n");           // no image: both questions are errors
  t.image("existence/d.jpg");
  t.write("existence/d.txt", "Q1?\tYes\nQ2 without a tab\n");   // line 2 malformed
  t.image("existence/e.jpg");
  t.write("existence/e.txt", "Q1?\tmaybe\nQ2?\tNo\n");          // line 1: bad answer
  t.write("existence/notes.md", "not a question file");
  // count/: images/ + questions_answers_YN/ layout; lower-case answers with spaces.
  t.image("count/images/x.jpg");
  t.write("count/questions_answers_YN/x.txt", "Are there two cats? Please answer yes or no.\t no \n"
                                              "Are there three cats? Please answer yes or no.\tyes\n");
  // position/ does not exist; color/ is not asked for.
  t.image("color/y.jpg");
  t.write("color/y.txt", "Q1?\tYes\nQ2?\tNo\n");

  const std::vector<MmeQuestion> qs = read_mme_folder(t.path, {"existence", "count", "position"});
  // existence: a:1 a:2 | b (file) | c:1 c:2 (no image) | d:1 d:2(error) | e:1(error) e:2 ; count: x:1 x:2 ; position.
  ASSERT_EQ(qs.size(), 12u);
  auto ok = [](const MmeQuestion& q) { return q.error.empty(); };
  EXPECT_TRUE(ok(qs[0]));
  EXPECT_EQ(qs[0].subtask, "existence");
  EXPECT_EQ(qs[0].image, "existence/a.jpg");
  EXPECT_EQ(qs[0].text, "Is there a car in this image? Please answer yes or no.");
  EXPECT_TRUE(qs[0].label_yes);
  EXPECT_EQ(qs[0].line, 1);
  EXPECT_EQ(fs::path(qs[0].file), fs::path(t.path + "/existence/a.txt").lexically_normal());
  EXPECT_TRUE(qs[0].question_id.is_null());
  EXPECT_TRUE(ok(qs[1]));
  EXPECT_FALSE(qs[1].label_yes);
  EXPECT_EQ(qs[1].line, 2);

  EXPECT_FALSE(ok(qs[2]));  // b.txt: three lines
  EXPECT_EQ(qs[2].line, 0);
  EXPECT_EQ(qs[2].image, "existence/b.png");
  EXPECT_NE(qs[2].error.find("b.txt: holds 3 question lines"), std::string::npos) << qs[2].error;

  for (int i : {3, 4}) {  // c.txt: no image
    EXPECT_FALSE(ok(qs[size_t(i)]));
    EXPECT_EQ(qs[size_t(i)].line, i - 2);
    EXPECT_NE(qs[size_t(i)].error.find("no image named c.*"), std::string::npos) << qs[size_t(i)].error;
  }
  EXPECT_TRUE(ok(qs[5]));  // d.txt line 1
  EXPECT_FALSE(ok(qs[6]));
  EXPECT_EQ(qs[6].line, 2);
  EXPECT_NE(qs[6].error.find("d.txt:2: expected \"question<TAB>answer\""), std::string::npos) << qs[6].error;
  EXPECT_FALSE(ok(qs[7]));  // e.txt line 1
  EXPECT_EQ(qs[7].line, 1);
  EXPECT_NE(qs[7].error.find("\"maybe\""), std::string::npos) << qs[7].error;
  EXPECT_TRUE(ok(qs[8]));

  EXPECT_TRUE(ok(qs[9]));  // count, split layout
  EXPECT_EQ(qs[9].subtask, "count");
  EXPECT_EQ(qs[9].image, "count/images/x.jpg");
  EXPECT_EQ(fs::path(qs[9].file), fs::path(t.path + "/count/questions_answers_YN/x.txt").lexically_normal());
  EXPECT_FALSE(qs[9].label_yes);
  EXPECT_TRUE(qs[10].label_yes);

  EXPECT_FALSE(ok(qs[11]));  // position/ missing
  EXPECT_EQ(qs[11].subtask, "position");
  EXPECT_NE(qs[11].error.find("position"), std::string::npos) << qs[11].error;
}

TEST(Mme, JsonLinesWithBadLines) {
  const std::string q = "Is there a dog in this image? Please answer yes or no.";
  const std::string text =
      R"({"question_id": "existence/1.jpg", "image": "existence/1.jpg", "question": ")" + q +
      R"(", "answer": "Yes", "category": "existence"})" "\n"                                        // 1
      R"({"question_id": 2, "image": "existence/1.jpg", "text": "Q2?", "label": "no", "category": "existence"})" "\r\n"  // 2
      R"({"question_id": 3, "image": "ocr/1.jpg", "question": "Q?", "answer": "Yes", "category": "OCR"})" "\n"  // 3: skipped
      R"({"question_id": 4, "image": )" "\n"                                                        // 4: malformed
      R"({"image": "count/2.jpg", "question": "Q?", "answer": "Yes", "category": "count"})" "\n"   // 5: lone question
      "\n"                                                                                          // 6: blank
      R"({"image": "color/3.jpg", "question": "Q1?", "answer": "No"})" "\n"                        // 7: category from the path
      R"({"image": "color/3.jpg", "question": "Q2?", "answer": "YES", "category": "color"})" "\n"  // 8
      R"({"image": "color/4.jpg", "question": "Q?", "answer": "maybe", "category": "color"})" "\n" // 9: bad answer
      R"({"image": "color/5.jpg", "question": "Q?", "text": "Q?", "answer": "no", "category": "color"})" "\n"  // 10
      R"({"image": "5.jpg", "question": "Q?", "answer": "no"})" "\n";                               // 11: no category
  const std::vector<MmeQuestion> qs = parse_mme_jsonl(text, mme_hallucination_subtasks(), "mme.jsonl");
  std::vector<int64_t> lines;
  for (const auto& x : qs) lines.push_back(x.line);
  EXPECT_EQ(lines, (std::vector<int64_t>{1, 2, 4, 5, 7, 8, 9, 10, 11}));
  ASSERT_EQ(qs.size(), 9u);
  EXPECT_TRUE(qs[0].error.empty()) << qs[0].error;
  EXPECT_EQ(qs[0].question_id, "existence/1.jpg");
  EXPECT_EQ(qs[0].text, q);
  EXPECT_EQ(qs[0].subtask, "existence");
  EXPECT_TRUE(qs[0].label_yes);
  EXPECT_EQ(qs[0].file, "mme.jsonl");
  EXPECT_TRUE(qs[1].error.empty()) << qs[1].error;
  EXPECT_EQ(qs[1].question_id, 2);
  EXPECT_EQ(qs[1].text, "Q2?");
  EXPECT_FALSE(qs[1].label_yes);
  EXPECT_NE(qs[2].error.find("mme.jsonl:4"), std::string::npos) << qs[2].error;
  EXPECT_NE(qs[3].error.find("has 1 questions"), std::string::npos) << qs[3].error;
  EXPECT_EQ(qs[3].subtask, "count");
  EXPECT_TRUE(qs[4].error.empty()) << qs[4].error;
  EXPECT_EQ(qs[4].subtask, "color");
  EXPECT_FALSE(qs[4].label_yes);
  EXPECT_TRUE(qs[5].error.empty()) << qs[5].error;
  EXPECT_TRUE(qs[5].label_yes);
  EXPECT_NE(qs[6].error.find("\"maybe\""), std::string::npos) << qs[6].error;
  EXPECT_NE(qs[7].error.find("$.text must not be given together with \"question\""), std::string::npos) << qs[7].error;
  EXPECT_NE(qs[8].error.find("category"), std::string::npos) << qs[8].error;

  // Other subtasks are selectable; an unreadable file is an IoError.
  const auto ocr = parse_mme_jsonl(text, {"OCR"}, "mme.jsonl");
  // Line 3 (alone: an error), line 4 (malformed) and line 11 (no category); the other lines are
  // readable enough to be skipped as not OCR.
  ASSERT_EQ(ocr.size(), 3u);
  EXPECT_EQ(ocr[0].line, 3);
  EXPECT_NE(ocr[0].error.find("has 1 questions"), std::string::npos);
  EXPECT_EQ(ocr[1].line, 4);
  EXPECT_EQ(ocr[2].line, 11);
  EXPECT_THROW(read_mme_jsonl("/nonexistent/mme.jsonl", {"existence"}), IoError);
}

}  // namespace
}  // namespace mmattn
