// SPDX-License-Identifier: Apache-2.0
// ViTMAEPatchEmbeddings and ViTMAEEmbeddings (patch projection, fixed 2-D sin-cos position
// embeddings, random masking, CLS token), with interpolate_pos_encoding and the backward.
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

/// pixel_values [B, C, H, W]: sample b seen as a (C, H*W) matrix (CHW), in place.
template <class Scalar>
Eigen::Map<const Matrix<Scalar>> image_view(const Tensor<Scalar>& pixel_values, Index b) {
  detail::require(pixel_values.dim() == 4 && b >= 0 && b < pixel_values.size(0), "image_of: sample ", b,
                  " of pixel_values ", detail::shape_str(pixel_values.shape));
  const Index C = pixel_values.size(1), HW = pixel_values.size(2) * pixel_values.size(3);
  return Eigen::Map<const Matrix<Scalar>>(pixel_values.ptr() + b * C * HW, C, HW);
}
/// The same, copied.
template <class Scalar>
Matrix<Scalar> image_of(const Tensor<Scalar>& pixel_values, Index b) {
  return image_view(pixel_values, b);
}

/// True when HF's interpolate_pos_encoding leaves a table of 1+num_positions rows as it is for
/// an input of height x width: the patch count is unchanged and the image is square.
inline bool position_table_unchanged(Index num_positions, Index patch_size, Index height, Index width) {
  return (height / patch_size) * (width / patch_size) == num_positions && height == width;
}

/// A (1+N, hidden) position table (row 0 the CLS position) for an input of height x width, as
/// HF's ViTEmbeddings and ViTMAEEmbeddings interpolate_pos_encoding compute it: the table
/// itself, or its N rows as a square grid resized bicubically (align_corners=False) to (H/p,
/// W/p), row 0 kept; unchanged when the patch count is and the image is square.
template <class Scalar>
Matrix<Scalar> position_table_for(const Matrix<Scalar>& table, Index patch_size, Index height, Index width,
                                  bool interpolate_pos_encoding) {
  const Index num_positions = table.rows() - 1;
  if (!interpolate_pos_encoding || position_table_unchanged(num_positions, patch_size, height, width)) return table;
  const Index new_h = height / patch_size, new_w = width / patch_size;
  const Index side = static_cast<Index>(std::sqrt(static_cast<double>(num_positions)));
  detail::require(side * side == num_positions, "interpolate_pos_encoding: position table has ", num_positions,
                  " patch rows, expected a square grid");
  Matrix<Scalar> out(1 + new_h * new_w, table.cols());  // (1+L', hidden)
  out.row(0) = table.row(0);
  out.bottomRows(new_h * new_w) = ops::bicubic_resize<Scalar>(table.bottomRows(num_positions), side, side, new_h, new_w);
  return out;
}

/// The adjoint of position_table_for: adds to dtable (1+N, hidden) the gradient of a table
/// whose resized form received dused (1+L', hidden).
template <class Scalar>
void position_table_for_backward(const Matrix<Scalar>& dused, Index patch_size, Index height, Index width,
                                 bool interpolate_pos_encoding, Matrix<Scalar>& dtable) {
  const Index num_positions = dtable.rows() - 1;
  if (!interpolate_pos_encoding || position_table_unchanged(num_positions, patch_size, height, width)) {
    dtable += dused;
    return;
  }
  const Index side = static_cast<Index>(std::sqrt(static_cast<double>(num_positions)));
  dtable.row(0) += dused.row(0);
  dtable.bottomRows(num_positions) +=
      ops::bicubic_resize_adjoint<Scalar>(dused.bottomRows(dused.rows() - 1), side, side, height / patch_size, width / patch_size);
}

/// HF names: projection.weight (hidden, C, p, p), projection.bias.
template <class Scalar = float>
struct PatchEmbeddings {
  PatchConv2d<Scalar> projection;
  Index image_size = 0, patch_size = 0, num_channels = 0;

