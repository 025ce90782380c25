#include "pipelines/eval.h"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <set>

#include "core/io.h"
#include "core/log.h"
#include "core/progress.h"
#include "pipelines/chair.h"
#include "pipelines/eval_report.h"
#include "pipelines/llava.h"
#include "pipelines/mme.h"
#include "pipelines/pope.h"
#include "pipelines/spec.h"
#include "pipelines/version.h"

namespace mmattn {

namespace {

using Clock = std::chrono::steady_clock;

// LLaVA-1.5's instruction for short answers (its POPE prompt, and its MME prompt).
constexpr const char* kShortAnswer = "Answer the question using a single word or phrase.";

struct PopeSource {
  std::string split, file;
};

struct Variant {
  std::string name;
  Json config = Json::object();
  PruningConfig pruning;
  ModulationSet modulation;
  SamplingConfig sampling;
  bool system_prompt = false;
};

struct EvalOptions {
  std::string output_dir = "out/eval";
  int batch_size = 16;
  int64_t limit = 0;
  bool pope = false, chair = false, mme = false;
  std::vector<PopeSource> pope_files;
  std::string pope_images, pope_suffix = kShortAnswer;
  int64_t pope_max_new = 16;
  std::vector<int64_t> chair_ids;
  std::string chair_images, chair_gt, chair_synonyms, chair_prompt = kDefaultCaptionPrompt;
  std::string chair_pattern = "COCO_val2014_%012d.jpg";
  int64_t chair_max_new = 512;
  std::string mme_root;                   // (a) the release folder, or
  std::string mme_questions, mme_images;  // (b) a JSON-lines file + its image folder
  std::vector<std::string> mme_subtasks = mme_hallucination_subtasks();
  bool mme_llava_prompt = false;
  std::string mme_suffix;
  int64_t mme_max_new = 16;
  std::vector<Variant> variants;
};

// POPE's split from a file name: coco_pope_adversarial.json -> "adversarial".
std::string split_of(const std::string& file) {
  std::string stem = std::filesystem::path(file).stem().string();
  const size_t u = stem.rfind('_');
  return u == std::string::npos ? stem : stem.substr(u + 1);
}

std::string dir_name(const std::string& variant) {
  std::string s;
  for (char c : variant) s += (std::isalnum(uint8_t(c)) || c == '-' || c == '_' || c == '.') ? c : '_';
  return s;
}

EvalOptions parse_options(JsonReader& r, const std::string& base_dir) {
  EvalOptions o;
  o.output_dir = resolve_path(base_dir, r.get<std::string>("output_dir", o.output_dir));
  o.batch_size = r.get<int>("batch_size", o.batch_size);
  if (o.batch_size < 1 || o.batch_size > 1024) r.fail_key("batch_size", "must be in [1, 1024]");
  o.limit = r.get<int64_t>("limit", 0);
  if (o.limit < 0) r.fail_key("limit", "must be >= 0 (0 = all)");
  JsonReader b = r.child("benchmarks");
  if (b.has("pope")) {
    JsonReader p = b.child("pope");
    o.pope = true;
    const Json& q = p.json().contains("questions") ? p.json()["questions"] : Json();
    if (!q.is_array() || q.empty()) p.fail_key("questions", "must be a non-empty array of files or {split, file}");
    for (size_t i = 0; i < q.size(); ++i) {
      if (q[i].is_string()) {
        const std::string f = q[i].get<std::string>();
        o.pope_files.push_back({split_of(f), resolve_path(base_dir, f)});
      } else if (q[i].is_object()) {
        JsonReader e(q[i], "spec", p.path_of("questions[" + std::to_string(i) + "]"));
        const std::string f = e.get<std::string>("file");
        o.pope_files.push_back({e.get<std::string>("split", split_of(f)), resolve_path(base_dir, f)});
        e.finish();
      } else {
        p.fail_key("questions[" + std::to_string(i) + "]", "must be a file name or {split, file}");
      }
    }
    p.ignore("questions");
    o.pope_images = resolve_path(base_dir, p.get<std::string>("images"));
    o.pope_max_new = p.get<int64_t>("max_new_tokens", o.pope_max_new);
    if (o.pope_max_new < 1) p.fail_key("max_new_tokens", "must be >= 1");
    o.pope_suffix = p.get<std::string>("prompt_suffix", o.pope_suffix);
    p.finish();
  }
  if (b.has("chair")) {
    JsonReader c = b.child("chair");
    o.chair = true;
    const Json& ids = c.json().contains("image_ids") ? c.json()["image_ids"] : Json();
    Json list = ids;
    if (ids.is_string()) list = read_json_file(resolve_path(base_dir, ids.get<std::string>()));
    if (!list.is_array()) c.fail_key("image_ids", "must be a list of COCO image ids or a JSON file holding one");
    for (const auto& v : list) {
      if (!v.is_number_integer()) c.fail_key("image_ids", "holds a non-integer entry " + v.dump());
      o.chair_ids.push_back(v.get<int64_t>());
    }
    c.ignore("image_ids");
    o.chair_images = resolve_path(base_dir, c.get<std::string>("images"));
    o.chair_gt = resolve_path(base_dir, c.get<std::string>("gt"));
    if (c.has("synonyms")) o.chair_synonyms = resolve_path(base_dir, c.get<std::string>("synonyms"));
    o.chair_prompt = c.get<std::string>("prompt", o.chair_prompt);
    o.chair_max_new = c.get<int64_t>("max_new_tokens", o.chair_max_new);
    if (o.chair_max_new < 1) c.fail_key("max_new_tokens", "must be >= 1");
    o.chair_pattern = c.get<std::string>("image_pattern", o.chair_pattern);
    c.finish();
  }
  if (b.has("mme")) {
    JsonReader m = b.child("mme");
    o.mme = true;
    if (m.has("root") == m.has("questions"))
      m.fail("needs either \"root\" (the MME release folder) or \"questions\" (JSON lines) with \"images\"");
    if (m.has("root")) {
      o.mme_root = resolve_path(base_dir, m.get<std::string>("root"));
    } else {
      o.mme_questions = resolve_path(base_dir, m.get<std::string>("questions"));
      o.mme_images = resolve_path(base_dir, m.get<std::string>("images"));
    }
    o.mme_subtasks = m.get<std::vector<std::string>>("subtasks", o.mme_subtasks);
    if (o.mme_subtasks.empty()) m.fail_key("subtasks", "must name at least one subtask");
    const auto& known = mme_all_subtasks();
    std::set<std::string> seen;
    for (size_t i = 0; i < o.mme_subtasks.size(); ++i) {
      const std::string& t = o.mme_subtasks[i];
      const std::string key = "subtasks[" + std::to_string(i) + "]";
      if (std::find(known.begin(), known.end(), t) == known.end())
        m.fail_key(key, "unknown MME subtask '" + t + "' (existence, count, position, color, ...)");
      if (!seen.insert(t).second) m.fail_key(key, "'" + t + "' is named twice");
    }
    const std::string style = m.get<std::string>("prompt_style", "mme");
    if (style != "mme" && style != "llava")
      m.fail_key("prompt_style", "must be \"mme\" or \"llava\", got \"" + style + "\"");
    o.mme_llava_prompt = style == "llava";
    o.mme_suffix = m.get<std::string>("prompt_suffix", o.mme_llava_prompt ? kShortAnswer : "");
    o.mme_max_new = m.get<int64_t>("max_new_tokens", o.mme_max_new);
    if (o.mme_max_new < 1) m.fail_key("max_new_tokens", "must be >= 1");
    m.finish();
  }
  b.finish();
  if (!o.pope && !o.chair && !o.mme) r.fail_key("benchmarks", "names no benchmark (pope, chair, mme)");
  std::set<std::string> names;
  for (JsonReader& v : r.array("variants")) {
    Variant var;
    var.config = v.json();
    var.name = v.get<std::string>("name");
    if (var.name.empty()) v.fail_key("name", "must not be empty");
    if (!names.insert(dir_name(var.name)).second) v.fail_key("name", "'" + var.name + "' is used twice");
    if (v.has("pruning")) {
      JsonReader p = v.child("pruning");
      var.pruning = PruningConfig::parse(p);
    }
    var.modulation = ModulationSet::parse(v, "modulation");
    var.system_prompt = v.get<bool>("system_prompt", false);
    var.sampling.do_sample = v.get<bool>("do_sample", false);
    var.sampling.temperature = float(v.get<double>("temperature", 1.0));
    var.sampling.top_k = v.get<int>("top_k", 0);
    var.sampling.top_p = float(v.get<double>("top_p", 1.0));
    var.sampling.repetition_penalty = float(v.get<double>("repetition_penalty", 1.0));
    v.finish();
    o.variants.push_back(var);
  }
  if (o.variants.empty()) r.fail_key("variants", "must list at least one variant");
  r.finish();
  return o;
}

// One sample of a benchmark, in its global order.
struct Sample {
  std::string key;
  int64_t index = 0;
  std::string error;  // known before running (a malformed question line)
  std::string image;  // full path
  std::string prompt;
  Json fields = Json::object();  // copied into the row (split, question_id, label, line, image_id, ...)
};

std::vector<Sample> pope_samples(const EvalOptions& o) {
  std::vector<Sample> s;
  for (const PopeSource& src : o.pope_files) {
    std::vector<Sample> file;
    try {
      const PopeQuestionFile f = read_pope_questions(src.file);
      for (const auto& q : f.questions) {
        Sample x;
        x.key = src.split + ":" + std::to_string(q.line);
        x.image = resolve_path(o.pope_images, q.image);
        x.prompt = o.pope_suffix.empty() ? q.text : q.text + "\n" + o.pope_suffix;
        x.fields = {{"split", src.split}, {"question_id", q.question_id}, {"line", q.line},
                    {"image", q.image},   {"label", q.label_yes ? "yes" : "no"}};
        file.push_back(x);
      }
      for (const auto& e : f.errors) {
        Sample x;
        x.key = src.split + ":" + std::to_string(e.line);
        x.error = e.message;
        x.fields = {{"split", src.split}, {"line", e.line}, {"file", src.file}};
        file.push_back(x);
      }
    } catch (const Error& e) {  // an unreadable file: one error row, the other files go on
      Sample x;
      x.key = src.split + ":file";
      x.error = e.what();
      x.fields = {{"split", src.split}, {"file", src.file}};
      file.push_back(x);
    }
    std::stable_sort(file.begin(), file.end(), [](const Sample& a, const Sample& b) {
      return a.fields.value("line", int64_t(0)) < b.fields.value("line", int64_t(0));
    });
    s.insert(s.end(), file.begin(), file.end());
  }
  return s;
}

std::vector<Sample> chair_samples(const EvalOptions& o) {
  std::vector<Sample> s;
  std::set<int64_t> seen;
  for (int64_t id : o.chair_ids) {
    if (!seen.insert(id).second) continue;  // duplicates would be scored twice
    char name[256];
    std::snprintf(name, sizeof(name), o.chair_pattern.c_str(), static_cast<long long>(id));
    Sample x;
    x.key = "chair:" + std::to_string(id);
    x.image = resolve_path(o.chair_images, name);
    x.prompt = o.chair_prompt;
    x.fields = {{"image_id", id}, {"image", name}};
    s.push_back(x);
  }
  return s;
}

std::vector<Sample> mme_samples(const EvalOptions& o) {
  const bool folder = !o.mme_root.empty();
  std::vector<MmeQuestion> qs;
  try {
    qs = folder ? read_mme_folder(o.mme_root, o.mme_subtasks) : read_mme_jsonl(o.mme_questions, o.mme_subtasks);
  } catch (const Error& e) {  // an unreadable question file
    MmeQuestion x;
    x.file = o.mme_questions;
    x.error = e.what();
    qs.push_back(x);
  }
  std::vector<Sample> s;
  for (const MmeQuestion& q : qs) {
    Sample x;
    // .txt names repeat across the subtask folders; JSON-lines line numbers do not.
    x.key = str_cat(folder ? q.subtask + "/" : "", std::filesystem::path(q.file).filename().string(), ":",
                    q.line > 0 ? std::to_string(q.line) : "file");
    x.fields = {{"subtask", q.subtask}, {"image", q.image}, {"line", q.line}};
    if (!q.question_id.is_null()) x.fields["question_id"] = q.question_id;
    if (!q.error.empty()) {
      x.error = q.error;
      x.fields["file"] = q.file;
    } else {
      x.image = resolve_path(folder ? o.mme_root : o.mme_images, q.image);
      x.prompt = mme_prompt(q.text, o.mme_llava_prompt, o.mme_suffix);
      x.fields["question"] = q.text;
      x.fields["label"] = q.label_yes ? "yes" : "no";
    }
    s.push_back(x);
  }
  return s;
}

// The benchmarks a spec runs, in a fixed order.
std::vector<std::string> benchmarks_of(const EvalOptions& o) {
  std::vector<std::string> b;
  if (o.pope) b.push_back("pope");
  if (o.chair) b.push_back("chair");
  if (o.mme) b.push_back("mme");
  return b;
}

int64_t max_new_tokens_of(const EvalOptions& o, const std::string& bench) {
  return bench == "pope" ? o.pope_max_new : bench == "chair" ? o.chair_max_new : o.mme_max_new;
}

// CHAIR captions; POPE and MME answer questions.
bool is_captioning(const std::string& bench) { return bench == "chair"; }

// The rows of a results file; a torn last line (a killed writer) is dropped and the file
// rewritten without it, so appends continue on a clean line.
std::vector<Json> read_rows(const std::string& path) {
  std::vector<Json> rows;
  if (!path_exists(path)) return rows;
  const std::string text = read_text_file(path);
  size_t pos = 0, good_end = 0;
  bool torn = false;
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) {  // no newline: the writer died mid-line
      torn = true;
      break;
    }
    const std::string line = text.substr(pos, nl - pos);
    pos = nl + 1;
    if (line.empty()) continue;
    try {
      Json j = Json::parse(line);
      if (!j.is_object() || !j.contains("key")) throw std::runtime_error("no key");
      rows.push_back(std::move(j));
      good_end = pos;
    } catch (const std::exception&) {
      MMATTN_WARN(path, ": dropping an unreadable results line (the sample runs again)");
      torn = true;
    }
  }
  if (torn) {
    std::string keep;
    for (const Json& j : rows) keep += j.dump() + "\n";
    write_file_atomic(path, keep);
  }
  (void)good_end;
  return rows;
}

