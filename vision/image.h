#pragma once
// 8-bit RGB images and their decoding: JPEG with libjpeg(-turbo), as PIL does; PNG with stb_image
// (Debian's libstb); PNG writing with stb_image_write.
//
// Decoding is meant to give what `PIL.Image.open(path).convert("RGB")` gives, since that is what
// transformers' image processors see:
//  - Formats: JPEG (baseline and progressive) and PNG only; anything else is a FormatError.
//  - Grayscale (any bit depth <= 8, palette too) is replicated to R = G = B, as PIL's L->RGB.
//  - Alpha is DROPPED, not composited (PIL's RGBA->RGB and LA->RGB discard it): a transparent
//    pixel keeps whatever colour it stores.
//  - 16-bit PNG: RGB, RGBA and gray+alpha keep the high byte of each sample (v >> 8), as PIL's
//    "RGB;16B"/"RGBA;16B"/"LA;16B" unpackers do (and as stb does).
//    16-bit GRAYSCALE is the exception: PIL opens it as mode "I;16" (older Pillow: "I") and its
//    convert("RGB") SATURATES, min(v, 255), instead of scaling, so nearly every real 16-bit gray
//    image becomes white. Gray16::kPilSaturate (default) reproduces that; Gray16::kHighByte gives
//    the sensible v >> 8 (what stb and every other decoder do) for callers that do not need parity.
//  - JPEG: libjpeg with PIL's settings (JDCT_ISLOW, fancy upsampling), so pixels equal PIL's
//    (checked on the baseline and progressive assets). 4-component (CMYK/YCCK) JPEGs follow PIL:
//    Adobe-inverted CMYK assumed, then cmyk2rgb. libjpeg warnings (corrupt entropy data) are
//    ignored as PIL ignores them. EXIF orientation is ignored (as Image.open + convert does).
//    Builds without libjpeg fall back to stb's decoder (jpeg_decoder_name() says which), whose
//    IDCT, chroma upsampling and YCbCr->RGB rounding differ: up to 3 levels on real photos.
//  - Truncated or damaged files are errors (PIL raises "image file is truncated"): a JPEG must
//    reach its EOI marker (decoders pad missing data instead of failing); a PNG must reach IEND and
//    every chunk's CRC must hold (stb checks neither).
// Errors: IoError (cannot open/read, naming the path and the OS reason); FormatError naming the
// file (or the label given for in-memory data) and the decoder's reason. Images above
// kMaxImagePixels are refused before decoding (PIL's decompression-bomb limit).
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace mmattn {

// PIL refuses images above 2 * Image.MAX_IMAGE_PIXELS.
constexpr int64_t kMaxImagePixels = 178'956'970;

// An RGB8 image, row-major HWC: rgb[(y * width + x) * 3 + c].
struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;

  Image() = default;
  Image(int w, int h);  // zero-filled; ShapeError for negative sizes
  bool empty() const { return width == 0 || height == 0; }
  uint8_t* px(int x, int y) { return rgb.data() + (size_t(y) * width + x) * 3; }
  const uint8_t* px(int x, int y) const { return rgb.data() + (size_t(y) * width + x) * 3; }
  // U8 [H, W, 3] CPU tensor (a copy).
  Tensor to_tensor() const;
  // From a U8 [H, W, 3] tensor on any device (copied).
  static Image from_tensor(const Tensor& t);
};

enum class Gray16 { kPilSaturate, kHighByte };

struct ImageLoadOptions {
  Gray16 gray16 = Gray16::kPilSaturate;
  // JPEG: bands of rows decoded in parallel on core/worker_pool.h's shared pool (the same pixels as
  // one decoder: each band entropy-decodes the rows above it and reconstructs its own). 0: by size
  // (one below ~0.15 MP, else up to 4, at most the pool's workers + 1).
  int jpeg_bands = 0;
};

Image load_image(const std::string& path, const ImageLoadOptions& opt = {});
// "libjpeg" or "stb_image" (the fallback of builds without libjpeg).
const char* jpeg_decoder_name();
// `label` names the data in error messages (a path, a URL, "<memory>").
Image load_image_from_memory(const uint8_t* data, size_t size, const std::string& label = "<memory>",
                             const ImageLoadOptions& opt = {});

// Writes an 8-bit PNG (stb_image_write) atomically. IoError on failure.
void save_png(const Image& img, const std::string& path);
// PNG bytes of 8-bit pixels with 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) channels.
std::string encode_png(const uint8_t* pixels, int width, int height, int channels);

// The colour of t in [0, 1] on the heatmaps mmattn writes (kept map, head map): dark blue (0) to
// yellow (1); t is clamped.
void heatmap_rgb(float t, uint8_t* rgb);

}  // namespace mmattn
