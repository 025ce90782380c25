#pragma once
// Levelled logging to stderr. The level comes from set_log_level() or the environment variable
// MMATTN_LOG (debug|info|warn|error|quiet); default info.
#include <string>
#include <string_view>

#include "core/error.h"

namespace mmattn {

enum class LogLevel { Debug = 0, Info = 1, Warn = 2, Error = 3, Quiet = 4 };

std::string_view log_level_name(LogLevel l);
bool parse_log_level(std::string_view s, LogLevel* out);
LogLevel log_level();
void set_log_level(LogLevel l);
void log_message(LogLevel l, const std::string& msg);  // thread-safe, one line

}  // namespace mmattn

#define MMATTN_LOG(level, ...)                                                                    \
  do {                                                                                            \
    if (::mmattn::LogLevel::level >= ::mmattn::log_level())                                       \
      ::mmattn::log_message(::mmattn::LogLevel::level, ::mmattn::str_cat(__VA_ARGS__));           \
  } while (0)
#define MMATTN_DEBUG(...) MMATTN_LOG(Debug, __VA_ARGS__)
#define MMATTN_INFO(...) MMATTN_LOG(Info, __VA_ARGS__)
#define MMATTN_WARN(...) MMATTN_LOG(Warn, __VA_ARGS__)
