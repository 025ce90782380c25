// The LLaVA caption/VQA pipeline end to end on the CPU with the tiny golden LLaVA
// (tests/golden/tiny_llava, random weights: the text is gibberish, the token ids are what count):
// image file -> CLIP preprocess -> ViT -> projector -> prompt -> decoder must give transformers'
// greedy ids; streaming, stop strings, errors (library throws, CLI prints one line), spec validation.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sys/wait.h>

#include "core/checkpoint.h"
#include "core/io.h"
#include "core/safetensors.h"
#include "core/json_reader.h"
#include "language/tokenizer.h"
#include "pipelines/llava.h"
#include "pipelines/registry.h"
#include "pipelines/spec.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

namespace {

const char* kQuestion = "What is unusual about this image?";

std::string tiny() { return golden_dir() + "/tiny_llava"; }
std::string ironing() { return source_dir() + "/assets/images/extreme_ironing.jpg"; }

const LlavaPipeline& pipe() {
  static LlavaPipeline p(tiny(), Device::cpu(), DType::F32);
  return p;
}

std::vector<int64_t> golden_greedy() {
  Checkpoint g(golden_dir() + "/tiny_llava_golden.safetensors");
  const Tensor t = g.load("greedy_ids", Device::cpu(), DType::I64);  // [1, 32]
  const int64_t* p = t.data<int64_t>();
  return {p, p + t.numel()};
}

LlavaRequest vqa_request(int64_t max_new, int64_t min_new = 0) {
  LlavaRequest r;
  r.image = ironing();
  r.prompt = kQuestion;
  r.max_new_tokens = max_new;
  r.min_new_tokens = min_new;
  return r;
}

template <class E, class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("wrong exception type: ") + e.what();
  }
  return "no exception";
}

std::string spec_error(const std::string& llava_block) {
  return error_of<ConfigError>([&] {
    parse_spec(Json::parse(R"({"pipeline": "llava", "model": "m", "device": "cpu", "llava": )" + llava_block + "}"),
               "spec.json", "/base");
  });
}

struct Result {
  int code;
  std::string out;
};
// stdout only (stderr to `err_file` when given, else merged).
Result sh(const std::string& args, bool merge_stderr = true) {
  const std::string cmd = std::string(MMATTN_BINARY) + " " + args + (merge_stderr ? " 2>&1" : " 2>/dev/null");
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

}  // namespace

// (a) the whole pipeline against transformers' generate(): preprocess -> ViT -> projector ->
// prompt -> decoder, greedy, 32 tokens (min_new_tokens 32 as the golden, so EOS cannot stop it).
TEST(LlavaPipeline, GreedyIdsMatchTransformers) {
  const LlavaResult r = pipe().run(vqa_request(32, 32));
  const std::vector<int64_t> want = golden_greedy();
  ASSERT_EQ(want.size(), 32u);
  EXPECT_EQ(r.token_ids, want);
  EXPECT_EQ(r.prompt, "USER: <image>\nWhat is unusual about this image? ASSISTANT:");
  EXPECT_EQ(r.prompt_tokens, 595);  // the golden input_ids
  EXPECT_EQ(r.image_tokens, 576);
  EXPECT_EQ(r.stop_reason, "max_new_tokens");
  EXPECT_EQ(r.text, pipe().tokenizer().decode(r.token_ids));
  EXPECT_FALSE(r.text.empty());
  EXPECT_GT(r.timings.load_preprocess_ms, 0);
  EXPECT_GT(r.timings.vision_ms, 0);
  EXPECT_GE(r.timings.prefill_ms, r.timings.load_preprocess_ms + r.timings.vision_ms);
  EXPECT_GT(r.timings.decode_ms, 0);
  EXPECT_GT(r.timings.decode_tokens_per_s, 0);
  EXPECT_NEAR(r.timings.total_ms, r.timings.prefill_ms + r.timings.decode_ms, 1.0);
  EXPECT_EQ(r.peak_memory_bytes, 0u);  // CPU
  const Json j = r.to_json();
  EXPECT_EQ(j["token_ids"].size(), 32u);
  EXPECT_TRUE(j["timings"].contains("prefill_ms"));
  EXPECT_EQ(pipe().preprocess_config().shortest_edge, 336);  // no preprocessor_config.json: CLIP-336
  EXPECT_EQ(pipe().tokenizer().piece_to_id("<image>"), 32000);
}

