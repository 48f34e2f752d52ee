// SPDX-License-Identifier: Apache-2.0
// ViTMAEForPreTraining: ViTMAEModel + ViTMAEDecoder + the masked-patch reconstruction loss,
// each with its backward.
#pragma once

#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "vitmae/models/model.hpp"
#include "vitmae/modules/decoder.hpp"
#include "vitmae/ops/patchify.hpp"

namespace vitmae {

/// ViTMAEForPreTraining.forward_loss and its backward: the mean over patch values of the squared
/// error, averaged over the masked patches of the batch, `(loss * mask).sum() / mask.sum()`,
/// against per-patch normalised targets when norm_pix_loss.
template <class Scalar = float>
struct ReconstructionLoss {
  Index patch_size = 1, num_channels = 1;
  bool norm_pix_loss = false;

  struct Cache {
    Matrix<Scalar> patches, target;  // (B*L, P): patchify(pixel_values), the target
    ColVector<Scalar> mean, var;     // (B*L) per-patch statistics (norm_pix_loss)
    Matrix<Scalar> mask;             // (B, L)
    Index height = 0, width = 0;
    // One image's scratch, kept between calls: a forward allocates nothing here.
    Matrix<Scalar> one_patches, one_target;
    ColVector<Scalar> one_mean, one_var;
  };

  ReconstructionLoss() = default;
  explicit ReconstructionLoss(const Config& c)
      : patch_size(c.patch_size), num_channels(c.num_channels), norm_pix_loss(c.norm_pix_loss) {}

  /// image (C, H*W) -> its target (L, p*p*C) in `target`, the raw patches in `patches`.
  void target_of(const Eigen::Ref<const Matrix<Scalar>>& image, Index height, Index width, Matrix<Scalar>& patches,
                 Matrix<Scalar>& target, ColVector<Scalar>& mean, ColVector<Scalar>& var) const {
    detail::require(image.rows() == num_channels, "forward_loss: image has ", image.rows(),
                    " channels, expected num_channels = ", num_channels);
    ops::patchify_into<Scalar>(image, height, width, patch_size, patches);  // (L, P)
    target = patches;
    if (norm_pix_loss) {
      ops::patch_mean_var(patches, mean, var);
      ops::normalize_patches(target, mean, var);
    }
  }

  /// logits: (B*(1+L), P), each sample's CLS row first (ignored); mask (B, L). Returns the sum
  /// over masked patches of the per-patch mean squared error and the number of masked patches:
  /// the loss is their ratio (NaN when nothing is masked: 0/0, as in the reference).
  std::pair<Scalar, Scalar> forward(const Tensor<Scalar>& pixel_values, const Matrix<Scalar>& logits,
                                    const Matrix<Scalar>& mask, Cache& c) const {
    detail::require(pixel_values.dim() == 4,
                    "forward_loss: pixel_values must be [batch, channels, height, width], got ",
                    detail::shape_str(pixel_values.shape));
    const Index B = pixel_values.size(0), H = pixel_values.size(2), W = pixel_values.size(3), L = mask.cols(),
                TL = 1 + L;
    detail::require(logits.rows() == B * TL, "forward_loss: ", logits.rows(), " prediction rows for ", B,
                    " samples of ", L, " patches");
    c.height = H, c.width = W, c.mask = mask;
    c.patches.resize(B * L, logits.cols());
    c.target.resize(B * L, logits.cols());
    if (norm_pix_loss) {
      c.mean.resize(B * L);
      c.var.resize(B * L);
    }
    Matrix<Scalar>&patches = c.one_patches, &target = c.one_target;
    ColVector<Scalar>&mean = c.one_mean, &var = c.one_var;
    Scalar num = 0;
    for (Index b = 0; b < B; ++b) {
      target_of(image_view(pixel_values, b), H, W, patches, target, mean, var);
      detail::require(target.rows() == L && target.cols() == logits.cols(), "forward_loss: predictions (", L, ", ",
                      logits.cols(), ") do not match the target (", target.rows(), ", ", target.cols(), ")");
      c.patches.middleRows(b * L, L) = patches;
      c.target.middleRows(b * L, L) = target;
      if (norm_pix_loss) {
        c.mean.segment(b * L, L) = mean;
        c.var.segment(b * L, L) = var;
      }
      // loss = (pred - target) ** 2; loss = loss.mean(dim=-1); (loss * mask).sum()
      num += mask.row(b) * (logits.middleRows(b * TL + 1, L) - target).array().square().rowwise().mean().matrix();
    }
    return {num, mask.sum()};
  }

