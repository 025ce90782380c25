#include "vision/image.h"

#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include "core/io.h"
#include "core/worker_pool.h"

#if MMATTN_HAS_LIBJPEG
#include <csetjmp>
// jpeglib.h needs FILE and size_t declared first.
#include <jpeglib.h>
#endif

namespace mmattn {

namespace {

enum class Kind { kPng, kJpeg };

bool is_png(const uint8_t* d, size_t n) {
  static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  return n >= 8 && std::memcmp(d, sig, 8) == 0;
}
bool is_jpeg(const uint8_t* d, size_t n) { return n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF; }

std::string head_hex(const uint8_t* d, size_t n) {
  std::string s;
  char buf[4];
  for (size_t i = 0; i < std::min<size_t>(n, 8); ++i) {
    std::snprintf(buf, sizeof buf, "%02x", d[i]);
    if (i) s += ' ';
    s += buf;
  }
  return s;
}

uint32_t crc32_update(uint32_t crc, const uint8_t* p, size_t n) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

uint32_t be32(const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }

// stb ignores chunk CRCs and happily decodes damaged data; PNG's CRCs make corruption cheap to
// detect, so every chunk is checked and the file must reach IEND. Returns "" when sound.
std::string png_structure_problem(const uint8_t* d, size_t n) {
  size_t pos = 8;
  bool first = true;
  while (true) {
    if (pos + 8 > n) return "truncated PNG (no IEND chunk)";
    const uint32_t len = be32(d + pos);
    const uint8_t* type = d + pos + 4;
    const std::string tname(reinterpret_cast<const char*>(type), 4);
    if (len > 0x7fffffffu) return str_cat("corrupt PNG: chunk at byte ", pos, " has length ", len);
    if (first && tname != "IHDR") return "corrupt PNG: the first chunk is not IHDR";
    first = false;
    if (uint64_t(pos) + 12 + len > n) return str_cat("truncated PNG (chunk '", tname, "' at byte ", pos, " runs past the end)");
    const uint32_t want = be32(d + pos + 8 + len);
    if (crc32_update(0, type, size_t(len) + 4) != want)
      return str_cat("corrupt PNG: chunk '", tname, "' at byte ", pos, " has a bad CRC");
    if (tname == "IEND") return "";
    pos += 12 + size_t(len);
  }
}

// Walks the JPEG marker structure (and the entropy-coded data after each SOS) to the EOI marker.
// Only running out of bytes is reported here; other malformations are left to the decoder.
bool jpeg_reaches_eoi(const uint8_t* d, size_t n) {
  size_t pos = 2;  // after SOI
  while (true) {
    if (pos >= n) return false;
    if (d[pos] != 0xFF) return true;  // not a marker: stb will judge
    while (pos < n && d[pos] == 0xFF) ++pos;  // fill bytes
    if (pos >= n) return false;
    const uint8_t m = d[pos++];
    if (m == 0xD9) return true;                           // EOI
    if ((m >= 0xD0 && m <= 0xD7) || m == 0x01) continue;  // no payload
    if (pos + 2 > n) return false;
    const size_t len = size_t(d[pos]) << 8 | d[pos + 1];
    if (len < 2) return true;
    pos += len;
    if (pos > n) return false;
    if (m == 0xDA) {  // entropy-coded segment: FF is followed by 00 (stuffing), RSTn or FF (fill)
      while (true) {
        if (pos >= n) return false;
        if (d[pos] != 0xFF) {
          ++pos;
          continue;
        }
        if (pos + 1 >= n) return false;
        const uint8_t next = d[pos + 1];
        if (next == 0x00 || (next >= 0xD0 && next <= 0xD7)) {
          pos += 2;
        } else if (next == 0xFF) {
          ++pos;
        } else {
          break;  // a marker starts at pos
        }
      }
    }
  }
}

const char* stb_reason() {
  const char* r = stbi_failure_reason();
  return r ? r : "unknown error";
}

struct StbFree {
  void operator()(void* p) const { stbi_image_free(p); }
};

#if MMATTN_HAS_LIBJPEG
// libjpeg reports fatal errors through error_exit, which must not return: it longjmps back here.
// Everything that outlives the jump lives in JpegCtx (owned by the caller's frame), never in
// automatic variables of the function that calls setjmp.
struct JpegCtx {
  jpeg_decompress_struct cinfo;
  jpeg_error_mgr jerr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = {0};
  std::vector<JSAMPROW> rows;
};

void jpeg_fail(j_common_ptr c) {
  JpegCtx* ctx = static_cast<JpegCtx*>(c->client_data);
  (*c->err->format_message)(c, ctx->message);
  std::longjmp(ctx->jump, 1);
}
// Warnings (corrupt entropy data, extraneous bytes) are ignored, as PIL ignores them; truncation
// is caught before decoding.
void jpeg_quiet(j_common_ptr, int) {}

struct JpegInfo {
  int width = 0, height = 0, components = 0;  // of the decoded rows: 3 (RGB) or 4 (CMYK)
};

// One decoder over `data` with PIL's settings (Pillow JpegDecode.c, no draft mode): JDCT_ISLOW,
// fancy upsampling, out_color_space RGB (CMYK for 4 components). With out == null it reads the
// header only (info); else it writes output rows [r0, r1) into out (`info` rows, width *
// components bytes each): rows before r0 are skipped (jpeg_skip_scanlines entropy-decodes them
// without reconstructing them). Returns false with ctx.message set on failure.
bool jpeg_decode_rows(JpegCtx& ctx, const uint8_t* data, size_t size, JpegInfo& info, uint8_t* out, int r0, int r1) {
  ctx.cinfo.err = jpeg_std_error(&ctx.jerr);
  ctx.jerr.error_exit = jpeg_fail;
  ctx.jerr.emit_message = jpeg_quiet;
  ctx.cinfo.client_data = &ctx;
  if (setjmp(ctx.jump)) {
    jpeg_destroy_decompress(&ctx.cinfo);
    return false;
  }
  jpeg_create_decompress(&ctx.cinfo);
  jpeg_mem_src(&ctx.cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&ctx.cinfo, TRUE);
  if (int64_t(ctx.cinfo.image_width) * ctx.cinfo.image_height > kMaxImagePixels) {
    std::snprintf(ctx.message, sizeof ctx.message, "JPEG of %ux%u pixels exceeds the limit of %lld pixels",
                  ctx.cinfo.image_width, ctx.cinfo.image_height, static_cast<long long>(kMaxImagePixels));
    jpeg_destroy_decompress(&ctx.cinfo);
    return false;
  }
  const bool cmyk = ctx.cinfo.num_components == 4;
  ctx.cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
  ctx.cinfo.dct_method = JDCT_ISLOW;
  ctx.cinfo.do_fancy_upsampling = TRUE;
  info.width = int(ctx.cinfo.image_width);
  info.height = int(ctx.cinfo.image_height);
  info.components = cmyk ? 4 : 3;
  if (!out) {
    jpeg_destroy_decompress(&ctx.cinfo);
    return true;
  }
  jpeg_start_decompress(&ctx.cinfo);
  const size_t stride = size_t(info.width) * size_t(info.components);
  if (r0 > 0) jpeg_skip_scanlines(&ctx.cinfo, JDIMENSION(r0));
  ctx.rows.resize(size_t(r1 - r0));
  for (int r = r0; r < r1; ++r) ctx.rows[size_t(r - r0)] = out + stride * size_t(r);
  while (int(ctx.cinfo.output_scanline) < r1) {
    const int at = int(ctx.cinfo.output_scanline);
    jpeg_read_scanlines(&ctx.cinfo, ctx.rows.data() + (at - r0), JDIMENSION(r1 - at));
  }
  if (r1 == info.height) jpeg_finish_decompress(&ctx.cinfo);
  else jpeg_abort_decompress(&ctx.cinfo);  // a band above the last: the rest is another band's
  jpeg_destroy_decompress(&ctx.cinfo);
  return true;
}

// Bands of rows decoded in parallel (on core/worker_pool.h's workers and the caller): the entropy-coded data is sequential, but each
// band only entropy-decodes the rows above it (jpeg_skip_scanlines) and reconstructs (IDCT,
// upsampling, colour) its own, so band i costs ~ e * rows above + rows of its own, in units of a
// full decode per row, e ~ 0.55 the entropy share (measured on the baseline asset photo: skipping
// 3/4 of it then decoding the rest took 0.69 of a full decode). Band edges equalise those costs:
// the top band is the tallest. Below ~0.15 MP one thread is faster.
int jpeg_bands(const JpegInfo& info) {
  const int64_t px = int64_t(info.width) * info.height;
  if (px < 150'000) return 1;
  const int threads = WorkerPool::shared().workers() + 1;
  return std::max(1, std::min({threads, 4, info.height / 64}));
}
// First row of band i of n (edge(n) = height): with c = e / (1 - (1 - e)^n), r_{i+1} = r_i (1 - e) + c.
int jpeg_band_edge(int i, int n, int height) {
  if (i >= n) return height;
  constexpr double e = 0.55;
  const double c = e / (1.0 - std::pow(1.0 - e, n));
  double r = 0.0;
  for (int k = 0; k < i; ++k) r = r * (1.0 - e) + c;
  return std::clamp(int(std::lround(r * height)), 0, height);
}

Image decode_jpeg_libjpeg(const uint8_t* data, size_t size, const std::string& label, int bands) {
  JpegInfo info;
  {
    auto probe = std::make_unique<JpegCtx>();
    if (!jpeg_decode_rows(*probe, data, size, info, nullptr, 0, 0))
      MMATTN_THROW(FormatError, label, ": cannot decode JPEG: ", probe->message);
  }
  if (bands <= 0) bands = jpeg_bands(info);
  bands = std::max(1, std::min(bands, info.height));
  // RGB rows go straight into the image; 4-component (CMYK) rows into `cmyk`, converted below
  Image img(info.width, info.height);
  const size_t n = size_t(info.width) * info.height;
  std::vector<uint8_t> cmyk(info.components == 4 ? n * 4 : 0);
  uint8_t* const pixels = info.components == 4 ? cmyk.data() : img.rgb.data();
  std::vector<std::unique_ptr<JpegCtx>> ctx(static_cast<size_t>(bands));
  std::vector<char> ok(static_cast<size_t>(bands), 0);
  std::vector<std::string> failure(static_cast<size_t>(bands));  // what escaped a band (bad_alloc)
  auto band = [&](int i) noexcept {
    try {
      ctx[size_t(i)] = std::make_unique<JpegCtx>();
      JpegInfo mine;
      const int r0 = jpeg_band_edge(i, bands, info.height), r1 = jpeg_band_edge(i + 1, bands, info.height);
      if (r0 >= r1) {  // (an empty band: tiny images)
        ok[size_t(i)] = 1;
        return;
      }
      ok[size_t(i)] = jpeg_decode_rows(*ctx[size_t(i)], data, size, mine, pixels, r0, r1);
    } catch (const std::exception& e) {
      failure[size_t(i)] = e.what();
    }
  };
  WorkerPool::shared().run(bands, band);
  for (int i = 0; i < bands; ++i)
    if (!ok[size_t(i)])
      MMATTN_THROW(FormatError, label, ": cannot decode JPEG: ",
                   failure[size_t(i)].empty() ? std::string(ctx[size_t(i)]->message) : failure[size_t(i)]);
  if (info.components == 4) {
    // PIL: rawmode "CMYK;I" (Adobe's inverted CMYK, assumed for every 4-component JPEG), then
    // convert("RGB") as cmyk2rgb: nk = 255 - k; channel = clip8(nk - nk * c / 255) (MULDIV255).
    auto muldiv255 = [](int a, int b) {
      const int t = a * b + 128;
      return ((t >> 8) + t) >> 8;
    };
    for (size_t i = 0; i < n; ++i) {
      const uint8_t* p = &cmyk[i * 4];
      const int nk = 255 - (255 - p[3]);
      for (int c = 0; c < 3; ++c) img.rgb[i * 3 + c] = uint8_t(std::clamp(nk - muldiv255(255 - p[c], nk), 0, 255));
    }
  }
  return img;
}
#endif  // MMATTN_HAS_LIBJPEG

}  // namespace

Image::Image(int w, int h) : width(w), height(h) {
  MMATTN_CHECK(w >= 0 && h >= 0, ShapeError, "Image: negative size ", w, "x", h);
  rgb.assign(size_t(w) * size_t(h) * 3, 0);
}

Tensor Image::to_tensor() const {
  Tensor t = Tensor::empty({height, width, 3}, DType::U8);
  if (!rgb.empty()) std::memcpy(t.data<uint8_t>(), rgb.data(), rgb.size());
  return t;
}

const char* jpeg_decoder_name() { return MMATTN_HAS_LIBJPEG ? "libjpeg" : "stb_image"; }

Image Image::from_tensor(const Tensor& t) {
  check_defined(t, "Image::from_tensor", "t");
  check_dtype(t, DType::U8, "Image::from_tensor", "t");
  MMATTN_CHECK(t.dim() == 3 && t.size(2) == 3, ShapeError, "Image::from_tensor: expected U8 [H, W, 3], got ",
               t.desc());
  const Tensor c = t.to(Device::cpu()).contiguous();
  Image img(int(c.size(1)), int(c.size(0)));
  if (!img.rgb.empty()) std::memcpy(img.rgb.data(), c.data<uint8_t>(), img.rgb.size());
  return img;
}

Image load_image_from_memory(const uint8_t* data, size_t size, const std::string& label,
                             const ImageLoadOptions& opt) {
  MMATTN_CHECK(size > 0, FormatError, label, ": empty file, not an image");
  Kind kind;
  if (is_png(data, size)) {
    kind = Kind::kPng;
  } else if (is_jpeg(data, size)) {
    kind = Kind::kJpeg;
  } else {
    MMATTN_THROW(FormatError, label, ": not a JPEG or PNG image (starts with ", head_hex(data, size), ")");
  }
  const char* kname = kind == Kind::kPng ? "PNG" : "JPEG";
  MMATTN_CHECK(size <= size_t(INT32_MAX), FormatError, label, ": ", kname, " file too large (", size, " bytes)");
  const int len = int(size);
  if (kind == Kind::kJpeg)
    MMATTN_CHECK(jpeg_reaches_eoi(data, size), FormatError, label, ": truncated JPEG (data ends before the EOI marker)");
#if MMATTN_HAS_LIBJPEG
  if (kind == Kind::kJpeg) return decode_jpeg_libjpeg(data, size, label, opt.jpeg_bands);
#endif

  int w = 0, h = 0, comp = 0;
  if (!stbi_info_from_memory(data, len, &w, &h, &comp))
    MMATTN_THROW(FormatError, label, ": cannot decode ", kname, ": ", stb_reason());
  MMATTN_CHECK(w > 0 && h > 0, FormatError, label, ": ", kname, " has size ", w, "x", h);
  MMATTN_CHECK(int64_t(w) * h <= kMaxImagePixels, FormatError, label, ": ", kname, " of ", w, "x", h,
               " pixels exceeds the limit of ", kMaxImagePixels, " pixels (decompression bomb?)");
  if (kind == Kind::kPng) {
    const std::string problem = png_structure_problem(data, size);
    MMATTN_CHECK(problem.empty(), FormatError, label, ": ", problem);
  }

  Image img;
  int x = 0, y = 0, n = 0;
  if (kind == Kind::kPng && comp == 1 && opt.gray16 == Gray16::kPilSaturate && stbi_is_16_bit_from_memory(data, len)) {
    // PIL: mode "I;16" -> RGB saturates at 255 (see the header).
    std::unique_ptr<stbi_us, StbFree> p(stbi_load_16_from_memory(data, len, &x, &y, &n, 1));
    if (!p) MMATTN_THROW(FormatError, label, ": cannot decode PNG: ", stb_reason());
    img = Image(x, y);
    const size_t count = size_t(x) * size_t(y);
    for (size_t i = 0; i < count; ++i) {
      const uint8_t v = uint8_t(std::min<unsigned>(p.get()[i], 255u));
      img.rgb[i * 3 + 0] = img.rgb[i * 3 + 1] = img.rgb[i * 3 + 2] = v;
    }
    return img;
  }
  // stb drops alpha and replicates gray when asked for 3 channels; 16-bit samples keep v >> 8.
  std::unique_ptr<stbi_uc, StbFree> p(stbi_load_from_memory(data, len, &x, &y, &n, 3));
  if (!p) MMATTN_THROW(FormatError, label, ": cannot decode ", kname, ": ", stb_reason());
  img.width = x;
  img.height = y;
  img.rgb.assign(p.get(), p.get() + size_t(x) * size_t(y) * 3);
  return img;
}

Image load_image(const std::string& path, const ImageLoadOptions& opt) {
  std::error_code ec;
  MMATTN_CHECK(!std::filesystem::is_directory(path, ec), IoError, "cannot read image '", path, "': is a directory");
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) MMATTN_THROW(IoError, "cannot open image '", path, "': ", std::strerror(errno));
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> guard(f, &std::fclose);
  std::vector<uint8_t> bytes;
  uint8_t buf[1 << 16];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, f)) > 0) bytes.insert(bytes.end(), buf, buf + got);
  if (std::ferror(f)) MMATTN_THROW(IoError, "error reading image '", path, "': ", std::strerror(errno));
  return load_image_from_memory(bytes.data(), bytes.size(), path, opt);
}

std::string encode_png(const uint8_t* pixels, int width, int height, int channels) {
  MMATTN_CHECK(width > 0 && height > 0 && channels >= 1 && channels <= 4, ShapeError, "encode_png: bad image ",
               width, "x", height, "x", channels);
  std::string out;
  auto sink = [](void* ctx, void* d, int n) { static_cast<std::string*>(ctx)->append(static_cast<const char*>(d), size_t(n)); };
  const int ok = stbi_write_png_to_func(sink, &out, width, height, channels, pixels, width * channels);
  MMATTN_CHECK(ok != 0, IoError, "encode_png: stb_image_write failed for ", width, "x", height, "x", channels);
  return out;
}

void heatmap_rgb(float t, uint8_t* rgb) {
  t = std::clamp(t, 0.f, 1.f);
  rgb[0] = uint8_t(255 * t);
  rgb[1] = uint8_t(40 + 200 * t);
  rgb[2] = uint8_t(120 * (1 - t));
}

void save_png(const Image& img, const std::string& path) {
  MMATTN_CHECK(!img.empty(), ShapeError, "save_png: empty image for '", path, "'");
  write_file_atomic(path, encode_png(img.rgb.data(), img.width, img.height, 3));
}

}  // namespace mmattn