TEST(LlavaPipeline, CaptionDefaultsAndOptions) {
  LlavaRequest r;
  r.image = ironing();
  r.max_new_tokens = 4;
  const LlavaResult c = pipe().run(r);
  EXPECT_EQ(c.prompt, "USER: <image>\nPlease describe this image in detail. ASSISTANT:");
  EXPECT_EQ(c.token_ids.size(), 4u);
  r.system_prompt = true;
  r.pad_to_square = true;
  const LlavaResult s = pipe().run(r);
  EXPECT_EQ(s.prompt.rfind("A chat between a curious user", 0), 0u) << s.prompt;
  EXPECT_EQ(s.image_tokens, 576);
  // sampling is seeded: the same seed gives the same ids
  r.sampling.do_sample = true;
  r.sampling.temperature = 0.8f;
  r.sampling.top_k = 50;
  r.sampling.seed = 7;
  r.max_new_tokens = 8;
  EXPECT_EQ(pipe().run(r).token_ids, pipe().run(r).token_ids);
}

// (b) streaming: the pieces concatenate to the final text, with and without stop strings.
TEST(LlavaPipeline, StreamedTextEqualsFinalText) {
  for (const std::vector<std::string>& stop : {std::vector<std::string>{}, std::vector<std::string>{"zzz-never"}}) {
    LlavaRequest req = vqa_request(24);
    req.stop = stop;
    std::string streamed;
    int calls = 0;
    req.on_text = [&](const std::string& s) {
      EXPECT_FALSE(s.empty());
      streamed += s;
      ++calls;
    };
    const LlavaResult r = pipe().run(req);
    EXPECT_EQ(streamed, r.text);
    EXPECT_GT(calls, 1);
    EXPECT_EQ(r.text, pipe().tokenizer().decode(r.token_ids));
  }
}

// (c) stop strings cut the text before their first occurrence and end generation there.
TEST(LlavaPipeline, StopStringsCutTheText) {
  const LlavaResult full = pipe().run(vqa_request(24));
  ASSERT_GT(full.text.size(), 12u) << full.text;
  // a stop string from the middle of the greedy text (its first occurrence)
  const std::string stop = full.text.substr(8, 4);
  const size_t cut = full.text.find(stop);
  LlavaRequest req = vqa_request(24);
  req.stop = {"never-appears", stop};
  std::string streamed;
  req.on_text = [&](const std::string& s) { streamed += s; };
  const LlavaResult r = pipe().run(req);
  EXPECT_EQ(r.text, full.text.substr(0, cut));
  EXPECT_EQ(streamed, r.text);
  EXPECT_EQ(r.stop_reason, "stop_string");
  EXPECT_LT(r.token_ids.size(), full.token_ids.size());
  // the ids are the greedy prefix up to the token that completed the stop string
  EXPECT_TRUE(std::equal(r.token_ids.begin(), r.token_ids.end(), full.token_ids.begin()));
  EXPECT_NE(pipe().tokenizer().decode(r.token_ids).find(stop), std::string::npos);
  EXPECT_EQ(pipe().tokenizer().decode({r.token_ids.begin(), r.token_ids.end() - 1}).find(stop), std::string::npos);
}

