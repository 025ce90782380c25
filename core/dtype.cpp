#include "core/dtype.h"

#include <cmath>

namespace mmattn {

namespace {
struct DTypeInfo {
  DType t;
  std::string_view name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {{DType::F32, "F32", 4}, {DType::F16, "F16", 2}, {DType::BF16, "BF16", 2},
                                 {DType::I32, "I32", 4}, {DType::I64, "I64", 8}, {DType::U8, "U8", 1}};
}  // namespace

size_t dtype_size(DType t) { return kDTypes[int(t)].size; }
std::string_view dtype_name(DType t) { return kDTypes[int(t)].name; }
bool parse_dtype(std::string_view name, DType* out) {
  for (const auto& d : kDTypes)
    if (d.name == name) { *out = d.t; return true; }
  return false;
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  if (exp == 0) {  // zero / subnormal: man * 2^-24
    const float v = std::ldexp(float(man), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return bits_to_f32(sign | 0x7f800000u | (man << 13));  // inf / nan
  return bits_to_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t f32_to_f16(float f) {
  const uint32_t b = f32_to_bits(f);
  const uint16_t sign = uint16_t((b >> 16) & 0x8000u);
  const uint32_t abs = b & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;    // nan
  if (abs >= 0x477ff000u) return sign | 0x7c00u;   // rounds to >= 65520: inf
  if (abs < 0x38800000u) {                         // below the smallest normal: subnormal or zero
    const float a = bits_to_f32(abs);
    const float scaled = a * 16777216.0f;          // a / 2^-24, exact
    return sign | uint16_t(std::nearbyint(scaled));  // round half to even (default mode)
  }
  // normal: rebias exponent, round mantissa to 10 bits (nearest even)
  uint32_t v = abs - (112u << 23);
  v += 0xfffu + ((v >> 13) & 1u);
  return sign | uint16_t(v >> 13);
}

}  // namespace mmattn
