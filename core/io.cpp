#include "core/io.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace mmattn {

namespace fs = std::filesystem;

std::string read_text_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  MMATTN_CHECK(f.good(), IoError, "cannot open '", path, "'");
  std::stringstream ss;
  ss << f.rdbuf();
  MMATTN_CHECK(!f.bad(), IoError, "error reading '", path, "'");
  return ss.str();
}

void write_file_atomic(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp";
  std::error_code mk;
  const fs::path dir = fs::path(path).parent_path();
  if (!dir.empty()) fs::create_directories(dir, mk);
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    MMATTN_CHECK(f.good(), IoError, "cannot write '", tmp, "'");
    f << content;
    f.flush();
    MMATTN_CHECK(f.good(), IoError, "error writing '", tmp, "'");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    MMATTN_THROW(IoError, "cannot rename '", tmp, "' to '", path, "'");
  }
}

bool path_exists(const std::string& path) {
  std::error_code ec;
  return fs::exists(path, ec);
}
bool is_directory(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec);
}
std::string resolve_path(const std::string& base_dir, const std::string& p) {
  if (p.empty() || base_dir.empty() || fs::path(p).is_absolute()) return p;
  return (fs::path(base_dir) / p).lexically_normal().string();
}
std::string parent_dir(const std::string& path) {
  const fs::path p = fs::path(path).parent_path();
  return p.empty() ? "." : p.string();
}

}  // namespace mmattn
