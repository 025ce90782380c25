#pragma once
// Error hierarchy. Library code throws these; only the CLI catches.
// Every message carries context: where it was raised (file:line) and what was involved
// (argument names, shapes, tensor names, JSON paths).
#include <sstream>
#include <stdexcept>
#include <string>

namespace mmattn {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};
// A tensor/argument has the wrong shape, dtype or device.
class ShapeError : public Error { using Error::Error; };
// A file could not be opened, read or written.
class IoError : public Error { using Error::Error; };
// A file exists but its content is malformed (safetensors header, JSON, image).
class FormatError : public Error { using Error::Error; };
// A config.json or spec value is missing, of the wrong type or out of range.
class ConfigError : public Error { using Error::Error; };
// A checkpoint lacks a tensor or holds one of the wrong shape/dtype.
class WeightError : public Error { using Error::Error; };
// A CUDA / cuBLAS / cuDNN call failed, or CUDA was asked for in a CPU-only build.
class CudaError : public Error { using Error::Error; };
// An unsupported combination of otherwise valid arguments.
class UnsupportedError : public Error { using Error::Error; };

namespace detail {
inline void format_into(std::ostringstream&) {}
template <class T, class... Rest>
void format_into(std::ostringstream& os, const T& v, const Rest&... rest) {
  os << v;
  format_into(os, rest...);
}
}  // namespace detail

// Concatenates the arguments with operator<<.
template <class... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  detail::format_into(os, args...);
  return os.str();
}

template <class E, class... Args>
[[noreturn]] void throw_at(const char* file, int line, const Args&... args) {
  const char* base = file;
  for (const char* p = file; *p; ++p)
    if (*p == '/') base = p + 1;
  throw E(str_cat(args..., " [", base, ":", line, "]"));
}

}  // namespace mmattn

// MMATTN_THROW(ShapeError, "linear: x has ", x.shape_str(), ...)
#define MMATTN_THROW(E, ...) ::mmattn::throw_at<::mmattn::E>(__FILE__, __LINE__, __VA_ARGS__)
// MMATTN_CHECK(cond, E, msg...) throws E with the message when cond is false.
#define MMATTN_CHECK(cond, E, ...)          \
  do {                                      \
    if (!(cond)) MMATTN_THROW(E, __VA_ARGS__); \
  } while (0)
