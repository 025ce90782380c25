// safetensors reading/writing and Checkpoint folders: round trips, shards, zero-copy views,
// atomic saves, and fuzzing of the header validation (truncation, garbling, hand-made headers).
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "core/checkpoint.h"
#include "core/safetensors.h"
#include "test_util.h"

using namespace mmattn;
using namespace mmattn::test;
namespace fs = std::filesystem;

namespace {

// A fresh folder under the system temp dir, removed at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string t = (fs::temp_directory_path() / "mmattn_st_XXXXXX").string();
    if (!::mkdtemp(t.data())) throw std::runtime_error("mkdtemp failed");
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// [u64 header length][header][data]
std::string make_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = char(uint8_t(n >> (8 * i)));
  return out + header + data;
}

bool contains(const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; }

std::string bytes_of(const Tensor& t) {
  Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.nbytes());
}

// One tensor of every dtype (values chosen so that bit-exactness matters), in descending itemsize
// order so that every tensor is aligned in the file.
std::vector<std::pair<std::string, Tensor>> sample_tensors() {
  std::vector<std::pair<std::string, Tensor>> v;
  v.emplace_back("w.i64", Tensor::from_vector<int64_t>({(int64_t(1) << 60) + 1, -7, 0}, {3}));
  v.emplace_back("w.f32", rand_tensor({3, 5}, 1));
  v.emplace_back("w.i32", Tensor::from_vector<int32_t>({-2147483647 - 1, 2147483647, 5, -5}, {2, 2}));
  v.emplace_back("w.f16", rand_tensor({7}, 2, -70000.f, 70000.f).to(DType::F16));  // includes +-inf
  v.emplace_back("w.bf16", rand_tensor({2, 3, 2}, 3).to(DType::BF16));
  v.emplace_back("w.u8", Tensor::from_vector<uint8_t>({0, 1, 127, 128, 255}, {5}));
  return v;
}

// open() must throw a mmattn FormatError/IoError naming `label` (and `must_name`); returns the
// message ("" and a test failure otherwise).
template <class Open>
std::string expect_error(Open open, const std::string& label, const std::string& must_name = "") {
  try {
    open();
    ADD_FAILURE() << "no error for " << label;
  } catch (const FormatError& e) {
    EXPECT_TRUE(contains(e.what(), label)) << e.what();
    if (!must_name.empty()) EXPECT_TRUE(contains(e.what(), must_name)) << e.what();
    return e.what();
  } catch (const IoError& e) {
    EXPECT_TRUE(contains(e.what(), label)) << e.what();
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type for " << label << ": " << e.what();
  } catch (...) {
    ADD_FAILURE() << "non-std exception for " << label;
  }
  return "";
}
// Through the mmap path.
std::string expect_load_error(const std::string& path, const std::string& must_name = "") {
  return expect_error([&] { SafeTensorsFile f(path); }, path, must_name);
}
// Through the in-memory path (same validation; no syscalls, so fuzzing stays fast).
const char* kMemLabel = "mem://fuzz.safetensors";
std::string expect_parse_error(const std::string& bytes, const std::string& must_name = "") {
  return expect_error([&] { SafeTensorsFile f(std::make_shared<const std::string>(bytes), kMemLabel); }, kMemLabel,
                      must_name);
}

// A file that passed validation: every view lies inside the mapping and can be read in full.
void check_views_inside(const SafeTensorsFile& f) {
  const uint8_t* lo = f.map_data();
  const uint8_t* hi = lo + f.map_size();
  for (const auto& name : f.names()) {
    Tensor t = f.get(name);
    const uint8_t* p = static_cast<const uint8_t*>(t.data_ptr());
    if (t.nbytes() == 0) continue;
    ASSERT_GE(p, lo + f.data_section_offset()) << name;
    ASSERT_LE(p + t.nbytes(), hi) << name;
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < t.nbytes(); ++i) sink = sink ^ p[i];
    (void)sink;
  }
}

}  // namespace