  PatchEmbeddings() = default;
  explicit PatchEmbeddings(const EncoderConfig& c)
      : projection(c.num_channels, c.hidden_size, c.patch_size), image_size(c.image_size),
        patch_size(c.patch_size), num_channels(c.num_channels) {}

  /// pixel_values [B, C, H, W] -> y (B*L, hidden), each image's patches in row-major grid order;
  /// cols receives their im2col (B*L, C*p*p). Without interpolation the size must be the
  /// configured one. @throws vitmae::Error naming what is off.
  void forward(const Tensor<Scalar>& pixel_values, bool interpolate_pos_encoding, Matrix<Scalar>& cols,
               Matrix<Scalar>& y) const {
    detail::require(pixel_values.dim() == 4, "ViTMAEPatchEmbeddings: pixel_values must be [batch, channels, height, width], got ",
                    detail::shape_str(pixel_values.shape));
    const Index B = pixel_values.size(0), C = pixel_values.size(1), H = pixel_values.size(2), W = pixel_values.size(3);
    detail::require(C == num_channels, "ViTMAEPatchEmbeddings: pixel_values have ", C,
                    " channels, expected num_channels = ", num_channels);
    detail::require(interpolate_pos_encoding || (H == image_size && W == image_size),
                    "ViTMAEPatchEmbeddings: input image size (", H, "*", W, ") doesn't match model (", image_size, "*",
                    image_size, "); pass interpolate_pos_encoding to run other sizes");
    detail::require(H >= patch_size && W >= patch_size, "ViTMAEPatchEmbeddings: image ", H, "x", W,
                    " is smaller than one patch (", patch_size, ")");
    const Index L = (H / patch_size) * (W / patch_size);
    cols.resize(B * L, C * patch_size * patch_size);  // (B*L, C*p*p)
    for (Index b = 0; b < B; ++b)
      PatchConv2d<Scalar>::im2col(pixel_values.ptr() + b * C * H * W, C, H, W, patch_size, cols, b * L);
    projection.forward(cols, y);  // (B*L, hidden)
  }

  template <class Self, class V>
  static void parameters(Self& m, const std::string& prefix, V& visit) {
    m.projection.visit_parameters(prefix + "projection.", visit);
  }
  VITMAE_VISIT_PARAMETERS
};

/// HF names: cls_token (1, 1, hidden), position_embeddings (1, 1+L, hidden), patch_embeddings.*.
template <class Scalar = float>
struct Embeddings {
  RowVector<Scalar> cls_token;         // (hidden)
  Matrix<Scalar> position_embeddings;  // (1+L, hidden), row 0 is the CLS position (zeros)
  PatchEmbeddings<Scalar> patch_embeddings;
  Index hidden_size = 0;

  /// The batch's patches, their masking, and backward scratch.
  struct Cache {
    Matrix<Scalar> cols, patches;       // (B*L, C*p*p) im2col; (B*L, hidden) projected + positions
    std::vector<ops::Masking> masking;  // per sample
    Index height = 0, width = 0, num_patches = 0, num_kept = 0;
    Matrix<Scalar> dpatches, dcols;
  };

  Embeddings() = default;
  explicit Embeddings(const EncoderConfig& c)
      : cls_token(RowVector<Scalar>::Zero(c.hidden_size)),
        position_embeddings(ops::get_2d_sincos_pos_embed<Scalar>(c.hidden_size, c.grid_size(), c.grid_size(), true)),
        patch_embeddings(c), hidden_size(c.hidden_size) {}

  /// The position table for an input of height x width (see position_table_for).
  Matrix<Scalar> position_table(Index height, Index width, bool interpolate_pos_encoding) const {
    return position_table_for(position_embeddings, patch_embeddings.patch_size, height, width, interpolate_pos_encoding);
  }

