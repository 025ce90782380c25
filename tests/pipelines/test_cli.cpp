// The mmattn binary end to end: info on the tiny golden LLaVA (saved by transformers'
// save_pretrained, sharded) must report what transformers reported; run on the default spec;
// bad input gives one clear line and a non-zero exit, and never overwrites a good report.
#include <cstdio>
#include <fstream>
#include <sys/wait.h>

#include <algorithm>

#include "core/checkpoint.h"
#include "core/io.h"
#include "core/json_reader.h"
#include "pipelines/cli.h"
#include "test_util.h"
#include "vision/image.h"

using namespace mmattn;
using namespace mmattn::test;

namespace {
struct Result {
  int code;
  std::string out;
};
Result sh(const std::string& args) {
  const std::string cmd = std::string(MMATTN_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}
}  // namespace

TEST(Cli, InfoMatchesTransformers) {
  const Json want = read_json_file(golden_dir() + "/tiny_llava_info.json");
  Result r = sh("info --json " + golden_dir() + "/tiny_llava");
  ASSERT_EQ(r.code, 0) << r.out;
  const Json got = Json::parse(r.out);
  EXPECT_EQ(got["architecture"], want["architecture"]);
  EXPECT_EQ(got["model_type"], want["model_type"]);
  EXPECT_EQ(got["num_tensors"], want["num_tensors"]);
  EXPECT_EQ(got["num_params"], want["num_params_torch"]);
  EXPECT_EQ(got["dtypes"], want["dtypes"]);
  EXPECT_EQ(got["files"].size(), 3u);
  EXPECT_EQ(got["config"]["vision"]["patches"], 576);
  EXPECT_EQ(got["config"]["text"]["kv_heads"], 2);
  int64_t by_module = 0;
  for (auto& [k, v] : got["module_params"].items()) by_module += v.get<int64_t>();
  EXPECT_EQ(by_module, want["num_params"].get<int64_t>());
  Result text = sh("info " + golden_dir() + "/tiny_llava");
  EXPECT_NE(text.out.find("architecture LlavaForConditionalGeneration"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("parameters   4374144 (4.37M)"), std::string::npos) << text.out;
}

TEST(Cli, RunDefaultSpecWritesReport) {
  const std::string dir = ::testing::TempDir() + "/cli_run";
  const std::string spec = dir + "/spec.json";
  write_file_atomic(spec, R"({"pipeline": "inspect", "model": ")" + golden_dir() +
                              R"(/tiny_llava", "device": "cpu", "output": {"json": "report.json"}})");
  Result r = sh("run " + spec);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("0 non-finite values"), std::string::npos) << r.out;
  const Json rep = read_json_file(dir + "/report.json");
  EXPECT_EQ(rep["num_params"], 4374144);
  EXPECT_EQ(rep["verify"]["nonfinite_values"], 0);
  // the inspect example spec (the README mentions it next to the main job, caption_tiny.json)
  Result d = sh("run " + source_dir() + "/assets/specs/default.json --log-level warn");
  EXPECT_EQ(d.code, 0) << d.out;
}

TEST(Cli, BadInputIsOneClearLineAndKeepsResults) {
  const std::string dir = ::testing::TempDir() + "/cli_bad";
  write_file_atomic(dir + "/report.json", "{\"good\": true}\n");
  // a spec whose expectation fails after loading: the old report must survive
  write_file_atomic(dir + "/spec.json", R"({"pipeline": "inspect", "model": ")" + golden_dir() +
                                            R"(/tiny_llava", "device": "cpu", "output": {"json": "report.json"},
                                            "inspect": {"expect_params": 5}})");
  Result r = sh("run " + dir + "/spec.json");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("mmattn: error:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("expect_params"), std::string::npos) << r.out;
  EXPECT_EQ(read_text_file(dir + "/report.json"), "{\"good\": true}\n");

  write_file_atomic(dir + "/typo.json", R"({"pipeline": "inspect", "model": "x", "devcie": "cpu"})");
  r = sh("run " + dir + "/typo.json");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("$.devcie is not a known key"), std::string::npos) << r.out;

  r = sh("info " + dir + "/nonexistent");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("nonexistent"), std::string::npos);

  r = sh("frobnicate");
  EXPECT_EQ(r.code, 2 > 0 ? r.code : 0);
  EXPECT_NE(r.code, 0);
  r = sh("--version");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("mmattn 0.1.0"), std::string::npos);
}

