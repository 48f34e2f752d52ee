// SPDX-License-Identifier: Apache-2.0
// Fine-tuning ViTForImageClassification with MAE's recipe (main_finetune.py): AdamW with
// layer-wise lr decay, no weight decay on biases, norms, cls_token and position_embeddings,
// label smoothing, linear warm-up then cosine, accumulation and clipping; and the evaluation
// (top-1, top-5, per-class accuracy, confusion matrix).
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "vitmae/images/image_processor.hpp"
#include "vitmae/models/vit_for_image_classification.hpp"
#include "vitmae/train/backward.hpp"
#include "vitmae/train/labelled.hpp"
#include "vitmae/train/loop.hpp"
#include "vitmae/train/optimizer.hpp"
#include "vitmae/train/world.hpp"
#include "vitmae/weights/checkpoint.hpp"

namespace vitmae::train {

/// The shared recipe (train/loop.hpp) with MAE's fine-tuning defaults (main_finetune.py: blr
/// 1e-3, min_lr 1e-6, betas 0.9/0.999) and the two options only fine-tuning has.
struct FineTuneOptions : TrainOptions {
  double layer_decay = 0.75;  // lr x layer_decay^(num_layers+1-layer_id); 1: none
  double label_smoothing = 0.1;

  FineTuneOptions() {
    base_lr = 1e-3;
    min_lr = 1e-6;
    beta2 = 0.999;
  }

  /// @throws vitmae::Error naming `who` and the option that is out of range.
  void validate(const char* who) const {
    TrainOptions::validate(who);
    detail::require(layer_decay > 0 && layer_decay <= 1, who, ": layer_decay must be in (0, 1], got ", layer_decay);
    detail::require(label_smoothing >= 0 && label_smoothing < 1, who, ": label_smoothing must be in [0, 1), got ",
                    label_smoothing);
  }
};

/// One labelled batch: pixel_values [B, C, H, W] and a class per image. In a data-parallel run
/// (train/world.hpp) `pixels` holds this rank's slice of the images and `labels` the whole
/// batch's (a slice's share of the loss depends on the labels the batch counts).
template <class S>
struct LabelledBatch {
  Tensor<S> pixels;
  std::vector<std::int64_t> labels;
};

/// Fine-tuning a classifier as a TrainingLoop job: cross-entropy with label smoothing, AdamW
/// with layer-wise lr decay.
template <class S>
struct ClassifierFineTuning : JobBase<FineTuneOptions> {
  using Model = ViTForImageClassification<S>;
  using Batch = LabelledBatch<S>;
  using Backward = ParallelClassifierBackward<S>;
  static constexpr const char* name = "ClassifierTrainer";

  using JobBase::JobBase;

