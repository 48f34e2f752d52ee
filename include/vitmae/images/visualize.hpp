// SPDX-License-Identifier: Apache-2.0
// What MAE sees: the original, the masked input, the reconstruction and the reconstruction with
// the visible patches pasted back, as 8-bit images and a side-by-side PNG panel; and the
// mean-fill baseline a reconstruction should beat.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "vitmae/images/image_processor.hpp"
#include "vitmae/io/image.hpp"
#include "vitmae/models/for_pre_training.hpp"

namespace vitmae {

struct ReconstructionImages {
  io::Image8 original, masked, reconstruction, pasted;  // each the model's input size
};

/// The predicted pixels (L, p*p*C) in the model's pixel_values space. For a norm_pix_loss model
/// the predictions are per-patch normalised; each patch is de-normalised with the mean and
/// variance of the *visible* patches nearest to it (its own, when it is visible): never the
/// masked patch's own statistics, which would leak the answer.
template <class Scalar>
Matrix<Scalar> predicted_pixels(const ForPreTraining<Scalar>& model, const Matrix<Scalar>& image, Index height,
                                Index width, const Matrix<Scalar>& logits, const RowVector<Scalar>& mask) {
  if (!model.config().norm_pix_loss) return logits;
  const Matrix<Scalar> patches = model.patchify(image, height, width);  // (L, P)
  const Index p = model.config().patch_size, gw = width / p, gh = height / p, L = patches.rows(), P = patches.cols();
  ColVector<Scalar> mean, var;  // norm_pix_loss's statistics of each patch
  ops::patch_mean_var(patches, mean, var);
  Matrix<Scalar> out(L, P);
  for (Index l = 0; l < L; ++l) {
    Scalar m = 0, v = 0;
    if (mask(l) == Scalar(0)) {
      m = mean(l), v = var(l);
    } else {
      // Visible patches in growing square rings around (i, j) until some are found.
      const Index i = l / gw, j = l % gw;
      Index n = 0;
      for (Index r = 1; n == 0 && r < std::max(gh, gw); ++r)
        for (Index y = std::max<Index>(0, i - r); y <= std::min(gh - 1, i + r); ++y)
          for (Index x = std::max<Index>(0, j - r); x <= std::min(gw - 1, j + r); ++x)
            if (mask(y * gw + x) == Scalar(0)) {
              m += mean(y * gw + x);
              v += var(y * gw + x);
              ++n;
            }
      if (n > 0) m /= static_cast<Scalar>(n), v /= static_cast<Scalar>(n);
      else v = Scalar(1);  // nothing visible: show the normalised prediction as it is
    }
    out.row(l) = logits.row(l).array() * std::sqrt(v + Scalar(1e-6)) + m;
  }
  return out;
}

/// The four pictures for one sample. resized: the 8-bit image the processor fed the model
/// (visible patches are copied from it exactly); image: its pixel_values (C, H*W).
template <class Scalar>
ReconstructionImages reconstruction_images(const ForPreTraining<Scalar>& model, const ImageProcessor& proc,
                                           const io::Image8& resized, const Matrix<Scalar>& image,
                                           const Matrix<Scalar>& logits, const RowVector<Scalar>& mask) {
  const int H = resized.height, W = resized.width, C = resized.channels;
  const Index p = model.config().patch_size, gw = W / p;
  ReconstructionImages r;
  r.original = resized;
  const Matrix<Scalar> pred = predicted_pixels(model, image, H, W, logits, mask);
  r.reconstruction = proc.to_image<Scalar>(model.unpatchify(pred, H, W), H, W);
  r.masked = r.original;
  r.pasted = r.original;
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      const Index l = (y / p) * gw + x / p;
      if (y / p >= H / p || x / p >= gw || mask(l) == Scalar(0)) continue;
      for (int c = 0; c < C; ++c) {
        r.masked.at(y, x, c) = 128;
        r.pasted.at(y, x, c) = r.reconstruction.at(y, x, c);
      }
    }
  return r;
}

/// Panel layout: one row per image, columns original | masked | reconstruction |
/// reconstruction + visible, each scaled up by `scale` (nearest), separated by `gap` white pixels.
struct PanelLayout {
  int scale = 1, gap = 4;
  /// Scale small model inputs up to at least 224 pixels on their longer side.
  static int scale_for(int height, int width) {
    return std::max(1, (224 + std::max(height, width) - 1) / std::max(height, width));
  }
};

inline io::Image8 make_panel(const std::vector<ReconstructionImages>& rows, const PanelLayout& layout) {
  detail::require(!rows.empty(), "make_panel: no images");
  const int h = rows[0].original.height, w = rows[0].original.width, C = rows[0].original.channels, s = layout.scale,
            g = layout.gap;
  io::Image8 panel{
      4 * w * s + 3 * g, static_cast<int>(rows.size()) * h * s + (static_cast<int>(rows.size()) - 1) * g, C, {}};
  panel.data.assign(static_cast<size_t>(panel.width) * panel.height * C, 255);
  for (size_t r = 0; r < rows.size(); ++r) {
    const io::Image8* cols[4] = {&rows[r].original, &rows[r].masked, &rows[r].reconstruction, &rows[r].pasted};
    for (int k = 0; k < 4; ++k)
      for (int y = 0; y < h * s; ++y)
        for (int x = 0; x < w * s; ++x)
          for (int c = 0; c < C; ++c)
            panel.at(static_cast<int>(r) * (h * s + g) + y, k * (w * s + g) + x, c) = cols[k]->at(y / s, x / s, c);
  }
  return panel;
}

/// The naive baseline's loss for one sample: every masked patch filled with the mean colour
/// (per channel) of the visible patches, scored exactly like the model's prediction.
template <class Scalar>
Scalar mean_fill_loss(const ForPreTraining<Scalar>& model, const Matrix<Scalar>& image, Index height, Index width,
                      const RowVector<Scalar>& mask) {
  const Index p = model.config().patch_size, gw = width / p, C = image.rows();
  ColVector<Scalar> colour = ColVector<Scalar>::Zero(C);
  Index n = 0;
  for (Index y = 0; y < height; ++y)
    for (Index x = 0; x < width; ++x)
      if (mask((y / p) * gw + x / p) == Scalar(0)) {
        colour += image.col(y * width + x);
        ++n;
      }
  if (n > 0) colour /= static_cast<Scalar>(n);
  Matrix<Scalar> filled = image;  // (C, H*W)
  for (Index y = 0; y < height; ++y)
    for (Index x = 0; x < width; ++x)
      if (mask((y / p) * gw + x / p) != Scalar(0)) filled.col(y * width + x) = colour;
  // The baseline's "prediction" goes through the same target transform as the truth.
  const Matrix<Scalar> pred = model.loss_target(filled, height, width);
  const auto [num, den] = model.loss_terms(image, height, width, pred, mask);
  return num / den;
}

}  // namespace vitmae