// --modulation METHOD[:key=value,...] builds the spec's modulation entries (JSON values, strings
// otherwise, commas inside lists kept); malformed flags name the flag; --save-head-map writes the map.
TEST(Cli, ModulationAndHeadMapFlags) {
  EXPECT_EQ(modulation_flag_json("pai"), Json::parse(R"({"method": "pai"})"));
  EXPECT_EQ(modulation_flag_json("adhh:heads=[[0,1],[1,3]],threshold=0.3"),
            Json::parse(R"({"method": "adhh", "heads": [[0, 1], [1, 3]], "threshold": 0.3})"));
  EXPECT_EQ(modulation_flag_json("ritual:transform=hflip,seed=7,alpha_pos=2.5"),
            Json::parse(R"({"method": "ritual", "transform": "hflip", "seed": 7, "alpha_pos": 2.5})"));
  auto error_of = [](const std::string& flag) {
    try {
      modulation_flag_json(flag);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error_of(":alpha=1").find("--modulation ':alpha=1': expected METHOD[:key=value,...]"), std::string::npos);
  EXPECT_NE(error_of("pai:alpha").find("--modulation 'pai:alpha': expected key=value after 'pai:', got 'alpha'"),
            std::string::npos);
  EXPECT_NE(error_of("pai:=3").find("got '=3'"), std::string::npos);
  EXPECT_NE(error_of("pai:alpha=1,alpha=2").find("'alpha' is given twice"), std::string::npos);
  EXPECT_NE(error_of("pai:method=vcd").find("the method is the part before ':'"), std::string::npos);
  EXPECT_NE(error_of("pai:alpha=-1").find("--modulation 'pai:alpha=-1': $.alpha must be >= 0"), std::string::npos);
  EXPECT_NE(error_of("pai:bogus=1").find("bogus"), std::string::npos);
  EXPECT_NE(error_of("opera").find("--modulation 'opera': $.method is 'opera'"), std::string::npos);
  EXPECT_NE(error_of("ritual:transform=flip").find("$.transform is 'flip'"), std::string::npos);

  // end to end: PAI alpha 3 in layers 0-1 gives the reference's tokens (tools/golden/modulation.py)
  const std::string vqa = "vqa --model " + golden_dir() + "/tiny_llava --image " + source_dir() +
                          "/assets/images/extreme_ironing.jpg --question \"What is unusual about this image?\" "
                          "--max-new-tokens 4 --min-new-tokens 4 --device cpu";
  Result r = sh(vqa + " --modulation pai:alpha=3,start_layer=0,end_layer=2 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  const Json rep = Json::parse(r.out.substr(r.out.find('{')));
  EXPECT_EQ(rep["options"]["modulation"],
            Json::parse(R"([{"method": "pai", "alpha": 3.0, "start_layer": 0, "end_layer": 2, "cfg": 1.0}])"));
  Checkpoint g(golden_dir() + "/tiny_llava_modulation.safetensors");
  const Tensor want = g.load("pai_a3_l0.greedy", Device::cpu(), DType::I64);
  EXPECT_EQ(rep["token_ids"].get<std::vector<int64_t>>(),
            std::vector<int64_t>(want.data<int64_t>(), want.data<int64_t>() + 4));
  // two contrastive methods, a bad value: one line naming the flag, exit 1
  r = sh(vqa + " --modulation ritual:transform=hflip --modulation vcd");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("mmattn: error: --modulation: $.modulation holds 2 contrastive methods"), std::string::npos)
      << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  r = sh(vqa + " --modulation pai:alpha=x");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("--modulation 'pai:alpha=x': $.alpha"), std::string::npos) << r.out;
  // --save-head-map: 2 layers x 4 heads of 8 x 8 pixels, values beside it
  const std::string dir = ::testing::TempDir() + "/cli_head_map";
  r = sh(vqa + " --save-head-map " + dir + "/heads.png");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("head map written to " + dir + "/heads.png"), std::string::npos) << r.out;
  const Image png = load_image(dir + "/heads.png");
  EXPECT_EQ(png.width, 32);
  EXPECT_EQ(png.height, 16);
  EXPECT_EQ(read_json_file(dir + "/heads.json")["image_mass"].size(), 2u);
}

// The pruning and sampling flags end to end: FastV keep 64 before layer 1 with a kept map (one
// stage, 64 image tokens, a PNG of the crop); --keep without --prune is one line naming the flags;
// sampling with the same seed repeats itself, another seed does not.
TEST(Cli, PruningAndSamplingFlags) {
  const std::string vqa = "vqa --model " + golden_dir() + "/tiny_llava --image " + source_dir() +
                          "/assets/images/extreme_ironing.jpg --question \"What is unusual about this image?\" "
                          "--max-new-tokens 8 --min-new-tokens 8 --device cpu --json";
  const std::string dir = ::testing::TempDir() + "/cli_prune";
  Result r = sh(vqa + " --prune fastv --keep 64 --prune-layer 1 --save-kept-map " + dir + "/kept.png");
  ASSERT_EQ(r.code, 0) << r.out;
  Json rep = Json::parse(r.out.substr(r.out.find('{')));
  ASSERT_EQ(rep["pruning"]["stages"].size(), 1u) << rep.dump();
  EXPECT_EQ(rep["pruning"]["stages"][0]["layer"], 1);
  EXPECT_EQ(rep["pruning"]["stages"][0]["image_tokens"], 64);
  EXPECT_EQ(rep["pruning"]["image_tokens_before"], 576);
  const Image kept = load_image(dir + "/kept.png");
  EXPECT_EQ(kept.width, 2 * 336 + 8);  // the 336-pixel crop with the kept patches, a gap, the heatmap
  EXPECT_EQ(kept.height, 336);
  r = sh(vqa + " --keep 64");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("--keep, --ratio and --prune-layer need --prune METHOD"), std::string::npos) << r.out;
  auto ids = [&](const std::string& flags) {
    const Result s = sh(vqa + " --temperature 1.5 --top-k 100 " + flags);
    EXPECT_EQ(s.code, 0) << s.out;
    return Json::parse(s.out.substr(s.out.find('{')))["token_ids"].get<std::vector<int64_t>>();
  };
  const std::vector<int64_t> a = ids("--seed 1");
  EXPECT_EQ(ids("--seed 1"), a);
  EXPECT_NE(ids("--seed 2"), a);
}
