// SPDX-License-Identifier: Apache-2.0
// transformers' ViTForImageClassification (modeling_vit.py): ViTModel without pooler (patch
// projection, learned position embeddings and CLS token, no masking; ViTMAE's encoder layers;
// final layernorm) and a Linear classifier on token 0, with HF's problem_type losses; each with
// its backward. Loading from a ViT checkpoint or from an MAE one (the encoder's weights).
#pragma once

#include <cmath>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "vitmae/checkpoint.hpp"
#include "vitmae/init.hpp"
#include "vitmae/model.hpp"
#include "vitmae/modules/embeddings.hpp"
#include "vitmae/modules/encoder.hpp"
#include "vitmae/modules/layer_norm.hpp"
#include "vitmae/modules/linear.hpp"
#include "vitmae/state_dict.hpp"
#include "vitmae/vit_config.hpp"

namespace vitmae {

/// ViTEmbeddings: CLS token, patch projection and a *learned* position table (1+L, hidden);
/// interpolate_pos_encoding as ViTMAE's encoder (position_table_for). HF names: cls_token
/// (1, 1, hidden), position_embeddings (1, 1+L, hidden), patch_embeddings.projection.*.
template <class Scalar = float>
struct ViTEmbeddings {
  RowVector<Scalar> cls_token;         // (hidden)
  Matrix<Scalar> position_embeddings;  // (1+L, hidden)
  PatchEmbeddings<Scalar> patch_embeddings;
  Index hidden_size = 0;

  struct Cache {
    Matrix<Scalar> cols, patches;  // (B*L, C*p*p) im2col; (B*L, hidden) projections
    Index batch = 0, height = 0, width = 0, num_patches = 0;
    bool interpolate = false;
    Matrix<Scalar> dpos, dpatches, dcols;
  };

  ViTEmbeddings() = default;
  explicit ViTEmbeddings(const EncoderConfig& c)
      : cls_token(RowVector<Scalar>::Zero(c.hidden_size)),
        position_embeddings(Matrix<Scalar>::Zero(1 + c.num_patches(), c.hidden_size)), patch_embeddings(c),
        hidden_size(c.hidden_size) {}

  /// pixel_values [B, C, H, W] -> y (B*(1+L), hidden): per sample the CLS token, then the L
  /// patches in grid order, each plus its position.
  void forward(const Tensor<Scalar>& pixel_values, bool interpolate_pos_encoding, Matrix<Scalar>& y, Cache& c) const {
    patch_embeddings.forward(pixel_values, interpolate_pos_encoding, c.cols, c.patches);  // (B*L, hidden)
    const Index B = pixel_values.size(0), H = pixel_values.size(2), W = pixel_values.size(3);
    const Index L = B > 0 ? c.patches.rows() / B : 0, T = 1 + L;
    const Matrix<Scalar> pos =
        position_table_for(position_embeddings, patch_embeddings.patch_size, H, W, interpolate_pos_encoding);  // (1+L, hidden)
    detail::require(pos.rows() == T, "ViTEmbeddings: ", L, " patches but the position table has ", pos.rows() - 1, " patch rows");
    c.batch = B, c.height = H, c.width = W, c.num_patches = L, c.interpolate = interpolate_pos_encoding;
    y.resize(B * T, hidden_size);  // (B*(1+L), hidden)
    for (Index b = 0; b < B; ++b) {
      y.row(b * T) = cls_token + pos.row(0);
      y.middleRows(b * T + 1, L) = c.patches.middleRows(b * L, L) + pos.bottomRows(L);
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
    position_table_for_backward(c.dpos, patch_embeddings.patch_size, c.height, c.width, c.interpolate, g.position_embeddings);
    const PatchConv2d<Scalar>& conv = patch_embeddings.projection;
    conv.backward(c.cols, c.dpatches, g.patch_embeddings.projection, dpixels ? &c.dcols : nullptr);
    if (!dpixels) return;
    for (Index b = 0; b < B; ++b)
      PatchConv2d<Scalar>::col2im_add(c.dcols, b * L, conv.in_channels, c.height, c.width, conv.kernel_size, dpixels->row(b).data());
  }

  template <class Self, class V>
  static void parameters(Self& m, const std::string& prefix, V& visit) {
    detail::visit_tensor(visit, prefix + "cls_token", m.cls_token, {1, 1, m.cls_token.size()}, ParamKind::token);
    detail::visit_tensor(visit, prefix + "position_embeddings", m.position_embeddings,
                         {1, m.position_embeddings.rows(), m.position_embeddings.cols()}, ParamKind::token);
    m.patch_embeddings.visit_parameters(prefix + "patch_embeddings.", visit);
  }
  VITMAE_VISIT_PARAMETERS
};

/// ViTModel(add_pooling_layer=False): embeddings, encoder, final layernorm.
template <class Scalar = float>
struct ViTModel {
  using scalar_type = Scalar;
  ViTConfig config;
  ViTEmbeddings<Scalar> embeddings;
  Encoder<Scalar> encoder;
  LayerNorm<Scalar> layernorm;