TEST(SafeTensors, RoundTripAllDtypes) {
  TempDir dir;
  const std::string path = dir / "rt.safetensors";
  auto tensors = sample_tensors();
  Tensor base = rand_tensor({4, 6}, 9);
  // after w.i64 and w.f32 (still 4-byte aligned): a non-contiguous [4, 4], a 0-dim and an empty one
  tensors.insert(tensors.begin() + 2, {{"w.strided", base.transpose(0, 1).slice(0, 1, 5)},
                                       {"w.scalar", Tensor::from_floats({2.5f}, {})},
                                       {"w.empty", Tensor::zeros({0, 3}, DType::F32)}});
  save_safetensors(path, tensors, {{"format", "pt"}, {"note", "round trip"}});
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  const std::string raw = read_bytes(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(raw[i]);
  EXPECT_EQ(n % 8, 0u) << "header padded to 8 bytes";
  EXPECT_EQ(raw[8], '{');

  SafeTensorsFile f(path);
  EXPECT_EQ(f.size(), tensors.size());
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("note"), "round trip");
  for (const auto& [name, t] : tensors) {
    ASSERT_TRUE(f.has(name)) << name;
    Tensor g = f.get(name);
    EXPECT_EQ(g.dtype(), t.dtype()) << name;
    EXPECT_EQ(g.shape(), t.shape()) << name;
    EXPECT_EQ(bytes_of(g), bytes_of(t)) << name;  // bit-identical
    EXPECT_EQ(f.info(name).file, path);
    EXPECT_TRUE(f.info(name).aligned) << name;
  }
  // Offsets follow the given order.
  EXPECT_EQ(f.info("w.i64").begin, 0u);
  EXPECT_EQ(f.info("w.f32").begin, 24u);
  EXPECT_EQ(f.info("w.strided").begin, 84u);
  EXPECT_EQ(f.names().front(), "w.i64");
  // I64 beyond 2^53 survives (no trip through double).
  EXPECT_EQ(f.get("w.i64").data<int64_t>()[0], (int64_t(1) << 60) + 1);
  check_views_inside(f);
}

TEST(SafeTensors, ZeroCopyViewsKeepTheMappingAlive) {
  TempDir dir;
  const std::string path = dir / "z.safetensors";
  save_safetensors(path, sample_tensors());
  Tensor keep;
  {
    SafeTensorsFile f(path);
    Tensor a = f.get("w.f32");
    Tensor b = f.get("w.f32");
    EXPECT_EQ(a.data_ptr(), b.data_ptr());  // both point into the mapping, no copy
    const uint8_t* p = static_cast<const uint8_t*>(a.data_ptr());
    EXPECT_EQ(p, f.map_data() + f.data_section_offset() + f.info("w.f32").begin);
    EXPECT_TRUE(f.info("w.f32").aligned);
    keep = a;
  }
  // The SafeTensorsFile is gone; the view still reads the file's bytes.
  EXPECT_EQ(bytes_of(keep), bytes_of(sample_tensors()[1].second));
}

TEST(SafeTensors, UnalignedDataIsReadableAndLoadAligns) {
  TempDir dir;
  const std::string path = dir / "u.safetensors";
  // U8[1] at [0,1) then F32[2] at [1,9): the floats are misaligned (header is 8-byte padded).
  std::string h = R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}})";
  h.append((8 - h.size() % 8) % 8, ' ');
  std::string data(9, '\0');
  data[0] = 7;
  const float vals[2] = {1.5f, -3.25f};
  std::memcpy(&data[1], vals, 8);
  write_bytes(path, make_file(h, data));

  Checkpoint ck(path);
  EXPECT_FALSE(ck.info("b").aligned);
  EXPECT_TRUE(ck.info("a").aligned);
  Tensor v = ck.get("b");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data_ptr()) % 4, 1u);
  EXPECT_EQ(v.to_floats(), (std::vector<float>{1.5f, -3.25f}));  // bytewise conversion is fine
  Tensor l = ck.load("b", Device::cpu(), DType::F32);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(l.data_ptr()) % 4, 0u);
  EXPECT_EQ(l.data<float>()[1], -3.25f);
}

