#pragma once
// Host-side load/store of one element of any dtype as double (for the generic CPU paths).
#include <cstdint>
#include <cstring>

#include "core/dtype.h"

namespace mmattn {

inline double load_elem(const void* p, DType t) {
  switch (t) {
    case DType::F32: { float v; std::memcpy(&v, p, 4); return v; }
    case DType::F16: { uint16_t v; std::memcpy(&v, p, 2); return f16_to_f32(v); }
    case DType::BF16: { uint16_t v; std::memcpy(&v, p, 2); return bf16_to_f32(v); }
    case DType::I32: { int32_t v; std::memcpy(&v, p, 4); return v; }
    case DType::I64: { int64_t v; std::memcpy(&v, p, 8); return double(v); }
    case DType::U8: return *static_cast<const uint8_t*>(p);
  }
  return 0;
}

inline void store_elem(void* p, DType t, double x) {
  switch (t) {
    case DType::F32: { float v = float(x); std::memcpy(p, &v, 4); break; }
    case DType::F16: { uint16_t v = f32_to_f16(float(x)); std::memcpy(p, &v, 2); break; }
    case DType::BF16: { uint16_t v = f32_to_bf16(float(x)); std::memcpy(p, &v, 2); break; }
    case DType::I32: { int32_t v = int32_t(x); std::memcpy(p, &v, 4); break; }
    case DType::I64: { int64_t v = int64_t(x); std::memcpy(p, &v, 8); break; }
    case DType::U8: { *static_cast<uint8_t*>(p) = uint8_t(x < 0 ? 0 : x > 255 ? 255 : x); break; }
  }
}

}  // namespace mmattn
