// SPDX-License-Identifier: Apache-2.0
// Fine-tuning ViTForImageClassification with MAE's recipe (main_finetune.py): AdamW with
// layer-wise lr decay, no weight decay on biases, norms, cls_token and position_embeddings,
// label smoothing, linear warm-up then cosine, accumulation and clipping; and the evaluation
// (top-1, top-5, per-class accuracy, confusion matrix).
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <memory>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "vitmae/image_processor.hpp"
#include "vitmae/train/backward.hpp"
#include "vitmae/train/data_parallel.hpp"
#include "vitmae/train/labelled.hpp"
#include "vitmae/train/optimizer.hpp"
#include "vitmae/train/trainer.hpp"
#include "vitmae/train/world.hpp"
#include "vitmae/vit_for_image_classification.hpp"

namespace vitmae::train {

struct FineTuneOptions {
  long steps = 1000;             // optimiser steps
  int batch = 64;                // images per micro-batch
  int accum = 1;                 // micro-batches per step
  int threads = 1;               // threads over each batch (BatchSlices)
  double base_lr = 1e-3;         // MAE's blr: the peak rate is base_lr * batch * accum / 256
  double min_lr = 1e-6;
  long warmup_steps = 0;
  double weight_decay = 0.05;
  double layer_decay = 0.75;     // lr x layer_decay^(num_layers+1-layer_id); 1: none
  double label_smoothing = 0.1;
  double clip_grad = 0;          // max gradient norm; 0: none
  double beta1 = 0.9, beta2 = 0.999;
  std::uint64_t seed = 0;

  double peak_lr() const { return base_lr * batch * accum / 256.0; }
};

/// One labelled batch: pixel_values [B, C, H, W] and a class per image. In a data-parallel run
/// (train/world.hpp) `pixels` holds this rank's slice of the images and `labels` the whole
/// batch's (a slice's share of the loss depends on the labels the batch counts).
template <class S>
struct LabelledBatch {
  Tensor<S> pixels;
  std::vector<std::int64_t> labels;
};

/// Fine-tunes a classifier, one optimiser step at a time. A step is a function of the model,
/// the optimiser state and its batches: the same threads give the same bits. Data parallel as
/// the pre-training Trainer (train/trainer.hpp): N ranks of 1 thread give the bits of 1 process
/// of N threads.
template <class S>
class ClassifierTrainer {
 public:
  using Model = ViTForImageClassification<S>;

  /// `world`: the ranks of a data-parallel run (nullptr: this process alone).
  ClassifierTrainer(Model model, FineTuneOptions o, std::shared_ptr<World> world = nullptr)
      : model_(std::move(model)), opts_(o), grads_(zero_grads_like(model_)),
        adam_(model_, AdamWOptions{o.beta1, o.beta2, 1e-8, o.weight_decay}), dp_(std::move(world), o.batch, "ClassifierTrainer") {
    detail::require(o.steps > 0, "ClassifierTrainer: steps must be positive, got ", o.steps);
    detail::require(o.batch > 0 && o.accum > 0, "ClassifierTrainer: batch and accum must be positive");
    detail::require(o.layer_decay > 0 && o.layer_decay <= 1, "ClassifierTrainer: layer_decay must be in (0, 1], got ", o.layer_decay);
    for (auto [name, v] : {std::pair<const char*, double>{"base_lr", o.base_lr}, {"min_lr", o.min_lr},
                           {"weight_decay", o.weight_decay}, {"clip_grad", o.clip_grad}, {"label_smoothing", o.label_smoothing}})
      detail::require(std::isfinite(v) && v >= 0, "ClassifierTrainer: ", name, " must be a finite number >= 0, got ", v);
    detail::require(o.warmup_steps >= 0 && o.warmup_steps <= o.steps, "ClassifierTrainer: warmup_steps must be in [0, steps ",
                    o.steps, "], got ", o.warmup_steps);
    const auto& c = model_.config();
    detail::require(c.hidden_dropout_prob == 0 && c.attention_probs_dropout_prob == 0,
                    "ClassifierTrainer: dropout is not implemented in training (config.json has hidden_dropout_prob ",
                    c.hidden_dropout_prob, ", attention_probs_dropout_prob ", c.attention_probs_dropout_prob, "): set them to 0");
    set_overlap(true);
  }