TEST(SafeTensors, SaveIsAtomic) {
  TempDir dir;
  const std::string path = dir / "a.safetensors";
  save_safetensors(path, sample_tensors());
  const std::string before = read_bytes(path);

  // Fails before writing: duplicate name / undefined tensor / reserved name.
  EXPECT_THROW(save_safetensors(path, {{"x", rand_tensor({2}, 1)}, {"x", rand_tensor({2}, 2)}}), ShapeError);
  EXPECT_THROW(save_safetensors(path, {{"x", Tensor()}}), ShapeError);
  EXPECT_THROW(save_safetensors(path, {{"__metadata__", rand_tensor({2}, 1)}}), ShapeError);
  // Fails in the middle of writing the data: a 9-dim strided tensor cannot be made contiguous.
  Shape s9(9, 1);
  s9[7] = 2;
  s9[8] = 3;
  Tensor nine = Tensor::zeros(s9, DType::F32).transpose(7, 8);
  ASSERT_FALSE(nine.is_contiguous());
  EXPECT_THROW(save_safetensors(path, {{"ok", rand_tensor({64}, 1)}, {"bad", nine}}), Error);
  EXPECT_EQ(read_bytes(path), before);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  // Unwritable destination.
  EXPECT_THROW(save_safetensors(dir / "no/such/dir/x.safetensors", sample_tensors()), IoError);
}

TEST(Checkpoint, ShardedFolderWithIndex) {
  TempDir dir;
  Tensor q = rand_tensor({4, 4}, 1).to(DType::BF16);
  Tensor k = rand_tensor({2, 4}, 2).to(DType::BF16);
  Tensor emb = rand_tensor({10, 4}, 3);
  save_safetensors(dir / "model-00001-of-00002.safetensors",
                   {{"model.layers.0.q_proj.weight", q}, {"model.layers.0.k_proj.weight", k}});
  save_safetensors(dir / "model-00002-of-00002.safetensors", {{"model.embed_tokens.weight", emb}});
  write_bytes(dir / "model.safetensors.index.json", R"({"metadata": {"total_size": 232}, "weight_map": {
      "model.layers.0.q_proj.weight": "model-00001-of-00002.safetensors",
      "model.layers.0.k_proj.weight": "model-00001-of-00002.safetensors",
      "model.embed_tokens.weight": "model-00002-of-00002.safetensors"}})");
  Checkpoint ck(dir.path.string());
  EXPECT_EQ(ck.index_file(), dir / "model.safetensors.index.json");
  EXPECT_EQ(ck.files().size(), 2u);
  EXPECT_EQ(ck.names(), (std::vector<std::string>{"model.embed_tokens.weight", "model.layers.0.k_proj.weight",
                                                  "model.layers.0.q_proj.weight"}));
  EXPECT_TRUE(ck.has("model.embed_tokens.weight"));
  EXPECT_FALSE(ck.has("lm_head.weight"));
  EXPECT_EQ(ck.info("model.embed_tokens.weight").file, dir / "model-00002-of-00002.safetensors");
  EXPECT_EQ(ck.info("model.layers.0.q_proj.weight").dtype, DType::BF16);
  EXPECT_EQ(bytes_of(ck.get("model.layers.0.k_proj.weight")), bytes_of(k));
  EXPECT_EQ(bytes_of(ck.get("model.embed_tokens.weight", {10, 4})), bytes_of(emb));
  EXPECT_EQ(ck.num_params(), 16 + 8 + 40);
  auto counts = ck.dtype_counts();
  EXPECT_EQ(counts[DType::BF16], 2);
  EXPECT_EQ(counts[DType::F32], 1);
  Tensor qf = ck.load("model.layers.0.q_proj.weight", Device::cpu(), DType::F32);
  EXPECT_EQ(qf.dtype(), DType::F32);
  EXPECT_EQ(qf.to_floats(), q.to_floats());

  try {
    ck.get("model.layers.0.q_proj.weight", {4, 8});
    FAIL();
  } catch (const WeightError& e) {
    EXPECT_TRUE(contains(e.what(), "'model.layers.0.q_proj.weight'")) << e.what();
    EXPECT_TRUE(contains(e.what(), "expected shape [4, 8]")) << e.what();
    EXPECT_TRUE(contains(e.what(), "found [4, 4]")) << e.what();
  }
  try {
    ck.get("layers.0.q_proj.weight");  // the prefix was forgotten
    FAIL();
  } catch (const WeightError& e) {
    EXPECT_TRUE(contains(e.what(), "missing tensor 'layers.0.q_proj.weight' in " + dir.path.string())) << e.what();
    EXPECT_TRUE(contains(e.what(), "did you mean 'model.layers.0.q_proj.weight'")) << e.what();
  }
  EXPECT_THROW(ck.load("model.layers.0.v_proj.weight", Device::cpu(), DType::F32), WeightError);
  const auto close = ck.close_names("model.layers.0.v_proj.weight");  // k/q are 1 edit away
  EXPECT_EQ(close, (std::vector<std::string>{"model.layers.0.k_proj.weight", "model.layers.0.q_proj.weight"}));
  // A file given directly, and the index given directly.
  EXPECT_EQ(Checkpoint(dir / "model-00002-of-00002.safetensors").size(), 1u);
  EXPECT_EQ(Checkpoint(dir / "model.safetensors.index.json").size(), 3u);
}