  struct Cache {
    typename ViTEmbeddings<Scalar>::Cache embeddings;
    typename Encoder<Scalar>::Cache encoder;
    typename LayerNorm<Scalar>::Cache layernorm;
    Matrix<Scalar> tokens, encoded, dencoded, dtokens;
    Index seq_len = 0;
  };

  explicit ViTModel(const ViTConfig& c)
      : config((c.validate(), c)), embeddings(c), encoder(c), layernorm(c.hidden_size, c.layer_norm_eps) {}

  /// pixel_values [B, C, H, W] -> y = sequence_output (B*(1+L), hidden), samples stacked.
  /// hidden_states / attentions as in Encoder::forward. @throws vitmae::Error on bad shapes.
  void forward(const Tensor<Scalar>& pixel_values, const ForwardOptions& opts, Matrix<Scalar>& y, Cache& c,
               std::vector<Matrix<Scalar>>* hidden_states = nullptr, std::vector<Matrix<Scalar>>* attentions = nullptr) const {
    embeddings.forward(pixel_values, opts.interpolate_pos_encoding, c.tokens, c.embeddings);
    c.seq_len = 1 + c.embeddings.num_patches;
    encoder.forward(c.tokens, c.seq_len, c.encoded, c.encoder, hidden_states, attentions);
    layernorm.forward(c.encoded, y, &c.layernorm);
  }

  /// dy: dL/d sequence_output. Adds every parameter's gradient into g (and dL/dpixel_values
  /// (B, C*H*W) into dpixels when given).
  void backward(const Matrix<Scalar>& dy, Cache& c, ViTModel& g, Matrix<Scalar>* dpixels = nullptr) const {
    layernorm.backward(dy, c.layernorm, g.layernorm, c.dencoded);
    encoder.backward(c.dencoded, c.seq_len, c.encoder, g.encoder, c.dtokens);
    embeddings.backward(c.dtokens, c.embeddings, g.embeddings, dpixels);
  }

