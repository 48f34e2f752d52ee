// SPDX-License-Identifier: Apache-2.0
// torch.nn.LayerNorm over the last dimension, with its backward.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "vitmae/detail/parallel.hpp"
#include "vitmae/error.hpp"
#include "vitmae/parameter.hpp"
#include "vitmae/tensor.hpp"

namespace vitmae {

/// HF names: <prefix>weight, <prefix>bias, (hidden) each. eps comes from config.layer_norm_eps.
template <class Scalar = float>
struct LayerNorm {
  RowVector<Scalar> weight, bias;  // (hidden) each
  Scalar eps = Scalar(1e-12);
  Index normalized_shape = 0;  // hidden, recorded by the constructor (all a module without storage has)

  /// What the backward needs: the normalised input and each row's 1/sqrt(var + eps).
  struct Cache {
    Matrix<Scalar> xhat;     // (tokens, hidden)
    ColVector<Scalar> rstd;  // (tokens)
  };

  LayerNorm() = default;
  LayerNorm(Index hidden, double eps_, Storage s = Storage::zeros)
      : weight(detail::allocated<RowVector<Scalar>>(s, [&] { return RowVector<Scalar>::Ones(hidden); })),
        bias(detail::zeros<RowVector<Scalar>>(s, hidden)),
        eps(static_cast<Scalar>(eps_)),
        normalized_shape(hidden) {}

  /// x: (tokens, hidden) -> y, same shape, biased variance like torch. Fills `cache` when given.
  void forward(const Matrix<Scalar>& x, Matrix<Scalar>& y, Cache* cache = nullptr) const {
    detail::require(x.cols() == weight.size(), "LayerNorm: input has ", x.cols(), " features, expected ",
                    weight.size());
    y.resize(x.rows(), x.cols());  // (tokens, hidden)
    if (cache) {
      cache->xhat.resize(x.rows(), x.cols());
      cache->rstd.resize(x.rows());
    }
    const Scalar inv_n = Scalar(1) / static_cast<Scalar>(x.cols());
    detail::split_rows(x.rows(), static_cast<double>(x.size()), [&](Index first, Index count) {
      for (Index r = first; r < first + count; ++r) {
        const Scalar mean = x.row(r).sum() * inv_n;
        const Scalar var = (x.row(r).array() - mean).square().sum() * inv_n;
        const Scalar rstd = Scalar(1) / std::sqrt(var + eps);
        if (cache) {
          cache->xhat.row(r) = (x.row(r).array() - mean) * rstd;
          cache->rstd(r) = rstd;
        }
        y.row(r) = (((x.row(r).array() - mean) * rstd) * weight.array() + bias.array()).matrix();
      }
    });
  }
  Matrix<Scalar> forward(const Matrix<Scalar>& x) const {
    Matrix<Scalar> y;
    forward(x, y);
    return y;
  }

  /// dy: (tokens, hidden). Adds the weight and bias gradients into g; dx = dL/dx.
  void backward(const Matrix<Scalar>& dy, const Cache& c, LayerNorm& g, Matrix<Scalar>& dx) const {
    g.weight += (dy.array() * c.xhat.array()).colwise().sum().matrix();
    g.bias += dy.colwise().sum();
    dx.resize(dy.rows(), dy.cols());
    const Scalar inv_n = Scalar(1) / static_cast<Scalar>(dy.cols());
    RowVector<Scalar> dxhat(dy.cols());
    for (Index r = 0; r < dy.rows(); ++r) {
      dxhat = (dy.row(r).array() * weight.array()).matrix();
      const Scalar a = dxhat.sum() * inv_n;
      const Scalar b = dxhat.dot(c.xhat.row(r)) * inv_n;
      dx.row(r) = c.rstd(r) * (dxhat.array() - a - c.xhat.row(r).array() * b).matrix();
    }
  }

  template <class Self, class V>
  static void parameters(Self& m, const std::string& prefix, V& visit) {
    const Index n = m.weight.size() > 0 ? m.weight.size() : m.normalized_shape;
    detail::visit_tensor(visit, prefix + "weight", m.weight, {n}, ParamKind::norm);
    detail::visit_tensor(visit, prefix + "bias", m.bias, {n}, ParamKind::bias);
  }
  VITMAE_VISIT_PARAMETERS
};

}  // namespace vitmae