TEST(Checkpoint, BadIndexNamesIndexAndTensor) {
  TempDir dir;
  save_safetensors(dir / "s1.safetensors", {{"a", rand_tensor({2}, 1)}});
  const std::string ix = dir / "model.safetensors.index.json";
  auto expect = [&](const std::string& index_json, const std::string& sub, bool io) {
    write_bytes(ix, index_json);
    try {
      Checkpoint ck(dir.path.string());
      ADD_FAILURE() << "no error for " << index_json;
    } catch (const Error& e) {
      EXPECT_TRUE(contains(e.what(), ix)) << e.what();
      EXPECT_TRUE(contains(e.what(), sub)) << e.what();
      EXPECT_EQ(dynamic_cast<const IoError*>(&e) != nullptr, io) << e.what();
    }
  };
  expect(R"({"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}})", "'b'", true);  // shard missing
  expect(R"({"weight_map": {"a": "s1.safetensors", "c": "s1.safetensors"}})", "'c'", false);  // not in shard
  expect(R"({"weight_map": ["a"]})", "$.weight_map", false);
  expect(R"({"metadata": {}})", "$.weight_map", false);
  expect(R"({"weight_map": {"a": 3}})", "\"a\"", false);
  expect(R"({"weight_map": {"a": "../s1.safetensors"}})", "relative path", false);
  expect(R"({"weight_map": {"a": "s1.safetensors",)", "malformed JSON", false);
}

TEST(Checkpoint, FolderDiscovery) {
  {  // diffusers single file and index
    TempDir dir;
    save_safetensors(dir / "diffusion_pytorch_model.safetensors", {{"x", rand_tensor({3}, 1)}});
    EXPECT_EQ(Checkpoint(dir.path.string()).names(), std::vector<std::string>{"x"});
    save_safetensors(dir / "diffusion_pytorch_model-00001-of-00001.safetensors", {{"y", rand_tensor({3}, 1)}});
    write_bytes(dir / "diffusion_pytorch_model.safetensors.index.json",
                R"({"weight_map": {"y": "diffusion_pytorch_model-00001-of-00001.safetensors"}})");
    EXPECT_EQ(Checkpoint(dir.path.string()).names(), std::vector<std::string>{"y"});  // the index wins
  }
  {  // any *.safetensors; a name in two files is an error naming both
    TempDir dir;
    save_safetensors(dir / "b.safetensors", {{"x", rand_tensor({3}, 1)}});
    save_safetensors(dir / "a.safetensors", {{"w", rand_tensor({3}, 1)}});
    Checkpoint ck(dir.path.string());
    EXPECT_EQ(ck.names(), (std::vector<std::string>{"w", "x"}));
    EXPECT_EQ(ck.files(), (std::vector<std::string>{dir / "a.safetensors", dir / "b.safetensors"}));
    save_safetensors(dir / "c.safetensors", {{"x", rand_tensor({3}, 1)}});
    try {
      Checkpoint bad(dir.path.string());
      FAIL();
    } catch (const FormatError& e) {
      EXPECT_TRUE(contains(e.what(), "'x'") && contains(e.what(), "b.safetensors") &&
                  contains(e.what(), "c.safetensors"))
          << e.what();
    }
  }
  TempDir empty;
  EXPECT_THROW(Checkpoint(empty.path.string()), IoError);
  EXPECT_THROW(Checkpoint(empty / "nope"), IoError);
  EXPECT_THROW(SafeTensorsFile(empty / "nope.safetensors"), IoError);
  EXPECT_THROW(SafeTensorsFile(empty.path.string()), IoError);  // a folder is not a file
}

// --- fuzzing ------------------------------------------------------------------------------------

