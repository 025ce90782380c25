// The eval runner end to end on the CPU with the tiny golden LLaVA: POPE (a malformed line, a
// missing image) and CHAIR (a missing image) over two variants; the rows, the summary, the
// reports; a resumed run (torn last line, process killed mid-run) and shards merged both give the
// numbers of one uninterrupted run. MME from its release folder (both layouts, with bad entries)
// and from JSON lines, with a resume and shards.
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include <sys/wait.h>
#include <unistd.h>

#include "core/io.h"
#include "pipelines/eval.h"
#include "pipelines/spec.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;
namespace fs = std::filesystem;

namespace {

// A scratch folder with images, a POPE file and CHAIR ids, and an eval spec over them.
struct EvalFixture {
  std::string dir;
  explicit EvalFixture(const std::string& name) {
    dir = ::testing::TempDir() + "/eval_" + name + "_" + std::to_string(::getpid());
    fs::remove_all(dir);
    fs::create_directories(dir + "/images");
    const std::string img = source_dir() + "/assets/images/";
    fs::copy_file(img + "extreme_ironing.jpg", dir + "/images/COCO_val2014_000000000009.jpg");
    fs::copy_file(img + "waterview.jpg", dir + "/images/COCO_val2014_000000000042.jpg");
    fs::copy_file(img + "extreme_ironing.jpg", dir + "/images/a.jpg");
    fs::copy_file(img + "waterview.jpg", dir + "/images/b.jpg");
    std::ofstream(dir + "/coco_pope_random.json")
        << R"({"question_id": 1, "image": "a.jpg", "text": "Is there a car in the image?", "label": "yes"})" "\n"
        << R"({"question_id": 2, "image": "b.jpg", "text": "Is there a boat in the image?", "label": "no"})" "\n"
        << R"({"question_id": 3, "image": "missing.jpg", "text": "Is there a dog in the image?", "label": "no"})" "\n"
        << R"({"question_id": 4, "image": "a.jpg", "text": "Is there)" "\n"
        << R"({"question_id": 5, "image": "b.jpg", "text": "Is there a person in the image?", "label": "yes"})" "\n";
    std::ofstream(dir + "/coco_pope_adversarial.json")
        << R"({"question_id": 1, "image": "b.jpg", "text": "Is there a tree in the image?", "label": "no"})" "\n";
    write_spec(dir + "/out");
  }
  void write_spec(const std::string& out) const {
    const Json spec = {
        {"pipeline", "eval"},
        {"model", golden_dir() + "/tiny_llava"},
        {"device", "cpu"},
        {"output", {{"quiet", true}}},
        {"eval",
         {{"output_dir", out},
          {"batch_size", 2},
          {"benchmarks",
           {{"pope", {{"questions", {"coco_pope_random.json", "coco_pope_adversarial.json"}}, {"images", "images"},
                      {"max_new_tokens", 3}}},
            {"chair", {{"image_ids", {9, 42, 64}}, {"images", "images"},
                       {"gt", golden_dir() + "/bench_data/coco_chair_gt_slice.json"},
                       {"synonyms", golden_dir() + "/bench_data/chair_synonyms.txt"}, {"max_new_tokens", 6}}}}},
          {"variants", Json::array({{{"name", "greedy"}},
                                    {{"name", "fastv k1 keep64"},
                                     {"pruning", {{"method", "fastv"}, {"layer", 1}, {"keep", 64}}}}})}}}};
    write_file_atomic(dir + "/spec.json", spec.dump(1));
  }
  Spec spec() const { return load_spec(dir + "/spec.json"); }
};

std::vector<Json> rows_of(const std::string& path) {
  std::vector<Json> r;
  std::ifstream f(path);
  for (std::string line; std::getline(f, line);)
    if (!line.empty()) r.push_back(Json::parse(line));
  return r;
}