class RowWriter {
 public:
  explicit RowWriter(const std::string& path) : path_(path) {
    std::filesystem::create_directories(std::filesystem::path(path).parent_path());
    f_ = std::fopen(path.c_str(), "ab");
    MMATTN_CHECK(f_, IoError, path, ": cannot open for appending");
  }
  ~RowWriter() {
    if (f_) std::fclose(f_);
  }
  void write(const Json& row) {
    const std::string s = row.dump() + "\n";
    MMATTN_CHECK(std::fwrite(s.data(), 1, s.size(), f_) == s.size() && std::fflush(f_) == 0, IoError, path_,
                 ": write failed");
  }

 private:
  std::string path_;
  FILE* f_ = nullptr;
};

std::string results_path(const std::string& out, const std::string& variant, const std::string& bench, int shard,
                         int n) {
  std::string p = out + "/" + dir_name(variant) + "/" + bench;
  if (n > 1) p += ".shard-" + std::to_string(shard) + "-of-" + std::to_string(n);
  return p + ".jsonl";
}

// Rows by key, ordered by sample index (later duplicates of a key replace earlier ones).
std::vector<Json> ordered(const std::vector<Json>& rows) {
  std::map<std::string, Json> by_key;
  for (const Json& r : rows) by_key[r["key"].get<std::string>()] = r;
  std::vector<Json> v;
  for (auto& [k, r] : by_key) v.push_back(r);
  std::stable_sort(v.begin(), v.end(),
                   [](const Json& a, const Json& b) { return a.value("index", int64_t(0)) < b.value("index", int64_t(0)); });
  return v;
}

