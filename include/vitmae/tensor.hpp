// SPDX-License-Identifier: Apache-2.0
// The storage types: row-major Eigen matrices for activations and weights, and a small
// N-d Tensor for model inputs and file I/O (pixel_values [B, C, H, W], noise [B, L]).
#pragma once

#include <Eigen/Core>

#include <cstdint>
#include <functional>
#include <numeric>
#include <vector>

#include "vitmae/error.hpp"

namespace vitmae {

using Index = Eigen::Index;

/// Row-major, so a safetensors buffer maps onto it and a row is a token.
template <class Scalar = float>
using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class Scalar = float>
using RowVector = Eigen::Matrix<Scalar, 1, Eigen::Dynamic>;
template <class Scalar = float>
using ColVector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
/// (batch, L) integer matrix, as ids_restore.
using IndexMatrix = Eigen::Matrix<std::int64_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// A dense row-major N-d array (torch's contiguous layout).
template <class Scalar = float>
struct Tensor {
  std::vector<Index> shape;
  std::vector<Scalar> data;

  Tensor() = default;
  explicit Tensor(std::vector<Index> s, Scalar fill = Scalar(0)) : shape(std::move(s)) {
    data.assign(static_cast<size_t>(numel(shape)), fill);
  }

  static Index numel(const std::vector<Index>& s) {
    Index n = 1;
    for (Index d : s) n *= d;
    return n;
  }
  Index numel() const { return numel(shape); }
  Index dim() const { return static_cast<Index>(shape.size()); }
  Index size(Index i) const { return shape[static_cast<size_t>(i)]; }
  Scalar* ptr() { return data.data(); }
  const Scalar* ptr() const { return data.data(); }

  /// Converts element type (like torch's .to(dtype)).
  template <class Other>
  Tensor<Other> cast() const {
    Tensor<Other> t;
    t.shape = shape;
    t.data.assign(data.begin(), data.end());
    return t;
  }
};

}  // namespace vitmae
