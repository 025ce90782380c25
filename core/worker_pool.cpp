#include "core/worker_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace mmattn {

namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

// Spin before blocking, in nanoseconds: MMATTN_POOL_SPIN_MS, else 2 ms on machines with at least 4
// hardware threads (on smaller ones a spinning worker takes a core the caller's own work needs).
std::atomic<int64_t>& spin_ns() {
  static std::atomic<int64_t> ns{[] {
    if (const char* e = std::getenv("MMATTN_POOL_SPIN_MS")) return int64_t(std::max(0.0, std::atof(e)) * 1e6);
    return std::thread::hardware_concurrency() >= 4 ? int64_t(2'000'000) : int64_t(0);
  }()};
  return ns;
}

}  // namespace

// The generation is odd while no job is open (fn / n / next / remaining may then be written) and even
// while one is. A worker that sees an even generation registers as active, re-reads the generation
// (seq_cst both) and claims tasks only if that job is still open; the caller closes the job (odd)
// once every task has finished and then waits until no worker is active, so no worker reads a job's
// fields after its caller has returned.
struct WorkerPool::State {
  std::vector<std::thread> threads;
  std::mutex job;
  std::atomic<uint64_t> generation{1};
  std::atomic<bool> stop{false};
  const std::function<void(int)>* fn = nullptr;
  int n = 0;
  std::atomic<int> next{0};
  std::atomic<int> remaining{0};
  std::atomic<int> active{0};

  // noexcept: a task that throws ends the process here (run() documents that fn must not throw)
  // rather than leaving a job open with workers inside it.
  void take_tasks() noexcept {
    for (int i; (i = next.fetch_add(1)) < n;) {
      (*fn)(i);
      remaining.fetch_sub(1, std::memory_order_release);
    }
  }

  void worker() {
    uint64_t seen = generation.load();
    for (;;) {
      uint64_t g = generation.load(std::memory_order_acquire);
      if (g == seen && !stop.load(std::memory_order_relaxed)) {
        const auto t0 = std::chrono::steady_clock::now();
        const int64_t limit = spin_ns().load(std::memory_order_relaxed);
        for (int it = 0; (g = generation.load(std::memory_order_acquire)) == seen; ++it) {
          if (stop.load(std::memory_order_relaxed)) return;
          if ((it & 63) == 0 &&
              std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count() >= limit) {
            generation.wait(seen, std::memory_order_acquire);  // until the next job (or stop)
            continue;
          }
          cpu_relax();
        }
      }
      if (stop.load()) return;
      seen = g;
      if (g % 2) continue;  // a job closed before this worker saw it open
      active.fetch_add(1);
      if (generation.load() == g) take_tasks();  // else a later job is being set up: see it next round
      active.fetch_sub(1);
    }
  }
};

WorkerPool::WorkerPool() : s_(new State) {
  const int hw = int(std::max(1u, std::thread::hardware_concurrency()));
  const int count = std::min(hw, kMaxWorkers + 1) - 1;
  for (int i = 0; i < count; ++i) {
    try {
      s_->threads.emplace_back([s = s_] { s->worker(); });
    } catch (const std::system_error&) {
      break;  // fewer workers: the caller takes the rest
    }
  }
}

WorkerPool::~WorkerPool() {
  s_->stop.store(true);
  s_->generation.fetch_add(2);  // (stays odd: closed)
  s_->generation.notify_all();
  for (std::thread& t : s_->threads) t.join();
  delete s_;
}

WorkerPool& WorkerPool::shared() {
  static WorkerPool pool;
  return pool;
}

int WorkerPool::workers() const { return int(s_->threads.size()); }

void WorkerPool::set_spin_ms(double ms) { spin_ns().store(int64_t(std::max(0.0, ms) * 1e6)); }
double WorkerPool::spin_ms() { return double(spin_ns().load()) / 1e6; }

void WorkerPool::run(int n, const std::function<void(int)>& fn) {
  if (n <= 0) return;
  std::unique_lock<std::mutex> lock(s_->job, std::try_to_lock);
  if (n == 1 || s_->threads.empty() || !lock.owns_lock()) {
    for (int i = 0; i < n; ++i) fn(i);
    return;
  }
  State& s = *s_;
  s.fn = &fn;
  s.n = n;
  s.remaining.store(n);
  s.next.store(0);
  s.generation.fetch_add(1, std::memory_order_release);  // open (even)
  s.generation.notify_all();
  s.take_tasks();  // the caller never waits for a worker to wake
  while (s.remaining.load(std::memory_order_acquire) > 0) cpu_relax();
  s.generation.fetch_add(1);  // closed (odd)
  while (s.active.load() > 0) cpu_relax();
  s.fn = nullptr;
}

}  // namespace mmattn
