#include "core/progress.h"

#include <unistd.h>

#include <cstdio>

namespace mmattn {

std::string format_duration(double s) {
  if (!(s >= 0) || s > 360000) return "--:--";
  const long t = long(s + 0.5);
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%02ld:%02ld", t / 60, t % 60);
  return buf;
}

ProgressBar::ProgressBar(int64_t total, std::string label, bool quiet)
    : total_(total), label_(std::move(label)), enabled_(!quiet && isatty(STDERR_FILENO)) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

ProgressBar::~ProgressBar() { finish(); }

void ProgressBar::update(int64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  done_ += n;
  draw_locked(false);
}

void ProgressBar::set_postfix(const std::string& s) {
  std::lock_guard<std::mutex> lock(mu_);
  postfix_ = s;
}

void ProgressBar::finish() {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return;
  finished_ = true;
  if (enabled_) {
    draw_locked(true);
    std::fputc('\n', stderr);
    std::fflush(stderr);
  }
}

std::string ProgressBar::render(int width) const {
  const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = el > 0 ? double(done_) / el : 0;
  char buf[256];
  std::string s = label_.empty() ? "" : label_ + " ";
  if (total_ > 0) {
    const double frac = std::min(1.0, double(done_) / double(total_));
    const int fill = int(frac * width);
    std::snprintf(buf, sizeof buf, "%3d%% |", int(frac * 100));
    s += buf;
    s += std::string(fill, '#') + std::string(width - fill, ' ');
    const double eta = rate > 0 ? double(total_ - done_) / rate : -1;
    std::snprintf(buf, sizeof buf, "| %lld/%lld  %.1f it/s  ETA %s", (long long)done_, (long long)total_, rate,
                  format_duration(eta).c_str());
  } else {
    std::snprintf(buf, sizeof buf, "%lld  %.1f it/s  %s", (long long)done_, rate, format_duration(el).c_str());
  }
  s += buf;
  if (!postfix_.empty()) s += "  " + postfix_;
  return s;
}

void ProgressBar::draw_locked(bool force) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (!force && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  std::fprintf(stderr, "\r\033[K%s", render().c_str());
  std::fflush(stderr);
}

}  // namespace mmattn