  Model& model() { return model_; }
  const Model& model() const { return model_; }
  const FineTuneOptions& options() const { return opts_; }
  AdamW<Model>& optimizer() { return adam_; }
  const AdamW<Model>& optimizer() const { return adam_; }
  long step() const { return step_; }
  const std::vector<StepRecord>& history() const { return history_; }

  /// The world, the time spent summing over ranks (train/data_parallel.hpp).
  const DataParallel<S>& data_parallel() const { return dp_; }
  /// The images [first, second) of every micro-batch that this rank computes.
  std::pair<Index, Index> slice() const { return dp_.slice(opts_.batch); }
  /// Sums over ranks during the backward, a layer at a time (the default), or after it.
  void set_overlap(bool on) { parallel_.set_overlap(dp_.set_overlap(on)); }

  double learning_rate(long s) const {
    return mae_learning_rate(s, opts_.warmup_steps, opts_.steps, opts_.peak_lr(), opts_.min_lr);
  }

  /// One optimiser step over `accum` micro-batches from next_batch(). Returns its record.
  StepRecord train_step(const std::function<LabelledBatch<S>()>& next_batch) {
    const auto t0 = std::chrono::steady_clock::now();
    zero_parameters(grads_);
    const Index b0 = slice().first, b1 = slice().second;  // (lambdas below capture them: not a structured binding)
    double loss = 0;
    for (int a = 0; a < opts_.accum; ++a) {
      LabelledBatch<S> b;
      loss += static_cast<double>(dp_.micro_batch(
          a, grads_,
          [&] {
            b = next_batch();
            detail::require(b.pixels.dim() == 4 && b.pixels.size(0) == b1 - b0 && static_cast<Index>(b.labels.size()) == opts_.batch,
                            "ClassifierTrainer: a batch must hold ", b1 - b0, " images", dp_.alone() ? "" : " (this rank's slice)",
                            " and ", opts_.batch, " labels, got ", detail::shape_str(b.pixels.shape), " and ", b.labels.size());
          },
          [&] {
            return parallel_.run(model_, b.pixels, Labels<S>::of_classes(b.labels), grads_, opts_.threads, opts_.label_smoothing, {},
                                 b0);
          }));
    }
    loss /= opts_.accum;
    const double norm = finish_gradients(grads_, opts_.accum, opts_.clip_grad);
    // Before the update, so that the weights and the optimiser's moments stay those of the last good step.
    together(dp_.world(), [&] {  // every rank has the same loss: all stop, rank 0 reports
      detail::require(std::isfinite(loss) && std::isfinite(norm), "ClassifierTrainer: the loss became ", loss,
                      " (gradient norm ", norm, ") at step ", step_ + 1, " (learning rate too high? try a lower --base-lr or --clip-grad)");
    });
    const double lr = learning_rate(step_);
    const long layers = static_cast<long>(model_.config().num_hidden_layers);
    const double decay = opts_.layer_decay;
    adam_.step(model_, grads_, lr, [&](const Parameter<S>& p) { return layer_decay_scale(p.name, layers, decay); });
    ++step_;
    StepRecord r{step_, loss, lr, norm, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()};
    history_.push_back(r);
    return r;
  }

  /// Puts a checkpoint's state back (train/checkpoint.hpp reads it): weights, step, history;
  /// the optimiser's moments are restored through optimizer().
  void restore(Model model, long step, std::vector<StepRecord> history) {
    model_ = std::move(model);
    adam_.set_step_count(step);
    step_ = step;
    history_ = std::move(history);
  }

  nlohmann::json state_json() const {
    nlohmann::json j = trainer_state_json(step_, opts_, opts_.warmup_steps, history_, dp_.world().size());
    j["layer_decay"] = opts_.layer_decay;
    j["label_smoothing"] = opts_.label_smoothing;
    return j;
  }

 private:
  Model model_;
  FineTuneOptions opts_;
  Model grads_;
  AdamW<Model> adam_;
  ParallelClassifierBackward<S> parallel_;
  DataParallel<S> dp_;
  long step_ = 0;
  std::vector<StepRecord> history_;
};

/// What evaluate measures on a labelled set.
struct Evaluation {
  long count = 0;
  double top1 = 0, top5 = 0;  // fractions in [0, 1]
  double loss = 0;            // mean cross-entropy (no smoothing)
  std::vector<std::vector<long>> confusion;  // [true class][predicted class]

