#pragma once
// A progress bar for long work: "label  42% |#####     | 420/1000  12.3 it/s  ETA 00:47".
// Draws on stderr only when stderr is a terminal and quiet is false; otherwise silent (logs and
// pipes stay clean). Redraws at most every 100 ms. update() is thread-safe.
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace mmattn {

class ProgressBar {
 public:
  // total <= 0: unknown total (shows count and rate only).
  ProgressBar(int64_t total, std::string label, bool quiet = false);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  void update(int64_t n = 1);              // advance by n
  void set_postfix(const std::string& s);  // extra text after the ETA
  void finish();                           // final redraw and newline (idempotent)
  bool enabled() const { return enabled_; }
  int64_t count() const { return done_; }
  // The text of the bar as it would be drawn now (for tests).
  std::string render(int width = 30) const;

 private:
  void draw_locked(bool force);
  int64_t total_;
  std::string label_, postfix_;
  bool enabled_;
  bool finished_ = false;
  int64_t done_ = 0;
  std::chrono::steady_clock::time_point start_, last_draw_;
  mutable std::mutex mu_;
};

// "01:02:03" / "02:03".
std::string format_duration(double seconds);

}  // namespace mmattn
