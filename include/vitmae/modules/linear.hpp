// SPDX-License-Identifier: Apache-2.0
// torch.nn.Linear and the patch projection torch.nn.Conv2d(kernel = stride = patch_size).
#pragma once

#include <string>
#include <vector>

#include "vitmae/detail/parallel.hpp"
#include "vitmae/error.hpp"
#include "vitmae/tensor.hpp"

namespace vitmae {

/// y = x Wᵀ + b. HF names: <prefix>weight (out, in), <prefix>bias (out), bias optional
/// (the query/key/value projections have none when qkv_bias is false).
template <class Scalar = float>
struct Linear {
  Matrix<Scalar> weight;  // (out, in)
  RowVector<Scalar> bias;  // (out), empty when has_bias is false
  bool has_bias = true;

  Linear() = default;
  Linear(Index in, Index out, bool with_bias = true)
      : weight(Matrix<Scalar>::Zero(out, in)), bias(RowVector<Scalar>::Zero(with_bias ? out : 0)),
        has_bias(with_bias) {}

  Index in_features() const { return weight.cols(); }
  Index out_features() const { return weight.rows(); }

  /// x: (tokens, in) -> (tokens, out). @throws vitmae::Error on a width mismatch.
  Matrix<Scalar> forward(const Matrix<Scalar>& x) const {
    detail::require(x.cols() == weight.cols(), "Linear: input has ", x.cols(), " features, expected ",
                    weight.cols());
    Matrix<Scalar> y;  // (tokens, out)
    detail::gemm_nt(x, weight, y);
    if (has_bias) y.rowwise() += bias;
    return y;
  }

  template <class V>
  void visit_parameters(const std::string& prefix, V&& visit) {
    visit(prefix + "weight", weight, std::vector<Index>{weight.rows(), weight.cols()});
    if (has_bias) visit(prefix + "bias", bias, std::vector<Index>{bias.size()});
  }
};

/// The strided patch projection nn.Conv2d(C, hidden, kernel_size=p, stride=p), done as a GEMM.
/// HF names: <prefix>weight (hidden, C, p, p), stored here as (hidden, C*p*p) flattened
/// (c, kh, kw) like torch's memory; <prefix>bias (hidden).
template <class Scalar = float>
struct PatchConv2d {
  Matrix<Scalar> weight;   // (hidden, C*p*p)
  RowVector<Scalar> bias;  // (hidden)
  Index in_channels = 0, kernel_size = 0;

  PatchConv2d() = default;
  PatchConv2d(Index channels, Index hidden, Index patch)
      : weight(Matrix<Scalar>::Zero(hidden, channels * patch * patch)),
        bias(RowVector<Scalar>::Zero(hidden)), in_channels(channels), kernel_size(patch) {}

  /// image (C, H*W) -> (nh*nw, C*p*p): each patch flattened in the (c, kh, kw) order of the
  /// weight; like the convolution, rows/columns that do not fill a patch are dropped.
  static Matrix<Scalar> im2col(const Matrix<Scalar>& image, Index height, Index width, Index p) {
    const Index C = image.rows(), nh = height / p, nw = width / p;
    Matrix<Scalar> cols(nh * nw, C * p * p);  // (L, C*p*p)
    for (Index h = 0; h < nh; ++h)
      for (Index w = 0; w < nw; ++w)
        for (Index c = 0; c < C; ++c)
          for (Index y = 0; y < p; ++y)
            cols.row(h * nw + w).segment((c * p + y) * p, p) = image.row(c).segment((h * p + y) * width + w * p, p);
    return cols;
  }

  /// image (C, H*W) -> (nh*nw, hidden), patches in row-major grid order.
  Matrix<Scalar> forward(const Matrix<Scalar>& image, Index height, Index width) const {
    const Matrix<Scalar> cols = im2col(image, height, width, kernel_size);  // (L, C*p*p)
    Matrix<Scalar> out;  // (L, hidden)
    detail::gemm_nt(cols, weight, out);
    out.rowwise() += bias;
    return out;
  }

  template <class V>
  void visit_parameters(const std::string& prefix, V&& visit) {
    visit(prefix + "weight", weight, std::vector<Index>{weight.rows(), in_channels, kernel_size, kernel_size});
    visit(prefix + "bias", bias, std::vector<Index>{bias.size()});
  }
};

}  // namespace vitmae
