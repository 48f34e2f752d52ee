// SPDX-License-Identifier: Apache-2.0
// torch.nn.functional.interpolate(mode="bicubic", align_corners=False), as PyTorch's CPU kernel
// computes it (cubic convolution with A = -0.75, border taps clamped, index math in the
// tensor's own precision), for tables whose rows are grid positions and columns channels.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "vitmae/error.hpp"
#include "vitmae/tensor.hpp"

namespace vitmae::ops {

namespace detail_interp {

template <class Scalar>
struct CubicTaps {
  std::vector<std::array<Index, 4>> index;
  std::vector<std::array<Scalar, 4>> weight;
};

/// PyTorch's upsample_bicubic2d index and weight computation for one axis.
/// `scale_factor` > 0 is the factor the caller passed to interpolate (the kernel then steps
/// 1/scale_factor through the input); otherwise the step is in_size / out_size.
template <class Scalar>
CubicTaps<Scalar> cubic_taps(Index in_size, Index out_size, double scale_factor) {
  constexpr Scalar A = Scalar(-0.75);
  auto conv1 = [](Scalar x) { return ((A + Scalar(2)) * x - (A + Scalar(3))) * x * x + Scalar(1); };
  auto conv2 = [](Scalar x) { return ((A * x - Scalar(5) * A) * x + Scalar(8) * A) * x - Scalar(4) * A; };
  const Scalar scale = scale_factor > 0.0 ? static_cast<Scalar>(1.0 / scale_factor)
                                          : static_cast<Scalar>(in_size) / static_cast<Scalar>(out_size);
  CubicTaps<Scalar> taps;
  taps.index.resize(static_cast<size_t>(out_size));
  taps.weight.resize(static_cast<size_t>(out_size));
  for (Index o = 0; o < out_size; ++o) {
    const Scalar real = scale * (static_cast<Scalar>(o) + Scalar(0.5)) - Scalar(0.5);
    const Index i0 = std::min(static_cast<Index>(std::floor(real)), in_size - 1);
    const Scalar t = std::min(std::max(real - static_cast<Scalar>(i0), Scalar(0)), Scalar(1));
    const Scalar u = Scalar(1) - t;
    taps.weight[static_cast<size_t>(o)] = {conv2(t + Scalar(1)), conv1(t), conv1(u), conv2(u + Scalar(1))};
    for (Index k = 0; k < 4; ++k)
      taps.index[static_cast<size_t>(o)][static_cast<size_t>(k)] =
          std::max<Index>(0, std::min<Index>(i0 - 1 + k, in_size - 1));
  }
  return taps;
}

}  // namespace detail_interp

/// grid: (in_h*in_w, D), row y*in_w + x holds position (y, x). Returns (out_h*out_w, D).
/// scale_factor_h/_w: the `scale_factor` given to torch's interpolate, or 0 when `size` was given.
template <class Scalar>
Matrix<Scalar> bicubic_resize(const Matrix<Scalar>& grid, Index in_h, Index in_w, Index out_h, Index out_w,
                              double scale_factor_h = 0.0, double scale_factor_w = 0.0) {
  vitmae::detail::require(grid.rows() == in_h * in_w, "bicubic_resize: table has ", grid.rows(), " rows, expected ",
                          in_h, "x", in_w);
  vitmae::detail::require(in_h > 0 && in_w > 0 && out_h > 0 && out_w > 0,
                          "bicubic_resize: sizes must be positive, got ", in_h, "x", in_w, " -> ", out_h, "x", out_w);
  const auto th = detail_interp::cubic_taps<Scalar>(in_h, out_h, scale_factor_h);
  const auto tw = detail_interp::cubic_taps<Scalar>(in_w, out_w, scale_factor_w);
  const Index D = grid.cols();
  Matrix<Scalar> out = Matrix<Scalar>::Zero(out_h * out_w, D);  // (out_h*out_w, D)
  for (Index oy = 0; oy < out_h; ++oy)
    for (Index ox = 0; ox < out_w; ++ox) {
      auto row = out.row(oy * out_w + ox);
      for (size_t a = 0; a < 4; ++a) {
        RowVector<Scalar> acc = RowVector<Scalar>::Zero(D);
        const Index iy = th.index[static_cast<size_t>(oy)][a];
        for (size_t b = 0; b < 4; ++b)
          acc += tw.weight[static_cast<size_t>(ox)][b] * grid.row(iy * in_w + tw.index[static_cast<size_t>(ox)][b]);
        row += th.weight[static_cast<size_t>(oy)][a] * acc;
      }
    }
  return out;
}

/// The adjoint (transpose) of bicubic_resize: dout (out_h*out_w, D) -> (in_h*in_w, D), each
/// output row's gradient spread over the 16 taps it was read from, with their weights.
template <class Scalar>
Matrix<Scalar> bicubic_resize_adjoint(const Matrix<Scalar>& dout, Index in_h, Index in_w, Index out_h, Index out_w,
                                      double scale_factor_h = 0.0, double scale_factor_w = 0.0) {
  vitmae::detail::require(dout.rows() == out_h * out_w && in_h > 0 && in_w > 0, "bicubic_resize_adjoint: gradient has ",
                          dout.rows(), " rows, expected ", out_h, "x", out_w);
  const auto th = detail_interp::cubic_taps<Scalar>(in_h, out_h, scale_factor_h);
  const auto tw = detail_interp::cubic_taps<Scalar>(in_w, out_w, scale_factor_w);
  Matrix<Scalar> din = Matrix<Scalar>::Zero(in_h * in_w, dout.cols());  // (in_h*in_w, D)
  for (Index oy = 0; oy < out_h; ++oy)
    for (Index ox = 0; ox < out_w; ++ox)
      for (size_t a = 0; a < 4; ++a) {
        const Index iy = th.index[static_cast<size_t>(oy)][a];
        for (size_t b = 0; b < 4; ++b)
          din.row(iy * in_w + tw.index[static_cast<size_t>(ox)][b]) +=
              (th.weight[static_cast<size_t>(oy)][a] * tw.weight[static_cast<size_t>(ox)][b]) *
              dout.row(oy * out_w + ox);
      }
  return din;
}

}  // namespace vitmae::ops