  /// Per-class accuracy (NaN for a class with no sample).
  std::vector<double> per_class() const {
    std::vector<double> out;
    for (size_t c = 0; c < confusion.size(); ++c) {
      const long n = std::accumulate(confusion[c].begin(), confusion[c].end(), 0L);
      out.push_back(n ? static_cast<double>(confusion[c][c]) / static_cast<double>(n) : std::nan(""));
    }
    return out;
  }

  /// The measures of logits (samples, classes) against the true classes y (a tie goes to the
  /// lower class index, as torch's topk on CPU).
  /// @throws vitmae::Error when y does not fit the logits.
  template <class S>
  static Evaluation of(const Matrix<S>& logits, const std::vector<std::int64_t>& y) {
    const Index N = logits.cols();
    detail::require(static_cast<size_t>(logits.rows()) == y.size(), "evaluation: ", logits.rows(), " rows of logits for ", y.size(),
                    " labels");
    Evaluation e;
    e.confusion.assign(static_cast<size_t>(N), std::vector<long>(static_cast<size_t>(N), 0));
    for (size_t k = 0; k < y.size(); ++k)
      detail::require(y[k] >= 0 && y[k] < N, "evaluation: label ", y[k], " of sample ", k, " is out of range: ", N, " classes");
    e.count = static_cast<long>(y.size());
    if (e.count == 0) return e;
    e.loss = static_cast<double>(ClassificationLoss{"single_label_classification", N, 0.0}.forward<S>(logits, Labels<S>::of_classes(y), nullptr));
    const Index k5 = std::min<Index>(5, N);
    std::vector<Index> order(static_cast<size_t>(N));
    for (size_t k = 0; k < y.size(); ++k) {
      const auto row = logits.row(static_cast<Index>(k));
      std::iota(order.begin(), order.end(), Index(0));
      std::stable_sort(order.begin(), order.end(), [&](Index a, Index b) { return row(a) > row(b); });
      const Index truth = y[k];
      e.top1 += order[0] == truth;
      e.top5 += std::find(order.begin(), order.begin() + k5, truth) != order.begin() + k5;
      ++e.confusion[static_cast<size_t>(truth)][static_cast<size_t>(order[0])];
    }
    e.top1 /= static_cast<double>(e.count), e.top5 /= static_cast<double>(e.count);
    return e;
  }
};

/// f(start, n, pixel_values, opts) on `data`'s images, `batch` at a time, preprocessed by `proc`
/// (resize and normalisation, no augmentation) with `channels`; opts.interpolate_pos_encoding is
/// set when the images' size is not the model's `image_size`.
template <class S, class F>
void for_each_batch(const LabelledDataset& data, const ImageProcessor& proc, int channels, Index image_size, int batch, F&& f) {
  for (size_t start = 0; start < data.size(); start += static_cast<size_t>(batch)) {
    const size_t n = std::min(data.size() - start, static_cast<size_t>(batch));
    std::vector<io::Image8> imgs;
    for (size_t k = 0; k < n; ++k) imgs.push_back(data.image(start + k, channels));
    const Tensor<S> px = proc.preprocess<S>(imgs);
    ForwardOptions opts;
    opts.interpolate_pos_encoding = px.size(2) != image_size || px.size(3) != image_size;
    f(static_cast<Index>(start), static_cast<Index>(n), px, opts);
  }
}

/// The classifier on every image of `data` (the processor's resize and normalisation, no
/// augmentation), `batch` at a time. @throws vitmae::Error when the set's classes are not the
/// model's labels.
template <class S>
Evaluation evaluate(const ViTForImageClassification<S>& m, const LabelledDataset& data, const ImageProcessor& proc, int batch = 64) {
  const Index N = m.num_labels();
  detail::require(static_cast<Index>(data.classes.size()) == N, "evaluate: the set has ", data.classes.size(),
                  " classes, the model ", N, " labels");
  Matrix<S> logits(static_cast<Index>(data.size()), N);
  for_each_batch<S>(data, proc, static_cast<int>(m.config().num_channels), m.config().image_size, batch,
                    [&](Index start, Index n, const Tensor<S>& px, const ForwardOptions& opts) {
                      logits.middleRows(start, n) = m.forward(px, nullptr, opts).logits;
                    });
  return Evaluation::of(logits, data.labels());
}

}  // namespace vitmae::train