TEST(StopStringFilter, HoldsBackPossibleStarts) {
  StopStringFilter f({"ab", "xyz"});
  EXPECT_EQ(f.feed("hello a"), "hello ");  // "a" may start "ab"
  EXPECT_EQ(f.feed("c x"), "ac ");
  EXPECT_EQ(f.feed("y"), "");
  EXPECT_EQ(f.feed("!"), "xy!");
  EXPECT_EQ(f.feed("1xa"), "1x");
  EXPECT_EQ(f.feed("b tail"), "");
  EXPECT_TRUE(f.stopped());
  EXPECT_EQ(f.text(), "hello ac xy!1x");
  EXPECT_EQ(f.feed("more"), "");
  StopStringFilter g({"\xc3\xa9t\xc3\xa9"});  // "été"
  std::string out = g.feed("caf\xc3\xa9");   // é may start the stop string: held back whole
  EXPECT_EQ(out, "caf");
  out += g.feed("!");
  out += g.finish();
  EXPECT_EQ(out, "caf\xc3\xa9!");
  EXPECT_FALSE(g.stopped());
  StopStringFilter none({});
  EXPECT_EQ(none.feed("abc"), "abc");
  EXPECT_EQ(none.finish(), "");
}

// (d) errors: thrown by the library with context.
TEST(LlavaPipeline, BadImagesAreLoaderErrors) {
  const std::string dir = ::testing::TempDir() + "/llava_bad_images";
  LlavaRequest req = vqa_request(4);
  req.image = dir + "/missing.jpg";
  EXPECT_NE(error_of<IoError>([&] { pipe().run(req); }).find("missing.jpg"), std::string::npos);

  const std::string jpg = read_text_file(ironing());
  write_file_atomic(dir + "/truncated.jpg", jpg.substr(0, jpg.size() / 2));
  req.image = dir + "/truncated.jpg";
  EXPECT_NE(error_of<FormatError>([&] { pipe().run(req); }).find("truncated.jpg"), std::string::npos);

  write_file_atomic(dir + "/empty.png", "");
  req.image = dir + "/empty.png";
  EXPECT_NE(error_of<Error>([&] { pipe().run(req); }).find("empty.png"), std::string::npos);

  // huge images are refused from their headers, before decoding (decompression bombs): the real
  // JPEG with its SOF0 frame claiming 20000 x 20000, and a PNG header claiming 15000 x 15000
  std::string huge = jpg;
  const size_t sof = huge.find("\xFF\xC0");
  ASSERT_NE(sof, std::string::npos);
  for (size_t at : {sof + 5, sof + 7}) huge[at] = char(20000 >> 8), huge[at + 1] = char(20000 & 0xFF);
  write_file_atomic(dir + "/huge.jpg", huge);
  req.image = dir + "/huge.jpg";
  const std::string ej = error_of<FormatError>([&] { pipe().run(req); });
  EXPECT_NE(ej.find("20000x20000 pixels exceeds the limit"), std::string::npos) << ej;
  std::string png("\x89PNG\r\n\x1a\n", 8);
  png += std::string("\0\0\0\x0dIHDR", 8) + std::string("\0\0\x3a\x98\0\0\x3a\x98\x08\x02\0\0\0", 13) +
         std::string(4, '\0');  // 15000 x 15000, 8-bit RGB (CRC not checked before the size)
  png += std::string("\0\0\0\0IEND\xae\x42\x60\x82", 12);
  write_file_atomic(dir + "/huge.png", png);
  req.image = dir + "/huge.png";
  const std::string ep = error_of<FormatError>([&] { pipe().run(req); });
  EXPECT_NE(ep.find("15000x15000 pixels exceeds the limit"), std::string::npos) << ep;
}