  /// d loss / d logits into dlogits (B*(1+L), P; CLS rows zero) for loss = num / den: 2 (pred -
  /// target) / P * mask / den. When dpixels is given, adds the gradient through the target
  /// (the reference does not detach it) into dpixels (B, C*H*W).
  void backward(const Matrix<Scalar>& logits, const Cache& c, Scalar den, Matrix<Scalar>& dlogits,
                Matrix<Scalar>* dpixels) const {
    const Index B = c.mask.rows(), L = c.mask.cols(), TL = 1 + L, P = logits.cols();
    dlogits.setZero(B * TL, P);
    Matrix<Scalar> dt;
    for (Index b = 0; b < B; ++b) {
      dlogits.middleRows(b * TL + 1, L) =
          ((logits.middleRows(b * TL + 1, L) - c.target.middleRows(b * L, L)).array().colwise() *
           (c.mask.row(b).transpose().array() * (Scalar(2) / (static_cast<Scalar>(P) * den))))
              .matrix();
      if (!dpixels) continue;
      dt = -dlogits.middleRows(b * TL + 1, L);  // d target = -d pred
      if (norm_pix_loss)
        ops::normalize_patches_backward<Scalar>(c.patches.middleRows(b * L, L), c.mean.segment(b * L, L),
                                                c.var.segment(b * L, L), dt);
      const Matrix<Scalar> di = ops::unpatchify(dt, c.height, c.width, patch_size, num_channels);  // (C, H*W)
      dpixels->row(b) += Eigen::Map<const RowVector<Scalar>>(di.data(), di.size());
    }
  }
};

/// ViTMAEForPreTrainingOutput: HF's fields (loss, logits, mask, ids_restore, hidden_states,
/// attentions) plus the encoder's last_hidden_state.
template <class Scalar = float>
struct PreTrainingOutput {
  Scalar loss = Scalar(0);                        // NaN when nothing is masked (0/0, as in the reference)
  std::vector<Matrix<Scalar>> logits;             // B x (L, p*p*C), patch order restored
  Matrix<Scalar> mask;                            // (B, L)
  IndexMatrix ids_restore;                        // (B, L)
  std::vector<Matrix<Scalar>> last_hidden_state;  // B x (1+K, hidden)
  std::vector<std::vector<Matrix<Scalar>>> hidden_states, attentions;  // as ModelOutput's
};

template <class Scalar = float>
struct ForPreTraining {
  using scalar_type = Scalar;
  using config_type = Config;
  Model<Scalar> vit;
  Decoder<Scalar> decoder;

  struct Cache {
    using Gradient = Matrix<Scalar>;  // the type of dL/dpixel_values, (B, C*H*W)
    typename Model<Scalar>::Cache vit;
    typename Decoder<Scalar>::Cache decoder;
    typename ReconstructionLoss<Scalar>::Cache loss;
    Matrix<Scalar> latent, logits;  // the encoder's output (B*(1+K), hidden); (B*(1+L), P)
    Matrix<Scalar> dlogits, dlatent;
    Scalar num = 0, den = 0;  // the loss is num / den

    /// f(layer gradients) after each encoder and decoder layer's backward (LayerStackCache).
    void on_layer_done(const std::function<void(Layer<Scalar>&)>& f) {
      vit.encoder.layer_done = decoder.layers.layer_done = f;
    }
  };

  explicit ForPreTraining(const Config& c, Storage s = Storage::zeros) : vit(c, s), decoder(c, s) {}

  /// The model's one config (HF's ViTMAEForPreTraining.config is its vit's).
  const Config& config() const { return vit.config; }
  Config& config() { return vit.config; }

  ReconstructionLoss<Scalar> loss_module() const { return ReconstructionLoss<Scalar>(config()); }

  template <class Engine>
  void init_weights(Engine& rng) {
    vitmae::init_weights(*this, config().initializer_range, rng);
  }

  /// image (C, H*W) -> (L, p*p*C), patches flattened (p, q, c).
  Matrix<Scalar> patchify(const Matrix<Scalar>& image, Index height, Index width) const {
    detail::require(image.rows() == config().num_channels, "patchify: image has ", image.rows(),
                    " channels, expected num_channels = ", config().num_channels);
    return ops::patchify(image, height, width, config().patch_size);
  }
  /// (L, p*p*C) -> (C, H*W) for an image of height x width (default: the configured size).
  Matrix<Scalar> unpatchify(const Matrix<Scalar>& patches, Index height = -1, Index width = -1) const {
    if (height < 0) height = config().image_size;
    if (width < 0) width = config().image_size;
    return ops::unpatchify(patches, height, width, config().patch_size, config().num_channels);
  }

