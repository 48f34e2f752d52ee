// SPDX-License-Identifier: Apache-2.0
// Linear probing (MAE's main_linprobe.py): the encoder frozen, features extracted once (the CLS
// token after the final layernorm, the mean patch token, or the raw pixel values as a baseline),
// normalised with the training set's mean and variance (MAE's BatchNorm1d without affine,
// eps 1e-6), and a linear head trained on them with cross-entropy. MAE trains the head with
// LARS at batch 16384; here AdamW on mini-batches (the features are in memory, an epoch costs
// a few milliseconds) on the one training loop (train/loop.hpp), warm-up then cosine, no weight
// decay by default as MAE; every batch full (FeatureBatches: an endless stream of permutations).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "vitmae/images/image_processor.hpp"
#include "vitmae/io/safetensors.hpp"
#include "vitmae/models/vit_for_image_classification.hpp"
#include "vitmae/modules/linear.hpp"
#include "vitmae/random.hpp"
#include "vitmae/train/finetune.hpp"
#include "vitmae/train/labelled.hpp"
#include "vitmae/train/loop.hpp"
#include "vitmae/train/optimizer.hpp"
#include "vitmae/weights/init.hpp"

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
/// `progress(done, total)` is called as each batch starts, counting it in.
template <class S>
Matrix<S> extract_features(const ViTModel<S>& vit, const LabelledDataset& data, const ImageProcessor& proc,
                           ProbeFeatures kind, int batch = 256, const Progress& progress = {}) {
  Matrix<S> out;
  for_each_batch<S>(data, proc, static_cast<int>(vit.config.num_channels), vit.config.image_size, batch,
                    [&](Index start, Index B, const Tensor<S>& px, const ForwardOptions& opts) {
                      if (progress) progress(static_cast<size_t>(start + B), data.size());  // (as this batch starts)
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
                        if (kind == ProbeFeatures::cls) row = seq.row(b * T);
                        else row = seq.middleRows(b * T + 1, T - 1).colwise().mean();
                      }
                    });
  return out;
}

/// The shared recipe (train/loop.hpp) with a linear probe's defaults: batch 256, an absolute
/// peak rate of 1e-3, betas 0.9/0.999, no weight decay (MAE's linear probe has none), warm-up
/// then cosine. `epochs`, when positive, sets the length in passes over the features (each
/// ceil(N / batch) steps) for train_linear_probe.
struct ProbeOptions : TrainOptions {
  long epochs = 0;

  ProbeOptions() {
    batch = 256;
    lr = 1e-3;
    beta2 = 0.999;
    weight_decay = 0;
    min_lr = 0;
  }
};

/// A linear head on normalised features: logits = ((x - mean) / sqrt(var + eps)) Wᵀ + b.
template <class S>
struct LinearProbe {
  using scalar_type = S;
  RowVector<S> mean, inv_std;  // the training features' statistics (not trained)
  Linear<S> classifier;        // (classes, features)

  /// The probe MAE starts from for features X (N, D): BatchNorm1d(affine=False, eps=1e-6) at X's
  /// statistics (biased variance), a head of `classes` rows drawn as MAE's (trunc_normal_ std
  /// 0.01, bias 0) from `seed` (independent of the data order).
  static LinearProbe initial(const Matrix<S>& X, Index classes, std::uint64_t seed) {
    LinearProbe p;
    p.mean = X.colwise().mean();
    const RowVector<S> var = (X.rowwise() - p.mean).array().square().colwise().mean();
    p.inv_std = (var.array() + S(1e-6))
                    .unaryExpr([](S x) { return S(1) / std::sqrt(x); })
                    .matrix();  // (Eigen's rsqrt is an estimate)
    p.classifier = Linear<S>(X.cols(), classes);
    auto init_rng = seeded_rng(seed, seed_streams::probe);
    init_weights(p, 0.01, init_rng, InitScheme::vit);
    return p;
  }

  Matrix<S> normalise(const Matrix<S>& x) const {
    return ((x.rowwise() - mean).array().rowwise() * inv_std.array()).matrix();
  }
  Matrix<S> logits(const Matrix<S>& features) const { return classifier.forward(normalise(features)); }

