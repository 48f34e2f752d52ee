// SPDX-License-Identifier: Apache-2.0
// transformers' ViTForImageClassification (modeling_vit.py): ViTModel without pooler (the
// encoder of ViTMAEModel with ViT's embeddings: learned positions, no masking; encoder_model.hpp)
// and a Linear classifier on token 0, with HF's problem_type losses; each with
// its backward. Loading from a ViT checkpoint or from an MAE one (the encoder's weights).
#pragma once

#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "vitmae/models/encoder_model.hpp"
#include "vitmae/modules/embeddings.hpp"
#include "vitmae/modules/encoder.hpp"
#include "vitmae/modules/layer_norm.hpp"
#include "vitmae/modules/linear.hpp"
#include "vitmae/vit_config.hpp"
#include "vitmae/weights/checkpoint.hpp"
#include "vitmae/weights/init.hpp"
#include "vitmae/weights/state_dict.hpp"

namespace vitmae {

/// The labels of a batch: one class index per sample (torch's integer labels:
/// single-label classification; -100 is ignored, as CrossEntropyLoss's ignore_index), or float
/// targets (B, num_labels) for multi-label or regression ((B, 1) or (B) for one label).
template <class Scalar = float>
struct Labels {
  std::vector<std::int64_t> classes;  // integer labels, one per sample
  Matrix<Scalar> targets;             // float labels (B, N)
  bool integer = true;

  static Labels of_classes(std::vector<std::int64_t> c) { return Labels{std::move(c), {}, true}; }
  static Labels of_targets(Matrix<Scalar> t) { return Labels{{}, std::move(t), false}; }
  Index batch() const { return integer ? static_cast<Index>(classes.size()) : targets.rows(); }
};

inline constexpr std::int64_t kIgnoreIndex = -100;

/// HF's loss for ViTForImageClassification: problem_type from the config, or when unset:
/// num_labels 1 -> "regression" (MSE of logits.squeeze() and labels.squeeze()), integer labels ->
/// "single_label_classification" (cross-entropy, mean over the labels that are not -100, with
/// torch's label_smoothing), else "multi_label_classification" (BCEWithLogits, mean).
struct ClassificationLoss {
  std::string problem_type;  // as configured ("" decides from the labels)
  Index num_labels = 0;
  double label_smoothing = 0.0;

  std::string resolved(bool integer_labels) const {
    if (!problem_type.empty()) return problem_type;
    if (num_labels == 1) return "regression";
    return integer_labels ? "single_label_classification" : "multi_label_classification";
  }

