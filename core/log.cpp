#include "core/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace mmattn {

namespace {
constexpr std::string_view kNames[] = {"debug", "info", "warn", "error", "quiet"};

LogLevel initial_level() {
  LogLevel l = LogLevel::Info;
  if (const char* e = std::getenv("MMATTN_LOG")) parse_log_level(e, &l);
  return l;
}
std::atomic<LogLevel>& level_ref() {
  static std::atomic<LogLevel> l{initial_level()};
  return l;
}
std::mutex& log_mutex() {
  static std::mutex m;
  return m;
}
}  // namespace

std::string_view log_level_name(LogLevel l) { return kNames[int(l)]; }
bool parse_log_level(std::string_view s, LogLevel* out) {
  for (int i = 0; i < 5; ++i)
    if (kNames[i] == s) {
      *out = LogLevel(i);
      return true;
    }
  return false;
}
LogLevel log_level() { return level_ref().load(); }
void set_log_level(LogLevel l) { level_ref().store(l); }

void log_message(LogLevel l, const std::string& msg) {
  std::lock_guard<std::mutex> lock(log_mutex());
  std::fprintf(stderr, "[mmattn %s] %s\n", kNames[int(l)].data(), msg.c_str());
  std::fflush(stderr);
}

}  // namespace mmattn