  /// The same map as one Linear on the raw features (the normalisation folded into it), to put
  /// into a ViTForImageClassification's classifier.
  /// @throws vitmae::Error when the classifier was quantised or packed for inference.
  Linear<S> folded() const {
    detail::require(
        classifier.int8.empty() && !classifier.packed_for_inference(),
        "LinearProbe::folded: the classifier is int8 or packed for inference (dequantize / unpack it first)");
    Linear<S> l = classifier;
    l.weight = (classifier.weight.array().rowwise() * inv_std.array()).matrix();
    l.bias = classifier.bias - (l.weight * mean.transpose()).transpose();
    return l;
  }

  /// The probe as safetensors tensors: classifier.weight, classifier.bias, mean, inv_std (for
  /// features a ViTForImageClassification cannot hold: mean tokens, pixels).
  void save(const std::string& path) const {
    io::SafetensorsWriter w;
    w.set_metadata("format", "pt");
    const io::DType dt = io::dtype_of<S>();
    w.add("classifier.weight", classifier.weight.data(), {classifier.weight.rows(), classifier.weight.cols()}, dt);
    w.add("classifier.bias", classifier.bias.data(), {classifier.bias.size()}, dt);
    w.add("mean", mean.data(), {mean.size()}, dt);
    w.add("inv_std", inv_std.data(), {inv_std.size()}, dt);
    w.save(path);
  }

  template <class Self, class V>
  static void parameters(Self& m, const std::string& prefix, V& visit) {
    Linear<S>::parameters(m.classifier, prefix + "classifier.", visit);
  }
  VITMAE_VISIT_PARAMETERS
};

/// Rows of features with a class each: a linear probe's batch.
template <class S>
struct LabelledFeatures {
  Matrix<S> x;  // (B, D), normalised
  std::vector<std::int64_t> labels;
};

/// Endless mini-batches of (x, y): batch k holds positions k*B .. k*B+B-1 of a stream of epochs,
/// each a permutation of the rows seeded by (seed, epoch), so every batch is full and depends on
/// (seed, k) only. It reads x and y where they are: they must outlive it (the features can be
/// gigabytes; a copy would double them).
template <class S>
class FeatureBatches {
 public:
  FeatureBatches(const Matrix<S>& x, const std::vector<std::int64_t>& y, Index batch, std::uint64_t seed)
      : x_(x), y_(y), batch_(batch), seed_(seed) {
    detail::require(x.rows() > 0 && static_cast<size_t>(x.rows()) == y.size(), "linear probe: ", x.rows(),
                    " feature rows for ", y.size(), " labels");
  }

  LabelledFeatures<S> next() {
    LabelledFeatures<S> b{Matrix<S>(batch_, x_.cols()), std::vector<std::int64_t>(static_cast<size_t>(batch_))};
    for (Index k = 0; k < batch_; ++k, ++pos_) {
      const Index n = x_.rows();
      const long epoch = pos_ / n;
      if (epoch != epoch_) {
        order_.resize(static_cast<size_t>(n));
        for (Index i = 0; i < n; ++i) order_[static_cast<size_t>(i)] = i;
        auto rng = seeded_rng(seed_, seed_streams::probe + 1 + static_cast<std::uint64_t>(epoch));
        shuffle(order_, rng);
        epoch_ = epoch;
      }
      const Index r = order_[static_cast<size_t>(pos_ % n)];
      b.x.row(k) = x_.row(r);
      b.labels[static_cast<size_t>(k)] = y_[static_cast<size_t>(r)];
    }
    return b;
  }

 private:
  const Matrix<S>& x_;
  const std::vector<std::int64_t>& y_;
  Index batch_;
  std::uint64_t seed_;
  long pos_ = 0, epoch_ = -1;
  std::vector<Index> order_;
};

/// Training a LinearProbe's head as a TrainingLoop job: cross-entropy on fixed features.
template <class S>
struct LinearProbing : JobBase<ProbeOptions> {
  using Model = LinearProbe<S>;
  using Batch = LabelledFeatures<S>;
  struct Backward {  // one thread, one process: nothing to overlap
    template <class Sum>
    void set_overlap(Sum*) {}
  };
  static constexpr const char* name = "linear probe";

  using JobBase::JobBase;