  void check_model(const Model& m) const { require_no_dropout(m.config(), name); }
  void check(const Batch& b, Index b0, Index b1, Index batch, bool alone) const {
    detail::require(b.pixels.dim() == 4 && b.pixels.size(0) == b1 - b0 && static_cast<Index>(b.labels.size()) == batch,
                    name, ": a batch must hold ", b1 - b0, " images", alone ? "" : " (this rank's slice)", " and ",
                    batch, " labels, got ", detail::shape_str(b.pixels.shape), " and ", b.labels.size());
  }
  S compute(Backward& backward, const Model& m, const Batch& b, Model& grads, long, Index b0) const {
    return backward.run(m, b.pixels, Labels<S>::of_classes(b.labels), grads, opts.threads, opts.label_smoothing, {},
                        b0);
  }
  double lr_scale(const Model& m, const Parameter<S>& p) const {
    return layer_decay_scale(p.name, static_cast<long>(m.config().num_hidden_layers), opts.layer_decay);
  }
  void add_state(nlohmann::json& j) const {
    j["layer_decay"] = opts.layer_decay;
    j["label_smoothing"] = opts.label_smoothing;
  }
};

/// The fine-tuning loop: ClassifierTrainer<S>(model, options, world).train_step(next_batch).
template <class S>
using ClassifierTrainer = TrainingLoop<ClassifierFineTuning<S>>;

/// The classes (in row order) that fine-tuning from `path` trains, for the training set `data`. A ViT classifier's rows
/// keep their names: its id2label is returned when it holds every class of the data, so that each class maps to the row
/// trained for it. A checkpoint without a classifier (an MAE checkpoint, a bare encoder) takes the data's classes, and
/// so does `relabel`: the classifier is then drawn afresh (`*fresh`).
/// @throws vitmae::RequestError naming a class the checkpoint's id2label does not have.
inline std::vector<std::string> classes_for_fine_tuning(const std::string& path, const LabelledDataset& data,
                                                        bool relabel, bool* fresh = nullptr) {
  const std::vector<std::string>& data_classes = data.classes;
  const std::string& data_name = data.name();
  if (fresh) *fresh = false;
  const std::string config_path = checkpoint_config_name(path, "");
  if (!io::file_exists(config_path)) return data_classes;  // an MAE-release .pth: no classifier
  const nlohmann::json j = io::read_json_file(config_path, "config file");
  if (j.value("model_type", std::string()) != "vit") return data_classes;
  if (!open_pretrained_weights(path)->contains("classifier.weight")) return data_classes;
  const ViTConfig c = ViTConfig::from_json(j, config_path);
  const std::vector<std::string>& rows = c.id2label;
  for (const std::string& name : data.used_classes())  // a class no sample has needs no row
    if (std::find(rows.begin(), rows.end(), name) == rows.end()) {
      if (relabel) {
        if (fresh) *fresh = true;
        return data_classes;
      }
      std::string have;
      for (size_t k = 0; k < rows.size() && k < 12; ++k) have += (k ? ", " : "") + rows[k];
      if (rows.size() > 12) have += ", ...";
      throw RequestError(detail::concat("vitmae: ", config_path, ": class '", name, "' of ", data_name,
                                        " is not one of the checkpoint's ", rows.size(), " labels (", have,
                                        "); --relabel draws a fresh classifier for the data's classes"));
    }
  return rows;
}

/// Where a fine-tuning run's classifier comes from: one of a checkpoint to continue (`resume`),
/// one to start from (`init`: MAE, ViT or an encoder), or an HF config.json to draw from
/// (`config`, "vit" or "vit_mae").
struct ClassifierSource {
  std::string resume, init, config;
  bool relabel = false;    // with init: a fresh classifier when its id2label lacks a class of the data
  std::uint64_t seed = 0;  // the draw of a fresh classifier or model
};

/// The classifier a fine-tuning run on `train` trains, its rows named by the classes it is
/// given back in `train` (classes_for_fine_tuning: a classifier's rows keep their names;
/// `train`'s labels are renumbered to them). A line for the user about what was drawn afresh
/// goes to `notes`. Its problem_type is single_label_classification.
/// @throws vitmae::Error (the file, what was expected) or RequestError (a class unknown to
/// the checkpoint's id2label without relabel; a resumed checkpoint of other classes).
template <class S>
ViTForImageClassification<S> fine_tuning_classifier(const ClassifierSource& from, LabelledDataset& train,
                                                    std::vector<std::string>* notes) {
  const std::string& path = from.init.empty() ? from.resume : from.init;
  bool fresh = false;
  if (!path.empty()) {
    require_trainable_weights(path);
    const std::vector<std::string> rows =
        classes_for_fine_tuning(path, train, from.relabel && from.resume.empty(), &fresh);
    if (rows != train.classes) train.use_classes_of(rows, train.name(), "the checkpoint's");
  }
  std::optional<ViTForImageClassification<S>> m;
  if (!from.resume.empty()) {
    m.emplace(ViTForImageClassification<S>::from_pretrained(from.resume));
    detail::require(m->config().id2label == train.classes, from.resume,
                    "/config.json: the checkpoint's classes differ from the training set's");
  } else if (!from.init.empty()) {
    ClassifierLoadOptions lo;
    lo.labels = train.classes;
    lo.seed = from.seed;
    std::vector<std::string> said;
    m.emplace(ViTForImageClassification<S>::from_pretrained(from.init, lo, &said));
    if (fresh) {  // relabel: the checkpoint's rows belong to other classes (the same draw as from_pretrained's)
      std::mt19937_64 rng(from.seed);
      init_weights(m->classifier, m->config().initializer_range, rng, InitScheme::vit);
      const std::string why = "--relabel: " + from.init + "'s classifier is for other classes: drawn afresh for the " +
                              std::to_string(train.classes.size()) + " classes of " + train.name();
      if (!said.empty() && said.back().find("classifier.weight") != std::string::npos)
        said.back() = why;  // one line about it
      else said.push_back(why);
    }
    if (notes) notes->insert(notes->end(), said.begin(), said.end());
  } else {
    const nlohmann::json j = io::read_json_file(from.config, "config file");
    ViTConfig c = j.value("model_type", std::string()) == "vit_mae"
                      ? ViTConfig::from_mae(Config::from_json(j, from.config), train.classes)
                      : ViTConfig::from_json(j, from.config);
    c.id2label = train.classes;
    c.validate(from.config);
    m.emplace(c);
    auto rng = seeded_rng(from.seed, seed_streams::init_vit);
    m->init_weights(rng);
  }
  m->vit.config.problem_type = "single_label_classification";  // class labels, whatever the checkpoint said
  return std::move(*m);
}

/// What evaluate measures on a labelled set.
struct Evaluation {
  long count = 0;
  double top1 = 0, top5 = 0;                 // fractions in [0, 1]; top5 NaN with 5 classes or fewer (always 1 there)
  double loss = 0;                           // mean cross-entropy (no smoothing)
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
    detail::require(static_cast<size_t>(logits.rows()) == y.size(), "evaluation: ", logits.rows(),
                    " rows of logits for ", y.size(), " labels");
    Evaluation e;
    e.confusion.assign(static_cast<size_t>(N), std::vector<long>(static_cast<size_t>(N), 0));
    for (size_t k = 0; k < y.size(); ++k)
      detail::require(y[k] >= 0 && y[k] < N, "evaluation: label ", y[k], " of sample ", k, " is out of range: ", N,
                      " classes");
    e.count = static_cast<long>(y.size());
    if (e.count == 0) return e;
    e.loss = static_cast<double>(ClassificationLoss{"single_label_classification", N, 0.0}.forward<S>(
        logits, Labels<S>::of_classes(y), nullptr));
    const Index k5 = std::min<Index>(5, N);
    if (N <= 5) e.top5 = std::nan("");
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