  /// pixel_values [B, C, H, W], noise (B, L) -> y (B*(1+K), hidden): per sample the CLS token,
  /// then the K kept patches in shuffled order (HF's random_masking). c.masking holds the masks.
  void forward(const Tensor<Scalar>& pixel_values, const Matrix<Scalar>& noise, double mask_ratio,
               bool interpolate_pos_encoding, Matrix<Scalar>& y, Cache& c) const {
    patch_embeddings.forward(pixel_values, interpolate_pos_encoding, c.cols, c.patches);  // (B*L, hidden)
    const Index B = pixel_values.size(0), H = pixel_values.size(2), W = pixel_values.size(3);
    const Index L = B > 0 ? c.patches.rows() / B : 0;
    detail::require(noise.rows() == B && noise.cols() == L, "ViTMAEEmbeddings: noise has shape [", noise.rows(), ", ",
                    noise.cols(), "], expected [batch, num_patches] = [", B, ", ", L, "]");
    const Matrix<Scalar> pos = position_table(H, W, interpolate_pos_encoding);  // (1+L, hidden)
    detail::require(pos.rows() == L + 1, "ViTMAEEmbeddings: ", L, " patches but the position table has ", pos.rows() - 1,
                    " patch rows");
    const Index K = ops::num_kept(L, mask_ratio), T = 1 + K;
    c.height = H, c.width = W, c.num_patches = L, c.num_kept = K;
    c.masking.resize(static_cast<size_t>(B));
    y.resize(B * T, hidden_size);  // (B*(1+K), hidden)
    for (Index b = 0; b < B; ++b) {
      // embeddings = embeddings + position_embeddings[:, 1:, :]
      c.patches.middleRows(b * L, L) += pos.bottomRows(L);
      ops::Masking& m = c.masking[static_cast<size_t>(b)];
      m = ops::random_masking(noise.row(b), mask_ratio);
      // cls_token = self.cls_token + position_embeddings[:, :1, :], prepended after masking
      y.row(b * T) = cls_token + pos.row(0);
      for (Index k = 0; k < K; ++k) y.row(b * T + 1 + k) = c.patches.row(b * L + m.ids_keep[static_cast<size_t>(k)]);
    }
  }

  /// dy: (B*(1+K), hidden). Adds the cls_token and projection gradients (the position table is
  /// fixed); when dpixels is given, it receives dL/dpixel_values (B, C*H*W) (added to).
  void backward(const Matrix<Scalar>& dy, Cache& c, Embeddings& g, Matrix<Scalar>* dpixels) const {
    const Index B = static_cast<Index>(c.masking.size()), L = c.num_patches, K = c.num_kept, T = 1 + K;
    c.dpatches.setZero(B * L, hidden_size);
    for (Index b = 0; b < B; ++b) {
      g.cls_token += dy.row(b * T);
      const ops::Masking& m = c.masking[static_cast<size_t>(b)];
      for (Index k = 0; k < K; ++k) c.dpatches.row(b * L + m.ids_keep[static_cast<size_t>(k)]) = dy.row(b * T + 1 + k);
    }
    const PatchConv2d<Scalar>& conv = patch_embeddings.projection;
    conv.backward(c.cols, c.dpatches, g.patch_embeddings.projection, dpixels ? &c.dcols : nullptr);
    if (!dpixels) return;
    const Index C = conv.in_channels;
    for (Index b = 0; b < B; ++b)
      PatchConv2d<Scalar>::col2im_add(c.dcols, b * L, C, c.height, c.width, conv.kernel_size, dpixels->row(b).data());
  }

  template <class Self, class V>
  static void parameters(Self& m, const std::string& prefix, V& visit) {
    detail::visit_tensor(visit, prefix + "cls_token", m.cls_token, {1, 1, m.cls_token.size()}, ParamKind::token);
    detail::visit_tensor(visit, prefix + "position_embeddings", m.position_embeddings,
                         {1, m.position_embeddings.rows(), m.position_embeddings.cols()}, ParamKind::fixed_table);
    m.patch_embeddings.visit_parameters(prefix + "patch_embeddings.", visit);
  }
  VITMAE_VISIT_PARAMETERS
};

}  // namespace vitmae