// Calls add(row) for every answered row; returns the number of error rows.
int64_t for_ok_rows(const std::vector<Json>& rows, const std::function<void(const Json&)>& add) {
  int64_t errors = 0;
  for (const Json& r : rows) {
    if (r.value("ok", false)) add(r);
    else ++errors;
  }
  return errors;
}

Json pope_summary(const std::vector<Json>& rows) {
  std::vector<PopeScoredAnswer> answers;
  const int64_t errors = for_ok_rows(rows, [&](const Json& r) {
    answers.push_back({r["split"].get<std::string>(), r["label"] == "yes", r["answer"].get<std::string>()});
  });
  Json j = pope_report_json(score_pope(answers));
  j["n"] = int64_t(answers.size());
  j["errors"] = errors;
  return j;
}

Json mme_summary(const std::vector<Json>& rows) {
  std::vector<MmeScoredAnswer> answers;
  const int64_t errors = for_ok_rows(rows, [&](const Json& r) {
    answers.push_back({r["subtask"].get<std::string>(), r["image"].get<std::string>(), r["label"] == "yes",
                       r["answer"].get<std::string>()});
  });
  Json j = mme_report_json(score_mme(answers));
  j["n"] = int64_t(answers.size());
  j["errors"] = errors;
  return j;
}