  /// logits (B, N) -> the loss; dlogits, when given, receives dloss/dlogits.
  /// @throws vitmae::Error when the labels do not fit the logits or the problem type.
  template <class Scalar>
  Scalar forward(const Matrix<Scalar>& logits, const Labels<Scalar>& labels, Matrix<Scalar>* dlogits) const {
    const Index B = logits.rows(), N = logits.cols();
    detail::require(labels.batch() == B, "ViTForImageClassification: ", labels.batch(), " labels for a batch of ", B);
    const std::string type = resolved(labels.integer);
    if (dlogits) dlogits->setZero(B, N);
    if (type == "single_label_classification") {
      detail::require(labels.integer,
                      "ViTForImageClassification: problem_type single_label_classification needs integer labels");
      detail::require(label_smoothing >= 0.0 && label_smoothing <= 1.0, "label_smoothing must be in [0, 1], got ",
                      label_smoothing);
      const Scalar eps = static_cast<Scalar>(label_smoothing);
      Index counted = 0;
      for (Index b = 0; b < B; ++b) {
        const std::int64_t y = labels.classes[static_cast<size_t>(b)];
        detail::require(y == kIgnoreIndex || (y >= 0 && y < N), "ViTForImageClassification: label ", y, " of sample ",
                        b, " is out of range: the model has ", N, " labels (0 ... ", N - 1, "; -100 is ignored)");
        counted += y != kIgnoreIndex;
      }
      Scalar sum = 0;
      for (Index b = 0; b < B; ++b) {
        const std::int64_t y = labels.classes[static_cast<size_t>(b)];
        if (y == kIgnoreIndex) continue;
        const Scalar mx = logits.row(b).maxCoeff();
        const Scalar lse = mx + std::log((logits.row(b).array() - mx).exp().sum());
        const Scalar nll = lse - logits(b, y);
        const Scalar smooth = lse - logits.row(b).mean();  // -mean over classes of log p
        sum += (Scalar(1) - eps) * nll + eps * smooth;
        if (dlogits) {
          auto d = dlogits->row(b);
          d = ((logits.row(b).array() - lse).exp() - eps / static_cast<Scalar>(N)).matrix();
          d(y) -= Scalar(1) - eps;
          d /= static_cast<Scalar>(counted);
        }
      }
      return sum / static_cast<Scalar>(counted);  // 0/0 = NaN when every label is ignored, as torch
    }
    const Matrix<Scalar> t = labels.integer ? integer_targets<Scalar>(labels, B) : labels.targets;
    if (type == "regression") {
      const Index n = B * N;
      detail::require(t.size() == n, "ViTForImageClassification: regression labels have ", t.size(),
                      " values, expected ", n, " (batch ", B, " x num_labels ", N, ")");
      Scalar sum = 0;  // logits and t are row-major: element i of each is sample i / N, label i % N
      for (Index i = 0; i < n; ++i) {
        const Scalar d = logits.data()[i] - t.data()[i];
        sum += d * d;
        if (dlogits) dlogits->data()[i] = d * (Scalar(2) / static_cast<Scalar>(n));
      }
      return sum / static_cast<Scalar>(n);
    }
    detail::require(type == "multi_label_classification", "ViTForImageClassification: unknown problem_type '", type,
                    "'");
    detail::require(t.rows() == B && t.cols() == N, "ViTForImageClassification: multi-label targets have shape (",
                    t.rows(), ", ", t.cols(), "), expected (", B, ", ", N, ")");
    Scalar sum = 0;
    const Scalar n = static_cast<Scalar>(B * N);
    for (Index b = 0; b < B; ++b)
      for (Index k = 0; k < N; ++k) {
        const Scalar x = logits(b, k), y = t(b, k);
        // torch: (1 - y) x + max(-x, 0) + log(exp(-max(-x, 0)) + exp(-x - max(-x, 0)))
        const Scalar m = std::max(-x, Scalar(0));
        sum += (Scalar(1) - y) * x + m + std::log(std::exp(-m) + std::exp(-x - m));
        if (dlogits) (*dlogits)(b, k) = (Scalar(1) / (Scalar(1) + std::exp(-x)) - y) / n;
      }
    return sum / n;
  }

