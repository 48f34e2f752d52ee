// SPDX-License-Identifier: Apache-2.0
// bfloat16 <-> float, as torch converts: to nearest even, NaN kept (quiet), overflow to infinity.
// One definition for the checkpoint readers and writers (io/dtype.hpp, io/safetensors.hpp) and the
// bf16 products (detail/gemm.hpp, detail/packed.hpp).
#pragma once

#include <cstdint>
#include <cstring>

#include "vitmae/tensor.hpp"

namespace vitmae::detail {

/// f rounded to bfloat16: to nearest even; a NaN stays a (quiet) NaN. Branch-free, so that a loop
/// of it vectorises.
inline std::uint16_t float_to_bf16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return static_cast<std::uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : rounded);
}

/// A bfloat16 value as float (exact).
inline float bf16_to_float(std::uint16_t h) {
  const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// v rounded to bfloat16, as float.
inline float bf16_rounded(float v) { return bf16_to_float(float_to_bf16(v)); }

/// x rounded to bfloat16 element by element (a loop the compiler vectorises).
inline void round_to_bf16(const float* __restrict x, Index n, std::uint16_t* __restrict y) {
  for (Index i = 0; i < n; ++i) y[i] = float_to_bf16(x[i]);
}

}  // namespace vitmae::detail