TEST(LlavaPipeline, RequestTooLongForTheContext) {
  // 595 prompt tokens + 4000 > max_position_embeddings 4096
  const std::string e = error_of<ConfigError>([&] { pipe().run(vqa_request(4000)); });
  EXPECT_NE(e.find("595"), std::string::npos) << e;
  EXPECT_NE(e.find("4000"), std::string::npos) << e;
  EXPECT_NE(e.find("4096"), std::string::npos) << e;
  // through a spec too (max_new_tokens 4096 passes validation, then fails against the context)
  const std::string dir = ::testing::TempDir() + "/llava_long";
  write_file_atomic(dir + "/spec.json", R"({"pipeline": "llava", "model": ")" + tiny() +
                                            R"(", "device": "cpu", "llava": {"image": ")" + ironing() +
                                            R"(", "max_new_tokens": 4096, "stream": false}})");
  const Spec s = load_spec(dir + "/spec.json");
  EXPECT_NE(error_of<ConfigError>([&] { run_spec(s); }).find("max_position_embeddings (4096)"), std::string::npos);
}

// The naming scheme current transformers writes (model.language_model.*, lm_head.*,
// model.vision_tower.*, model.multi_modal_projector.*; one unsharded file), end to end: the golden
// checkpoint (llava-hf's scheme) renamed gives the same tokens.
TEST(LlavaPipeline, CurrentTransformersNamingEndToEnd) {
  const std::string dir = ::testing::TempDir() + "/llava_new_names";
  const Checkpoint src(tiny());
  auto rename = [](const std::string& n) {
    for (const auto& [from, to] : {std::pair<std::string, std::string>{"language_model.model.", "model.language_model."},
                                   {"language_model.lm_head.", "lm_head."},
                                   {"vision_tower.", "model.vision_tower."},
                                   {"multi_modal_projector.", "model.multi_modal_projector."}})
      if (n.rfind(from, 0) == 0) return to + n.substr(from.size());
    return n;
  };
  std::vector<std::pair<std::string, Tensor>> out;
  for (const std::string& n : src.names()) out.emplace_back(rename(n), src.get(n));
  for (const auto& [n, t] : out) ASSERT_TRUE(n.rfind("model.", 0) == 0 || n.rfind("lm_head.", 0) == 0) << n;
  std::filesystem::create_directories(dir);
  save_safetensors(dir + "/model.safetensors", out);
  for (const char* f : {"config.json", "tokenizer.model"})
    write_file_atomic(dir + "/" + f, read_text_file(tiny() + "/" + f));
  const LlavaPipeline renamed(dir, Device::cpu(), DType::F32);
  const LlavaRequest req = vqa_request(6);
  EXPECT_EQ(renamed.run(req).token_ids, pipe().run(req).token_ids);
}

TEST(LlavaPipeline, BadModelFolders) {
  const std::string dir = ::testing::TempDir() + "/llava_bad_models";
  // unknown architecture
  write_file_atomic(dir + "/foo/config.json", R"({"architectures": ["FooForBar"], "model_type": "foo"})");
  const std::string arch = error_of<ConfigError>([&] { LlavaPipeline(dir + "/foo", Device::cpu(), DType::F32); });
  EXPECT_NE(arch.find("FooForBar"), std::string::npos) << arch;
  // no tokenizer.model
  write_file_atomic(dir + "/notok/config.json", read_text_file(tiny() + "/config.json"));
  const std::string tok = error_of<IoError>([&] { LlavaPipeline(dir + "/notok", Device::cpu(), DType::F32); });
  EXPECT_NE(tok.find("tokenizer.model"), std::string::npos) << tok;
  // a tensor missing from the checkpoint: the same shards, an index without one entry
  const std::string m = dir + "/missing_tensor";
  for (const char* f : {"config.json", "tokenizer.model", "model-00001-of-00003.safetensors",
                        "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"})
    write_file_atomic(m + "/" + f, read_text_file(tiny() + "/" + f));
  Json index = read_json_file(tiny() + "/model.safetensors.index.json");
  const std::string dropped = "language_model.model.layers.1.mlp.down_proj.weight";
  ASSERT_EQ(index["weight_map"].erase(dropped), 1u);
  write_file_atomic(m + "/model.safetensors.index.json", index.dump());
  const std::string w = error_of<WeightError>([&] { LlavaPipeline(m, Device::cpu(), DType::F32); });
  EXPECT_NE(w.find("layers.1.mlp.down_proj"), std::string::npos) << w;
}

