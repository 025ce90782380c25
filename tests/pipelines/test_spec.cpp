// Spec parsing: defaults, strict validation with JSON paths, and garbled specs never crash.
#include <random>

#include "core/io.h"
#include "pipelines/registry.h"
#include "pipelines/spec.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;

namespace {
std::string error_of(const std::string& text) {
  try {
    parse_spec(Json::parse(text), "spec.json", "/base");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Spec, DefaultsAndPathResolution) {
  Spec s = parse_spec(Json::parse(R"({"pipeline": "inspect", "model": "m", "device": "cpu"})"), "spec.json", "/base");
  EXPECT_EQ(s.pipeline, "inspect");
  EXPECT_EQ(s.model, "/base/m");
  EXPECT_TRUE(s.device.is_cpu());
  EXPECT_EQ(s.dtype, DType::F32);
  EXPECT_EQ(s.seed, 0u);
  EXPECT_EQ(s.output.json, "");
  Spec g = parse_spec(Json::parse(R"({"pipeline": "inspect", "model": "/abs/m", "device": "cuda:1", "dtype": "f16",
                                      "seed": 7, "output": {"json": "r.json", "quiet": true},
                                      "inspect": {"verify_values": false}})"),
                      "spec.json", "/base");
  EXPECT_EQ(g.model, "/abs/m");
  EXPECT_EQ(g.device.index, 1);
  EXPECT_EQ(g.dtype, DType::F16);
  EXPECT_EQ(g.seed, 7u);
  EXPECT_EQ(g.output.json, "/base/r.json");
  EXPECT_TRUE(g.output.quiet);
  EXPECT_EQ(g.options["verify_values"], false);
}

TEST(Spec, ErrorsNameTheJsonPath) {
  const std::string base = R"("pipeline": "inspect", "model": "m", "device": "cpu")";
  EXPECT_NE(error_of("{" + base + R"(, "modle": 1})").find("$.modle is not a known key"), std::string::npos);
  EXPECT_NE(error_of(R"({"model": "m"})").find("$.pipeline is required"), std::string::npos);
  EXPECT_NE(error_of(R"({"pipeline": "nope", "model": "m"})").find("$.pipeline is 'nope'"), std::string::npos);
  EXPECT_NE(error_of(R"({"pipeline": 3, "model": "m"})").find("$.pipeline expected a string, got number 3"),
            std::string::npos);
  EXPECT_NE(error_of("{" + base + R"(, "seed": -1})").find("$.seed"), std::string::npos);
  EXPECT_NE(error_of("{" + base + R"(, "seed": 1.5})").find("$.seed expected an integer"), std::string::npos);
  EXPECT_NE(error_of("{" + base + R"(, "dtype": "f8"})").find("$.dtype is 'f8'"), std::string::npos);
  EXPECT_NE(error_of("{" + base + R"(, "dtype": "bf16"})").find("CPU path computes in f32"), std::string::npos);
  EXPECT_NE(error_of(R"({"pipeline": "inspect", "model": "m", "device": "tpu"})").find("$.device"), std::string::npos);
  EXPECT_NE(error_of("{" + base + R"(, "output": {"jsn": "x"}})").find("$.output.jsn is not a known key"),
            std::string::npos);
  EXPECT_NE(error_of("{" + base + R"(, "inspect": {"verify_values": "yes"}})")
                .find("$.inspect.verify_values expected true or false"),
            std::string::npos);
  EXPECT_NE(error_of("{" + base + R"(, "inspect": {"expect_params": -5}})").find("$.inspect.expect_params"),
            std::string::npos);
  EXPECT_NE(error_of("{" + base + R"(, "inspect": {"extra": 1}})").find("$.inspect.extra is not a known key"),
            std::string::npos);
  EXPECT_NE(error_of("[1, 2]").find("expected an object"), std::string::npos);
}

TEST(Spec, MalformedFilesAreFormatErrors) {
  const std::string dir = ::testing::TempDir();
  write_file_atomic(dir + "/bad.json", "{\"pipeline\": \"inspect\",");
  try {
    load_spec(dir + "/bad.json");
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.json"), std::string::npos);
  }
  EXPECT_THROW(load_spec(dir + "/missing.json"), IoError);
}

// Random edits of a valid spec: every outcome is a parsed spec or an mmattn::Error, never a crash.
TEST(Spec, FuzzedSpecsGiveErrorsNotCrashes) {
  const std::string valid = R"({"pipeline": "inspect", "model": "m", "device": "cpu", "dtype": "f32", "seed": 3,
    "output": {"json": "r.json", "quiet": true}, "inspect": {"verify_values": true, "expect_params": 10}})";
  std::mt19937 rng(42);
  const std::string alphabet = "{}[]\":,0123456789-.eE truefalsnul\\";
  int parsed = 0, rejected = 0;
  for (int it = 0; it < 3000; ++it) {
    std::string s = valid;
    const int edits = 1 + int(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t pos = rng() % s.size();
      switch (rng() % 3) {
        case 0: s[pos] = alphabet[rng() % alphabet.size()]; break;
        case 1: s.erase(pos, 1 + rng() % 5); break;
        default: s.insert(pos, 1, alphabet[rng() % alphabet.size()]);
      }
    }
    Json j = Json::parse(s, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) continue;
    try {
      parse_spec(j, "fuzz.json", "/base");
      ++parsed;
    } catch (const Error&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 0);
}
