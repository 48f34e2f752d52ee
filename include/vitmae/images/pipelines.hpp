// SPDX-License-Identifier: Apache-2.0
// HF's image pipelines on image files, as vitmae-embed and vitmae-classify run them:
// "image-feature-extraction" with ViTMAEModel (per image the CLS token and the mean of the patch
// tokens of last_hidden_state) and "image-classification" with ViTForImageClassification (each
// image's top-k classes with their scores, ImageClassificationPipeline.postprocess). The images
// are decoded, preprocessed by the checkpoint's ImageProcessor and run `batch` at a time, in
// order; what comes out does not depend on `batch` (up to float rounding).
#pragma once

#include "vitmae/images/image_processor.hpp"
#include "vitmae/io/image.hpp"
#include "vitmae/models/encoder_model.hpp"
#include "vitmae/models/vit_for_image_classification.hpp"
#include "vitmae/tensor.hpp"

#include <algorithm>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

namespace vitmae {

/// Called as each batch starts, before its images are read: they are paths[begin, end).
using BatchProgress = std::function<void(size_t begin, size_t end)>;

namespace detail {
/// f(begin, pixel_values, options) for each run of `batch` of `paths`: the images decoded with
/// `channels` channels and preprocessed by `proc`, options.interpolate_pos_encoding set when they
/// come out of another size than the model's `image_size`.
template <class Scalar, class F>
void for_each_image_batch(const std::vector<std::string>& paths, const ImageProcessor& proc, Index channels,
                          Index image_size, Index batch, const BatchProgress& progress, F&& f) {
  require(batch > 0, "image pipeline: batch must be positive, got ", batch);
  for (size_t begin = 0; begin < paths.size(); begin += static_cast<size_t>(batch)) {
    const size_t end = std::min(paths.size(), begin + static_cast<size_t>(batch));
    if (progress) progress(begin, end);
    std::vector<io::Image8> images;
    for (size_t i = begin; i < end; ++i) images.push_back(io::load_image(paths[i], static_cast<int>(channels)));
    const Tensor<Scalar> pixels = proc.preprocess<Scalar>(images);  // [n, C, H, W]
    ForwardOptions opts;
    opts.interpolate_pos_encoding = pixels.size(2) != image_size || pixels.size(3) != image_size;
    f(begin, pixels, opts);
  }
}
}  // namespace detail

/// Image features, one row per image.
template <class Scalar>
struct ImageFeatures {
  Matrix<Scalar> cls;   // (images, hidden): the CLS token (MAE's linear probe reads it)
  Matrix<Scalar> mean;  // (images, hidden): the mean of the patch tokens (MAE's global pool)
};

/// A forward's last_hidden_state (B x (1+K, hidden), after the final layernorm) pooled per
/// image: its first row (CLS) and the mean of the others.
template <class Scalar>
ImageFeatures<Scalar> pool_features(const std::vector<Matrix<Scalar>>& last_hidden_state) {
  const Index B = static_cast<Index>(last_hidden_state.size()), H = B ? last_hidden_state[0].cols() : 0;
  ImageFeatures<Scalar> f{Matrix<Scalar>(B, H), Matrix<Scalar>(B, H)};
  for (Index b = 0; b < B; ++b) {
    const Matrix<Scalar>& h = last_hidden_state[static_cast<size_t>(b)];  // (1+K, hidden)
    detail::require(h.rows() > 1 && h.cols() == H, "pool_features: sample ", b, " has shape (", h.rows(), ", ",
                    h.cols(), "), expected (1 + patches, ", H, ")");
    f.cls.row(b) = h.row(0);
    f.mean.row(b) = h.bottomRows(h.rows() - 1).colwise().mean();
  }
  return f;
}

/// Feature extraction: pool_features of ViTMAEModel's last_hidden_state for each image file, in
/// input order, masking at model.config.mask_ratio (0: every patch seen) with noise drawn from
/// `rng`, one stream over all images in order, so the batch does not change the masks.
/// @throws vitmae::Error naming an image that cannot be read.
template <class Scalar, class Engine>
ImageFeatures<Scalar> image_features(const Model<Scalar>& model, const ImageProcessor& proc,
                                     const std::vector<std::string>& paths, Index batch, Engine& rng,
                                     const BatchProgress& progress = {}) {
  const Index N = static_cast<Index>(paths.size()), H = model.config.hidden_size;
  ImageFeatures<Scalar> all{Matrix<Scalar>(N, H), Matrix<Scalar>(N, H)};
  detail::for_each_image_batch<Scalar>(paths, proc, model.config.num_channels, model.config.image_size, batch, progress,
                                       [&](size_t begin, const Tensor<Scalar>& pixels, const ForwardOptions& opts) {
                                         const ImageFeatures<Scalar> f =
                                             pool_features(model.forward(pixels, rng, opts).last_hidden_state);
                                         all.cls.middleRows(static_cast<Index>(begin), f.cls.rows()) = f.cls;
                                         all.mean.middleRows(static_cast<Index>(begin), f.mean.rows()) = f.mean;
                                       });
  return all;
}

/// One class of an image's prediction.
struct ClassScore {
  Index index = 0;    // the class's row of the classifier
  std::string label;  // its id2label name
  double score = 0;   // its probability: softmax over the classes, or the sigmoid of its logit
};

/// Per row of `logits` (B, num_labels), the `top_k` classes (at most num_labels) with the
/// highest scores, best first; equal scores keep class order (the pipeline's stable sort). The
/// scores are computed in double: the sigmoid when config.problem_type is
/// "multi_label_classification" or there is one label, else the softmax of the row.
/// @throws vitmae::Error when logits has another number of columns than config has labels.
template <class Scalar>
std::vector<std::vector<ClassScore>> top_classes(const ViTConfig& config, const Matrix<Scalar>& logits, Index top_k) {
  const Index N = static_cast<Index>(config.num_labels());
  detail::require(logits.cols() == N, "top_classes: logits have ", logits.cols(),
                  " columns, expected num_labels = ", N);
  const bool sigmoid = config.problem_type == "multi_label_classification" || N == 1;
  std::vector<std::vector<ClassScore>> out;
  for (Index b = 0; b < logits.rows(); ++b) {
    const RowVector<double> z = logits.row(b).template cast<double>();
    RowVector<double> p;
    if (sigmoid) {
      p = (1.0 / (1.0 + (-z.array()).exp())).matrix();
    } else {
      p = (z.array() - z.maxCoeff()).exp().matrix();  // shifted by the row's max: no overflow
      p /= p.sum();
    }
    std::vector<Index> order(static_cast<size_t>(N));
    std::iota(order.begin(), order.end(), Index(0));
    std::stable_sort(order.begin(), order.end(), [&](Index i, Index j) { return p(i) > p(j); });
    std::vector<ClassScore>& row = out.emplace_back();
    for (Index t = 0; t < std::min(top_k, N); ++t) {
      const Index c = order[static_cast<size_t>(t)];
      row.push_back({c, config.id2label[static_cast<size_t>(c)], p(c)});
    }
  }
  return out;
}

/// Image classification: top_classes of each image file's logits, in input order.
/// @throws vitmae::Error naming an image that cannot be read.
template <class Scalar>
std::vector<std::vector<ClassScore>> classify_images(const ViTForImageClassification<Scalar>& model,
                                                     const ImageProcessor& proc, const std::vector<std::string>& paths,
                                                     Index top_k, Index batch, const BatchProgress& progress = {}) {
  std::vector<std::vector<ClassScore>> out;
  const ViTConfig& c = model.config();
  detail::for_each_image_batch<Scalar>(
      paths, proc, c.num_channels, c.image_size, batch, progress,
      [&](size_t, const Tensor<Scalar>& pixels, const ForwardOptions& opts) {
        for (auto& row : top_classes(c, model.forward(pixels, nullptr, opts).logits, top_k))
          out.push_back(std::move(row));
      });
  return out;
}

}  // namespace vitmae