  template <class Self, class V>
  static void parameters(Self& m, const std::string& prefix, V& visit) {
    m.embeddings.visit_parameters(prefix + "embeddings.", visit);
    m.encoder.visit_parameters(prefix + "encoder.", visit);
    m.layernorm.visit_parameters(prefix + "layernorm.", visit);
  }
  VITMAE_VISIT_PARAMETERS
};

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
      detail::require(labels.integer, "ViTForImageClassification: problem_type single_label_classification needs integer labels");
      detail::require(label_smoothing >= 0.0 && label_smoothing <= 1.0, "label_smoothing must be in [0, 1], got ", label_smoothing);
      const Scalar eps = static_cast<Scalar>(label_smoothing);
      Index counted = 0;
      for (Index b = 0; b < B; ++b) {
        const std::int64_t y = labels.classes[static_cast<size_t>(b)];
        detail::require(y == kIgnoreIndex || (y >= 0 && y < N), "ViTForImageClassification: label ", y, " of sample ", b,
                        " is out of range: the model has ", N, " labels (0 ... ", N - 1, "; -100 is ignored)");
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
      detail::require(t.size() == n, "ViTForImageClassification: regression labels have ", t.size(), " values, expected ", n,
                      " (batch ", B, " x num_labels ", N, ")");
      Scalar sum = 0;  // logits and t are row-major: element i of each is sample i / N, label i % N
      for (Index i = 0; i < n; ++i) {
        const Scalar d = logits.data()[i] - t.data()[i];
        sum += d * d;
        if (dlogits) dlogits->data()[i] = d * (Scalar(2) / static_cast<Scalar>(n));
      }
      return sum / static_cast<Scalar>(n);
    }
    detail::require(type == "multi_label_classification", "ViTForImageClassification: unknown problem_type '", type, "'");
    detail::require(t.rows() == B && t.cols() == N, "ViTForImageClassification: multi-label targets have shape (", t.rows(), ", ",
                    t.cols(), "), expected (", B, ", ", N, ")");
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
  std::optional<Scalar> loss;                     // when labels were given
  Matrix<Scalar> logits;                          // (B, num_labels), or (B, hidden) with num_labels 0
  std::vector<Matrix<Scalar>> last_hidden_state;  // B x (1+L, hidden), after the final layernorm
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

  explicit ViTForImageClassification(const ViTConfig& c) : vit(c), classifier(c.hidden_size, c.num_labels()) {}

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
  Scalar forward(const Tensor<Scalar>& pixel_values, const ForwardOptions& opts, Cache& c, const Labels<Scalar>* labels = nullptr,
                 double label_smoothing = 0.0, std::vector<Matrix<Scalar>>* hidden_states = nullptr,
                 std::vector<Matrix<Scalar>>* attentions = nullptr) const {
    vit.forward(pixel_values, opts, c.sequence, c.vit, hidden_states, attentions);
    const Index B = pixel_values.size(0), T = c.vit.seq_len;
    c.cls.resize(B, vit.config.hidden_size);
    for (Index b = 0; b < B; ++b) c.cls.row(b) = c.sequence.row(b * T);  // sequence_output[:, 0, :]
    if (num_labels() > 0)
      classifier.forward(c.cls, c.logits);
    else
      c.logits = c.cls;  // nn.Identity
    if (!labels) return std::numeric_limits<Scalar>::quiet_NaN();
    return loss_of(label_smoothing).forward(c.logits, *labels, &c.dlogits);
  }

