// SPDX-License-Identifier: Apache-2.0
// Row softmax as torch.nn.functional.softmax(x, dim=-1).
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "vitmae/detail/bf16.hpp"

namespace vitmae::ops {

/// In place over each row, subtracting the row max first (what torch does for stability).
template <class Derived>
inline void softmax_rows_inplace(Eigen::MatrixBase<Derived>& x) {
  using Scalar = typename Derived::Scalar;
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    const Scalar m = x.row(i).maxCoeff();
    x.row(i) = (x.row(i).array() - m).exp().matrix();
    x.row(i) /= x.row(i).sum();
  }
}

namespace softmax_detail {
/// scaled_softmax_rows_inplace's rows; finish(i, x, last, total) writes row i's probabilities
/// (x / total for the body, last / total for the tail lanes).
template <class Finish>
inline void scaled_softmax_rows(float* data, Eigen::Index rows, Eigen::Index cols, Eigen::Index ld, float scale,
                                Finish&& finish) {
  using Lanes = Eigen::Array<float, 16, 1>;
  const Eigen::Index body = cols / 16 * 16, tail = cols - body;
  for (Eigen::Index i = 0; i < rows; ++i) {
    float* x = data + i * ld;
    Lanes top = Lanes::Constant(-std::numeric_limits<float>::infinity());
    for (Eigen::Index k = 0; k < body; k += 16) {
      Eigen::Map<Lanes> v(x + k);
      v *= scale;
      top = top.max(v);
    }
    Lanes last = Lanes::Constant(-std::numeric_limits<float>::infinity());
    for (Eigen::Index k = 0; k < tail; ++k) last(k) = x[body + k] * scale;
    const float m = std::max(top.maxCoeff(), last.maxCoeff());
    Lanes sum = Lanes::Zero();
    for (Eigen::Index k = 0; k < body; k += 16) {
      Eigen::Map<Lanes> v(x + k);
      v = (v - m).exp();
      sum += v;
    }
    last = (last - m).exp();  // (the padding: about 3e-39 each, see above)
    finish(i, x, last, sum.sum() + last.sum());
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
                                      [&](Eigen::Index, float* x, const auto& last, float total) {
                                        for (Eigen::Index k = 0; k < body; k += 16)
                                          Eigen::Map<Eigen::Array<float, 16, 1>>(x + k) /= total;
                                        for (Eigen::Index k = 0; k < tail; ++k) x[body + k] = last(k) / total;
                                      });
}

/// The same probabilities rounded to bfloat16 (to nearest even) into `out` (rows x cols,
/// packed) instead of written back: the bits of scaled_softmax_rows_inplace then
/// detail::round_to_bf16, one pass fewer. `data` is left holding the exponentials in its first
/// cols / 16 * 16 columns and its input in the rest.
inline void scaled_softmax_rows_bf16(float* data, Eigen::Index rows, Eigen::Index cols, Eigen::Index ld, float scale,
                                     std::uint16_t* out) {
  const Eigen::Index body = cols / 16 * 16, tail = cols - body;
  softmax_detail::scaled_softmax_rows(data, rows, cols, ld, scale,
                                      [&](Eigen::Index i, const float* x, const auto& last, float total) {
                                        std::uint16_t* __restrict o = out + i * cols;
                                        for (Eigen::Index k = 0; k < body; ++k)
                                          o[k] = detail::float_to_bf16(x[k] / total);
                                        for (Eigen::Index k = 0; k < tail; ++k)
                                          o[body + k] = detail::float_to_bf16(last(k) / total);
                                      });
}

}  // namespace vitmae::ops
