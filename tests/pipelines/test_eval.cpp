// The eval runner end to end on the CPU with the tiny golden LLaVA: POPE (a malformed line, a
// missing image) and CHAIR (a missing image) over two variants; the rows, the summary, the
// reports; a resumed run (torn last line, process killed mid-run) and shards merged both give the
// numbers of one uninterrupted run.
#include <csignal>
#include <filesystem>
#include <fstream>
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
  EXPECT_THROW(parse_shard("2/2"), ConfigError);
  EXPECT_THROW(parse_shard("x"), ConfigError);
  EXPECT_EQ(parse_shard("1/3").num_shards, 3);
}