Json chair_summary(const std::vector<Json>& rows, const ChairVocab& vocab, const ChairGroundTruth& gt) {
  std::vector<ChairCaption> caps;
  const int64_t errors = for_ok_rows(
      rows, [&](const Json& r) { caps.push_back({r["image_id"].get<int64_t>(), r["caption"].get<std::string>()}); });
  Json j = {{"metrics", chair_report_json(score_chair(caps, vocab, gt), false)["metrics"]}};
  j["n"] = int64_t(caps.size());
  j["errors"] = errors;
  return j;
}

struct ChairData {
  ChairVocab vocab;
  ChairGroundTruth gt;
};

ChairData load_chair(const EvalOptions& o) {
  ChairData d;
  const Json gt = read_json_file(o.chair_gt);
  d.gt = chair_gt_from_json(gt, o.chair_gt);
  d.vocab = o.chair_synonyms.empty() ? chair_vocab_from_gt_json(gt, o.chair_gt) : read_chair_synonyms(o.chair_synonyms);
  return d;
}

// Summary of every variant from the files of one shard (or the merged files: shard 0 of 1).
Json summarize(const EvalOptions& o, const Json& head, int shard, int n, const std::map<std::string, double>& rates) {
  Json s = head;
  s["benchmarks"] = Json::object();
  std::unique_ptr<ChairData> chair;
  if (o.chair) chair = std::make_unique<ChairData>(load_chair(o));
  for (const std::string& bench : benchmarks_of(o)) {
    Json vars = Json::array();
    for (const Variant& v : o.variants) {
      const std::vector<Json> rows = ordered(read_rows(results_path(o.output_dir, v.name, bench, shard, n)));
      Json e = bench == "pope" ? pope_summary(rows) : bench == "mme" ? mme_summary(rows)
                                                                     : chair_summary(rows, chair->vocab, chair->gt);
      e["name"] = v.name;
      e["config"] = v.config;
      const auto it = rates.find(v.name + "/" + bench);
      if (it != rates.end()) e[is_captioning(bench) ? "captions_per_s" : "questions_per_s"] = it->second;
      vars.push_back(e);
    }
    s["benchmarks"][bench] = {{"variants", vars}};
  }
  return s;
}