  /// The target of one sample: its patches, per-patch normalised when norm_pix_loss.
  Matrix<Scalar> loss_target(const Matrix<Scalar>& image, Index height, Index width) const {
    Matrix<Scalar> patches, target;
    ColVector<Scalar> mean, var;
    loss_module().target_of(image, height, width, patches, target, mean, var);
    return target;
  }

  /// One sample's share of the loss: (sum over masked patches of the per-patch mean squared
  /// error, number of masked patches); pred (L, p*p*C) in patch order.
  std::pair<Scalar, Scalar> loss_terms(const Matrix<Scalar>& image, Index height, Index width,
                                       const Matrix<Scalar>& pred, const RowVector<Scalar>& mask_row) const {
    Tensor<Scalar> px(std::vector<Index>{1, image.rows(), height, width});
    Eigen::Map<Matrix<Scalar>>(px.ptr(), image.rows(), image.cols()) = image;
    Matrix<Scalar> logits(1 + pred.rows(), pred.cols());
    logits.row(0).setZero();
    logits.bottomRows(pred.rows()) = pred;
    typename ReconstructionLoss<Scalar>::Cache c;
    return loss_module().forward(px, logits, Matrix<Scalar>(mask_row), c);
  }

  /// The forward on a batch with everything the backward needs kept in c; returns the loss.
  /// Like HF's forward: pixel_values [B, C, H, W], noise (B, L).
  Scalar forward(const Tensor<Scalar>& pixel_values, const Matrix<Scalar>& noise, const ForwardOptions& opts, Cache& c,
                 std::vector<Matrix<Scalar>>* hidden_states = nullptr,
                 std::vector<Matrix<Scalar>>* attentions = nullptr) const {
    vit.forward(pixel_values, noise, opts, c.latent, c.vit, hidden_states, attentions);
    const Index B = pixel_values.size(0), L = c.vit.embeddings.num_patches;
    IndexMatrix ids_restore(B, L);
    Matrix<Scalar> mask(B, L);
    for (Index b = 0; b < B; ++b)
      for (Index l = 0; l < L; ++l) {
        const ops::Masking& m = c.vit.embeddings.masking[static_cast<size_t>(b)];
        ids_restore(b, l) = m.ids_restore[static_cast<size_t>(l)];
        mask(b, l) = static_cast<Scalar>(m.mask[static_cast<size_t>(l)]);
      }
    if (B == 0) return std::numeric_limits<Scalar>::quiet_NaN();
    decoder.forward(c.latent, ids_restore, opts.interpolate_pos_encoding, c.logits, c.decoder);
    std::tie(c.num, c.den) = loss_module().forward(pixel_values, c.logits, mask, c.loss);
    return c.num / c.den;
  }

  /// The backward of the loss num / den (den: c.den, or a larger batch's count of masked patches
  /// when this batch is a slice of it). Adds every trainable parameter's gradient into g; when
  /// dpixels is given, it receives dL/dpixel_values (B, C*H*W), through both the encoder and the
  /// reconstruction target (the reference does not detach the target).
  void backward(Cache& c, ForPreTraining& g, Matrix<Scalar>* dpixels = nullptr, Scalar den = Scalar(0)) const {
    if (dpixels) dpixels->setZero(c.loss.mask.rows(), config().num_channels * c.loss.height * c.loss.width);
    loss_module().backward(c.logits, c.loss, den > Scalar(0) ? den : c.den, c.dlogits, dpixels);
    decoder.backward(c.latent, c.dlogits, c.decoder, g.decoder, c.dlatent);
    vit.backward(c.dlatent, c.vit, g.vit, dpixels);
  }

  /// HF's ViTMAEForPreTraining.forward. noise (B, L) as in ViTMAEModel.forward.
  PreTrainingOutput<Scalar> forward(const Tensor<Scalar>& pixel_values, const Matrix<Scalar>& noise,
                                    const ForwardOptions& opts = {}) const {
    // This thread's buffers, kept between calls (see Model::forward); one layer at a time.
    static thread_local Cache c;
    c.vit.encoder.for_backward = c.decoder.layers.for_backward = false;
    std::vector<Matrix<Scalar>> hs, at;
    PreTrainingOutput<Scalar> out;
    out.loss = forward(pixel_values, noise, opts, c, opts.output_hidden_states ? &hs : nullptr,
                       opts.output_attentions ? &at : nullptr);
    const Index B = pixel_values.size(0), L = c.vit.embeddings.num_patches;
    ModelOutput<Scalar> enc = vit.output(B, c.latent, c.vit, hs, at);
    out.mask = std::move(enc.mask);
    out.ids_restore = std::move(enc.ids_restore);
    out.last_hidden_state = std::move(enc.last_hidden_state);
    out.hidden_states = std::move(enc.hidden_states);
    out.attentions = std::move(enc.attentions);
    for (Index b = 0; b < B; ++b) out.logits.push_back(c.logits.middleRows(b * (1 + L) + 1, L));  // remove cls token
    return out;
  }

