// SPDX-License-Identifier: Apache-2.0
// The one encoder of ViTMAEModel and ViTModel (embeddings, encoder, final layernorm) with its
// backward, a template over the embeddings (ViTMAE's masked ones or ViT's), and HF's forward
// options and outputs that both use.
#pragma once

#include <optional>
#include <random>
#include <string>
#include <vector>

#include "vitmae/config.hpp"
#include "vitmae/modules/embeddings.hpp"
#include "vitmae/modules/encoder.hpp"
#include "vitmae/modules/layer_norm.hpp"
#include "vitmae/ops/random_masking.hpp"
#include "vitmae/parameter.hpp"
#include "vitmae/vit_config.hpp"
#include "vitmae/weights/checkpoint.hpp"
#include "vitmae/weights/init.hpp"
#include "vitmae/weights/state_dict.hpp"

namespace vitmae {

/// HF's forward keyword arguments.
struct ForwardOptions {
  bool interpolate_pos_encoding = false;
  bool output_hidden_states = false;
  bool output_attentions = false;
  /// Overrides config.mask_ratio for this call when set.
  std::optional<double> mask_ratio;
};

/// ViTMAEModelOutput. Per-sample matrices because rows are tokens: last_hidden_state[b] is
/// (1+K, hidden), CLS first, K = int(L * (1 - mask_ratio)) kept patches.
template <class Scalar = float>
struct ModelOutput {
  std::vector<Matrix<Scalar>> last_hidden_state;  // B x (1+K, hidden)
  Matrix<Scalar> mask;                            // (B, L): 1 removed, 0 kept
  IndexMatrix ids_restore;                        // (B, L)
  /// hidden_states[i][b]: input of encoder layer i (last: output of the last layer, before layernorm).
  std::vector<std::vector<Matrix<Scalar>>> hidden_states;
  /// attentions[i][b]: (heads*(1+K), 1+K), head h in rows h*(1+K) ...
  std::vector<std::vector<Matrix<Scalar>>> attentions;
};

namespace detail {
/// Rows [b*T, (b+1)*T) of a stacked (B*T, n) matrix, one matrix per sample.
template <class Scalar>
std::vector<Matrix<Scalar>> unstack(const Matrix<Scalar>& x, Index B) {
  std::vector<Matrix<Scalar>> out(static_cast<size_t>(B));
  const Index T = B > 0 ? x.rows() / B : 0;
  for (Index b = 0; b < B; ++b) out[static_cast<size_t>(b)] = x.middleRows(b * T, T);
  return out;
}
/// Checks a model's config: every field, and the model's size when it is to be allocated (a
/// model without storage, Storage::none, may be one too large to build: its shapes are what
/// validate() counts).
template <class C>
void validate_for(const C& c, Storage s) {
  if (s == Storage::none) return c.validate_encoder("config");
  c.validate();
}
}  // namespace detail

/// ViTMAEModel (EmbeddingsT = Embeddings: masking) and ViTModel(add_pooling_layer=False)
/// (EmbeddingsT = ViTEmbeddings): embeddings, encoder, final layernorm. The members marked
/// "ViTMAE" exist for the masked embeddings only (they are instantiated when used).
template <class Scalar, class EmbeddingsT>
struct EncoderModel {
  using scalar_type = Scalar;
  using config_type = typename EmbeddingsT::config_type;  // Config or ViTConfig
  config_type config;
  EmbeddingsT embeddings;
  Encoder<Scalar> encoder;
  LayerNorm<Scalar> layernorm;

  /// Every activation of one forward that the backward reads, and the backward's scratch.
  /// Keep one between training steps: its buffers are then allocated once.
  struct Cache {
    typename EmbeddingsT::Cache embeddings;
    typename Encoder<Scalar>::Cache encoder;
    typename LayerNorm<Scalar>::Cache layernorm;
    Matrix<Scalar> tokens, encoded;  // the encoder's input and output (B*(1+K), hidden)
    Matrix<Scalar> dencoded, dtokens;
    Index seq_len = 0;
  };

  /// Builds the modules for `c` with fixed sin-cos position tables and other weights at their
  /// constructor values (zeros, LayerNorm ones; see Storage for the other choices); call
  /// init_weights for a random start. @throws vitmae::Error when the config is invalid.
  explicit EncoderModel(const config_type& c, Storage s = Storage::zeros)
      : config((detail::validate_for(c, s), c)),
        embeddings(c, s),
        encoder(c, s),
        layernorm(c.hidden_size, c.layer_norm_eps, s) {}

