// SPDX-License-Identifier: Apache-2.0
// ViTMAEPatchEmbeddings and ViTMAEEmbeddings (patch projection, fixed 2-D sin-cos position
// embeddings, random masking, CLS token), with interpolate_pos_encoding.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "vitmae/config.hpp"
#include "vitmae/modules/linear.hpp"
#include "vitmae/ops/interpolate.hpp"
#include "vitmae/ops/random_masking.hpp"
#include "vitmae/ops/sincos_pos_embed.hpp"

namespace vitmae {

/// HF names: projection.weight (hidden, C, p, p), projection.bias.
template <class Scalar = float>
struct PatchEmbeddings {
  PatchConv2d<Scalar> projection;
  Index image_size = 0, patch_size = 0, num_channels = 0;

  PatchEmbeddings() = default;
  explicit PatchEmbeddings(const Config& c)
      : projection(c.num_channels, c.hidden_size, c.patch_size), image_size(c.image_size),
        patch_size(c.patch_size), num_channels(c.num_channels) {}

  /// image (C, H*W) -> (L, hidden). Without interpolation the size must be the configured one.
  Matrix<Scalar> forward(const Matrix<Scalar>& image, Index height, Index width,
                         bool interpolate_pos_encoding) const {
    detail::require(image.rows() == num_channels, "ViTMAEPatchEmbeddings: pixel_values have ",
                    image.rows(), " channels, expected num_channels = ", num_channels);
    detail::require(interpolate_pos_encoding || (height == image_size && width == image_size),
                    "ViTMAEPatchEmbeddings: input image size (", height, "*", width,
                    ") doesn't match model (", image_size, "*", image_size,
                    "); pass interpolate_pos_encoding to run other sizes");
    detail::require(height >= patch_size && width >= patch_size, "ViTMAEPatchEmbeddings: image ",
                    height, "x", width, " is smaller than one patch (", patch_size, ")");
    return projection.forward(image, height, width);
  }

  template <class V>
  void visit_parameters(const std::string& prefix, V&& visit) {
    projection.visit_parameters(prefix + "projection.", visit);
  }
};

/// HF names: cls_token (1, 1, hidden), position_embeddings (1, 1+L, hidden), patch_embeddings.*.
template <class Scalar = float>
struct Embeddings {
  RowVector<Scalar> cls_token;             // (hidden)
  Matrix<Scalar> position_embeddings;      // (1+L, hidden), row 0 is the CLS position (zeros)
  PatchEmbeddings<Scalar> patch_embeddings;
  Index hidden_size = 0;

  Embeddings() = default;
  explicit Embeddings(const Config& c)
      : cls_token(RowVector<Scalar>::Zero(c.hidden_size)),
        position_embeddings(ops::get_2d_sincos_pos_embed<Scalar>(c.hidden_size, c.grid_size(), c.grid_size(), true)),
        patch_embeddings(c), hidden_size(c.hidden_size) {}

  /// The position table for an input of height x width: the stored one, or HF's
  /// interpolate_pos_encoding: bicubic (align_corners=False) resize of the square grid to
  /// (H/p, W/p), skipped when the patch count is unchanged and the image is square.
  Matrix<Scalar> position_table(Index height, Index width, bool interpolate_pos_encoding) const {
    if (!interpolate_pos_encoding) return position_embeddings;
    const Index p = patch_embeddings.patch_size;
    const Index new_h = height / p, new_w = width / p;
    const Index num_positions = position_embeddings.rows() - 1;
    if (new_h * new_w == num_positions && height == width) return position_embeddings;
    const Index side = static_cast<Index>(std::sqrt(static_cast<double>(num_positions)));
    detail::require(side * side == num_positions, "interpolate_pos_encoding: position table has ",
                    num_positions, " patch rows, expected a square grid");
    Matrix<Scalar> table(1 + new_h * new_w, position_embeddings.cols());  // (1+L', hidden)
    table.row(0) = position_embeddings.row(0);
    table.bottomRows(new_h * new_w) =
        ops::bicubic_resize<Scalar>(position_embeddings.bottomRows(num_positions), side, side, new_h, new_w);
    return table;
  }

  /// One image (C, H*W) -> (1+K, hidden) tokens, CLS first, plus its masking.
  /// pos: position_table(H, W, ...); noise_row: (L) noise; mask_ratio as HF's config.mask_ratio.
  Matrix<Scalar> forward(const Matrix<Scalar>& image, Index height, Index width, const Matrix<Scalar>& pos,
                         const RowVector<Scalar>& noise_row, double mask_ratio, bool interpolate_pos_encoding,
                         ops::Masking& masking) const {
    Matrix<Scalar> patches = patch_embeddings.forward(image, height, width, interpolate_pos_encoding);  // (L, hidden)
    const Index L = patches.rows();
    detail::require(pos.rows() == L + 1, "ViTMAEEmbeddings: ", L,
                    " patches but the position table has ", pos.rows() - 1, " patch rows");
    detail::require(noise_row.size() == L, "ViTMAEEmbeddings: noise has ", noise_row.size(),
                    " entries per sample, expected the number of patches ", L);
    // embeddings = embeddings + position_embeddings[:, 1:, :]
    patches += pos.bottomRows(L);
    masking = ops::random_masking(noise_row, mask_ratio);
    const Index K = static_cast<Index>(masking.ids_keep.size());
    Matrix<Scalar> tokens(1 + K, patches.cols());  // (1+K, hidden)
    // cls_token = self.cls_token + position_embeddings[:, :1, :], prepended after masking
    tokens.row(0) = cls_token + pos.row(0);
    for (Index k = 0; k < K; ++k) tokens.row(1 + k) = patches.row(masking.ids_keep[static_cast<size_t>(k)]);
    return tokens;
  }

  template <class V>
  void visit_parameters(const std::string& prefix, V&& visit) {
    visit(prefix + "cls_token", cls_token, std::vector<Index>{1, 1, cls_token.size()});
    visit(prefix + "position_embeddings", position_embeddings,
          std::vector<Index>{1, position_embeddings.rows(), position_embeddings.cols()});
    patch_embeddings.visit_parameters(prefix + "patch_embeddings.", visit);
  }
};

}  // namespace vitmae
