// SPDX-License-Identifier: Apache-2.0
// Row softmax as torch.nn.functional.softmax(x, dim=-1).
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "vitmae/detail/bf16.hpp"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace vitmae::ops {

/// In place over each row, subtracting the row max first (what torch does for stability), then
/// multiplying by the reciprocal of the row's sum (as torch's CPU softmax does: 1 / sum, then a
/// product a value).
template <class Derived>
inline void softmax_rows_inplace(Eigen::MatrixBase<Derived>& x) {
  using Scalar = typename Derived::Scalar;
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    const Scalar m = x.row(i).maxCoeff();
    x.row(i) = (x.row(i).array() - m).exp().matrix();
    x.row(i) *= Scalar(1) / x.row(i).sum();
  }
}

namespace softmax_detail {
using Lanes = Eigen::Array<float, 16, 1>;

/// The `tail` (< 16) values at x times scale in the first lanes, -inf in the others.
inline Lanes tail_lanes(const float* x, Eigen::Index tail, float scale) {
  Lanes last;
#if defined(__AVX512F__)
  // One masked load (no load past the row), not a loop of scalar stores into the lanes: the
  // loop and its reload cost a quarter of a 197-wide row's softmax.
  // (the padding stays -inf whatever the scale's sign: it is not multiplied)
  const __m512 neg_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  const auto mask = static_cast<__mmask16>((1u << tail) - 1u);
  _mm512_storeu_ps(last.data(),
                   _mm512_mask_mul_ps(neg_inf, mask, _mm512_maskz_loadu_ps(mask, x), _mm512_set1_ps(scale)));
#else
  last = Lanes::Constant(-std::numeric_limits<float>::infinity());
  for (Eigen::Index k = 0; k < tail; ++k) last(k) = x[k] * scale;
#endif
  return last;
}

/// scaled_softmax_rows_inplace's rows; finish(i, x, last, r) writes row i's probabilities (x r
/// for the body, last r for the tail lanes, r the reciprocal of the row's sum).
template <class Finish>
inline void scaled_softmax_rows(float* data, Eigen::Index rows, Eigen::Index cols, Eigen::Index ld, float scale,
                                Finish&& finish) {
  const Eigen::Index body = cols / 16 * 16, tail = cols - body;
  for (Eigen::Index i = 0; i < rows; ++i) {
    float* x = data + i * ld;
    Lanes top = Lanes::Constant(-std::numeric_limits<float>::infinity());
    for (Eigen::Index k = 0; k < body; k += 16) {
      Eigen::Map<Lanes> v(x + k);
      v *= scale;
      top = top.max(v);
    }
    Lanes last = tail_lanes(x + body, tail, scale);
    const float m = top.max(last).maxCoeff();
    Lanes sum = Lanes::Zero();
    for (Eigen::Index k = 0; k < body; k += 16) {
      Eigen::Map<Lanes> v(x + k);
      v = (v - m).exp();
      sum += v;
    }
    last = (last - m).exp();  // (the padding: about 3e-39 each, see above)
    finish(i, x, last, 1.f / (sum.sum() + last.sum()));
  }
}
}  // namespace softmax_detail

/// Each of `rows` rows of `cols` floats (contiguous, `ld` apart) multiplied by `scale`, then
/// softmax as above, one row at a time while it is in cache. The exponentials all go through
/// Eigen's packets (16 lanes; a row's last cols % 16 values as one lane group padded with -inf,
/// whose exponential Eigen's pexp clamps to about 3e-39: far below an ulp of the row's sum, which
/// is at least 1), none through libm's scalar expf.
inline void scaled_softmax_rows_inplace(float* data, Eigen::Index rows, Eigen::Index cols, Eigen::Index ld,
                                        float scale) {
  const Eigen::Index body = cols / 16 * 16, tail = cols - body;
  softmax_detail::scaled_softmax_rows(data, rows, cols, ld, scale,
                                      [&](Eigen::Index, float* x, const auto& last, float r) {
                                        for (Eigen::Index k = 0; k < body; k += 16)
                                          Eigen::Map<softmax_detail::Lanes>(x + k) *= r;
                                        for (Eigen::Index k = 0; k < tail; ++k) x[body + k] = last(k) * r;
                                      });
}

/// The same probabilities rounded to bfloat16 (to nearest even) into `out` (rows x cols,
/// packed) instead of written back: the bits of scaled_softmax_rows_inplace then
/// detail::round_to_bf16, one pass fewer (but for the sign of a NaN: a row with a NaN is all
/// NaN, and which operand's NaN a product keeps depends on the order the compiler gives its
/// operands). `data` is left holding the exponentials in its first cols / 16 * 16 columns and its
/// input in the rest.
inline void scaled_softmax_rows_bf16(float* data, Eigen::Index rows, Eigen::Index cols, Eigen::Index ld, float scale,
                                     std::uint16_t* out) {
  const Eigen::Index body = cols / 16 * 16, tail = cols - body;
  softmax_detail::scaled_softmax_rows(
      data, rows, cols, ld, scale, [&](Eigen::Index i, const float* x, const auto& last, float r) {
        std::uint16_t* __restrict o = out + i * cols;
#if defined(__AVX512F__)
        const __m512 rs = _mm512_set1_ps(r);
        for (Eigen::Index k = 0; k < body; k += 16)
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + k),
                              detail::round16_to_bf16(_mm512_mul_ps(_mm512_loadu_ps(x + k), rs)));
#else
        for (Eigen::Index k = 0; k < body; ++k) o[k] = detail::float_to_bf16(x[k] * r);
#endif
        for (Eigen::Index k = 0; k < tail; ++k) o[body + k] = detail::float_to_bf16(last(k) * r);
      });
}

}  // namespace vitmae::ops
