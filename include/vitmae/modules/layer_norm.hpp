// SPDX-License-Identifier: Apache-2.0
// torch.nn.LayerNorm over the last dimension.
#pragma once

#include <string>
#include <vector>

#include "vitmae/error.hpp"
#include "vitmae/tensor.hpp"

namespace vitmae {

/// HF names: <prefix>weight, <prefix>bias, (hidden) each. eps comes from config.layer_norm_eps.
template <class Scalar = float>
struct LayerNorm {
  RowVector<Scalar> weight, bias;  // (hidden) each
  Scalar eps = Scalar(1e-12);

  LayerNorm() = default;
  LayerNorm(Index hidden, double eps_)
      : weight(RowVector<Scalar>::Ones(hidden)), bias(RowVector<Scalar>::Zero(hidden)),
        eps(static_cast<Scalar>(eps_)) {}

  /// x: (tokens, hidden) -> same shape, biased variance like torch.
  Matrix<Scalar> forward(const Matrix<Scalar>& x) const {
    detail::require(x.cols() == weight.size(), "LayerNorm: input has ", x.cols(),
                    " features, expected ", weight.size());
    Matrix<Scalar> y(x.rows(), x.cols());  // (tokens, hidden)
    const Scalar inv_n = Scalar(1) / static_cast<Scalar>(x.cols());
    for (Index r = 0; r < x.rows(); ++r) {
      const Scalar mean = x.row(r).sum() * inv_n;
      const Scalar var = (x.row(r).array() - mean).square().sum() * inv_n;
      const Scalar rstd = Scalar(1) / std::sqrt(var + eps);
      y.row(r) = (((x.row(r).array() - mean) * rstd) * weight.array() + bias.array()).matrix();
    }
    return y;
  }

  template <class V>
  void visit_parameters(const std::string& prefix, V&& visit) {
    visit(prefix + "weight", weight, std::vector<Index>{weight.size()});
    visit(prefix + "bias", bias, std::vector<Index>{bias.size()});
  }
};

}  // namespace vitmae