 private:
  template <class Scalar>
  static Matrix<Scalar> integer_targets(const Labels<Scalar>& labels, Index B) {
    Matrix<Scalar> t(B, 1);
    for (Index b = 0; b < B; ++b) t(b, 0) = static_cast<Scalar>(labels.classes[static_cast<size_t>(b)]);
    return t;
  }
};

/// ViTImageClassifierOutput, per sample like ModelOutput: last_hidden_state[b] (1+L, hidden).
template <class Scalar = float>
struct ClassificationOutput {
  std::optional<Scalar> loss;                              // when labels were given
  Matrix<Scalar> logits;                                   // (B, num_labels), or (B, hidden) with num_labels 0
  std::vector<Matrix<Scalar>> last_hidden_state;           // B x (1+L, hidden), after the final layernorm
  std::vector<std::vector<Matrix<Scalar>>> hidden_states;  // [layer][b]: inputs of each layer, then the last output
  std::vector<std::vector<Matrix<Scalar>>> attentions;     // [layer][b]: (heads*(1+L), 1+L)
};

/// The model_type of a checkpoint's config.json ("vit", "vit_mae", ...; "vit_mae" for a
/// preset, "" when config.json has none). @throws vitmae::Error when config.json cannot be read.
inline std::string checkpoint_model_type(const std::string& path, const std::string& preset = "") {
  if (!preset.empty()) return "vit_mae";
  const nlohmann::json j = io::read_json_file(checkpoint_config_name(path, preset), "config file");
  const auto it = j.find("model_type");
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

/// How from_pretrained builds a classifier (see ViTForImageClassification::from_pretrained).
struct ClassifierLoadOptions {
  /// The classes, by name. Required for an MAE checkpoint; for a ViT one they replace its
  /// id2label (a classifier of another size is then drawn afresh).
  std::optional<std::vector<std::string>> labels;
  /// Config::preset name for an MAE-release .pth without config.json.
  std::string preset;
  /// Seed of a classifier drawn afresh (truncated normal, std initializer_range; bias 0).
  std::uint64_t seed = 0;
};

template <class Scalar = float>
struct ViTForImageClassification {
  using scalar_type = Scalar;
  using config_type = ViTConfig;
  ViTModel<Scalar> vit;
  Linear<Scalar> classifier;  // (num_labels, hidden); absent (Identity) when num_labels is 0

  struct Cache {
    using Gradient = Matrix<Scalar>;  // the type of dL/dpixel_values, (B, C*H*W)
    typename ViTModel<Scalar>::Cache vit;
    Matrix<Scalar> sequence, cls, logits;  // (B*(1+L), hidden), (B, hidden), (B, N)
    Matrix<Scalar> dlogits, dcls, dsequence;

    /// f(layer gradients) after each encoder layer's backward (LayerStackCache).
    void on_layer_done(const std::function<void(Layer<Scalar>&)>& f) { vit.encoder.layer_done = f; }
  };

  explicit ViTForImageClassification(const ViTConfig& c, Storage s = Storage::zeros)
      : vit(c, s), classifier(c.hidden_size, c.num_labels(), true, s) {}

  const ViTConfig& config() const { return vit.config; }
  Index num_labels() const { return static_cast<Index>(vit.config.num_labels()); }

  /// Random weights as HF's ViTPreTrainedModel._init_weights: every weight, the CLS token and the
  /// position table ~ truncated N(0, initializer_range) in [-2, 2]; biases 0; LayerNorm scales 1.
  template <class Engine>
  void init_weights(Engine& rng) {
    vitmae::init_weights(*this, config().initializer_range, rng, InitScheme::vit);
  }

  /// The forward on a batch: logits land in c.logits (B, N); returns the loss of `labels` (HF's
  /// problem_type rules, see ClassificationLoss) or NaN without labels. Keep `c` for backward.
  Scalar forward(const Tensor<Scalar>& pixel_values, const ForwardOptions& opts, Cache& c,
                 const Labels<Scalar>* labels = nullptr, double label_smoothing = 0.0,
                 std::vector<Matrix<Scalar>>* hidden_states = nullptr,
                 std::vector<Matrix<Scalar>>* attentions = nullptr) const {
    vit.forward(pixel_values, opts, c.sequence, c.vit, hidden_states, attentions);
    const Index B = pixel_values.size(0), T = c.vit.seq_len;
    c.cls.resize(B, vit.config.hidden_size);
    for (Index b = 0; b < B; ++b) c.cls.row(b) = c.sequence.row(b * T);  // sequence_output[:, 0, :]
    if (num_labels() > 0) classifier.forward(c.cls, c.logits);
    else c.logits = c.cls;  // nn.Identity
    if (!labels) return std::numeric_limits<Scalar>::quiet_NaN();
    return loss_of(label_smoothing).forward(c.logits, *labels, &c.dlogits);
  }

  /// After forward with labels: adds every parameter's gradient of the loss into g; dpixels,
  /// when given, receives dL/dpixel_values (B, C*H*W) (added to). `dlogits_scale` multiplies
  /// the loss's gradient (a slice of a larger batch passes its share).
  void backward(Cache& c, ViTForImageClassification& g, Matrix<Scalar>* dpixels = nullptr,
                Scalar dlogits_scale = Scalar(1)) const {
    const Index B = c.cls.rows(), T = c.vit.seq_len;
    if (dlogits_scale != Scalar(1)) c.dlogits *= dlogits_scale;
    if (num_labels() > 0) classifier.backward(c.cls, c.dlogits, g.classifier, &c.dcls);
    else c.dcls = c.dlogits;
    c.dsequence.setZero(B * T, vit.config.hidden_size);
    for (Index b = 0; b < B; ++b) c.dsequence.row(b * T) = c.dcls.row(b);
    vit.backward(c.dsequence, c.vit, g.vit, dpixels);
  }

  /// HF's forward with its outputs per sample. @throws vitmae::Error on bad shapes or labels.
  ClassificationOutput<Scalar> forward(const Tensor<Scalar>& pixel_values, const Labels<Scalar>* labels = nullptr,
                                       const ForwardOptions& opts = {}) const {
    static thread_local Cache c;  // this thread's buffers, reused between calls
    c.vit.encoder.for_backward = false;
    std::vector<Matrix<Scalar>> hs, at;
    ClassificationOutput<Scalar> out;
    const Scalar loss = forward(pixel_values, opts, c, labels, 0.0, opts.output_hidden_states ? &hs : nullptr,
                                opts.output_attentions ? &at : nullptr);
    if (labels) out.loss = loss;
    const Index B = pixel_values.size(0);
    out.logits = c.logits;
    out.last_hidden_state = detail::unstack(c.sequence, B);
    for (const Matrix<Scalar>& h : hs) out.hidden_states.push_back(detail::unstack(h, B));
    for (const Matrix<Scalar>& a : at) out.attentions.push_back(detail::unstack(a, B));
    return out;
  }

  ClassificationLoss loss_of(double label_smoothing) const {
    return ClassificationLoss{vit.config.problem_type, num_labels(), label_smoothing};
  }

  template <class Self, class V>
  static void parameters(Self& m, const std::string& prefix, V& visit) {
    m.vit.visit_parameters(prefix + "vit.", visit);
    if (m.num_labels() > 0) m.classifier.visit_parameters(prefix + "classifier.", visit);
  }
  VITMAE_VISIT_PARAMETERS

  /// transformers' ViTForImageClassification.from_pretrained of a local checkpoint (a folder or
  /// a weights file with config.json beside it; safetensors, sharded, pytorch_model.bin, or the
  /// MAE release's .pth with `preset`):
  /// - a ViT classification checkpoint (config.json model_type "vit"): everything is loaded; a
  ///   ViTModel checkpoint (unprefixed names, a pooler) gives the encoder, its pooler is dropped;
  /// - an MAE checkpoint (model_type "vit_mae": ViTMAEForPreTraining or ViTMAEModel, or the MAE
  ///   release's): the encoder's tensors are taken, the fixed sin-cos table becoming the learned
  ///   position_embeddings; the decoder is dropped. `labels` are required.
  /// A classifier the checkpoint lacks (or whose size the labels change) is drawn afresh (seeded).
  /// What was dropped or drawn is appended to `notes`, one line each (transformers' warnings).
  /// @throws vitmae::Error naming the file and the tensor or field that does not fit.
  static ViTForImageClassification from_pretrained(const std::string& path, const ClassifierLoadOptions& o = {},
                                                   std::vector<std::string>* notes = nullptr) {
    std::vector<std::string> local_notes;
    std::vector<std::string>& out_notes = notes ? *notes : local_notes;
    const std::string config_path = checkpoint_config_name(path, o.preset);
    bool from_mae = !o.preset.empty();
    nlohmann::json j;
    if (!from_mae) {
      j = io::read_json_file(config_path, "config file");
      const auto mt = j.find("model_type");
      from_mae = mt != j.end() && mt->is_string() && mt->get<std::string>() == "vit_mae";
      detail::require(mt == j.end() || !mt->is_string() || from_mae || mt->get<std::string>() == "vit", config_path,
                      ": model_type '", mt == j.end() ? std::string() : mt->dump(),
                      "' is neither \"vit\" nor \"vit_mae\"");
    }
    ViTConfig config;
    if (from_mae) {
      detail::require(
          o.labels.has_value(), path,
          ": an MAE checkpoint has no classifier: give the labels (ClassifierLoadOptions::labels, --num-labels "
          "or --labels)");
      const Config mae = o.preset.empty() ? Config::from_json(j, config_path) : Config::preset(o.preset);
      config = ViTConfig::from_mae(mae, *o.labels);
    } else {
      config = ViTConfig::from_json(j, config_path);
      if (o.labels) {
        config.id2label = *o.labels;
        config.validate(config_path);
      }
    }
    const std::shared_ptr<io::TensorSource> weights = open_pretrained_weights(path);
    check_weights_fit(config, *weights, from_mae, config_path);  // before allocating
    ViTForImageClassification m(config);
    const bool classifier_loaded = m.load_weights(*weights, from_mae, o.labels.has_value(), config_path, out_notes);
    if (!classifier_loaded && m.num_labels() > 0) {
      std::mt19937_64 rng(o.seed);
      vitmae::init_weights(m.classifier, config.initializer_range, rng, InitScheme::vit);
      // One line about it: load_weights said so already when the checkpoint's classifier has another size.
      char how[96];
      std::snprintf(how, sizeof how, " (truncated normal, std %g, seed %llu; bias 0)", config.initializer_range,
                    static_cast<unsigned long long>(o.seed));
      if (weights->contains("classifier.weight")) out_notes.back() += how;
      else
        out_notes.push_back("classifier.weight and classifier.bias are not in " + weights->where() +
                            ": drawn afresh for " + std::to_string(config.num_labels()) + " labels" + how);
    }
    return m;
  }

  /// Writes config.json (model_type "vit", id2label/label2id) and model.safetensors (HF's
  /// names), which transformers' ViTForImageClassification.from_pretrained loads.
  void save_pretrained(const std::string& dir, io::DType dtype = io::dtype_of<Scalar>()) const {
    save_checkpoint(*this, config(), dir, dtype, "ViTForImageClassification");
  }

 private:
  /// The encoder's tensors in `source` (with `vit.` or unprefixed names) against `config`
  /// (check_weights_fit of ViTModel), before the model is allocated; an MAE checkpoint may lack
  /// its fixed position table (load_weights then takes the sin-cos one). The classifier's tensor
  /// is left to load_weights, which may draw it afresh.
  static void check_weights_fit(const ViTConfig& config, const io::TensorSource& source, bool from_mae,
                                const std::string& config_path) {
    const bool prefixed = source.contains(std::string("vit.") + kPatchWeightKey);
    if (!prefixed && !source.contains(kPatchWeightKey)) return;  // load_weights says what it is
    std::vector<TensorSpec> specs = tensor_specs<ViTModel<Scalar>>(config);
    for (TensorSpec& t : specs)
      if (from_mae && t.name == "embeddings.position_embeddings") t.kind = ParamKind::fixed_table;  // may be absent
    check_state_dict_shapes(specs, source, prefixed ? "vit." : "", config_path);
  }

  /// Loads the encoder (with `vit.` or unprefixed names) and the classifier when the source has
  /// one of the model's shape; returns whether it did. A classifier of another shape is drawn
  /// afresh when the labels were given (`relabel`: transformers' ignore_mismatched_sizes), and
  /// refused otherwise (the config's id2label and the tensor disagree), as transformers does.
  bool load_weights(const io::TensorSource& source, bool from_mae, bool relabel, const std::string& config_path,
                    std::vector<std::string>& notes) {
    const bool prefixed = source.contains(std::string("vit.") + kPatchWeightKey);
    detail::require(prefixed || source.contains(kPatchWeightKey), source.where(),
                    ": not a ViT checkpoint: it has neither 'vit.", kPatchWeightKey, "' nor '", kPatchWeightKey, "'");
    const std::string pre = prefixed ? "vit." : "";
    // The encoder; the classifier is read below only when its shape fits.
    LoadReport r = load_state_dict(vit, source, pre, {"decoder.", "pooler.", "vit.pooler.", "classifier."});
    std::vector<std::string> lacking;
    for (size_t i = 0; i < r.missing.size(); ++i) {
      const bool table = r.missing[i] == "embeddings.position_embeddings";
      if (table && from_mae) {  // ViTMAE's fixed table, not stored: its sin-cos values
        vit.embeddings.position_embeddings = ops::get_2d_sincos_pos_embed<Scalar>(
            config().hidden_size, config().grid_size(), config().grid_size(), true);
        notes.push_back("embeddings.position_embeddings is not in " + source.where() +
                        ": the MAE's fixed 2-D sin-cos table is used (learned from here on)");
        continue;
      }
      lacking.push_back(pre + r.missing[i]);
    }
    detail::require(lacking.empty(), "load_state_dict: ", source.where(), ": missing tensors: ", join_names(lacking));
    detail::require(r.unexpected.empty(), "load_state_dict: ", source.where(),
                    ": unexpected tensors: ", join_names(r.unexpected));
    bool dropped_decoder = false, dropped_pooler = false;
    for (const std::string& n : source.names()) {
      dropped_decoder = dropped_decoder || n.rfind("decoder.", 0) == 0;
      dropped_pooler = dropped_pooler || n.rfind("pooler.", 0) == 0 || n.rfind("vit.pooler.", 0) == 0;
    }
    if (dropped_decoder)
      notes.push_back("the MAE decoder's tensors in " + source.where() + " are not used by the classifier");
    if (dropped_pooler)
      notes.push_back("the pooler's tensors in " + source.where() +
                      " are not used (ViTForImageClassification has none)");
    if (num_labels() == 0 || !source.contains("classifier.weight")) return false;
    const std::vector<std::int64_t> ws = source.shape("classifier.weight");
    if (ws != std::vector<std::int64_t>{num_labels(), config().hidden_size}) {
      detail::require(relabel, source.where(), ": classifier.weight has shape ", detail::shape_str(ws), ", but ",
                      config_path, " gives ", num_labels(), " labels (id2label) and hidden_size ", config().hidden_size,
                      ": expected [", num_labels(), ", ", config().hidden_size, "]");
      notes.push_back("classifier.weight in " + source.where() + " has shape " + detail::shape_str(ws) +
                      ", the model " + std::to_string(num_labels()) + " labels: the classifier is drawn afresh");
      return false;
    }
    load_state_dict(classifier, source, "classifier.", {""}).require_complete(source);  // {""}: the rest is not its
    return true;
  }
};

}  // namespace vitmae