  /// Whether top-5 says anything: more than 5 classes.
  bool has_top5() const { return confusion.size() > 5; }

  /// "top-1 91.67%  top-5 99.80%  loss 0.2731" (top-5 only with more than 5 classes).
  std::string summary() const {
    char b[96];
    std::snprintf(b, sizeof b, "top-1 %.2f%%", 100 * top1);
    std::string out = b;
    if (has_top5()) std::snprintf(b, sizeof b, "  top-5 %.2f%%", 100 * top5), out += b;
    std::snprintf(b, sizeof b, "  loss %.4f", loss);
    return out + b;
  }

  /// per_class.csv: class,label,count,accuracy (a row a class; accuracy empty without samples).
  std::string per_class_csv(const std::vector<std::string>& classes) const {
    std::string out = "class,label,count,accuracy\n";
    const std::vector<double> acc = per_class();
    for (size_t c = 0; c < confusion.size(); ++c) {
      const long n = std::accumulate(confusion[c].begin(), confusion[c].end(), 0L);
      char v[32] = "";
      if (n) std::snprintf(v, sizeof v, "%.6f", acc[c]);
      out += std::to_string(c) + "," + csv_field(c < classes.size() ? classes[c] : std::to_string(c)) + "," +
             std::to_string(n) + "," + v + "\n";
    }
    return out;
  }

  /// confusion.csv: a row per true class, a column per predicted class, with the names.
  std::string confusion_csv(const std::vector<std::string>& classes) const {
    auto name = [&](size_t c) { return csv_field(c < classes.size() ? classes[c] : std::to_string(c)); };
    std::string out = "true\\predicted";
    for (size_t c = 0; c < confusion.size(); ++c) out += "," + name(c);
    out += "\n";
    for (size_t c = 0; c < confusion.size(); ++c) {
      out += name(c);
      for (long v : confusion[c]) out += "," + std::to_string(v);
      out += "\n";
    }
    return out;
  }

  /// A CSV field (RFC 4180): quoted, inner quotes doubled.
  static std::string csv_field(const std::string& v) {
    std::string out = "\"";
    for (char ch : v) out += ch == '"' ? std::string("\"\"") : std::string(1, ch);
    return out + "\"";
  }
};

/// f(start, n, pixel_values, opts) on `data`'s images, `batch` at a time, preprocessed by `proc`
/// (resize and normalisation, no augmentation) with `channels`; opts.interpolate_pos_encoding is
/// set when the images' size is not the model's `image_size`.
template <class S, class F>
void for_each_batch(const LabelledDataset& data, const ImageProcessor& proc, int channels, Index image_size, int batch,
                    F&& f) {
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
Evaluation evaluate(const ViTForImageClassification<S>& m, const LabelledDataset& data, const ImageProcessor& proc,
                    int batch = 64) {
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