  /// ViTModel's forward: pixel_values [B, C, H, W] -> y = sequence_output (B*(1+L), hidden),
  /// samples stacked. hidden_states / attentions as in Encoder::forward.
  /// @throws vitmae::Error on bad shapes.
  void forward(const Tensor<Scalar>& pixel_values, const ForwardOptions& opts, Matrix<Scalar>& y, Cache& c,
               std::vector<Matrix<Scalar>>* hidden_states = nullptr,
               std::vector<Matrix<Scalar>>* attentions = nullptr) const {
    embeddings.forward(pixel_values, opts.interpolate_pos_encoding, c.tokens, c.embeddings);
    encode(1 + c.embeddings.num_patches, y, c, hidden_states, attentions);
  }

  /// ViTMAE: random weights by kind, seeded (see vitmae::init_weights).
  template <class Engine>
  void init_weights(Engine& rng) {
    vitmae::init_weights(*this, config.initializer_range, rng);
  }

  /// ViTMAE: patches of an input of height x width.
  Index num_patches_for(Index height, Index width) const {
    return (height / config.patch_size) * (width / config.patch_size);
  }

  /// ViTMAE: the forward on a batch, HF's ViTMAEModel.forward: pixel_values [B, C, H, W]; noise (B, L)
  /// decides the masking (argsort ascending, keep the first int(L * (1 - mask_ratio))).
  /// sequence_output (B*(1+K), hidden), samples stacked, lands in y; the masks stay in
  /// c.embeddings.masking. hidden_states / attentions as in Encoder::forward.
  /// @throws vitmae::Error on bad shapes.
  void forward(const Tensor<Scalar>& pixel_values, const Matrix<Scalar>& noise, const ForwardOptions& opts,
               Matrix<Scalar>& y, Cache& c, std::vector<Matrix<Scalar>>* hidden_states = nullptr,
               std::vector<Matrix<Scalar>>* attentions = nullptr) const {
    const double mask_ratio = opts.mask_ratio ? *opts.mask_ratio : config.mask_ratio;
    detail::require(mask_ratio >= 0.0 && mask_ratio < 1.0, "ViTMAEModel.forward: mask_ratio must be in [0, 1), got ",
                    mask_ratio);
    embeddings.forward(pixel_values, noise, mask_ratio, opts.interpolate_pos_encoding, c.tokens, c.embeddings);
    encode(1 + c.embeddings.num_kept, y, c, hidden_states, attentions);
  }

  /// The forward after the embeddings: c.tokens (B*seq_len, hidden) through the encoder and the
  /// final layernorm into y.
  void encode(Index seq_len, Matrix<Scalar>& y, Cache& c, std::vector<Matrix<Scalar>>* hidden_states,
              std::vector<Matrix<Scalar>>* attentions) const {
    c.seq_len = seq_len;
    encoder.forward(c.tokens, c.seq_len, c.encoded, c.encoder, hidden_states, attentions);
    layernorm.forward(c.encoded, y, &c.layernorm);  // sequence_output = layernorm(encoder_outputs[0])
  }

  /// dy: dL/d sequence_output (B*seq_len, hidden). Adds every parameter's gradient into g; when
  /// dpixels is given, adds dL/dpixel_values (B, C*H*W) into it.
  void backward(const Matrix<Scalar>& dy, Cache& c, EncoderModel& g, Matrix<Scalar>* dpixels = nullptr) const {
    layernorm.backward(dy, c.layernorm, g.layernorm, c.dencoded);
    encoder.backward(c.dencoded, c.seq_len, c.encoder, g.encoder, c.dtokens);
    embeddings.backward(c.dtokens, c.embeddings, g.embeddings, dpixels);
  }

  /// ViTMAE: HF's ViTMAEModel.forward with its outputs per sample. @throws vitmae::Error on bad shapes.
  ModelOutput<Scalar> forward(const Tensor<Scalar>& pixel_values, const Matrix<Scalar>& noise,
                              const ForwardOptions& opts = {}) const {
    // This thread's buffers, kept between calls: a fresh set each call would be fresh pages
    // each call (measured: pretrain_b8 30% slower). One layer's activations at a time.
    static thread_local Cache c;
    c.encoder.for_backward = false;
    Matrix<Scalar> y;
    std::vector<Matrix<Scalar>> hs, at;
    forward(pixel_values, noise, opts, y, c, opts.output_hidden_states ? &hs : nullptr,
            opts.output_attentions ? &at : nullptr);
    return output(pixel_values.size(0), y, c, hs, at);
  }

  /// ViTMAE: as above with noise drawn from `rng`, any standard engine (ops::uniform_noise).
  template <class Engine, class = typename Engine::result_type>
  ModelOutput<Scalar> forward(const Tensor<Scalar>& pixel_values, Engine& rng, const ForwardOptions& opts = {}) const {
    return forward(pixel_values, noise_for(pixel_values, rng), opts);
  }

