#pragma once
// Shared benchmark plumbing: event timing (median after warm-up), the device ceilings measured in
// the same run, and results JSON in the format of docs/benchmarks.md.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "core/cuda_check.h"
#include "core/device.h"
#include "core/io.h"
#include "core/json_reader.h"
#include "core/tensor.h"

namespace mmattn::bench {

// Median wall time in ms of fn() followed by a device synchronisation, over `reps` runs after one
// warm-up (host clock: what a caller waiting on the result sees, host work included).
inline double host_median_ms(const std::function<void()>& fn, int reps) {
  fn();
  synchronize();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto a = std::chrono::steady_clock::now();
    fn();
    synchronize();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Median time in ms of fn() over `reps` runs after `warmup` runs, timed with events on the current
// stream. hold: the stream first waits on a host function that sleeps 200 us, so that fn()'s host
// work is done while the stream is held and the events bracket only the GPU work it queues.
inline double event_median_ms(const std::function<void()>& fn, int warmup, int reps, bool hold) {
  cudaStream_t s = current_stream();
  for (int i = 0; i < warmup; ++i) fn();
  MMATTN_CUDA_CHECK(cudaStreamSynchronize(s));
  cudaEvent_t a, b;
  MMATTN_CUDA_CHECK(cudaEventCreate(&a));
  MMATTN_CUDA_CHECK(cudaEventCreate(&b));
  std::vector<float> t;
  for (int i = 0; i < reps; ++i) {
    if (hold)
      MMATTN_CUDA_CHECK(cudaLaunchHostFunc(
          s, [](void*) { std::this_thread::sleep_for(std::chrono::microseconds(200)); }, nullptr));
    MMATTN_CUDA_CHECK(cudaEventRecord(a, s));
    fn();
    MMATTN_CUDA_CHECK(cudaEventRecord(b, s));
    MMATTN_CUDA_CHECK(cudaEventSynchronize(b));
    float ms;
    MMATTN_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// As issued to an idle GPU: the first event is reached at once, so fn()'s host work (argument
// checks, allocation, launch calls) is inside the time whenever it outlasts the launch latency.
inline double time_ms(const std::function<void()>& fn, int warmup = 5, int reps = 30) {
  return event_median_ms(fn, warmup, reps, false);
}

// Device time: the GPU work fn() queues, its host work done while the stream is held (caches as
// warm as in time_ms). For kernels of ~20 us the two differ by several %.
inline double time_ms_queued(const std::function<void()>& fn, int warmup = 5, int reps = 30) {
  return event_median_ms(fn, warmup, reps, true);
}

inline std::string device_name() {
  cudaDeviceProp p;
  MMATTN_CUDA_CHECK(cudaGetDeviceProperties(&p, 0));
  return p.name;
}

inline std::string today() {
  char buf[16];
  const std::time_t t = std::time(nullptr);
  std::strftime(buf, sizeof buf, "%Y-%m-%d", std::gmtime(&t));
  return buf;
}

inline std::string commit() {
  if (const char* c = std::getenv("MMATTN_COMMIT")) return c;
  return "unknown";
}

struct Results {
  std::string name;
  Json ceilings = Json::object();
  Json rows = Json::array();
  void add(Json row) {
    if (row.contains("ours") && row.contains("peer") && row["peer"].is_number() && row["peer"].get<double>() > 0)
      row["ratio"] = row["ours"].get<double>() / row["peer"].get<double>();
    std::printf("%-44s", row.value("case", "").c_str());
    for (const char* k : {"ours", "peer", "ratio"})
      if (row.contains(k) && row[k].is_number()) std::printf("  %s %.4g", k, row[k].get<double>());
    if (row.contains("ours_tflops")) std::printf("  %.1f TFLOP/s", row["ours_tflops"].get<double>());
    if (row.contains("ours_GBps")) std::printf("  %.0f GB/s", row["ours_GBps"].get<double>());
    if (row.contains("load_preprocess_ms") && row.contains("vision_ms"))
      std::printf("  (preprocess %.2f ms, vision %.2f ms)", row["load_preprocess_ms"].get<double>(),
                  row["vision_ms"].get<double>());
    if (row.contains("decoder_prefill_b1_ms"))
      std::printf("  (decoder prefill alone %.2f ms)", row["decoder_prefill_b1_ms"].get<double>());
    if (row.contains("fraction_of_ceiling")) std::printf("  (%.0f%% of ceiling)", 100 * row["fraction_of_ceiling"].get<double>());
    std::printf("\n");
    rows.push_back(std::move(row));
  }
  void write(const std::string& dir) const {
    Json j = {{"benchmark", name}, {"device", device_name()}, {"date", today()},
              {"commit", commit()}, {"ceilings", ceilings}, {"rows", rows}};
    write_file_atomic(dir + "/" + name + ".json", j.dump(1) + "\n");
    std::printf("wrote %s/%s.json\n", dir.c_str(), name.c_str());
  }
};

// Deterministic values in [lo, hi) on the GPU in dtype dt (made on the host; never zeros, which run
// faster than real data).
inline Tensor bench_random(const Shape& s, uint64_t seed, DType dt, float lo = -2.f, float hi = 2.f) {
  std::vector<float> v(size_t(shape_numel(s)));
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 7;
  for (auto& f : v) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    f = lo + float((x >> 11) * (1.0 / 9007199254740992.0)) * (hi - lo);
  }
  return Tensor::from_floats(v, s).to(Device::cuda(), dt);
}

// Device-to-device copy bandwidth (bytes read + bytes written), GB/s.
inline double measure_copy_GBps(size_t bytes = size_t(1) << 30) {
  void *a, *b;
  MMATTN_CUDA_CHECK(cudaMalloc(&a, bytes));
  MMATTN_CUDA_CHECK(cudaMalloc(&b, bytes));
  MMATTN_CUDA_CHECK(cudaMemset(a, 1, bytes));
  const double ms = time_ms([&] { MMATTN_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, current_stream())); });
  cudaFree(a);
  cudaFree(b);
  return 2.0 * double(bytes) / (ms * 1e-3) / 1e9;
}

// Reads "--out DIR" and "--peer FILE" style arguments.
inline std::string arg_value(int argc, char** argv, const std::string& flag, const std::string& fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (argv[i] == flag) return argv[i + 1];
  return fallback;
}

// Whether `flag` (a switch without a value, or any flag) is among the arguments.
inline bool has_flag(int argc, char** argv, const std::string& flag) {
  for (int i = 1; i < argc; ++i)
    if (argv[i] == flag) return true;
  return false;
}

// The LLaVA-1.5-7B-shaped checkpoint bench/peer_llava7b.py writes: --model, else $MMATTN_LLAVA7B,
// else /tmp/llava7b. Empty (with a "skipped" line naming `bench`) when it is not there.
inline std::string llava7b_model(int argc, char** argv, const char* bench) {
  const char* env = std::getenv("MMATTN_LLAVA7B");
  const std::string model = arg_value(argc, argv, "--model", env ? env : "/tmp/llava7b");
  if (path_exists(model + "/config.json")) return model;
  std::printf("%s: no checkpoint at %s (bench/peer_llava7b.py writes it); skipped\n", bench, model.c_str());
  return "";
}

}  // namespace mmattn::bench
