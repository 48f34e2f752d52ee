// SPDX-License-Identifier: Apache-2.0
// ViTMAEForPreTraining: ViTMAEModel + ViTMAEDecoder + the masked-patch reconstruction loss.
#pragma once

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "vitmae/model.hpp"
#include "vitmae/modules/decoder.hpp"
#include "vitmae/ops/patchify.hpp"

namespace vitmae {

/// ViTMAEForPreTrainingOutput (encoder hidden states and attentions, like HF).
template <class Scalar = float>
struct PreTrainingOutput : ModelOutput<Scalar> {
  std::vector<Matrix<Scalar>> logits;  // B x (L, p*p*C), patch order restored
  Scalar loss = Scalar(0);             // NaN when nothing is masked (0/0, as in the reference)
};

template <class Scalar = float>
struct ForPreTraining {
  Config config;
  Model<Scalar> vit;
  Decoder<Scalar> decoder;

  explicit ForPreTraining(const Config& c) : config((c.validate(), c)), vit(c), decoder(c) {}

  void init_weights(std::mt19937_64& rng) { detail::init_weights(*this, config.initializer_range, rng); }

  /// image (C, H*W) -> (L, p*p*C), patches flattened (p, q, c).
  Matrix<Scalar> patchify(const Matrix<Scalar>& image, Index height, Index width) const {
    detail::require(image.rows() == config.num_channels, "patchify: image has ", image.rows(),
                    " channels, expected num_channels = ", config.num_channels);
    return ops::patchify(image, height, width, config.patch_size);
  }
  /// (L, p*p*C) -> (C, H*W) for an image of height x width (default: the configured size).
  Matrix<Scalar> unpatchify(const Matrix<Scalar>& patches, Index height = -1, Index width = -1) const {
    if (height < 0) height = config.image_size;
    if (width < 0) width = config.image_size;
    return ops::unpatchify(patches, height, width, config.patch_size, config.num_channels);
  }

  /// The target of one sample: its patches, per-patch normalised when norm_pix_loss
  /// ((x - mean) / sqrt(var + 1e-6), unbiased var like torch's var(); 1e-6, not layer_norm_eps).
  Matrix<Scalar> loss_target(const Matrix<Scalar>& image, Index height, Index width) const {
    Matrix<Scalar> target = patchify(image, height, width);  // (L, p*p*C)
    if (config.norm_pix_loss) {
      const Index P = target.cols();
      for (Index l = 0; l < target.rows(); ++l) {
        const Scalar mean = target.row(l).mean();
        const Scalar var = (target.row(l).array() - mean).square().sum() / static_cast<Scalar>(P - 1);
        target.row(l) = ((target.row(l).array() - mean) / std::sqrt(var + Scalar(1e-6))).matrix();
      }
    }
    return target;
  }

  /// One sample's share of the loss: (sum over masked patches of the per-patch mean squared
  /// error, number of masked patches). pred and the target are (L, p*p*C).
  std::pair<Scalar, Scalar> loss_terms(const Matrix<Scalar>& image, Index height, Index width, const Matrix<Scalar>& pred,
                                       const RowVector<Scalar>& mask_row) const {
    const Matrix<Scalar> target = loss_target(image, height, width);  // (L, P)
    detail::require(pred.rows() == target.rows() && pred.cols() == target.cols() && mask_row.size() == target.rows(),
                    "forward_loss: predictions (", pred.rows(), ", ", pred.cols(), ") do not match the target (",
                    target.rows(), ", ", target.cols(), ")");
    const ColVector<Scalar> per_patch = (pred - target).array().square().rowwise().mean();  // (L)
    return {mask_row * per_patch, mask_row.sum()};
  }

  /// HF forward_loss: mean over patch values of the squared error, averaged over masked patches
  /// of the whole batch: (loss * mask).sum() / mask.sum(). NaN when mask.sum() == 0.
  Scalar forward_loss(const Tensor<Scalar>& pixel_values, const std::vector<Matrix<Scalar>>& pred,
                      const Matrix<Scalar>& mask) const {
    const Index B = pixel_values.size(0), H = pixel_values.size(2), W = pixel_values.size(3);
    detail::require(static_cast<Index>(pred.size()) == B && mask.rows() == B, "forward_loss: batch of ", B,
                    " images but ", pred.size(), " predictions and ", mask.rows(), " mask rows");
    Scalar num = 0, den = 0;
    for (Index b = 0; b < B; ++b) {
      const auto [n, d] = loss_terms(detail::image_of(pixel_values, b), H, W, pred[static_cast<size_t>(b)], mask.row(b));
      num += n;
      den += d;
    }
    return num / den;
  }

