#pragma once
// A small pool of host worker threads for short parallel jobs on a request's critical path (a
// JPEG's bands of rows: vision/image.cpp). Starting a thread per band per image costs tens of
// microseconds on the caller before its own band starts; the workers here stay and are woken. After
// a job each worker spins for spin_ms() (default 2 ms: the next image of a batch decoded back to back
// finds it awake), then blocks until the next job. Spinning longer (through the ~15 ms a single
// request spends on the GPU between two images) measured no better in the pipeline (bench/NOTES.md,
// session 24), so the cores are not held. MMATTN_POOL_SPIN_MS sets the spin at start-up (0: block at
// once).
//
// run(n, fn) calls fn(i) once for every i in [0, n), in any order: the caller takes tasks too (a job
// never waits for a worker to wake), workers take the rest as they come. It returns when every task
// has finished. fn must not throw (catch inside and report; JPEG bands record their failures).
// One job at a time: a run() that finds the pool busy (another thread's job, or a nested call) runs
// its tasks itself, in order. Workers start on first use, min(hardware threads, kMaxWorkers + 1) - 1
// of them.
#include <functional>

namespace mmattn {

class WorkerPool {
 public:
  static constexpr int kMaxWorkers = 7;
  static WorkerPool& shared();
  int workers() const;  // threads besides the caller (0: every task runs on the caller)
  void run(int n, const std::function<void(int)>& fn);

  static void set_spin_ms(double ms);  // process-wide (tests, benchmarks)
  static double spin_ms();

  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;
  ~WorkerPool();

 private:
  WorkerPool();
  struct State;
  State* s_;
};

}  // namespace mmattn