TEST(SafeTensorsFuzz, EveryTruncationIsAnError) {
  TempDir dir;
  const std::string good = dir / "good.safetensors";
  save_safetensors(good, sample_tensors(), {{"format", "pt"}});
  const std::string bytes = read_bytes(good);
  const std::string path = dir / "t.safetensors";
  for (size_t len = 0; len < bytes.size(); ++len) {
    expect_parse_error(bytes.substr(0, len));
    if (len < 24 || len % 37 == 0 || len + 8 > bytes.size()) {  // a sample through real files
      write_bytes(path, bytes.substr(0, len));
      expect_load_error(path);
    }
    if (HasFailure()) FAIL() << "at length " << len;
  }
}

TEST(SafeTensorsFuzz, GarbledHeadersNeverCrash) {
  TempDir dir;
  const std::string good = dir / "good.safetensors";
  save_safetensors(good, sample_tensors(), {{"format", "pt"}});
  const std::string bytes = read_bytes(good);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | uint8_t(bytes[i]);
  const std::string path = dir / "g.safetensors";
  std::mt19937_64 rng(1234);
  const std::string interesting = "{}[],:\"0123456789-. eE\\x";
  int opened = 0;
  const int iters = 4000;
  for (int it = 0; it < iters; ++it) {
    std::string b = bytes;
    const int edits = 1 + int(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      // Mostly the header (where the structure is), sometimes the length prefix.
      const size_t pos = rng() % 16 == 0 ? rng() % 8 : 8 + rng() % hlen;
      switch (rng() % 3) {
        case 0: b[pos] = char(b[pos] ^ (1u << (rng() % 8))); break;
        case 1: b[pos] = interesting[rng() % interesting.size()]; break;
        default: b[pos] = char(rng() % 256); break;
      }
    }
    const bool via_file = it % 40 == 0;
    if (via_file) write_bytes(path, b);
    const std::string label = via_file ? path : kMemLabel;
    try {
      const SafeTensorsFile f = via_file ? SafeTensorsFile(path)
                                         : SafeTensorsFile(std::make_shared<const std::string>(b), kMemLabel);
      ++opened;
      check_views_inside(f);
    } catch (const FormatError& e) {
      if (!contains(e.what(), label)) FAIL() << "iteration " << it << ": " << e.what();
    } catch (const IoError& e) {
      if (!contains(e.what(), label)) FAIL() << "iteration " << it << ": " << e.what();
    } catch (const std::exception& e) {
      FAIL() << "iteration " << it << ": wrong exception type: " << e.what();
    }
    if (HasFailure()) FAIL() << "iteration " << it;
  }
  // Some edits (e.g. inside metadata values or padding) leave a valid file; most do not.
  EXPECT_GT(opened, 0);
  EXPECT_LT(opened, iters / 2);
  std::printf("[          ] %d of %d garbled headers were still valid\n", opened, iters);
}