  /// After forward with labels: adds every parameter's gradient of the loss into g; dpixels,
  /// when given, receives dL/dpixel_values (B, C*H*W) (added to). `dlogits_scale` multiplies
  /// the loss's gradient (a slice of a larger batch passes its share).
  void backward(Cache& c, ViTForImageClassification& g, Matrix<Scalar>* dpixels = nullptr, Scalar dlogits_scale = Scalar(1)) const {
    const Index B = c.cls.rows(), T = c.vit.seq_len;
    if (dlogits_scale != Scalar(1)) c.dlogits *= dlogits_scale;
    if (num_labels() > 0)
      classifier.backward(c.cls, c.dlogits, g.classifier, &c.dcls);
    else
      c.dcls = c.dlogits;
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
                      ": model_type '", mt == j.end() ? std::string() : mt->dump(), "' is neither \"vit\" nor \"vit_mae\"");
    }
    ViTConfig config;
    if (from_mae) {
      detail::require(o.labels.has_value(), path,
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
    ViTForImageClassification m(config);
    const bool classifier_loaded = m.load_weights(*weights, from_mae, o.labels.has_value(), config_path, out_notes);
    if (!classifier_loaded && m.num_labels() > 0) {
      std::mt19937_64 rng(o.seed);
      vitmae::init_weights(m.classifier, config.initializer_range, rng, InitScheme::vit);
      out_notes.push_back("classifier.weight and classifier.bias are not in " + weights->where() + ": drawn afresh for " +
                          std::to_string(config.num_labels()) + " labels (truncated normal, std " +
                          std::to_string(config.initializer_range) + ", seed " + std::to_string(o.seed) + "; bias 0)");
    }
    return m;
  }

  /// Writes config.json (model_type "vit", id2label/label2id) and model.safetensors (HF's
  /// names), which transformers' ViTForImageClassification.from_pretrained loads.
  void save_pretrained(const std::string& dir, io::DType dtype = io::dtype_of<Scalar>()) const {
    save_checkpoint(*this, config(), dir, dtype, "ViTForImageClassification");
  }

 private:
  /// Loads the encoder (with `vit.` or unprefixed names) and the classifier when the source has
  /// one of the model's shape; returns whether it did. A classifier of another shape is drawn
  /// afresh when the labels were given (`relabel`: transformers' ignore_mismatched_sizes), and
  /// refused otherwise (the config's id2label and the tensor disagree), as transformers does.
  bool load_weights(const io::TensorSource& source, bool from_mae, bool relabel, const std::string& config_path,
                    std::vector<std::string>& notes) {
    const bool prefixed = source.contains(std::string("vit.") + kPatchWeightKey);
    detail::require(prefixed || source.contains(kPatchWeightKey), source.where(), ": not a ViT checkpoint: it has neither 'vit.",
                    kPatchWeightKey, "' nor '", kPatchWeightKey, "'");
    const std::string pre = prefixed ? "vit." : "";
    // The encoder; the classifier is read below only when its shape fits.
    LoadReport r = load_state_dict(vit, source, pre, {"decoder.", "pooler.", "vit.pooler.", "classifier."});
    std::vector<std::string> lacking;
    for (size_t i = 0; i < r.missing.size(); ++i) {
      const bool table = r.missing[i] == "embeddings.position_embeddings";
      if (table && from_mae) {  // ViTMAE's fixed table, not stored: its sin-cos values
        vit.embeddings.position_embeddings =
            ops::get_2d_sincos_pos_embed<Scalar>(config().hidden_size, config().grid_size(), config().grid_size(), true);
        notes.push_back("embeddings.position_embeddings is not in " + source.where() +
                        ": the MAE's fixed 2-D sin-cos table is used (learned from here on)");
        continue;
      }
      lacking.push_back(pre + r.missing[i]);
    }
    detail::require(lacking.empty(), "load_state_dict: ", source.where(), ": missing tensors: ", join_names(lacking));
    detail::require(r.unexpected.empty(), "load_state_dict: ", source.where(), ": unexpected tensors: ", join_names(r.unexpected));
    bool dropped_decoder = false, dropped_pooler = false;
    for (const std::string& n : source.names()) {
      dropped_decoder = dropped_decoder || n.rfind("decoder.", 0) == 0;
      dropped_pooler = dropped_pooler || n.rfind("pooler.", 0) == 0 || n.rfind("vit.pooler.", 0) == 0;
    }
    if (dropped_decoder) notes.push_back("the MAE decoder's tensors in " + source.where() + " are not used by the classifier");
    if (dropped_pooler) notes.push_back("the pooler's tensors in " + source.where() + " are not used (ViTForImageClassification has none)");
    if (num_labels() == 0 || !source.contains("classifier.weight")) return false;
    const std::vector<std::int64_t> ws = source.shape("classifier.weight");
    if (ws != std::vector<std::int64_t>{num_labels(), config().hidden_size}) {
      detail::require(relabel, source.where(), ": classifier.weight has shape ", detail::shape_str(ws), ", but ", config_path,
                      " gives ", num_labels(), " labels (id2label) and hidden_size ", config().hidden_size, ": expected [",
                      num_labels(), ", ", config().hidden_size, "]");
      notes.push_back("classifier.weight in " + source.where() + " has shape " + detail::shape_str(ws) + ", the model " +
                      std::to_string(num_labels()) + " labels: the classifier is drawn afresh");
      return false;
    }
    load_state_dict(classifier, source, "classifier.", {""}).require_complete(source);  // {""}: the rest is not its
    return true;
  }
};

}  // namespace vitmae