TEST(LlavaSpec, DefaultsAndErrorsNameTheJsonPath) {
  const Spec s = parse_spec(Json::parse(R"({"pipeline": "llava", "model": "m", "device": "cpu",
                                            "llava": {"image": "i.jpg"}})"),
                            "spec.json", "/base");
  JsonReader r(s.options, "spec.json", "$.llava");
  const LlavaOptions o = LlavaOptions::parse(r);
  EXPECT_EQ(o.task, "caption");
  EXPECT_EQ(o.prompt, kDefaultCaptionPrompt);
  EXPECT_EQ(o.max_new_tokens, 128);
  EXPECT_EQ(o.min_new_tokens, 0);
  EXPECT_FALSE(o.sampling.do_sample);
  EXPECT_EQ(o.sampling.temperature, 1.f);
  EXPECT_EQ(o.sampling.top_k, 0);
  EXPECT_EQ(o.sampling.top_p, 1.f);
  EXPECT_EQ(o.sampling.repetition_penalty, 1.f);
  EXPECT_TRUE(o.stop.empty());
  EXPECT_TRUE(o.stream);
  EXPECT_FALSE(o.system_prompt);
  EXPECT_FALSE(o.pad_to_square);

  EXPECT_NE(spec_error(R"({"image": "i.jpg", "top_p": 1.5})").find("$.llava.top_p must be in (0, 1]"),
            std::string::npos);
  EXPECT_NE(spec_error(R"({"image": "i.jpg", "top_p": 0})").find("$.llava.top_p must be in (0, 1]"),
            std::string::npos);
  EXPECT_NE(spec_error(R"({"image": "i.jpg", "task": "detect"})").find("$.llava.task is 'detect'"),
            std::string::npos);
  EXPECT_NE(spec_error(R"({"image": "i.jpg", "task": "vqa"})").find("$.llava.prompt is required when task is vqa"),
            std::string::npos);
  EXPECT_NE(spec_error(R"({"prompt": "hi"})").find("$.llava.image is required"), std::string::npos);
  EXPECT_NE(spec_error(R"({"image": "i.jpg", "max_new_tokens": 0})").find("$.llava.max_new_tokens must be in [1, 4096]"),
            std::string::npos);
  EXPECT_NE(spec_error(R"({"image": "i.jpg", "max_new_tokens": 5000})").find("$.llava.max_new_tokens"),
            std::string::npos);
  EXPECT_NE(spec_error(R"({"image": "i.jpg", "min_new_tokens": 200})").find("$.llava.min_new_tokens"),
            std::string::npos);
  EXPECT_NE(spec_error(R"({"image": "i.jpg", "temperature": 0})").find("$.llava.temperature must be > 0"),
            std::string::npos);
  EXPECT_NE(spec_error(R"({"image": "i.jpg", "top_k": -1})").find("$.llava.top_k must be >= 0"), std::string::npos);
  EXPECT_NE(spec_error(R"({"image": "i.jpg", "repetition_penalty": -1})").find("$.llava.repetition_penalty"),
            std::string::npos);
  EXPECT_NE(spec_error(R"({"image": "i.jpg", "stop": ["a", ""]})").find("$.llava.stop[1] must not be empty"),
            std::string::npos);
  EXPECT_NE(spec_error(R"({"image": "i.jpg", "stop": "a"})").find("$.llava.stop expected an array"),
            std::string::npos);
  EXPECT_NE(spec_error(R"({"image": "i.jpg", "stream": "yes"})").find("$.llava.stream expected true or false"),
            std::string::npos);
  EXPECT_NE(spec_error(R"({"image": "i.jpg", "temprature": 0.5})").find("$.llava.temprature is not a known key"),
            std::string::npos);
  // no llava block at all: the image is still required
  EXPECT_NE(error_of<ConfigError>([] {
              parse_spec(Json::parse(R"({"pipeline": "llava", "model": "m", "device": "cpu"})"), "s.json", "/b");
            }).find("$.llava.image is required"),
            std::string::npos);
}