std::string today() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d", std::gmtime(&t));
  return buf;
}

Json head_of(const Spec& spec) {
  return Json{{"model", spec.model}, {"device", spec.device.str()}, {"dtype", compute_dtype_name(spec.dtype)},
              {"date", today()}, {"version", version_string()}};
}

}  // namespace

EvalRunOptions parse_shard(const std::string& s) {
  EvalRunOptions o;
  const size_t slash = s.find('/');
  try {
    MMATTN_CHECK(slash != std::string::npos, ConfigError, "");
    o.shard = std::stoi(s.substr(0, slash));
    o.num_shards = std::stoi(s.substr(slash + 1));
  } catch (const std::exception&) {
    MMATTN_THROW(ConfigError, "--shard '", s, "': expected i/n, e.g. 0/4");
  }
  MMATTN_CHECK(o.num_shards >= 1 && o.shard >= 0 && o.shard < o.num_shards, ConfigError, "--shard '", s,
               "': need 0 <= i < n");
  return o;
}

void validate_eval_options(JsonReader& r) { parse_options(r, ""); }

Json run_eval_spec(const Spec& spec) { return run_eval(spec, EvalRunOptions{}); }

namespace {

// The first JSON path (from `at`) at which a and b differ, "" when they are equal.
std::string first_difference(const Json& a, const Json& b, const std::string& at) {
  if (a.is_object() && b.is_object()) {
    for (const auto& [k, va] : a.items()) {
      if (!b.contains(k)) return at + "." + k;
      if (std::string d = first_difference(va, b[k], at + "." + k); !d.empty()) return d;
    }
    for (const auto& [k, vb] : b.items())
      if (!a.contains(k)) return at + "." + k;
    return "";
  }
  if (a.is_array() && b.is_array() && a.size() == b.size()) {
    for (size_t i = 0; i < a.size(); ++i)
      if (std::string d = first_difference(a[i], b[i], at + "[" + std::to_string(i) + "]"); !d.empty()) return d;
    return "";
  }
  return a == b ? "" : at;
}

// What the rows of one variant and benchmark depend on besides their samples: the model, dtype and
// seed, the benchmark's options, the variant as written and as resolved (the methods' defaults:
// a changed default changes the results too). batch_size, limit and output_dir are left out: a
// rerun may change them.
Json rows_record(const Spec& spec, const Variant& v, const std::string& bench) {
  return Json{{"model", spec.model},
              {"dtype", compute_dtype_name(spec.dtype)},
              {"seed", spec.seed},
              {"benchmark", spec.options["benchmarks"][bench]},
              {"variant", v.config},
              {"resolved", {{"pruning", v.pruning.to_json()}, {"modulation", v.modulation.to_json()}}}};
}

// <variant>/<bench>.config.json records rows_record for the rows beside it. A run that would add
// rows to results of another configuration stops with a ConfigError naming the first differing
// field (rows of two configurations never mix); rows without a record (written before records
// existed) are assumed to match, with a warning, and get one.
void check_rows_record(const Spec& spec, const EvalOptions& o, const Variant& v, const std::string& bench) {
  const std::string dir = o.output_dir + "/" + dir_name(v.name);
  const std::string path = dir + "/" + bench + ".config.json";
  const Json now = rows_record(spec, v, bench);
  if (path_exists(path)) {
    Json was;
    try {
      was = read_json_file(path);
    } catch (const Error& e) {
      MMATTN_THROW(ConfigError, "eval: ", path, " (the record of the rows beside it) is unreadable: ", e.what(),
                   "; remove ", dir, " or use another output_dir");
    }
    const std::string d = first_difference(was, now, "$");
    MMATTN_CHECK(d.empty(), ConfigError, "eval: ", dir, " holds ", v.name, " / ", bench,
                 " rows of another configuration (", d, " differs: ", path, "); use another output_dir or variant "
                 "name, or remove ", dir, " to start over");
    return;
  }
  bool rows = false;
  if (std::filesystem::exists(dir))
    for (const auto& e : std::filesystem::directory_iterator(dir))
      rows = rows || (e.path().filename().string().rfind(bench, 0) == 0 && e.path().extension() == ".jsonl");
  if (rows)
    MMATTN_WARN("eval: ", dir, " has ", bench, " rows without a record of their configuration; assuming they match");
  std::filesystem::create_directories(dir);
  write_file_atomic(path, now.dump(1) + "\n");
}

}  // namespace

