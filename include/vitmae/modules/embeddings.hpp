// SPDX-License-Identifier: Apache-2.0
// ViTMAEPatchEmbeddings, ViTMAEEmbeddings (patch projection, fixed 2-D sin-cos position
// embeddings, random masking, CLS token) and ViTEmbeddings (the same with a learned position
// table, no masking), sharing one patch projection and its backward; interpolate_pos_encoding.
#pragma once

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "vitmae/config.hpp"
#include "vitmae/modules/linear.hpp"
#include "vitmae/ops/interpolate.hpp"
#include "vitmae/ops/random_masking.hpp"
#include "vitmae/ops/sincos_pos_embed.hpp"
#include "vitmae/vit_config.hpp"

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
  out.bottomRows(new_h * new_w) =
      ops::bicubic_resize<Scalar>(table.bottomRows(num_positions), side, side, new_h, new_w);
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
  dtable.bottomRows(num_positions) += ops::bicubic_resize_adjoint<Scalar>(
      dused.bottomRows(dused.rows() - 1), side, side, height / patch_size, width / patch_size);
}

/// HF names: projection.weight (hidden, C, p, p), projection.bias.
template <class Scalar = float>
struct PatchEmbeddings {
  PatchConv2d<Scalar> projection;
  Index image_size = 0, patch_size = 0, num_channels = 0;

  PatchEmbeddings() = default;
  explicit PatchEmbeddings(const EncoderConfig& c, Storage s = Storage::zeros)
      : projection(c.num_channels, c.hidden_size, c.patch_size, s),
        image_size(c.image_size),
        patch_size(c.patch_size),
        num_channels(c.num_channels) {}

  /// HF's num_patches: (image_size / patch_size)^2 patches of the configured size.
  Index num_patches() const { return patch_size > 0 ? (image_size / patch_size) * (image_size / patch_size) : 0; }

