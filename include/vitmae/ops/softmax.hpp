// SPDX-License-Identifier: Apache-2.0
// Row softmax as torch.nn.functional.softmax(x, dim=-1).
#pragma once

#include <Eigen/Core>

#include <cmath>

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

}  // namespace vitmae::ops
