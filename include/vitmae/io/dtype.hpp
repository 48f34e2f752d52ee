// SPDX-License-Identifier: Apache-2.0
// Tensor element types as safetensors names them, IEEE binary16 and bfloat16 <-> float
// conversions (round to nearest even, like torch), and little-endian element conversion.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>

#include "vitmae/detail/bf16.hpp"
#include "vitmae/error.hpp"

namespace vitmae::detail {

inline float bits_to_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline std::uint32_t float_to_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// bfloat16 <-> float: detail/bf16.hpp (float_to_bf16, bf16_to_float).

inline float f16_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (exp == 0) {
    if (mant == 0) return bits_to_float(sign);
    // subnormal: value = mant * 2^-24
    float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  if (exp == 31) return bits_to_float(sign | 0x7f800000u | (mant << 13));
  return bits_to_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

inline std::uint16_t float_to_f16(float f) {
  const std::uint32_t u = float_to_bits(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u);   // NaN
  if (abs >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (abs < 0x38800000u) {  // subnormal or zero in half: round(abs_value / 2^-24)
    const float a = bits_to_float(abs);
    // adding 0.5 (2^-1) in float with 2^-24 units: use the magic-number trick
    const float scaled = a * 16777216.0f;  // exact (power of two)
    // round half to even on the integer value
    float r = static_cast<float>(static_cast<std::uint32_t>(scaled));
    const float frac = scaled - r;
    if (frac > 0.5f || (frac == 0.5f && (static_cast<std::uint32_t>(r) & 1u))) r += 1.0f;
    return static_cast<std::uint16_t>(sign | static_cast<std::uint16_t>(r));
  }
  std::uint32_t m = abs + 0xfffu + ((abs >> 13) & 1u);  // round to nearest even at bit 13
  m -= 0x38000000u;                                     // rebias 127 -> 15
  return static_cast<std::uint16_t>(sign | (m >> 13));
}

}  // namespace vitmae::detail

namespace vitmae::io {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::F64:
      return "F64";
    case DType::F32:
      return "F32";
    case DType::F16:
      return "F16";
    case DType::BF16:
      return "BF16";
    case DType::I64:
      return "I64";
    case DType::I32:
      return "I32";
    case DType::I16:
      return "I16";
    case DType::I8:
      return "I8";
    case DType::U8:
      return "U8";
    case DType::BOOL:
      return "BOOL";
  }
  return "?";
}

inline std::size_t dtype_size(DType d) {
  switch (d) {
    case DType::F64:
    case DType::I64:
      return 8;
    case DType::F32:
    case DType::I32:
      return 4;
    case DType::F16:
    case DType::BF16:
    case DType::I16:
      return 2;
    case DType::I8:
    case DType::U8:
    case DType::BOOL:
      return 1;
  }
  return 1;
}

inline bool dtype_from_name(const std::string& s, DType& out) {
  static const std::pair<const char*, DType> table[] = {
      {"F64", DType::F64}, {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16}, {"I64", DType::I64},
      {"I32", DType::I32}, {"I16", DType::I16}, {"I8", DType::I8},   {"U8", DType::U8},     {"BOOL", DType::BOOL}};
  for (const auto& [name, d] : table)
    if (s == name) {
      out = d;
      return true;
    }
  return false;
}

/// Converts `count` little-endian elements of dtype `d` at `src` to Scalar.
template <class Scalar>
void convert_elements(DType d, const unsigned char* src, std::size_t count, Scalar* dst) {
  auto load = [&](auto tag) {
    using T = decltype(tag);
    for (std::size_t i = 0; i < count; ++i) {
      T v;
      std::memcpy(&v, src + i * sizeof(T), sizeof(T));
      dst[i] = static_cast<Scalar>(v);
    }
  };
  switch (d) {
    case DType::F64:
      load(double{});
      break;
    case DType::F32:
      if constexpr (std::is_same_v<Scalar, float>) std::memcpy(dst, src, count * 4);
      else load(float{});
      break;
    case DType::F16:
      for (std::size_t i = 0; i < count; ++i) {
        std::uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = static_cast<Scalar>(detail::f16_to_float(h));
      }
      break;
    case DType::BF16:
      for (std::size_t i = 0; i < count; ++i) {
        std::uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = static_cast<Scalar>(detail::bf16_to_float(h));
      }
      break;
    case DType::I64:
      load(std::int64_t{});
      break;
    case DType::I32:
      load(std::int32_t{});
      break;
    case DType::I16:
      load(std::int16_t{});
      break;
    case DType::I8:
      load(std::int8_t{});
      break;
    case DType::U8:
      load(std::uint8_t{});
      break;
    case DType::BOOL:
      for (std::size_t i = 0; i < count; ++i) dst[i] = static_cast<Scalar>(src[i] != 0);
      break;
  }
}

/// The storage type that holds Scalar exactly (F32 for float, F64 for double).
template <class Scalar>
constexpr DType dtype_of() {
  return std::is_same_v<Scalar, double> ? DType::F64 : DType::F32;
}

/// HF's torch_dtype name of a storage type.
inline std::string torch_dtype_name(DType d) {
  switch (d) {
    case DType::F64:
      return "float64";
    case DType::F16:
      return "float16";
    case DType::BF16:
      return "bfloat16";
    default:
      return "float32";
  }
}

}  // namespace vitmae::io
