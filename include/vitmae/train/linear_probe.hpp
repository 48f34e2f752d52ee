// SPDX-License-Identifier: Apache-2.0
// Linear probing (MAE's main_linprobe.py): the encoder frozen, features extracted once (the CLS
// token after the final layernorm, the mean patch token, or the raw pixel values as a baseline),
// normalised with the training set's mean and variance (MAE's BatchNorm1d without affine,
// eps 1e-6), and a linear head trained on them with cross-entropy. MAE trains the head with
// LARS at batch 16384; here AdamW on mini-batches (the features are in memory, an epoch costs
// a few milliseconds), warm-up then cosine, no weight decay by default as MAE.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "vitmae/image_processor.hpp"
#include "vitmae/init.hpp"
#include "vitmae/modules/linear.hpp"
#include "vitmae/random.hpp"
#include "vitmae/train/finetune.hpp"
#include "vitmae/train/labelled.hpp"
#include "vitmae/train/optimizer.hpp"
#include "vitmae/vit_for_image_classification.hpp"

namespace vitmae::train {

/// What a linear probe sees of an image.
enum class ProbeFeatures {
  cls,     // the CLS token after the encoder's final layernorm (MAE's linear probe without global pool)
  mean,    // the mean of the patch tokens after the final layernorm
  pixels,  // the preprocessed pixel values, flattened (C*H*W): logistic regression on raw pixels
};

/// @throws vitmae::Error on a name that is not cls, mean or pixels.
inline ProbeFeatures probe_features_from(const std::string& name) {
  if (name == "cls") return ProbeFeatures::cls;
  if (name == "mean") return ProbeFeatures::mean;
  if (name == "pixels") return ProbeFeatures::pixels;
  detail::fail("probe features must be cls, mean or pixels, got '", name, "'");
}

/// The features of every image of `data` (the processor's resize and normalisation, no
/// augmentation), one row per image, `batch` images at a time through the frozen encoder.
template <class S>
Matrix<S> extract_features(const ViTModel<S>& vit, const LabelledDataset& data, const ImageProcessor& proc, ProbeFeatures kind,
                           int batch = 256) {
  Matrix<S> out;
  for_each_batch<S>(data, proc, static_cast<int>(vit.config.num_channels), vit.config.image_size, batch,
                    [&](Index start, Index B, const Tensor<S>& px, const ForwardOptions& opts) {
                      if (kind == ProbeFeatures::pixels) {
                        const Index D = px.numel() / B;
                        if (out.size() == 0) out.resize(static_cast<Index>(data.size()), D);
                        out.middleRows(start, B) = Eigen::Map<const Matrix<S>>(px.data.data(), B, D);
                        return;
                      }
                      typename ViTModel<S>::Cache c;
                      c.encoder.for_backward = false;
                      Matrix<S> seq;
                      vit.forward(px, opts, seq, c);  // (B*T, hidden), T = 1 + patches
                      const Index H = seq.cols(), T = seq.rows() / B;
                      if (out.size() == 0) out.resize(static_cast<Index>(data.size()), H);
                      for (Index b = 0; b < B; ++b) {
                        auto row = out.row(start + b);
                        if (kind == ProbeFeatures::cls)
                          row = seq.row(b * T);
                        else
                          row = seq.middleRows(b * T + 1, T - 1).colwise().mean();
                      }
                    });
  return out;
}

struct ProbeOptions {
  long epochs = 90;         // passes over the training features
  int batch = 256;
  double lr = 1e-3;         // AdamW's peak rate
  double min_lr = 0;
  long warmup_steps = -1;   // linear warm-up; negative: a tenth of the steps
  double weight_decay = 0;  // MAE's linear probe: none
  std::uint64_t seed = 0;   // the order of the samples in each epoch

  long warmup(long total_steps) const { return warmup_steps >= 0 ? std::min(warmup_steps, total_steps) : total_steps / 10; }
  /// The rate of step s (0-based) of a run with `per_epoch` steps an epoch.
  double learning_rate(long s, long per_epoch) const {
    const long total = epochs * per_epoch;
    return mae_learning_rate(s, warmup(total), total, lr, min_lr);
  }
};

/// A linear head on normalised features: logits = ((x - mean) / sqrt(var + eps)) Wᵀ + b.
template <class S>
struct LinearProbe {
  using scalar_type = S;
  RowVector<S> mean, inv_std;  // the training features' statistics (not trained)
  Linear<S> classifier;        // (classes, features)

  Matrix<S> normalise(const Matrix<S>& x) const {
    return ((x.rowwise() - mean).array().rowwise() * inv_std.array()).matrix();
  }
  Matrix<S> logits(const Matrix<S>& features) const { return classifier.forward(normalise(features)); }

