// SPDX-License-Identifier: Apache-2.0
// get_2d_sincos_pos_embed of modeling_vit_mae.py (itself from the MAE release).
#pragma once

#include <cmath>

#include "vitmae/error.hpp"
#include "vitmae/tensor.hpp"

namespace vitmae::ops {

/// 1-D table: for each position m and frequency d < D/2, sin(m w_d) then cos(m w_d),
/// w_d = 1 / 10000^(d / (D/2)). Computed in double, like numpy.
inline void sincos_1d(Index embed_dim, double pos, double* out) {
  const Index half = embed_dim / 2;
  for (Index d = 0; d < half; ++d) {
    const double omega = 1.0 / std::pow(10000.0, static_cast<double>(d) / (embed_dim / 2.0));
    out[d] = std::sin(pos * omega);
    out[half + d] = std::cos(pos * omega);
  }
}

/// The (add_cls_token + grid_h*grid_w, embed_dim) table HF stores in `position_embeddings` and
/// `decoder_pos_embed`, rounded to float32 as HF's `.float()` does, then converted to Scalar.
/// Row 1 + i*grid_w + j is the patch in grid row i, column j. The first half of the columns
/// encodes the column j, the second half the row i: HF builds the grid with
/// `np.meshgrid(grid_w, grid_h)` and feeds grid[0] (the w coordinate) to the "emb_h" half.
/// The CLS row is zeros. @throws vitmae::Error unless embed_dim is a multiple of 4.
template <class Scalar>
Matrix<Scalar> get_2d_sincos_pos_embed(Index embed_dim, Index grid_h, Index grid_w, bool add_cls_token) {
  detail::require(embed_dim > 0 && embed_dim % 4 == 0, "get_2d_sincos_pos_embed: embed_dim ", embed_dim,
                  " must be a positive multiple of 4 (HF: 'embed_dim must be even')");
  const Index offset = add_cls_token ? 1 : 0;
  Matrix<Scalar> table = Matrix<Scalar>::Zero(offset + grid_h * grid_w, embed_dim);
  std::vector<double> a(static_cast<size_t>(embed_dim / 2)), b(a.size());
  for (Index i = 0; i < grid_h; ++i)
    for (Index j = 0; j < grid_w; ++j) {
      sincos_1d(embed_dim / 2, static_cast<double>(j), a.data());
      sincos_1d(embed_dim / 2, static_cast<double>(i), b.data());
      const Index r = offset + i * grid_w + j;
      for (Index d = 0; d < embed_dim / 2; ++d) {
        table(r, d) = static_cast<Scalar>(static_cast<float>(a[static_cast<size_t>(d)]));
        table(r, embed_dim / 2 + d) = static_cast<Scalar>(static_cast<float>(b[static_cast<size_t>(d)]));
      }
    }
  return table;
}

}  // namespace vitmae::ops
