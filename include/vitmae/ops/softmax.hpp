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
  using Row = Eigen::Array<Scalar, 1, Eigen::Dynamic>;
  auto softmax = [](auto&& r) {
    const Scalar m = r.maxCoeff();
    r = (r - m).exp();
    r /= r.sum();
  };
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    // A contiguous row goes through a Map: Eigen's vectorised exp. (Through the block
    // expression g++ called the scalar expf once per element: 4x slower.)
    if (Derived::IsRowMajor && x.innerStride() == 1) softmax(Eigen::Map<Row>(&x.coeffRef(i, 0), x.cols()));
    else softmax(x.row(i).array());
  }
}

}  // namespace vitmae::ops