  /// ViTMAE: noise (B, L) for pixel_values [B, C, H, W] from `rng`.
  template <class Engine>
  Matrix<Scalar> noise_for(const Tensor<Scalar>& pixel_values, Engine& rng) const {
    detail::require(pixel_values.dim() == 4,
                    "ViTMAEModel.forward: pixel_values must be [batch, channels, height, width], got ",
                    detail::shape_str(pixel_values.shape));
    return ops::uniform_noise<Scalar>(pixel_values.size(0), num_patches_for(pixel_values.size(2), pixel_values.size(3)),
                                      rng);
  }

  /// ViTMAE: the per-sample outputs of a forward (y and c as forward filled them).
  ModelOutput<Scalar> output(Index B, const Matrix<Scalar>& y, const Cache& c, const std::vector<Matrix<Scalar>>& hs,
                             const std::vector<Matrix<Scalar>>& at) const {
    ModelOutput<Scalar> out;
    const Index L = c.embeddings.num_patches;
    out.last_hidden_state = detail::unstack(y, B);
    out.mask.resize(B, L);
    out.ids_restore.resize(B, L);
    for (Index b = 0; b < B; ++b) {
      const ops::Masking& m = c.embeddings.masking[static_cast<size_t>(b)];
      for (Index l = 0; l < L; ++l) {
        out.mask(b, l) = static_cast<Scalar>(m.mask[static_cast<size_t>(l)]);
        out.ids_restore(b, l) = m.ids_restore[static_cast<size_t>(l)];
      }
    }
    for (const Matrix<Scalar>& h : hs) out.hidden_states.push_back(detail::unstack(h, B));
    for (const Matrix<Scalar>& a : at) out.attentions.push_back(detail::unstack(a, B));
    return out;
  }

  template <class Self, class V>
  static void parameters(Self& m, const std::string& prefix, V& visit) {
    m.embeddings.visit_parameters(prefix + "embeddings.", visit);
    m.encoder.visit_parameters(prefix + "encoder.", visit);
    m.layernorm.visit_parameters(prefix + "layernorm.", visit);
  }
  VITMAE_VISIT_PARAMETERS

  /// ViTMAE: loads weights from `source`: HF's ViTMAEModel layout (unprefixed) or a ViTMAEForPreTraining
  /// checkpoint (`vit.` prefix; its decoder is ignored). A missing fixed position table keeps its
  /// sin-cos values; any other missing tensor is an error listing them.
  void load_weights(const io::TensorSource& source, Int8Weights int8_weights = Int8Weights::dequantised) {
    const bool prefixed = source.contains(std::string("vit.") + kPatchWeightKey);
    detail::require(prefixed || source.contains(kPatchWeightKey), source.where(),
                    ": not a ViTMAE checkpoint: it has neither 'vit.", kPatchWeightKey, "' nor '", kPatchWeightKey,
                    "'");
    load_state_dict(*this, source, prefixed ? "vit." : "",
                    prefixed ? std::vector<std::string>{"decoder."} : std::vector<std::string>{}, int8_weights)
        .require_complete(source);
  }

  /// ViTMAE: HF's from_pretrained: a checkpoint folder (config.json plus model.safetensors, a sharded
  /// index, pytorch_model.bin or an MAE-release .pth) or a weights file with config.json beside
  /// it. `preset` (Config::preset) replaces config.json for the MAE release's files.
  /// @throws vitmae::Error.
  static EncoderModel from_pretrained(const std::string& path, const std::string& preset = "") {
    const PretrainedCheckpoint c = open_pretrained<EncoderModel>(path, preset);  // checked before allocating
    EncoderModel m(c.config);
    m.load_weights(*c.weights);
    return m;
  }

  /// ViTMAE: writes config.json and model.safetensors (unprefixed names, like HF's ViTMAEModel).
  /// dtype: storage type, by default the Scalar's own (bit-exact round trip).
  void save_pretrained(const std::string& dir, io::DType dtype = io::dtype_of<Scalar>()) const {
    save_checkpoint(*this, config, dir, dtype, "ViTMAEModel");
  }
};

/// ViTMAEModel: the encoder with ViTMAE's masked embeddings.
template <class Scalar = float>
using Model = EncoderModel<Scalar, Embeddings<Scalar>>;

template <class Scalar = float>
using ViTMAEModel = Model<Scalar>;

/// ViTModel(add_pooling_layer=False): the encoder with ViT's embeddings (learned positions, no
/// masking).
template <class Scalar = float>
using ViTModel = EncoderModel<Scalar, ViTEmbeddings<Scalar>>;

}  // namespace vitmae