Json run_eval(const Spec& spec, const EvalRunOptions& ro) {
  JsonReader r(spec.options, spec.source, "$.eval");
  const EvalOptions o = parse_options(r, spec.base_dir);
  std::filesystem::create_directories(o.output_dir);
  for (const Variant& v : o.variants) {
    if (o.pope) check_rows_record(spec, o, v, "pope");
    if (o.chair) check_rows_record(spec, o, v, "chair");
    if (o.mme) check_rows_record(spec, o, v, "mme");
  }
  // What eval-merge needs to rebuild the summary.
  write_file_atomic(o.output_dir + "/spec.json",
                    Json{{"source", spec.source}, {"base_dir", spec.base_dir}, {"model", spec.model},
                         {"device", spec.device.str()}, {"dtype", compute_dtype_name(spec.dtype)},
                         {"eval", spec.options}}
                            .dump(1) +
                        "\n");
  std::vector<std::pair<std::string, std::vector<Sample>>> benches;
  if (o.pope) benches.push_back({"pope", pope_samples(o)});
  if (o.chair) benches.push_back({"chair", chair_samples(o)});
  if (o.mme) benches.push_back({"mme", mme_samples(o)});
  for (auto& [name, samples] : benches) {
    if (o.limit > 0 && int64_t(samples.size()) > o.limit) samples.resize(size_t(o.limit));
    for (size_t i = 0; i < samples.size(); ++i) samples[i].index = int64_t(i);
  }

  const LlavaPipeline pipe(spec.model, spec.device, spec.dtype);
  std::map<std::string, double> rates;
  for (const Variant& v : o.variants) {
    for (const auto& [bench, samples] : benches) {
      const std::string path = results_path(o.output_dir, v.name, bench, ro.shard, ro.num_shards);
      std::set<std::string> done;
      for (const Json& row : read_rows(path)) done.insert(row["key"].get<std::string>());
      RowWriter out(path);
      std::vector<const Sample*> todo;
      for (const Sample& s : samples) {
        if (s.index % ro.num_shards != ro.shard || done.count(s.key)) continue;
        if (!s.error.empty()) {
          Json row = s.fields;
          row["key"] = s.key, row["index"] = s.index, row["ok"] = false, row["error"] = s.error;
          out.write(row);
          continue;
        }
        todo.push_back(&s);
      }
      if (todo.empty()) continue;
      std::vector<LlavaRequest> reqs;
      for (const Sample* s : todo) {
        LlavaRequest q;
        q.image = s->image;
        q.prompt = s->prompt;
        q.max_new_tokens = max_new_tokens_of(o, bench);
        q.system_prompt = v.system_prompt;
        q.sampling = v.sampling;
        q.sampling.seed = spec.seed + uint64_t(s->index);
        q.pruning = v.pruning;
        q.modulation = v.modulation;
        reqs.push_back(q);
      }
      ProgressBar bar(int64_t(todo.size()), v.name + " / " + bench, spec.output.quiet);
      const auto t0 = Clock::now();
      pipe.run_batch(reqs, o.batch_size, [&](size_t i, const LlavaBatchItem& item) {
        const Sample& s = *todo[i];
        Json row = s.fields;
        row["key"] = s.key, row["index"] = s.index, row["ok"] = item.ok;
        if (item.ok) {
          row[is_captioning(bench) ? "caption" : "answer"] = item.result.text;
          row["generated_tokens"] = item.result.token_ids.size();
          row["image_tokens"] = item.result.pruning.stages.empty() ? item.result.pruning.image_tokens_before
                                                                   : item.result.pruning.stages.back().image_tokens;
        } else {
          row["error"] = item.error;
          MMATTN_WARN(v.name, " / ", bench, ": ", s.key, ": ", item.error);
        }
        out.write(row);
        bar.update();
      });
      bar.finish();
      const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
      rates[v.name + "/" + bench] = secs > 0 ? double(todo.size()) / secs : 0;
      MMATTN_INFO(v.name, " / ", bench, ": ", todo.size(), " samples in ", secs, " s (", rates[v.name + "/" + bench],
                  "/s)");
    }
  }
  Json summary = summarize(o, head_of(spec), ro.shard, ro.num_shards, rates);
  if (ro.num_shards > 1) {
    summary["shard"] = str_cat(ro.shard, "/", ro.num_shards);
    write_file_atomic(str_cat(o.output_dir, "/summary.shard-", ro.shard, "-of-", ro.num_shards, ".json"),
                      summary.dump(1) + "\n");
  } else {
    write_file_atomic(o.output_dir + "/summary.json", summary.dump(1) + "\n");
    write_eval_reports(summary, o.output_dir);
  }
  return summary;
}