  /// pixel_values [B, C, H, W] -> y (B*L, hidden), each image's patches in row-major grid order;
  /// cols receives their im2col (B*L, C*p*p). Without interpolation the size must be the
  /// configured one. @throws vitmae::Error naming what is off.
  void forward(const Tensor<Scalar>& pixel_values, bool interpolate_pos_encoding, Matrix<Scalar>& cols,
               Matrix<Scalar>& y) const {
    detail::require(pixel_values.dim() == 4,
                    "ViTMAEPatchEmbeddings: pixel_values must be [batch, channels, height, width], got ",
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

  /// The adjoint of forward on images of height x width: cols as forward filled it, dy = dL/dy
  /// (B*L, hidden). Adds the projection's gradients into g; when dpixels is given, adds
  /// dL/dpixel_values (B, C*H*W) into it, through dcols (scratch, (B*L, C*p*p)).
  void backward(const Matrix<Scalar>& cols, const Matrix<Scalar>& dy, Index height, Index width, PatchEmbeddings& g,
                Matrix<Scalar>& dcols, Matrix<Scalar>* dpixels) const {
    projection.backward(cols, dy, g.projection, dpixels ? &dcols : nullptr);
    if (!dpixels) return;
    const Index L = (height / patch_size) * (width / patch_size), B = L > 0 ? cols.rows() / L : 0;
    for (Index b = 0; b < B; ++b)
      PatchConv2d<Scalar>::col2im_add(dcols, b * L, num_channels, height, width, patch_size, dpixels->row(b).data());
  }

  template <class Self, class V>
  static void parameters(Self& m, const std::string& prefix, V& visit) {
    m.projection.visit_parameters(prefix + "projection.", visit);
  }
  VITMAE_VISIT_PARAMETERS
};

namespace detail {
/// What a forward of PatchEmbeddings leaves for the backward, in both embeddings' caches.
template <class Scalar>
struct PatchCache {
  Matrix<Scalar> cols, patches;  // (B*L, C*p*p) im2col; (B*L, hidden) projected + positions
  Index height = 0, width = 0, num_patches = 0;
  Matrix<Scalar> dpatches, dcols;
};

/// What ViTMAEEmbeddings and ViTEmbeddings share: the CLS token, the position table (ViTMAE's
/// fixed sin-cos one or ViT's learned one: `TableKind`), the patch projection, and the step from
/// pixels to patches plus positions and back. HF names: cls_token (1, 1, hidden),
/// position_embeddings (1, 1+L, hidden), patch_embeddings.projection.*.
template <class Scalar, ParamKind TableKind>
struct TokenEmbeddings {
  RowVector<Scalar> cls_token;         // (hidden)
  Matrix<Scalar> position_embeddings;  // (1+L, hidden), row 0 is the CLS position
  PatchEmbeddings<Scalar> patch_embeddings;
  Index hidden_size = 0;

  TokenEmbeddings() = default;
  TokenEmbeddings(const EncoderConfig& c, Matrix<Scalar> table, Storage s)
      : cls_token(detail::zeros<RowVector<Scalar>>(s, c.hidden_size)),
        position_embeddings(std::move(table)),
        patch_embeddings(c, s),
        hidden_size(c.hidden_size) {}

  /// The position table for an input of height x width (see position_table_for).
  Matrix<Scalar> position_table(Index height, Index width, bool interpolate_pos_encoding) const {
    return position_table_for(position_embeddings, patch_embeddings.patch_size, height, width,
                              interpolate_pos_encoding);
  }

  /// pixel_values [B, C, H, W] -> c.patches (B*L, hidden): each patch projected plus its
  /// position (embeddings + position_embeddings[:, 1:, :]); returns the position table used
  /// (1+L, hidden), whose row 0 the CLS token gets.
  Matrix<Scalar> patches_with_positions(const Tensor<Scalar>& pixel_values, bool interpolate_pos_encoding,
                                        PatchCache<Scalar>& c, const char* where) const {
    patch_embeddings.forward(pixel_values, interpolate_pos_encoding, c.cols, c.patches);  // (B*L, hidden)
    const Index B = pixel_values.size(0), H = pixel_values.size(2), W = pixel_values.size(3);
    const Index L = B > 0 ? c.patches.rows() / B : 0;
    Matrix<Scalar> pos = position_table(H, W, interpolate_pos_encoding);  // (1+L, hidden)
    detail::require(pos.rows() == L + 1, where, ": ", L, " patches but the position table has ", pos.rows() - 1,
                    " patch rows");
    c.height = H, c.width = W, c.num_patches = L;
    for (Index b = 0; b < B; ++b) c.patches.middleRows(b * L, L) += pos.bottomRows(L);
    return pos;
  }

  /// The adjoint of the projection in patches_with_positions: c.dpatches (B*L, hidden) holds
  /// dL/dpatches. Adds the projection's gradients into g (and dL/dpixel_values into dpixels).
  void patches_backward(PatchCache<Scalar>& c, TokenEmbeddings& g, Matrix<Scalar>* dpixels) const {
    patch_embeddings.backward(c.cols, c.dpatches, c.height, c.width, g.patch_embeddings, c.dcols, dpixels);
  }

  template <class Self, class V>
  static void parameters(Self& m, const std::string& prefix, V& visit) {
    const Index positions =
        m.position_embeddings.size() > 0 ? m.position_embeddings.rows() : 1 + m.patch_embeddings.num_patches();
    detail::visit_tensor(visit, prefix + "cls_token", m.cls_token, {1, 1, m.hidden_size}, ParamKind::token);
    detail::visit_tensor(visit, prefix + "position_embeddings", m.position_embeddings, {1, positions, m.hidden_size},
                         TableKind);
    m.patch_embeddings.visit_parameters(prefix + "patch_embeddings.", visit);
  }
  VITMAE_VISIT_PARAMETERS
};
}  // namespace detail

/// ViTMAEEmbeddings: CLS token, patch projection, the fixed 2-D sin-cos position table
/// (1+L, hidden) with row 0 the CLS position (zeros), and random masking.
template <class Scalar = float>
struct Embeddings : detail::TokenEmbeddings<Scalar, ParamKind::fixed_table> {
  using config_type = Config;
  using Base = detail::TokenEmbeddings<Scalar, ParamKind::fixed_table>;
  using Base::cls_token, Base::hidden_size;

  /// The batch's patches, their masking, and backward scratch.
  struct Cache : detail::PatchCache<Scalar> {
    std::vector<ops::Masking> masking;  // per sample
    Index num_kept = 0;
  };

  Embeddings() = default;
  explicit Embeddings(const EncoderConfig& c, Storage s = Storage::zeros)
      : Base(c,
             detail::allocated<Matrix<Scalar>>(s,
                                               [&] {
                                                 return ops::get_2d_sincos_pos_embed<Scalar>(
                                                     c.hidden_size, c.grid_size(), c.grid_size(), true);
                                               }),
             s) {}

  /// pixel_values [B, C, H, W], noise (B, L) -> y (B*(1+K), hidden): per sample the CLS token,
  /// then the K kept patches in shuffled order (HF's random_masking). c.masking holds the masks.
  void forward(const Tensor<Scalar>& pixel_values, const Matrix<Scalar>& noise, double mask_ratio,
               bool interpolate_pos_encoding, Matrix<Scalar>& y, Cache& c) const {
    // embeddings = embeddings + position_embeddings[:, 1:, :]
    const Matrix<Scalar> pos =
        this->patches_with_positions(pixel_values, interpolate_pos_encoding, c, "ViTMAEEmbeddings");
    const Index B = pixel_values.size(0), L = c.num_patches;
    detail::require(noise.rows() == B && noise.cols() == L, "ViTMAEEmbeddings: noise has shape [", noise.rows(), ", ",
                    noise.cols(), "], expected [batch, num_patches] = [", B, ", ", L, "]");
    const Index K = ops::num_kept(L, mask_ratio), T = 1 + K;
    c.num_kept = K;
    c.masking.resize(static_cast<size_t>(B));
    y.resize(B * T, hidden_size);  // (B*(1+K), hidden)
    for (Index b = 0; b < B; ++b) {
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
    this->patches_backward(c, g, dpixels);
  }
};

/// ViTEmbeddings: CLS token, patch projection and a *learned* position table (1+L, hidden);
/// interpolate_pos_encoding as ViTMAE's (position_table_for); no masking.
template <class Scalar = float>
struct ViTEmbeddings : detail::TokenEmbeddings<Scalar, ParamKind::token> {
  using config_type = ViTConfig;
  using Base = detail::TokenEmbeddings<Scalar, ParamKind::token>;
  using Base::cls_token, Base::hidden_size, Base::patch_embeddings;

  struct Cache : detail::PatchCache<Scalar> {
    Index batch = 0;
    bool interpolate = false;
    Matrix<Scalar> dpos;
  };

  ViTEmbeddings() = default;
  explicit ViTEmbeddings(const EncoderConfig& c, Storage s = Storage::zeros)
      : Base(c, detail::zeros<Matrix<Scalar>>(s, 1 + c.num_patches(), c.hidden_size), s) {}

  /// pixel_values [B, C, H, W] -> y (B*(1+L), hidden): per sample the CLS token, then the L
  /// patches in grid order, each plus its position.
  void forward(const Tensor<Scalar>& pixel_values, bool interpolate_pos_encoding, Matrix<Scalar>& y, Cache& c) const {
    const Matrix<Scalar> pos = this->patches_with_positions(pixel_values, interpolate_pos_encoding, c, "ViTEmbeddings");
    const Index B = pixel_values.size(0), L = c.num_patches, T = 1 + L;
    c.batch = B, c.interpolate = interpolate_pos_encoding;
    y.resize(B * T, hidden_size);  // (B*(1+L), hidden)
    for (Index b = 0; b < B; ++b) {
      y.row(b * T) = cls_token + pos.row(0);
      y.middleRows(b * T + 1, L) = c.patches.middleRows(b * L, L);
    }
  }

  /// dy: (B*(1+L), hidden). Adds the cls_token, position table and projection gradients; when
  /// dpixels is given, adds dL/dpixel_values (B, C*H*W) into it.
  void backward(const Matrix<Scalar>& dy, Cache& c, ViTEmbeddings& g, Matrix<Scalar>* dpixels) const {
    const Index B = c.batch, L = c.num_patches, T = 1 + L;
    c.dpos.setZero(T, hidden_size);
    c.dpatches.resize(B * L, hidden_size);
    for (Index b = 0; b < B; ++b) {
      g.cls_token += dy.row(b * T);
      c.dpos += dy.middleRows(b * T, T);
      c.dpatches.middleRows(b * L, L) = dy.middleRows(b * T + 1, L);
    }
    position_table_for_backward(c.dpos, patch_embeddings.patch_size, c.height, c.width, c.interpolate,
                                g.position_embeddings);
    this->patches_backward(c, g, dpixels);
  }
};

}  // namespace vitmae