TEST(LlavaSpec, RunWritesTheReportAndResolvesPaths) {
  const std::string dir = ::testing::TempDir() + "/llava_spec_run";
  write_file_atomic(dir + "/img/pic.jpg", read_text_file(ironing()));
  write_file_atomic(dir + "/spec.json", R"({"pipeline": "llava", "model": ")" + tiny() + R"(", "device": "cpu",
      "seed": 5, "output": {"json": "out/report.json"},
      "llava": {"image": "img/pic.jpg", "task": "vqa", "prompt": "What is unusual about this image?",
                "max_new_tokens": 32, "min_new_tokens": 32, "stream": false}})");
  Spec s = load_spec(dir + "/spec.json");
  s.report_on_stdout = true;  // keep the test's stdout clean
  const Json rep = run_spec(s);
  EXPECT_EQ(rep["token_ids"].get<std::vector<int64_t>>(), golden_greedy());
  const Json disk = read_json_file(dir + "/out/report.json");
  EXPECT_EQ(disk["text"], rep["text"]);
  EXPECT_EQ(disk["task"], "vqa");
  EXPECT_EQ(disk["seed"], 5);
  EXPECT_NE(disk["image"].get<std::string>().find("llava_spec_run/img/pic.jpg"), std::string::npos);
  EXPECT_EQ(disk["prompt_tokens"], 595);
  EXPECT_EQ(disk["image_tokens"], 576);
  for (const char* k : {"load_preprocess_ms", "vision_ms", "prefill_ms", "decode_ms", "decode_tokens_per_s"})
    EXPECT_TRUE(disk["timings"].contains(k)) << k;
  EXPECT_EQ(disk["peak_memory_bytes"], 0);
}

// Batch mode: "requests" instead of "image" run through run_batch; each result as the same request
// alone gives it (greedy), a missing image is one failed result and the rest go on; the request's
// prompt defaults to the top-level one; errors name the JSON path.
TEST(LlavaSpec, RequestsRunAsOneBatch) {
  const std::string dir = ::testing::TempDir() + "/llava_spec_requests";
  write_file_atomic(dir + "/img/pic.jpg", read_text_file(ironing()));
  write_file_atomic(dir + "/spec.json", R"({"pipeline": "llava", "model": ")" + tiny() + R"(", "device": "cpu",
      "llava": {"task": "vqa", "prompt": "What is unusual about this image?", "max_new_tokens": 6,
                "min_new_tokens": 6, "batch_size": 2,
                "requests": [{"image": "img/pic.jpg"}, {"image": "img/missing.jpg"},
                             {"image": "img/pic.jpg", "prompt": "Describe the image."}]}})");
  Spec s = load_spec(dir + "/spec.json");
  s.report_on_stdout = true;
  const Json rep = run_spec(s);
  ASSERT_EQ(rep["results"].size(), 3u);
  EXPECT_EQ(rep["requests"], 3);
  EXPECT_EQ(rep["failed"], 1);
  const std::vector<int64_t> want = golden_greedy();
  EXPECT_TRUE(rep["results"][0]["ok"]);
  EXPECT_EQ(rep["results"][0]["token_ids"].get<std::vector<int64_t>>(),
            std::vector<int64_t>(want.begin(), want.begin() + 6));
  EXPECT_FALSE(rep["results"][1]["ok"]);
  EXPECT_NE(rep["results"][1]["error"].get<std::string>().find("missing.jpg"), std::string::npos);
  EXPECT_EQ(rep["results"][2]["prompt"], "Describe the image.");
  LlavaRequest alone = vqa_request(6);
  alone.prompt = "Describe the image.";
  EXPECT_EQ(rep["results"][2]["token_ids"].get<std::vector<int64_t>>(), pipe().run(alone).token_ids);
  auto err = [](const std::string& llava) {  // parse_spec validates the llava options
    return error_of<ConfigError>([&] {
      parse_spec(Json::parse(R"({"pipeline": "llava", "model": "m", "llava": )" + llava + "}"), "spec.json", "/base");
    });
  };
  EXPECT_NE(err(R"({"image": "a.jpg", "requests": [{"image": "b.jpg"}]})").find("$.llava.image and requests"),
            std::string::npos);
  EXPECT_NE(err(R"({"task": "vqa", "requests": [{"image": "b.jpg"}]})").find("$.llava.requests[0].prompt"),
            std::string::npos);
  EXPECT_NE(err(R"({"requests": []})").find("$.llava.requests"), std::string::npos);
  EXPECT_NE(err(R"({"requests": [{"image": "b.jpg"}], "save_kept_map": "k.png"})").find("$.llava.save_kept_map"),
            std::string::npos);
  EXPECT_NE(err(R"({"requests": [{"image": "b.jpg", "seed": 3}]})").find("seed"), std::string::npos);
}

