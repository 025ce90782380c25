#include "vision/clip_preprocess.h"

#include <algorithm>
#include <cstring>
#include <tuple>

namespace mmattn {

namespace {

// HF size dicts: an int (old configs) or {"shortest_edge"} / {"height", "width"}.
void read_size(JsonReader& r, ClipPreprocessConfig& c) {
  if (!r.has("size")) {
    r.ignore("size");
    return;
  }
  const Json& v = r.json()["size"];
  if (v.is_number_integer()) {
    c.shortest_edge = r.get<int>("size");
    return;
  }
  if (!v.is_object()) r.fail_key("size", "expected an integer or an object, got " + json_type_desc(v));
  JsonReader sr = r.child("size");
  if (sr.has("shortest_edge")) {
    c.shortest_edge = sr.get<int>("shortest_edge");
    if (sr.has("longest_edge")) sr.fail_key("longest_edge", "is not supported (only shortest_edge, or height and width)");
  } else if (sr.has("height") || sr.has("width")) {
    c.size_h = sr.get<int>("height");
    c.size_w = sr.get<int>("width");
  } else {
    sr.fail("expected {\"shortest_edge\": N} or {\"height\": H, \"width\": W}, got " + json_type_desc(v));
  }
  for (auto it = v.begin(); it != v.end(); ++it)
    if (it.key() != "shortest_edge" && it.key() != "height" && it.key() != "width" && !it.value().is_null())
      sr.fail_key(it.key(), "is not supported (only shortest_edge, or height and width)");
}

void read_crop(JsonReader& r, ClipPreprocessConfig& c) {
  if (!r.has("crop_size")) {
    r.ignore("crop_size");
    return;
  }
  const Json& v = r.json()["crop_size"];
  if (v.is_number_integer()) {
    c.crop_h = c.crop_w = r.get<int>("crop_size");
    return;
  }
  if (!v.is_object()) r.fail_key("crop_size", "expected an integer or an object, got " + json_type_desc(v));
  JsonReader cr = r.child("crop_size");
  c.crop_h = cr.get<int>("height");
  c.crop_w = cr.get<int>("width");
}

std::array<float, 3> read_triple(JsonReader& r, const std::string& key, const std::array<float, 3>& fallback) {
  if (!r.has(key)) {
    r.ignore(key);
    return fallback;
  }
  const Json& v = r.json()[key];
  if (v.is_number()) {
    const float x = r.get<float>(key);
    return {x, x, x};
  }
  const auto xs = r.get<std::vector<float>>(key);
  if (xs.size() != 3) r.fail_key(key, "expected 3 values (R, G, B), got " + std::to_string(xs.size()));
  return {xs[0], xs[1], xs[2]};
}

}  // namespace

ClipPreprocessConfig ClipPreprocessConfig::from_json(const Json& j, const std::string& where) {
  JsonReader r(j, where);
  ClipPreprocessConfig c;
  // transformers >= 5: "CLIPImageProcessor" (and the older "CLIPImageProcessorFast") is the
  // torchvision backend; "CLIPImageProcessorPil" the PIL one. Other processor types are accepted
  // (their CLIP-style keys are read) with the torchvision arithmetic.
  const std::string type = r.get<std::string>("image_processor_type", "CLIPImageProcessor");
  c.resize_impl = type == "CLIPImageProcessorPil" ? ResampleImpl::kPillow : ResampleImpl::kTorch;
  // CLIPImageProcessor's defaults for absent keys.
  c.shortest_edge = 224;
  c.crop_h = c.crop_w = 224;
  c.do_resize = r.get<bool>("do_resize", true);
  read_size(r, c);
  const int resample = r.get<int>("resample", 3);
  if (resample == 2) {
    c.resample = ResampleFilter::kBilinear;
  } else if (resample == 3) {
    c.resample = ResampleFilter::kBicubic;
  } else {
    r.fail_key("resample", "is " + std::to_string(resample) +
                               "; supported: 2 (bilinear) and 3 (bicubic) (0 nearest, 1 lanczos, 4 box, 5 hamming are not)");
  }
  c.do_center_crop = r.get<bool>("do_center_crop", true);
  read_crop(r, c);
  c.do_rescale = r.get<bool>("do_rescale", true);
  c.rescale = r.get<float>("rescale_factor", 1.f / 255.f);
  c.do_normalize = r.get<bool>("do_normalize", true);
  c.mean = read_triple(r, "image_mean", {0.48145466f, 0.4578275f, 0.40821073f});
  c.std = read_triple(r, "image_std", {0.26862954f, 0.26130258f, 0.27577711f});
  // Decoded images are always RGB already, so do_convert_rgb has nothing left to do either way.
  (void)r.get<bool>("do_convert_rgb", true);
  try {
    c.validate();
  } catch (const ConfigError& e) {
    r.fail(e.what());
  }
  return c;
}

ClipPreprocessConfig ClipPreprocessConfig::from_json_file(const std::string& path) {
  return from_json(read_json_file(path), path);
}

void ClipPreprocessConfig::validate() const {
  if (do_resize) {
    if (size_h > 0 || size_w > 0) {
      MMATTN_CHECK(size_h > 0 && size_w > 0, ConfigError, "preprocess: size height and width must both be positive, got ",
                   size_h, "x", size_w);
    } else {
      MMATTN_CHECK(shortest_edge > 0, ConfigError, "preprocess: shortest_edge must be positive, got ", shortest_edge);
    }
  }
  if (do_center_crop)
    MMATTN_CHECK(crop_h > 0 && crop_w > 0, ConfigError, "preprocess: crop size must be positive, got ", crop_h, "x",
                 crop_w);
  if (do_normalize)
    for (int c = 0; c < 3; ++c) MMATTN_CHECK(std[c] != 0.f, ConfigError, "preprocess: image_std[", c, "] is zero");
}

std::pair<int, int> clip_resize_size(int w, int h, const ClipPreprocessConfig& cfg) {
  if (cfg.size_h > 0 && cfg.size_w > 0) return {cfg.size_w, cfg.size_h};
  const int s = cfg.shortest_edge;
  const int shorter = std::min(w, h), longer = std::max(w, h);
  // Python: int(size * long / short), true division then truncation.
  const int new_long = int(double(int64_t(s) * longer) / double(shorter));
  return w <= h ? std::pair<int, int>{s, new_long} : std::pair<int, int>{new_long, s};
}

std::array<uint8_t, 3> mean_color_u8(const std::array<float, 3>& mean) {
  std::array<uint8_t, 3> c{};
  for (int i = 0; i < 3; ++i) c[i] = uint8_t(std::clamp(int(double(mean[i]) * 255), 0, 255));
  return c;
}

Image expand_to_square(const Image& img, const std::array<uint8_t, 3>& background) {
  if (img.width == img.height) return img;
  const int side = std::max(img.width, img.height);
  Image out(side, side);
  for (size_t i = 0; i < out.rgb.size(); i += 3) std::memcpy(&out.rgb[i], background.data(), 3);
  const int x0 = (side - img.width) / 2, y0 = (side - img.height) / 2;
  for (int y = 0; y < img.height; ++y) std::memcpy(out.px(x0, y0 + y), img.px(0, y), size_t(img.width) * 3);
  return out;
}

std::pair<int, int> center_crop_origin(int w, int h, int crop_w, int crop_h, bool pad_offset_round_up) {
  MMATTN_CHECK(crop_w > 0 && crop_h > 0, ShapeError, "center_crop: crop size ", crop_w, "x", crop_h);
  // Pad (zeros) where the image is smaller than the crop: image at (crop - size) // 2, or rounded
  // up (numpy path); then the crop at ((padded - crop) // 2) of the padded image.
  const int pw = std::max(w, crop_w), ph = std::max(h, crop_h);
  const int ru = pad_offset_round_up ? 1 : 0;
  return {(pw - crop_w) / 2 - (pw - w + ru) / 2, (ph - crop_h) / 2 - (ph - h + ru) / 2};
}

Image center_crop(const Image& img, int crop_w, int crop_h, bool pad_offset_round_up) {
  const auto [ox, oy] = center_crop_origin(img.width, img.height, crop_w, crop_h, pad_offset_round_up);
  Image out(crop_w, crop_h);
  for (int y = 0; y < crop_h; ++y) {
    const int sy = y + oy;
    if (sy < 0 || sy >= img.height) continue;
    const int x_lo = std::max(0, -ox), x_hi = std::min(crop_w, img.width - ox);
    if (x_hi > x_lo) std::memcpy(out.px(x_lo, y), img.px(x_lo + ox, sy), size_t(x_hi - x_lo) * 3);
  }
  return out;
}

Image clip_resize_crop(const Image& img, const ClipPreprocessConfig& cfg) {
  MMATTN_CHECK(!img.empty(), ShapeError, "clip_preprocess: empty image (", img.width, "x", img.height, ")");
  cfg.validate();
  Image cur = cfg.pad_to_square ? expand_to_square(img, mean_color_u8(cfg.mean)) : img;
  if (cfg.do_resize) {
    const auto [w, h] = clip_resize_size(cur.width, cur.height, cfg);
    MMATTN_CHECK(w > 0 && h > 0, ShapeError, "clip_preprocess: a ", cur.width, "x", cur.height,
                 " image would be resized to ", w, "x", h);
    cur = resize_image(cur, w, h, cfg.resample, cfg.resize_impl);
  }
  if (cfg.do_center_crop) cur = center_crop(cur, cfg.crop_w, cfg.crop_h, cfg.resize_impl == ResampleImpl::kPillow);
  return cur;
}

Tensor clip_normalize(const Image& img, const ClipPreprocessConfig& cfg) {
  const int H = img.height, W = img.width;
  Tensor out = Tensor::empty({3, H, W}, DType::F32);  // CHW
  float* o = out.data<float>();
  const float scale = cfg.do_rescale ? cfg.rescale : 1.f;
  for (int c = 0; c < 3; ++c) {
    const float m = cfg.do_normalize ? cfg.mean[c] : 0.f;
    const float s = cfg.do_normalize ? cfg.std[c] : 1.f;
    float* oc = o + size_t(c) * H * W;
    for (size_t i = 0; i < size_t(H) * W; ++i) oc[i] = (float(img.rgb[i * 3 + c]) * scale - m) / s;
  }
  return out;
}

Tensor clip_preprocess(const Image& img, const ClipPreprocessConfig& cfg) {
  return clip_normalize(clip_resize_crop(img, cfg), cfg);
}

Tensor clip_preprocess_to(const Image& img, const ClipPreprocessConfig& cfg, Device dev, DType dtype, Image* crop,
                          Tensor* crop_pixels) {
  MMATTN_CHECK(is_float(dtype), ShapeError, "clip_preprocess: pixels must be a float dtype, got ", dtype_name(dtype));
  if (!dev.is_cuda()) {
    Image c = clip_resize_crop(img, cfg);
    Tensor px = clip_normalize(c, cfg).to(dtype);
    if (crop_pixels) *crop_pixels = c.to_tensor();
    if (crop) *crop = std::move(c);
    return px;
  }
#if MMATTN_HAS_CUDA
  MMATTN_CHECK(!img.empty(), ShapeError, "clip_preprocess: empty image (", img.width, "x", img.height, ")");
  MMATTN_CHECK(img.rgb.size() == size_t(img.width) * img.height * 3, ShapeError, "clip_preprocess: image of ",
               img.width, "x", img.height, " holds ", img.rgb.size(), " bytes");
  cfg.validate();
  ClipPreprocessParams p;
  p.src_w = img.width;
  p.src_h = img.height;
  // expand2square's canvas, as expand_to_square places the image
  p.canvas_w = p.canvas_h = std::max(img.width, img.height);
  if (!cfg.pad_to_square) {
    p.canvas_w = img.width;
    p.canvas_h = img.height;
  }
  p.pad_x = (p.canvas_w - img.width) / 2;
  p.pad_y = (p.canvas_h - img.height) / 2;
  const std::array<uint8_t, 3> bg = mean_color_u8(cfg.mean);
  std::copy(bg.begin(), bg.end(), p.background);
  p.out_w = p.canvas_w;
  p.out_h = p.canvas_h;
  if (cfg.do_resize) {
    const auto [w, h] = clip_resize_size(p.canvas_w, p.canvas_h, cfg);
    MMATTN_CHECK(w > 0 && h > 0, ShapeError, "clip_preprocess: a ", p.canvas_w, "x", p.canvas_h,
                 " image would be resized to ", w, "x", h);
    p.out_w = w;
    p.out_h = h;
  }
  p.horizontal = p.out_w != p.canvas_w;
  p.vertical = p.out_h != p.canvas_h;
  // The taps of both passes in one upload: first, count, w of the horizontal pass, then the vertical.
  std::vector<int32_t> taps;
  size_t off[6] = {0, 0, 0, 0, 0, 0};
  auto add_taps = [&](int in, int out, size_t* o, int* ksize, int* precision) {
    const ResampleTaps t = resample_taps(in, out, cfg.resample, cfg.resize_impl);
    *ksize = t.ksize;
    *precision = t.precision;
    o[0] = taps.size();
    taps.insert(taps.end(), t.first.begin(), t.first.end());
    o[1] = taps.size();
    taps.insert(taps.end(), t.count.begin(), t.count.end());
    o[2] = taps.size();
    taps.insert(taps.end(), t.w.begin(), t.w.end());
  };
  if (p.horizontal) add_taps(p.canvas_w, p.out_w, off, &p.h_ksize, &p.h_precision);
  if (p.vertical) add_taps(p.canvas_h, p.out_h, off + 3, &p.v_ksize, &p.v_precision);
  // the center crop, as center_crop places it
  p.crop_w = p.out_w;
  p.crop_h = p.out_h;
  if (cfg.do_center_crop) {
    std::tie(p.crop_x, p.crop_y) = center_crop_origin(p.out_w, p.out_h, cfg.crop_w, cfg.crop_h,
                                                      cfg.resize_impl == ResampleImpl::kPillow);
    p.crop_w = cfg.crop_w;
    p.crop_h = cfg.crop_h;
  }
  p.scale = cfg.do_rescale ? cfg.rescale : 1.f;
  for (int c = 0; c < 3; ++c) {
    p.mean[c] = cfg.do_normalize ? cfg.mean[c] : 0.f;
    p.std[c] = cfg.do_normalize ? cfg.std[c] : 1.f;
  }

  const Tensor src = Tensor::from_blob(const_cast<uint8_t*>(img.rgb.data()), {img.height, img.width, 3}, DType::U8,
                                       Device::cpu(), nullptr)
                         .to(dev);
  const Tensor taps_d = taps.empty() ? Tensor() : Tensor::from_vector(taps, {int64_t(taps.size())}).to(dev);
  const Tensor tmp = p.horizontal && p.vertical ? Tensor::empty({p.canvas_h, p.out_w, 3}, DType::U8, dev) : Tensor();
  Tensor y = Tensor::empty({3, p.crop_h, p.crop_w}, dtype, dev);
  const Tensor crop_u8 = crop || crop_pixels ? Tensor::empty({p.crop_h, p.crop_w, 3}, DType::U8, dev) : Tensor();
  p.src = src.data<uint8_t>();
  if (taps_d.defined()) {
    const int32_t* t = taps_d.data<int32_t>();
    p.h_first = t + off[0], p.h_count = t + off[1], p.h_w = t + off[2];
    p.v_first = t + off[3], p.v_count = t + off[4], p.v_w = t + off[5];
  }
  p.tmp = tmp.defined() ? tmp.data<uint8_t>() : nullptr;
  p.y = y.data_ptr();
  p.y_dtype = dtype;
  p.crop_u8 = crop_u8.defined() ? crop_u8.data<uint8_t>() : nullptr;
  clip_preprocess_cuda(p, current_stream());
  if (crop) *crop = Image::from_tensor(crop_u8);
  if (crop_pixels) *crop_pixels = crop_u8;
  return y;
#else
  MMATTN_THROW(CudaError, "clip_preprocess: this build of mmattn has no CUDA support");
#endif
}

}  // namespace mmattn