// An MME release folder (flat and images/ + questions_answers_YN/ subtasks, a .txt with three
// questions, a .txt without an image, a missing subtask folder) and the same good questions as
// JSON lines (plus a malformed line and an image that does not exist).
struct MmeFixture {
  std::string dir;
  explicit MmeFixture(const std::string& name) {
    dir = ::testing::TempDir() + "/eval_mme_" + name + "_" + std::to_string(::getpid());
    fs::remove_all(dir);
    const std::string img = source_dir() + "/assets/images/";
    const std::string root = dir + "/MME_Benchmark_release_version";
    for (const char* d : {"/existence", "/count/images", "/count/questions_answers_YN", "/position", "/images/existence",
                          "/images/count"})
      fs::create_directories((std::string(d).rfind("/images/", 0) == 0 ? dir : root) + d);
    const std::string qa = "Is there a person in this image? Please answer yes or no.\tYes\n"
                           "Is there a cat in this image? Please answer yes or no.\tNo\n";
    const std::string qc = "Is there one boat in the image? Please answer yes or no.\tYes\n"
                           "Are there five boats in the image? Please answer yes or no.\tNo\n";
    fs::copy_file(img + "extreme_ironing.jpg", root + "/existence/a.jpg");
    std::ofstream(root + "/existence/a.txt") << qa;
    fs::copy_file(img + "waterview.jpg", root + "/existence/b.jpg");
    std::ofstream(root + "/existence/b.txt") << "Q1?\tYes\nQ2?\tNo\nQ3?\tNo\n";  // three questions
    fs::copy_file(img + "waterview.jpg", root + "/count/images/c.jpg");
    std::ofstream(root + "/count/questions_answers_YN/c.txt") << qc;
    std::ofstream(root + "/position/d.txt") << "Q1?\tYes\nQ2?\tNo\n";  // no d.jpg
    // color/ is missing.
    fs::copy_file(img + "extreme_ironing.jpg", dir + "/images/existence/a.jpg");
    fs::copy_file(img + "waterview.jpg", dir + "/images/count/c.jpg");
    auto line = [](const std::string& image, const std::string& qa, const std::string& category) {
      const size_t tab = qa.find('\t');
      return Json{{"question_id", image}, {"image", image}, {"question", qa.substr(0, tab)},
                  {"answer", qa.substr(tab + 1, qa.find('\n') - tab - 1)}, {"category", category}}
                 .dump() +
             "\n";
    };
    std::ofstream(dir + "/mme.jsonl") << line("existence/a.jpg", qa, "existence")
                                      << line("existence/a.jpg", qa.substr(qa.find('\n') + 1), "existence")
                                      << "{\"image\": \"count/c.jpg\", \n"  // line 3: malformed
                                      << line("count/c.jpg", qc, "count")
                                      << line("count/c.jpg", qc.substr(qc.find('\n') + 1), "count")
                                      << line("color/gone.jpg", "Q1?\tYes\n", "color")
                                      << line("color/gone.jpg", "Q2?\tNo\n", "color");
  }
  std::string write_spec(const std::string& out, const Json& mme) const {
    const Json spec = {{"pipeline", "eval"},
                       {"model", golden_dir() + "/tiny_llava"},
                       {"device", "cpu"},
                       {"output", {{"quiet", true}}},
                       {"eval",
                        {{"output_dir", out},
                         {"batch_size", 3},
                         {"benchmarks", {{"mme", mme}}},
                         {"variants", Json::array({{{"name", "greedy"}},
                                                   {{"name", "fastv"},
                                                    {"pruning", {{"method", "fastv"}, {"layer", 1}, {"keep", 64}}}}})}}}};
    write_file_atomic(dir + "/spec.json", spec.dump(1));
    return dir + "/spec.json";
  }
};

// The metrics part of a summary (throughput and dates differ between runs).
Json metrics_of(Json s) {
  for (auto& [bench, b] : s["benchmarks"].items())
    for (auto& v : b["variants"]) {
      v.erase("questions_per_s");
      v.erase("captions_per_s");
    }
  return s["benchmarks"];
}

}  // namespace

