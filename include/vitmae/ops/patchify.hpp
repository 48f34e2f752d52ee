// SPDX-License-Identifier: Apache-2.0
// ViTMAEForPreTraining.patchify / unpatchify for one image.
#pragma once

#include <cmath>

#include "vitmae/error.hpp"
#include "vitmae/tensor.hpp"

namespace vitmae::ops {

/// image (C, H*W), CHW -> (L, p*p*C) with L = (H/p)*(W/p) in row-major patch order and each
/// patch flattened (p, q, c): HF's einsum("nchpwq->nhwpqc"). Not the (c, kh, kw) order of the
/// patch projection. @throws vitmae::Error unless p divides H and W.
/// The same into `out`, whose storage is reused when it has the size already.
template <class Scalar>
void patchify_into(const Eigen::Ref<const Matrix<Scalar>>& image, Index height, Index width, Index patch_size,
                   Matrix<Scalar>& out) {
  const Index C = image.rows(), p = patch_size;
  detail::require(image.cols() == height * width, "patchify: image has ", image.cols(),
                  " pixels per channel, expected ", height, "x", width);
  detail::require(p > 0 && height % p == 0 && width % p == 0, "patchify: image size ", height, "x", width,
                  " is not divisible by the patch size ", p);
  const Index nh = height / p, nw = width / p;
  out.resize(nh * nw, p * p * C);  // (L, p*p*C)
  for (Index h = 0; h < nh; ++h)
    for (Index w = 0; w < nw; ++w)
      for (Index y = 0; y < p; ++y)
        for (Index x = 0; x < p; ++x)
          for (Index c = 0; c < C; ++c)
            out(h * nw + w, (y * p + x) * C + c) = image(c, (h * p + y) * width + w * p + x);
}
template <class Scalar>
Matrix<Scalar> patchify(const Matrix<Scalar>& image, Index height, Index width, Index patch_size) {
  Matrix<Scalar> out;
  patchify_into<Scalar>(image, height, width, patch_size, out);
  return out;
}

/// Inverse of patchify: (L, p*p*C) -> (C, H*W). @throws vitmae::Error on a size mismatch.
template <class Scalar>
Matrix<Scalar> unpatchify(const Matrix<Scalar>& patches, Index height, Index width, Index patch_size, Index channels) {
  const Index p = patch_size, C = channels;
  const Index nh = height / p, nw = width / p;
  detail::require(nh * nw == patches.rows(), "unpatchify: ", patches.rows(), " patches do not tile a ", height, "x",
                  width, " image with patch size ", p, ", expected ", nh * nw);
  detail::require(patches.cols() == p * p * C, "unpatchify: patches have ", patches.cols(),
                  " values, expected patch_size^2 * num_channels = ", p * p * C);
  Matrix<Scalar> image(C, nh * p * nw * p);  // (C, H*W)
  const Index W = nw * p;
  for (Index h = 0; h < nh; ++h)
    for (Index w = 0; w < nw; ++w)
      for (Index y = 0; y < p; ++y)
        for (Index x = 0; x < p; ++x)
          for (Index c = 0; c < C; ++c)
            image(c, (h * p + y) * W + w * p + x) = patches(h * nw + w, (y * p + x) * C + c);
  return image;
}

/// Per-patch statistics of patches (L, P), as norm_pix_loss takes them: the mean and torch's
/// unbiased var() of each row.
template <class Scalar>
void patch_mean_var(const Matrix<Scalar>& patches, ColVector<Scalar>& mean, ColVector<Scalar>& var) {
  const Index L = patches.rows(), P = patches.cols();
  mean.resize(L);
  var.resize(L);
  for (Index l = 0; l < L; ++l) {
    mean(l) = patches.row(l).mean();
    var(l) = (patches.row(l).array() - mean(l)).square().sum() / static_cast<Scalar>(P - 1);
  }
}

/// norm_pix_loss's per-patch normalisation, in place: (x - mean) / sqrt(var + 1e-6), the 1e-6
/// being HF's own (not layer_norm_eps).
template <class Scalar>
void normalize_patches(Matrix<Scalar>& patches, const ColVector<Scalar>& mean, const ColVector<Scalar>& var) {
  for (Index l = 0; l < patches.rows(); ++l)
    patches.row(l) = ((patches.row(l).array() - mean(l)) / std::sqrt(var(l) + Scalar(1e-6))).matrix();
}

/// The backward of normalize_patches: dy (gradient of the normalised patches) becomes the
/// gradient of the raw patches, which `raw` holds.
template <class Scalar>
void normalize_patches_backward(const Matrix<Scalar>& raw, const ColVector<Scalar>& mean, const ColVector<Scalar>& var,
                                Matrix<Scalar>& dy) {
  const Index P = raw.cols();
  RowVector<Scalar> xc(P), g(P);
  for (Index l = 0; l < raw.rows(); ++l) {
    xc = (raw.row(l).array() - mean(l)).matrix();
    const Scalar sd = std::sqrt(var(l) + Scalar(1e-6));
    g = dy.row(l);
    dy.row(l) =
        ((g.array() - g.mean()) / sd - xc.array() * (g.dot(xc) / (static_cast<Scalar>(P - 1) * sd * sd * sd))).matrix();
  }
}

}  // namespace vitmae::ops
