// WorkerPool (core/worker_pool.h): every task runs exactly once per job, back-to-back jobs with the
// workers spinning or blocked, nested and concurrent jobs, and the work really spreads over threads.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "core/worker_pool.h"

using namespace mmattn;

namespace {

struct SpinGuard {
  explicit SpinGuard(double ms) : was(WorkerPool::spin_ms()) { WorkerPool::set_spin_ms(ms); }
  ~SpinGuard() { WorkerPool::set_spin_ms(was); }
  double was;
};

// Runs jobs of n tasks; each task bumps its own counter. Returns false at the first miscount.
bool each_task_once(int jobs, int n) {
  std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
  for (int j = 0; j < jobs; ++j) {
    for (auto& h : hits) h.store(0);
    WorkerPool::shared().run(n, [&](int i) { hits[size_t(i)].fetch_add(1); });
    for (int i = 0; i < n; ++i)
      if (hits[size_t(i)].load() != 1) {
        ADD_FAILURE() << "job " << j << " of " << n << " tasks: task " << i << " ran " << hits[size_t(i)].load() << " times";
        return false;
      }
  }
  return true;
}

}  // namespace

TEST(WorkerPool, EveryTaskRunsOnceWhileWorkersSpin) {
  SpinGuard spin(50.0);
  for (int n : {0, 1, 2, 3, 4, 7, 8, 9, 31, 1000}) EXPECT_TRUE(each_task_once(n >= 100 ? 50 : 2000, n)) << n;
}

TEST(WorkerPool, EveryTaskRunsOnceWhenWorkersBlock) {
  SpinGuard spin(0.0);
  for (int n : {2, 4, 17}) {
    EXPECT_TRUE(each_task_once(300, n)) << n;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // workers asleep in wait()
    EXPECT_TRUE(each_task_once(1, n)) << n;
  }
}

TEST(WorkerPool, WorkSpreadsOverThreads) {
  WorkerPool& pool = WorkerPool::shared();
  if (pool.workers() == 0) GTEST_SKIP() << "one hardware thread: every task runs on the caller";
  SpinGuard spin(0.0);  // the workers must wake from a blocked wait
  std::mutex m;
  std::set<std::thread::id> ids;
  pool.run(16, [&](int) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::lock_guard<std::mutex> l(m);
    ids.insert(std::this_thread::get_id());
  });
  EXPECT_GE(ids.size(), 2u);
  EXPECT_LE(ids.size(), size_t(pool.workers()) + 1);
}

TEST(WorkerPool, NestedJobRunsOnTheCaller) {
  std::atomic<int> inner{0}, outer{0};
  WorkerPool::shared().run(4, [&](int) {
    outer.fetch_add(1);
    WorkerPool::shared().run(5, [&](int) { inner.fetch_add(1); });
  });
  EXPECT_EQ(outer.load(), 4);
  EXPECT_EQ(inner.load(), 20);
}

TEST(WorkerPool, ConcurrentCallersBothFinish) {
  SpinGuard spin(20.0);
  std::atomic<bool> ok_a{false}, ok_b{false};
  std::thread a([&] { ok_a = each_task_once(500, 6); });
  std::thread b([&] { ok_b = each_task_once(500, 9); });
  a.join();
  b.join();
  EXPECT_TRUE(ok_a.load());
  EXPECT_TRUE(ok_b.load());
}

TEST(WorkerPool, SpinSettingRoundTrips) {
  SpinGuard spin(3.5);
  EXPECT_DOUBLE_EQ(WorkerPool::spin_ms(), 3.5);
  WorkerPool::set_spin_ms(-1.0);
  EXPECT_DOUBLE_EQ(WorkerPool::spin_ms(), 0.0);
}