  void check_model(const Model& m) const {
    detail::require(m.classifier.out_features() >= 2, name, ": needs at least 2 classes, got ",
                    m.classifier.out_features());
  }
  void check(const Batch& b, Index b0, Index b1, Index batch, bool) const {
    detail::require(b.x.rows() == b1 - b0 && static_cast<Index>(b.labels.size()) == batch, name, ": a batch must hold ",
                    batch, " rows and labels, got ", b.x.rows(), " and ", b.labels.size());
  }
  S compute(Backward&, const Model& m, const Batch& b, Model& grads, long, Index) const {
    const Index classes = m.classifier.out_features();
    for (size_t i = 0; i < b.labels.size(); ++i)
      detail::require(b.labels[i] >= 0 && b.labels[i] < classes, name, ": label ", b.labels[i],
                      " is out of range: ", classes, " classes");
    Matrix<S> logits = m.classifier.forward(b.x), dlogits;
    const S loss = ClassificationLoss{"single_label_classification", classes, 0.0}.forward(
        logits, Labels<S>::of_classes(b.labels), &dlogits);
    m.classifier.backward(b.x, dlogits, grads.classifier, nullptr);
    return loss;
  }
  void add_state(nlohmann::json& j) const { j["job"] = "linear_probe"; }
};

/// A linear probe ready to train on the one loop: the head initialised (LinearProbe::initial),
/// the features X normalised by their own mean and variance, full seeded batches of them
/// (FeatureBatches), and `loop` to step: loop.train_step([&] { return next(); }).
template <class S>
struct ProbeTraining {
  Matrix<S> features;  // X normalised (the batches read it: this struct stays where it is made)
  TrainingLoop<LinearProbing<S>> loop;
  FeatureBatches<S> batches;

  ProbeTraining(const Matrix<S>& X, const std::vector<std::int64_t>& y, Index classes, const ProbeOptions& o)
      : ProbeTraining(LinearProbe<S>::initial(X, classes, o.seed), X, y, o) {}
  ProbeTraining(const ProbeTraining&) = delete;
  ProbeTraining& operator=(const ProbeTraining&) = delete;

  LabelledFeatures<S> next() { return batches.next(); }

 private:
  ProbeTraining(LinearProbe<S> initial, const Matrix<S>& X, const std::vector<std::int64_t>& y, const ProbeOptions& o)
      : features(initial.normalise(X)), loop(std::move(initial), o), batches(features, y, o.batch, o.seed) {}
};

/// Trains a LinearProbe on features X (N, D) with labels y in [0, classes) on the training loop:
/// o.epochs passes of ceil(N / batch) steps (or o.steps when epochs is 0). `on_epoch(epoch,
/// probe, mean loss)` is called after every epoch's steps (for validation and logging).
/// @throws vitmae::Error on mismatched sizes or a label out of range.
template <class S>
LinearProbe<S> train_linear_probe(const Matrix<S>& X, const std::vector<std::int64_t>& y, Index classes, ProbeOptions o,
                                  const std::function<void(long, const LinearProbe<S>&, double)>& on_epoch = {}) {
  const Index N = X.rows();
  detail::require(N > 0 && static_cast<size_t>(N) == y.size(), "linear probe: ", N, " feature rows for ", y.size(),
                  " labels");
  detail::require(classes >= 2, "linear probe: needs at least 2 classes, got ", classes);
  for (size_t i = 0; i < y.size(); ++i)
    detail::require(y[i] >= 0 && y[i] < classes, "linear probe: label ", y[i], " of sample ", i,
                    " is out of range: ", classes, " classes");
  const long per_epoch = std::max<long>(1, (N + o.batch - 1) / o.batch);
  if (o.epochs > 0) o.steps = o.epochs * per_epoch;
  ProbeTraining<S> probe(X, y, classes, o);
  auto& loop = probe.loop;
  double loss_sum = 0;
  while (loop.step() < o.steps) {
    loss_sum += loop.train_step([&] { return probe.next(); }).loss;
    if (loop.step() % per_epoch == 0 && on_epoch) {
      on_epoch(loop.step() / per_epoch, loop.model(), loss_sum / static_cast<double>(per_epoch));
      loss_sum = 0;
    }
  }
  return loop.model();
}

}  // namespace vitmae::train