TEST(Eval, PopeAndChairOverVariantsWithErrorRows) {
  EvalFixture fx("full");
  const Json s = run_eval(fx.spec(), {});
  const auto& pope = s["benchmarks"]["pope"]["variants"];
  ASSERT_EQ(pope.size(), 2u);
  EXPECT_EQ(pope[0]["name"], "greedy");
  EXPECT_EQ(pope[0]["n"], 4);       // 6 lines: one malformed, one missing image
  EXPECT_EQ(pope[0]["errors"], 2);
  EXPECT_EQ(pope[0]["splits"]["random"]["n"], 3);
  EXPECT_EQ(pope[0]["splits"]["adversarial"]["n"], 1);
  EXPECT_TRUE(pope[0].contains("questions_per_s"));
  const auto& chair = s["benchmarks"]["chair"]["variants"];
  EXPECT_EQ(chair[1]["name"], "fastv k1 keep64");
  EXPECT_EQ(chair[0]["n"], 2);  // image 64 is missing
  EXPECT_EQ(chair[0]["errors"], 1);
  EXPECT_TRUE(chair[0]["metrics"].contains("chair_i"));

  const std::vector<Json> rows = rows_of(fx.dir + "/out/greedy/pope.jsonl");
  ASSERT_EQ(rows.size(), 6u);
  int bad_line = 0, missing = 0;
  for (const Json& r : rows) {
    if (r["ok"]) continue;
    if (r.contains("line") && r["line"] == 4 && r["split"] == "random") ++bad_line;
    if (r.value("image", "") == "missing.jpg") {
      ++missing;
      EXPECT_NE(r["error"].get<std::string>().find("missing.jpg"), std::string::npos);
    }
  }
  EXPECT_EQ(bad_line, 1);
  EXPECT_EQ(missing, 1);
  const std::vector<Json> frows = rows_of(fx.dir + "/out/fastv_k1_keep64/pope.jsonl");
  for (const Json& r : frows)
    if (r["ok"]) EXPECT_EQ(r["image_tokens"], 64);
  EXPECT_TRUE(path_exists(fx.dir + "/out/summary.json"));
  EXPECT_TRUE(path_exists(fx.dir + "/out/summary.md"));
  EXPECT_TRUE(path_exists(fx.dir + "/out/report.html"));

  // Resume: a torn last line and missing rows are redone; the metrics equal the full run's.
  const std::string pf = fx.dir + "/out/greedy/pope.jsonl";
  std::string text = read_text_file(pf);
  size_t cut = 0;
  for (int i = 0; i < 2; ++i) cut = text.find('\n', cut) + 1;
  write_file_atomic(pf, text.substr(0, cut) + R"({"key": "random:5", "ok": tr)");
  fs::remove(fx.dir + "/out/fastv_k1_keep64/chair.jsonl");
  const Json again = run_eval(fx.spec(), {});
  EXPECT_EQ(metrics_of(again), metrics_of(s));
  EXPECT_EQ(rows_of(pf).size(), 6u);

  // Shards 0/2 and 1/2 merged equal the single run.
  fx.write_spec(fx.dir + "/sharded");
  const Json s0 = run_eval(fx.spec(), parse_shard("0/2"));
  const Json s1 = run_eval(fx.spec(), parse_shard("1/2"));
  EXPECT_EQ(s0["shard"], "0/2");
  EXPECT_LT(s0["benchmarks"]["pope"]["variants"][0]["n"].get<int>(), 4);
  const Json merged = merge_eval(fx.dir + "/sharded");
  EXPECT_EQ(metrics_of(merged), metrics_of(s));
  EXPECT_TRUE(path_exists(fx.dir + "/sharded/report.html"));
}