  /// HF's ViTMAEForPreTraining.forward. noise (B, L) as in ViTMAEModel.forward.
  PreTrainingOutput<Scalar> forward(const Tensor<Scalar>& pixel_values, const Matrix<Scalar>& noise,
                                    const ForwardOptions& opts = {}) const {
    PreTrainingOutput<Scalar> out;
    ForwardOptions vit_opts = opts;
    if (!vit_opts.mask_ratio) vit_opts.mask_ratio = config.mask_ratio;  // this model's config rules
    static_cast<ModelOutput<Scalar>&>(out) = vit.forward(pixel_values, noise, vit_opts);
    const Index B = pixel_values.size(0), L = noise.cols();
    const Matrix<Scalar> pos = decoder.position_table(L, opts.interpolate_pos_encoding);  // (1+L, Dd)
    std::vector<std::vector<Index>> ids(static_cast<size_t>(B), std::vector<Index>(static_cast<size_t>(L)));
    for (Index b = 0; b < B; ++b)
      for (Index l = 0; l < L; ++l) ids[static_cast<size_t>(b)][static_cast<size_t>(l)] = out.ids_restore(b, l);
    const Index T = B > 0 ? out.last_hidden_state[0].rows() : 0;
    Matrix<Scalar> latents(B * T, config.hidden_size);  // (B*(1+K), hidden)
    for (Index b = 0; b < B; ++b) latents.middleRows(b * T, T) = out.last_hidden_state[static_cast<size_t>(b)];
    if (B > 0) out.logits = decoder.forward(latents, ids, pos);
    out.loss = forward_loss(pixel_values, out.logits, out.mask);
    return out;
  }

  PreTrainingOutput<Scalar> forward(const Tensor<Scalar>& pixel_values, std::mt19937_64& rng,
                                    const ForwardOptions& opts = {}) const {
    detail::require(pixel_values.dim() == 4, "ViTMAEForPreTraining.forward: pixel_values must be [batch, channels, height, width], got ",
                    detail::shape_str(pixel_values.shape));
    return forward(pixel_values,
                   ops::uniform_noise<Scalar>(pixel_values.size(0), vit.num_patches_for(pixel_values.size(2), pixel_values.size(3)), rng),
                   opts);
  }

  template <class V>
  void visit_parameters(const std::string& prefix, V&& visit) {
    vit.visit_parameters(prefix + "vit.", visit);
    decoder.visit_parameters(prefix + "decoder.", visit);
  }

  /// Loads a ViTMAEForPreTraining checkpoint (`vit.` / `decoder.` names). An encoder-only
  /// (ViTMAEModel) checkpoint is refused: it has no decoder to reconstruct with.
  void load_weights(const io::TensorSource& source) {
    const std::string key = std::string("vit.") + detail::kPatchWeightKey;
    detail::require(source.contains(key) || !source.contains(detail::kPatchWeightKey), source.where(),
                    ": is an encoder-only ViTMAEModel checkpoint (no 'vit.' prefix, no decoder): it cannot "
                    "reconstruct images; load it as ViTMAEModel for features");
    detail::require(source.contains(key), source.where(), ": not a ViTMAE checkpoint: it has no '", key, "'");
    detail::require(source.contains("decoder.decoder_pred.weight"), source.where(),
                    ": has no decoder ('decoder.decoder_pred.weight' is missing): it cannot reconstruct images; "
                    "load it as ViTMAEModel for features");
    const io::LoadReport r = io::load_state_dict(*this, source, "");
    std::vector<std::string> missing;
    for (const auto& n : r.missing)
      if (n != "vit.embeddings.position_embeddings" && n != "decoder.decoder_pos_embed") missing.push_back(n);
    detail::require(missing.empty(), "load_state_dict: ", source.where(), ": missing tensors: ", io::join_names(missing));
    detail::require(r.unexpected.empty(), "load_state_dict: ", source.where(), ": unexpected tensors: ",
                    io::join_names(r.unexpected));
  }

  /// True when the checkpoint folder's weights include a decoder.
  static bool has_decoder(const io::TensorSource& source) { return source.contains("decoder.decoder_pred.weight"); }

  /// HF's from_pretrained: a checkpoint folder (config.json plus model.safetensors, a sharded
  /// index, pytorch_model.bin or an MAE-release .pth) or a weights file with config.json beside
  /// it. `preset` (Config::preset) replaces config.json for the MAE release's files.
  /// @throws vitmae::Error.
  static ForPreTraining from_pretrained(const std::string& path, const std::string& preset = "") {
    ForPreTraining m(detail::checkpoint_config(path, preset));
    m.load_weights(*io::open_checkpoint_weights(path));
    return m;
  }

  /// Writes config.json and model.safetensors with HF's ViTMAEForPreTraining names.
  void save_pretrained(const std::string& dir, io::DType dtype = std::is_same_v<Scalar, double> ? io::DType::F64
                                                                                                  : io::DType::F32) {
    detail::save_checkpoint(*this, config, dir, dtype, "ViTMAEForPreTraining");
  }
};

template <class Scalar = float>
using ViTMAEForPreTraining = ForPreTraining<Scalar>;

}  // namespace vitmae
