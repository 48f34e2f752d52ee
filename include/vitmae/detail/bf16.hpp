// SPDX-License-Identifier: Apache-2.0
// bfloat16 <-> float, as torch converts: to nearest even, NaN kept (quiet), overflow to infinity.
// One definition for the checkpoint readers and writers (io/dtype.hpp, io/safetensors.hpp) and the
// bf16 products (detail/gemm.hpp, detail/packed.hpp).
#pragma once

#include <cstdint>
#include <cstring>

#include "vitmae/tensor.hpp"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace vitmae::detail {

/// f rounded to bfloat16: to nearest even; a NaN stays a (quiet) NaN. Branch-free, so that a loop
/// of it vectorises.
inline std::uint16_t float_to_bf16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return static_cast<std::uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : rounded);
}

#if defined(__AVX512F__)
/// 16 floats rounded to bfloat16 as float_to_bf16 rounds each (to nearest even, a NaN quieted), in
/// one register: for loops the compiler vectorises less well than round_to_bf16's (a product
/// before the rounding, as in ops::scaled_softmax_rows_bf16).
inline __m256i round16_to_bf16(__m512 f) {
  const __m512i u = _mm512_castps_si512(f);
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), odd), 16);
  const __mmask16 nan =
      _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
  const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
  return _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, rounded, quiet));
}
#endif

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