TEST(Eval, KilledMidRunResumesToTheSameMetrics) {
  EvalFixture fx("kill");
  const Json full = run_eval(fx.spec(), {});
  fx.write_spec(fx.dir + "/killed");
  const std::string cmd = std::string(MMATTN_BINARY);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl(cmd.c_str(), cmd.c_str(), "eval", (fx.dir + "/spec.json").c_str(), "--quiet", "--log-level", "error",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  // Kill it once some rows exist (or after 20 s).
  const std::string first = fx.dir + "/killed/greedy/pope.jsonl";
  for (int i = 0; i < 400 && !(path_exists(first) && rows_of(first).size() >= 2); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  const Json resumed = run_eval(fx.spec(), {});
  EXPECT_EQ(metrics_of(resumed), metrics_of(full));
}

// A rerun into an output_dir whose rows came from another configuration of a variant (here the
// pruning's keep; a changed method default, e.g. VHR's filter, shows the same way in the record's
// resolved part) stops before writing anything, naming the variant, benchmark and field; batch_size
// and limit may change; rows without a record are taken as matching and get one.
TEST(Eval, ResumingRowsOfAnotherConfigurationStops) {
  EvalFixture fx("record");
  run_eval(fx.spec(), {});
  const std::string dir = fx.dir + "/out/fastv_k1_keep64";
  ASSERT_TRUE(path_exists(dir + "/pope.config.json"));
  Json spec = Json::parse(read_text_file(fx.dir + "/spec.json"));
  spec["eval"]["batch_size"] = 3;
  spec["eval"]["limit"] = 4;
  write_file_atomic(fx.dir + "/spec.json", spec.dump(1));
  EXPECT_NO_THROW(run_eval(fx.spec(), {}));
  const std::string rows = read_text_file(dir + "/pope.jsonl"), spec_before = read_text_file(fx.dir + "/out/spec.json");
  spec["eval"]["variants"][1]["pruning"]["keep"] = 32;
  write_file_atomic(fx.dir + "/spec.json", spec.dump(1));
  std::string err = "no error";
  try {
    run_eval(fx.spec(), {});
  } catch (const ConfigError& e) {
    err = e.what();
  }
  EXPECT_NE(err.find("fastv k1 keep64 / pope rows of another configuration"), std::string::npos) << err;
  EXPECT_NE(err.find("$.resolved.pruning.keep"), std::string::npos) << err;
  EXPECT_EQ(read_text_file(dir + "/pope.jsonl"), rows);  // nothing written: rows and spec.json as they were
  EXPECT_EQ(read_text_file(fx.dir + "/out/spec.json"), spec_before);
  // rows written before records existed: taken as matching (the new configuration is recorded)
  std::filesystem::remove(dir + "/pope.config.json");
  std::filesystem::remove(dir + "/chair.config.json");
  EXPECT_NO_THROW(run_eval(fx.spec(), {}));
  EXPECT_EQ(Json::parse(read_text_file(dir + "/pope.config.json"))["resolved"]["pruning"]["keep"], 32);
}

TEST(Eval, SpecErrorsNameThePath) {
  auto err = [](const Json& eval) {
    try {
      JsonReader r(eval, "spec.json", "$.eval");
      validate_eval_options(r);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(err({{"benchmarks", Json::object()}, {"variants", {{{"name", "a"}}}}}).find("$.eval.benchmarks"),
            std::string::npos);
  const Json pope = {{"pope", {{"questions", {"q.json"}}, {"images", "."}}}};
  EXPECT_NE(err({{"benchmarks", pope}, {"variants", Json::array()}}).find("$.eval.variants"), std::string::npos);
  EXPECT_NE(err({{"benchmarks", pope}, {"variants", {{{"name", "a"}}, {{"name", "a"}}}}}).find("used twice"),
            std::string::npos);
  EXPECT_NE(err({{"benchmarks", pope}, {"variants", {{{"name", "a"}, {"pruning", {{"method", "x"}}}}}}})
                .find("$.eval.variants[0].pruning.method"),
            std::string::npos);
  EXPECT_NE(err({{"benchmarks", pope}, {"variants", {{{"name", "a"}}}}, {"batch_size", 0}}).find("$.eval.batch_size"),
            std::string::npos);
  const Json vars = {{{"name", "a"}}};
  EXPECT_NE(err({{"benchmarks", {{"mme", {{"root", "r"}, {"questions", "q"}}}}}, {"variants", vars}})
                .find("$.eval.benchmarks.mme: needs either"),
            std::string::npos);
  EXPECT_NE(err({{"benchmarks", {{"mme", {{"root", "r"}, {"images", "i"}}}}}, {"variants", vars}})
                .find("$.eval.benchmarks.mme.images"),
            std::string::npos);
  EXPECT_NE(err({{"benchmarks", {{"mme", {{"root", "r"}, {"subtasks", {"existence", "colour"}}}}}}, {"variants", vars}})
                .find("$.eval.benchmarks.mme.subtasks[1]"),
            std::string::npos);
  EXPECT_NE(err({{"benchmarks", {{"mme", {{"root", "r"}, {"subtasks", {"count", "count"}}}}}}, {"variants", vars}})
                .find("named twice"),
            std::string::npos);
  EXPECT_NE(err({{"benchmarks", {{"mme", {{"root", "r"}, {"prompt_style", "x"}}}}}, {"variants", vars}})
                .find("$.eval.benchmarks.mme.prompt_style"),
            std::string::npos);
  EXPECT_EQ(err({{"benchmarks", {{"mme", {{"root", "r"}, {"subtasks", {"OCR"}}, {"prompt_style", "llava"}}}}},
                 {"variants", vars}}),
            "no error");
  EXPECT_THROW(parse_shard("2/2"), ConfigError);
  EXPECT_THROW(parse_shard("x"), ConfigError);
  EXPECT_EQ(parse_shard("1/3").num_shards, 3);
}

TEST(Eval, MmeReleaseFolderAndJsonLines) {
  MmeFixture fx("mme");
  const Json folder = {{"root", "MME_Benchmark_release_version"}, {"max_new_tokens", 3}};
  const Json s = run_eval(load_spec(fx.write_spec(fx.dir + "/out", folder)), {});
  const auto& vs = s["benchmarks"]["mme"]["variants"];
  ASSERT_EQ(vs.size(), 2u);
  EXPECT_EQ(vs[0]["name"], "greedy");
  // 9 entries: a.txt (2 questions), b.txt (3 lines: 1 error), c.txt (2), d.txt (no image: 2
  // errors), color/ (missing: 1 error).
  EXPECT_EQ(vs[0]["n"], 4);
  EXPECT_EQ(vs[0]["errors"], 4);
  EXPECT_TRUE(vs[0].contains("questions_per_s"));
  const Json& sub = vs[0]["subtasks"];
  ASSERT_EQ(sub.size(), 2u);
  for (const char* t : {"existence", "count"}) {
    EXPECT_EQ(sub[t]["questions"], 2) << t;
    EXPECT_EQ(sub[t]["images"], 1) << t;
    const double acc = sub[t]["acc"], acc_plus = sub[t]["acc_plus"];
    EXPECT_DOUBLE_EQ(sub[t]["score"].get<double>(), acc + acc_plus) << t;
    EXPECT_TRUE(acc == 0 || acc == 50 || acc == 100) << acc;
    EXPECT_TRUE(acc_plus == 0 || acc_plus == 100) << acc_plus;
  }
  EXPECT_DOUBLE_EQ(vs[0]["total"].get<double>(),
                   sub["existence"]["score"].get<double>() + sub["count"]["score"].get<double>());
  EXPECT_DOUBLE_EQ(vs[0]["max_total"].get<double>(), 400);

  const std::string gf = fx.dir + "/out/greedy/mme.jsonl";
  const std::vector<Json> rows = rows_of(gf);
  ASSERT_EQ(rows.size(), 8u);
  std::map<std::string, Json> by_key;
  for (const Json& r : rows) by_key[r["key"].get<std::string>()] = r;
  ASSERT_TRUE(by_key.count("existence/a.txt:1"));
  const Json& a1 = by_key["existence/a.txt:1"];
  EXPECT_TRUE(a1["ok"].get<bool>());
  EXPECT_EQ(a1["label"], "yes");
  EXPECT_EQ(a1["subtask"], "existence");
  EXPECT_EQ(a1["image"], "existence/a.jpg");
  EXPECT_EQ(a1["question"], "Is there a person in this image? Please answer yes or no.");
  EXPECT_TRUE(a1.contains("answer"));
  EXPECT_EQ(by_key["count/c.txt:2"]["image"], "count/images/c.jpg");
  const Json& b = by_key["existence/b.txt:file"];
  EXPECT_FALSE(b["ok"].get<bool>());
  EXPECT_EQ(b["line"], 0);
  EXPECT_NE(b["file"].get<std::string>().find("existence/b.txt"), std::string::npos);
  EXPECT_NE(b["error"].get<std::string>().find("holds 3 question lines"), std::string::npos);
  for (const char* k : {"position/d.txt:1", "position/d.txt:2"}) {
    ASSERT_TRUE(by_key.count(k)) << k;
    EXPECT_NE(by_key[k]["error"].get<std::string>().find("no image named d.*"), std::string::npos) << k;
  }
  EXPECT_TRUE(by_key.count("color/color:file"));
  const std::string md = read_text_file(fx.dir + "/out/summary.md");
  EXPECT_NE(md.find("## MME (hallucination)"), std::string::npos);
  EXPECT_NE(md.find("| Variant | existence Acc | existence Acc+ | existence Score | count Acc |"), std::string::npos) << md;
  EXPECT_NE(md.find("questions / images: existence 2 / 1, count 2 / 1"), std::string::npos) << md;
  EXPECT_NE(read_text_file(fx.dir + "/out/report.html").find("MME score (total)"), std::string::npos);

  // Resume: a torn last line and a variant's missing rows are redone; the metrics are the same.
  const std::string text = read_text_file(gf);
  size_t cut = 0;
  for (int i = 0; i < 3; ++i) cut = text.find('\n', cut) + 1;
  write_file_atomic(gf, text.substr(0, cut) + R"({"key": "count/c.txt:1", "ok": tr)");
  fs::remove(fx.dir + "/out/fastv/mme.jsonl");
  const Json again = run_eval(load_spec(fx.write_spec(fx.dir + "/out", folder)), {});
  EXPECT_EQ(metrics_of(again), metrics_of(s));
  EXPECT_EQ(rows_of(gf).size(), 8u);

  // The scores come from the rows (the tiny model's answers are all "other"): with answers
  // rewritten by hand, a rerun (nothing left to run) gives the numbers worked out by hand.
  // existence: both right -> acc 100, acc+ 100, score 200; count: "Yes" twice, one right ->
  // acc 50, acc+ 0, score 50; total 250.
  std::string patched;
  for (Json r : rows_of(gf)) {
    if (r["ok"].get<bool>())
      r["answer"] = r["subtask"] == "existence" ? (r["label"] == "yes" ? "Yes, there is." : "No") : "yes";
    patched += r.dump() + "\n";
  }
  write_file_atomic(gf, patched);
  const Json hand = run_eval(load_spec(fx.write_spec(fx.dir + "/out", folder)), {});
  const Json& g = hand["benchmarks"]["mme"]["variants"][0];
  EXPECT_DOUBLE_EQ(g["subtasks"]["existence"]["score"].get<double>(), 200);
  EXPECT_DOUBLE_EQ(g["subtasks"]["count"]["acc"].get<double>(), 50);
  EXPECT_DOUBLE_EQ(g["subtasks"]["count"]["acc_plus"].get<double>(), 0);
  EXPECT_DOUBLE_EQ(g["total"].get<double>(), 250);
  EXPECT_EQ(g["unparseable"], 0);
  EXPECT_EQ(metrics_of(hand)["mme"]["variants"][1], metrics_of(again)["mme"]["variants"][1]);  // untouched
  EXPECT_NE(read_text_file(fx.dir + "/out/summary.md")
                .find("| greedy | 100.0 | 100.0 | 200.0 | 50.0 | 0.0 | 50.0 | 250.0 | 0 | 4 |"),
            std::string::npos);

  // Shards 0/2 and 1/2 merged equal the single run.
  const std::string spec = fx.write_spec(fx.dir + "/sharded", folder);
  run_eval(load_spec(spec), parse_shard("0/2"));
  run_eval(load_spec(spec), parse_shard("1/2"));
  EXPECT_EQ(metrics_of(merge_eval(fx.dir + "/sharded")), metrics_of(s));

  // The same questions as JSON lines: the same per-subtask numbers; a malformed line and an image
  // that does not exist (both of its questions) are error rows.
  const Json jl = run_eval(
      load_spec(fx.write_spec(fx.dir + "/jsonl", {{"questions", "mme.jsonl"}, {"images", "images"}, {"max_new_tokens", 3}})),
      {});
  const auto& jv = jl["benchmarks"]["mme"]["variants"];
  for (size_t v = 0; v < 2; ++v) {
    EXPECT_EQ(jv[v]["n"], 4);
    EXPECT_EQ(jv[v]["errors"], 3);
    EXPECT_EQ(jv[v]["subtasks"], vs[v]["subtasks"]) << v;
    EXPECT_EQ(jv[v]["total"], vs[v]["total"]) << v;
  }
  std::map<std::string, Json> jrows;
  for (const Json& r : rows_of(fx.dir + "/jsonl/greedy/mme.jsonl")) jrows[r["key"].get<std::string>()] = r;
  ASSERT_EQ(jrows.size(), 7u);
  EXPECT_EQ(jrows["mme.jsonl:1"]["question_id"], "existence/a.jpg");
  EXPECT_FALSE(jrows["mme.jsonl:3"]["ok"].get<bool>());
  EXPECT_EQ(jrows["mme.jsonl:3"]["line"], 3);
  EXPECT_NE(jrows["mme.jsonl:3"]["file"].get<std::string>().find("mme.jsonl"), std::string::npos);
  EXPECT_FALSE(jrows["mme.jsonl:6"]["ok"].get<bool>());
  EXPECT_NE(jrows["mme.jsonl:6"]["error"].get<std::string>().find("gone.jpg"), std::string::npos);
}