  template <class Engine, class = typename Engine::result_type>
  PreTrainingOutput<Scalar> forward(const Tensor<Scalar>& pixel_values, Engine& rng,
                                    const ForwardOptions& opts = {}) const {
    return forward(pixel_values, vit.noise_for(pixel_values, rng), opts);
  }

  /// HF forward_loss on per-sample predictions (L, p*p*C). NaN when nothing is masked.
  Scalar forward_loss(const Tensor<Scalar>& pixel_values, const std::vector<Matrix<Scalar>>& pred,
                      const Matrix<Scalar>& mask) const {
    const Index B = pixel_values.size(0), L = mask.cols();
    detail::require(static_cast<Index>(pred.size()) == B && mask.rows() == B, "forward_loss: batch of ", B,
                    " images but ", pred.size(), " predictions and ", mask.rows(), " mask rows");
    Matrix<Scalar> logits = Matrix<Scalar>::Zero(B * (1 + L), B > 0 ? pred[0].cols() : 0);
    for (Index b = 0; b < B; ++b) logits.middleRows(b * (1 + L) + 1, L) = pred[static_cast<size_t>(b)];
    typename ReconstructionLoss<Scalar>::Cache c;
    const auto [num, den] = loss_module().forward(pixel_values, logits, mask, c);
    return num / den;
  }

  template <class Self, class V>
  static void parameters(Self& m, const std::string& prefix, V& visit) {
    m.vit.visit_parameters(prefix + "vit.", visit);
    m.decoder.visit_parameters(prefix + "decoder.", visit);
  }
  VITMAE_VISIT_PARAMETERS

  /// Loads a ViTMAEForPreTraining checkpoint (`vit.` / `decoder.` names). An encoder-only
  /// (ViTMAEModel) checkpoint is refused: it has no decoder to reconstruct with.
  void load_weights(const io::TensorSource& source, Int8Weights int8_weights = Int8Weights::dequantised) {
    const std::string key = std::string("vit.") + kPatchWeightKey;
    detail::require(source.contains(key) || !source.contains(kPatchWeightKey), source.where(),
                    ": is an encoder-only ViTMAEModel checkpoint (no 'vit.' prefix, no decoder): it cannot "
                    "reconstruct images; load it as ViTMAEModel for features");
    detail::require(source.contains(key), source.where(), ": not a ViTMAE checkpoint: it has no '", key, "'");
    detail::require(has_decoder(source), source.where(),
                    ": has no decoder ('decoder.decoder_pred.weight' is missing): it cannot reconstruct images; "
                    "load it as ViTMAEModel for features");
    load_state_dict(*this, source, "", {}, int8_weights).require_complete(source);
  }

  /// True when the checkpoint's weights include a decoder.
  static bool has_decoder(const io::TensorSource& source) { return source.contains("decoder.decoder_pred.weight"); }

  /// HF's from_pretrained: a checkpoint folder (config.json plus model.safetensors, a sharded
  /// index, pytorch_model.bin or an MAE-release .pth) or a weights file with config.json beside
  /// it. `preset` (Config::preset) replaces config.json for the MAE release's files.
  /// @throws vitmae::Error.
  static ForPreTraining from_pretrained(const std::string& path, const std::string& preset = "") {
    const PretrainedCheckpoint c = open_pretrained<ForPreTraining>(path, preset);  // checked before allocating
    ForPreTraining m(c.config);
    m.load_weights(*c.weights);
    return m;
  }

  /// Writes config.json and model.safetensors with HF's ViTMAEForPreTraining names.
  void save_pretrained(const std::string& dir, io::DType dtype = io::dtype_of<Scalar>()) const {
    save_checkpoint(*this, config(), dir, dtype, "ViTMAEForPreTraining");
  }
};

template <class Scalar = float>
using ViTMAEForPreTraining = ForPreTraining<Scalar>;

}  // namespace vitmae
