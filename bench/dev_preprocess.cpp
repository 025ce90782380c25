// Times the CPU image path of a LLaVA request piece by piece (JPEG decode, CLIP resize + crop,
// normalise, upload when a GPU exists; then the GPU path of clip_preprocess_to): dev_preprocess [image] [reps]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "core/device.h"
#include "core/worker_pool.h"
#include "core/ops/linear.h"
#include "vision/clip_preprocess.h"
#include "vision/image.h"

using namespace mmattn;

static double median_ms(const std::function<void()>& f, int reps) {
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto a = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

int main(int argc, char** argv) {
  const std::string path = argc > 1 ? argv[1] : std::string(MMATTN_SOURCE_DIR_BENCH) + "/assets/images/extreme_ironing.jpg";
  const int reps = argc > 2 ? std::atoi(argv[2]) : 30;
  ClipPreprocessConfig cfg;
  Image img, crop;
  Tensor px;
  std::printf("decode     %.3f ms\n", median_ms([&] { img = load_image(path); }, reps));
  for (int bands : {1, 2, 3, 4}) {  // JPEG: rows decoded in bands on threads of their own
    ImageLoadOptions o;
    o.jpeg_bands = bands;
    std::printf("  decode, %d band(s) %.3f ms\n", bands, median_ms([&] { img = load_image(path, o); }, reps));
  }
  std::printf("resize+crop %.3f ms (%dx%d -> %dx%d)\n", median_ms([&] { crop = clip_resize_crop(img, cfg); }, reps),
              img.width, img.height, crop.width, crop.height);
  std::printf("normalize  %.3f ms\n", median_ms([&] { px = clip_normalize(crop, cfg); }, reps));
  if (cuda_available()) {
    std::printf("upload     %.3f ms\n", median_ms([&] {
                  Tensor g = px.unsqueeze(0).to(Device::cuda(), DType::BF16);
                  synchronize();
                }, reps));
    std::printf("on the GPU: resize+crop+normalize+upload %.3f ms\n", median_ms([&] {
                  Tensor g = clip_preprocess_to(img, cfg, Device::cuda(), DType::BF16);
                  synchronize();
                }, reps));
    std::printf("on the GPU with decode %.3f ms\n", median_ms([&] {
                  Tensor g = clip_preprocess_to(load_image(path), cfg, Device::cuda(), DType::BF16);
                  synchronize();
                }, reps));
    // As a request sees it: right after ~15 ms of device work that the host waited for (a decoder
    // prefill), or after 15 ms of host sleep: the image path per JPEG band count, with the worker
    // pool's threads blocked between images (spin 0) or spinning for 20 ms after each.
    const Tensor a = Tensor::full({4096, 4096}, 0.01f, DType::BF16, Device::cuda());
    const double spin_was = WorkerPool::spin_ms();
    for (double spin : {0.0, 20.0})
      for (int idle : {0, 1})
        for (int bands : {1, 2, 3, 4}) {
          WorkerPool::set_spin_ms(spin);
          ImageLoadOptions o;
          o.jpeg_bands = bands;
          std::vector<double> t;
          for (int i = 0; i < reps; ++i) {
            if (idle) {
              std::this_thread::sleep_for(std::chrono::milliseconds(15));
            } else {
              for (int j = 0; j < 100; ++j) (void)linear(a, a);  // ~15 ms
              synchronize();
            }
            const auto s0 = std::chrono::steady_clock::now();
            Tensor g = clip_preprocess_to(load_image(path, o), cfg, Device::cuda(), DType::BF16);
            synchronize();
            t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s0).count());
          }
          std::sort(t.begin(), t.end());
          std::printf("spin %2.0f ms, after %s, %d band(s): decode + GPU preprocessing %.3f ms (min %.3f, max %.3f)\n",
                      spin, idle ? "15 ms of host sleep" : "15 ms of device work", bands, t[t.size() / 2], t.front(),
                      t.back());
        }
    WorkerPool::set_spin_ms(spin_was);
  }
  return 0;
}