  /// The same map as one Linear on the raw features (the normalisation folded into it), to put
  /// into a ViTForImageClassification's classifier.
  /// @throws vitmae::Error when the classifier was quantised or packed for inference.
  Linear<S> folded() const {
    detail::require(classifier.int8.empty() && !classifier.packed_for_inference(),
                    "LinearProbe::folded: the classifier is int8 or packed for inference (dequantize / unpack it first)");
    Linear<S> l = classifier;
    l.weight = (classifier.weight.array().rowwise() * inv_std.array()).matrix();
    l.bias = classifier.bias - (l.weight * mean.transpose()).transpose();
    return l;
  }

  template <class Self, class V>
  static void parameters(Self& m, const std::string& prefix, V& visit) {
    Linear<S>::parameters(m.classifier, prefix + "classifier.", visit);
  }
  VITMAE_VISIT_PARAMETERS
};

/// Trains a LinearProbe on features X (N, D) with labels y in [0, classes). `on_epoch(epoch,
/// probe, mean loss)` is called after every epoch (for validation and logging).
/// @throws vitmae::Error on mismatched sizes or a label out of range.
template <class S>
LinearProbe<S> train_linear_probe(const Matrix<S>& X, const std::vector<std::int64_t>& y, Index classes, const ProbeOptions& o,
                                  const std::function<void(long, const LinearProbe<S>&, double)>& on_epoch = {}) {
  const Index N = X.rows(), D = X.cols();
  detail::require(N > 0 && static_cast<size_t>(N) == y.size(), "linear probe: ", N, " feature rows for ", y.size(), " labels");
  detail::require(classes >= 2, "linear probe: needs at least 2 classes, got ", classes);
  detail::require(o.epochs > 0 && o.batch > 0, "linear probe: epochs and batch must be positive");
  for (size_t i = 0; i < y.size(); ++i)
    detail::require(y[i] >= 0 && y[i] < classes, "linear probe: label ", y[i], " of sample ", i, " is out of range: ", classes,
                    " classes");
  LinearProbe<S> p;
  // BatchNorm1d(affine=False, eps=1e-6) at the training set's statistics (biased variance).
  p.mean = X.colwise().mean();
  const RowVector<S> var = (X.rowwise() - p.mean).array().square().colwise().mean();
  p.inv_std = (var.array() + S(1e-6)).unaryExpr([](S x) { return S(1) / std::sqrt(x); }).matrix();  // (Eigen's rsqrt is an estimate)
  const Matrix<S> Xn = p.normalise(X);
  // MAE's head: trunc_normal_(std=0.01), bias 0 (drawn from the seed, independent of the data order).
  p.classifier = Linear<S>(D, classes);
  auto init_rng = seeded_rng(o.seed, seed_streams::probe);  // "PROBE"
  init_weights(p, 0.01, init_rng, InitScheme::vit);
  LinearProbe<S> g = p;
  AdamW<LinearProbe<S>> adam(p, AdamWOptions{0.9, 0.999, 1e-8, o.weight_decay});
  const long per_epoch = (N + o.batch - 1) / o.batch;
  const ClassificationLoss ce{"single_label_classification", classes, 0.0};
  std::vector<Index> order(static_cast<size_t>(N));
  long step = 0;
  for (long e = 0; e < o.epochs; ++e) {
    for (Index i = 0; i < N; ++i) order[static_cast<size_t>(i)] = i;
    auto rng = seeded_rng(o.seed, seed_streams::probe + 1 + static_cast<std::uint64_t>(e));
    shuffle(order, rng);
    double loss_sum = 0;
    for (long s = 0; s < per_epoch; ++s, ++step) {
      const Index lo = static_cast<Index>(s) * o.batch, B = std::min<Index>(o.batch, N - lo);
      Matrix<S> xb(B, D);
      std::vector<std::int64_t> yb(static_cast<size_t>(B));
      for (Index b = 0; b < B; ++b) {
        const Index r = order[static_cast<size_t>(lo + b)];
        xb.row(b) = Xn.row(r);
        yb[static_cast<size_t>(b)] = y[static_cast<size_t>(r)];
      }
      Matrix<S> logits = p.classifier.forward(xb), dlogits;
      loss_sum += static_cast<double>(ce.forward(logits, Labels<S>::of_classes(yb), &dlogits)) * static_cast<double>(B);
      zero_parameters(g);
      p.classifier.backward(xb, dlogits, g.classifier, nullptr);
      adam.step(p, g, o.learning_rate(step, per_epoch));
    }
    if (on_epoch) on_epoch(e + 1, p, loss_sum / static_cast<double>(N));
  }
  return p;
}

}  // namespace vitmae::train