TEST(SafeTensorsFuzz, HandMadeBadHeaders) {
  TempDir dir;
  const std::string path = dir / "bad.safetensors";
  const std::string data(64, '\x11');
  struct Case {
    const char* header;
    const char* tensor;  // must be named ("" = file-level problem)
    const char* what;    // a phrase of the message
  };
  const Case cases[] = {
      {R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
       "'b'", "overlaps tensor 'a'"},
      {R"({"a":{"dtype":"F32","shape":[20],"data_offsets":[0,80]}})", "'a'", "past the data section"},
      {R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[16,8]}})", "'a'", "end before they begin"},
      {R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", "'a'", "needs 12"},
      {R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}})", "'a'", "span 16 bytes"},
      {R"({"a":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}})", "'a'", "F64 is not supported"},
      {R"({"a":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", "'a'", "BOOL is not supported"},
      {R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,2]}})", "'a'", "unknown dtype"},
      {R"({"a":{"dtype":7,"shape":[2],"data_offsets":[0,2]}})", "'a'", "dtype must be a string"},
      {R"({"a":{"dtype":"U8","shape":[-2],"data_offsets":[0,2]}})", "'a'", "non-negative integers"},
      {R"({"a":{"dtype":"U8","shape":[2.0],"data_offsets":[0,2]}})", "'a'", "non-negative integers"},
      {R"({"a":{"dtype":"U8","shape":"2","data_offsets":[0,2]}})", "'a'", "shape must be an array"},
      {R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0]}})", "'a'", "data_offsets must be [begin, end]"},
      {R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2,4]}})", "'a'", "data_offsets must be [begin, end]"},
      {R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[-1,1]}})", "'a'", "data_offsets must be [begin, end]"},
      {R"({"a":{"dtype":"U8","shape":[2],"data_offsets":"0,2"}})", "'a'", "data_offsets must be [begin, end]"},
      {R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[18446744073709551615,2]}})", "'a'", "end before"},
      {R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}})", "'a'", "too large"},
      {R"({"a":{"dtype":"U8","shape":[2]}})", "'a'", "needs \"dtype\""},
      {R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2],"extra":1}})", "'a'", "unknown key 'extra'"},
      {R"({"a":[1,2]})", "'a'", "entry must be an object"},
      {R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})",
       "'a'", "duplicate key"},
      {R"({"__metadata__":{"format":3}})", "", "__metadata__.format must be a string"},
      {R"({"__metadata__":[1]})", "", "__metadata__ must be an object"},
      {R"([{"dtype":"U8","shape":[2],"data_offsets":[0,2]}])", "", "must be a JSON object"},
      {R"("just a string")", "", "must be a JSON object"},
      {R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]})", "", "malformed JSON"},
      {"not json at all", "", "malformed JSON"},
      {"{\"\xff\xfe\":1}", "", "malformed JSON"},  // invalid UTF-8
  };
  for (const Case& c : cases) {
    write_bytes(path, make_file(c.header, data));
    const std::string msg = expect_load_error(path, c.tensor);
    EXPECT_TRUE(contains(msg, c.what)) << "header " << c.header << "\n  message: " << msg;
  }

  // Length prefix problems.
  std::string f = make_file("{}", "");
  f[0] = char(0xff);  // 255 + 0 bytes...: past the end
  write_bytes(path, f);
  EXPECT_TRUE(contains(expect_load_error(path), "runs past the end of the file"));
  f = make_file("{}", "");
  f[6] = 1;  // 2^48 + 2: absurd
  write_bytes(path, f);
  EXPECT_TRUE(contains(expect_load_error(path), "exceeds the 100000000-byte limit"));
  write_bytes(path, "abc");
  EXPECT_TRUE(contains(expect_load_error(path), "too small"));
  write_bytes(path, "");
  EXPECT_TRUE(contains(expect_load_error(path), "too small"));

  // Accepted oddities: metadata, zero-size tensors anywhere, gaps, trailing bytes.
  write_bytes(path, make_file(R"({"__metadata__":{"k":"v"},"e":{"dtype":"F32","shape":[0,5],"data_offsets":[4,4]},)"
                              R"("a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"I64","shape":[1],"data_offsets":[8,16]}})",
                              data));
  SafeTensorsFile ok(path);
  EXPECT_EQ(ok.names(), (std::vector<std::string>{"a", "e", "b"}));
  EXPECT_EQ(ok.metadata().at("k"), "v");
  EXPECT_EQ(ok.get("e").numel(), 0);
  check_views_inside(ok);
}

// The tiny LLaVA saved by transformers 5 (tools/golden/llava.py): three shards and an index.
TEST(Checkpoint, GoldenTinyLlavaFromTransformers) {
  const std::string dir = golden_dir() + "/tiny_llava";
  if (!fs::exists(dir + "/model.safetensors.index.json")) GTEST_SKIP() << "no " << dir;
  Checkpoint ck(dir);
  EXPECT_EQ(ck.files().size(), 3u);
  EXPECT_EQ(ck.size(), 80u);
  EXPECT_EQ(ck.num_params(), 4374144);
  EXPECT_EQ(ck.dtype_counts(), (std::map<DType, int64_t>{{DType::BF16, 80}}));
  const TensorInfo& emb = ck.info("language_model.model.embed_tokens.weight");
  EXPECT_EQ(emb.shape, (Shape{32064, 64}));
  EXPECT_TRUE(emb.aligned);
  Tensor q = ck.load("language_model.model.layers.0.self_attn.q_proj.weight", {64, 64}, Device::cpu(), DType::F32);
  double sum_sq = 0;
  for (float v : q.to_floats()) sum_sq += double(v) * v;
  EXPECT_GT(sum_sq, 0);  // random init, not zeros
  EXPECT_TRUE(std::isfinite(sum_sq));
}