Json merge_eval(const std::string& dir) {
  const Json saved = read_json_file(dir + "/spec.json");
  JsonReader r(saved["eval"], saved.value("source", std::string("spec")), "$.eval");
  EvalOptions o = parse_options(r, saved.value("base_dir", std::string()));
  o.output_dir = dir;
  for (const Variant& v : o.variants)
    for (const std::string& bench : benchmarks_of(o)) {
      const std::string vdir = dir + "/" + dir_name(v.name);
      std::vector<Json> rows;
      const std::string unsharded = results_path(dir, v.name, bench, 0, 1);
      for (const Json& j : read_rows(unsharded)) rows.push_back(j);
      int files = 0;
      if (is_directory(vdir))
        for (const auto& e : std::filesystem::directory_iterator(vdir)) {
          const std::string f = e.path().filename().string();
          if (f.rfind(bench + ".shard-", 0) != 0 || e.path().extension() != ".jsonl") continue;
          for (const Json& j : read_rows(e.path().string())) rows.push_back(j);
          ++files;
        }
      std::string text;
      for (const Json& j : ordered(rows)) text += j.dump() + "\n";
      write_file_atomic(unsharded, text);
      MMATTN_INFO("eval-merge: ", v.name, " / ", bench, ": ", files, " shard files, ", ordered(rows).size(), " rows");
    }
  Json head = {{"model", saved.value("model", std::string())}, {"device", saved.value("device", std::string())},
               {"dtype", saved.value("dtype", std::string())}, {"date", today()}, {"version", version_string()}};
  Json summary = summarize(o, head, 0, 1, {});
  write_file_atomic(dir + "/summary.json", summary.dump(1) + "\n");
  write_eval_reports(summary, dir);
  return summary;
}

}  // namespace mmattn