// (e) the CLI shortcuts and the README's main job.
TEST(LlavaCli, VqaJsonCaptionErrorsAndTheMainSpec) {
  const std::string vqa = "vqa --model " + tiny() + " --image " + ironing() +
                          " --question \"What is unusual about this image?\" --max-new-tokens 8 --device cpu";
  Result r = sh(vqa + " --json", /*merge_stderr=*/false);
  ASSERT_EQ(r.code, 0) << r.out;
  const Json rep = Json::parse(r.out);  // stdout is the report alone
  const std::vector<int64_t> want = golden_greedy();
  EXPECT_EQ(rep["token_ids"].get<std::vector<int64_t>>(), std::vector<int64_t>(want.begin(), want.begin() + 8));
  EXPECT_TRUE(rep["text"].is_string());
  EXPECT_TRUE(rep["timings"].is_object());
  EXPECT_EQ(rep["task"], "vqa");

  // streamed: stdout is the text and a newline; the timing line goes to stderr
  Result t = sh(vqa, /*merge_stderr=*/false);
  ASSERT_EQ(t.code, 0);
  EXPECT_EQ(t.out, rep["text"].get<std::string>() + "\n");
  Result both = sh(vqa);
  EXPECT_NE(both.out.find("TTFT"), std::string::npos) << both.out;

  Result c = sh("caption --model " + tiny() + " --image /nonexistent/pic.jpg --device cpu");
  EXPECT_EQ(c.code, 1);
  EXPECT_EQ(c.out.rfind("mmattn: error: ", 0), 0u) << c.out;
  EXPECT_NE(c.out.find("/nonexistent/pic.jpg"), std::string::npos) << c.out;
  EXPECT_EQ(std::count(c.out.begin(), c.out.end(), '\n'), 1) << c.out;

  Result p = sh("caption --model " + tiny() + " --image " + ironing() + " --device cpu --top-p 2");
  EXPECT_EQ(p.code, 1);
  EXPECT_NE(p.out.find("$.llava.top_p must be in (0, 1]"), std::string::npos) << p.out;

  Result s = sh("caption --model " + tiny() + " --image " + ironing() +
                " --device cpu --max-new-tokens 6 --stop zzz --stop yyy --system-prompt --pad-to-square --json",
                false);
  ASSERT_EQ(s.code, 0) << s.out;
  const Json sj = Json::parse(s.out);
  EXPECT_EQ(sj["options"]["stop"], Json::array({"zzz", "yyy"}));
  EXPECT_EQ(sj["options"]["system_prompt"], true);
  EXPECT_EQ(sj["options"]["pad_to_square"], true);
  EXPECT_EQ(sj["task"], "caption");

  Result m = sh("run " + source_dir() + "/assets/specs/caption_tiny.json --log-level warn");
  EXPECT_EQ(m.code, 0) << m.out;
  EXPECT_FALSE(m.out.empty());
}
