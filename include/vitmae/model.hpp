// SPDX-License-Identifier: Apache-2.0
// ViTMAEModel: embeddings (with random masking), encoder, final layernorm.
#pragma once

#include <cerrno>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <sys/stat.h>
#include <vector>

#include "vitmae/config.hpp"
#include "vitmae/detail/init.hpp"
#include "vitmae/io/checkpoint.hpp"
#include "vitmae/io/state_dict.hpp"
#include "vitmae/modules/embeddings.hpp"
#include "vitmae/modules/encoder.hpp"
#include "vitmae/modules/layer_norm.hpp"
#include "vitmae/ops/random_masking.hpp"

namespace vitmae {

/// HF's forward keyword arguments.
struct ForwardOptions {
  bool interpolate_pos_encoding = false;
  bool output_hidden_states = false;
  bool output_attentions = false;
  /// Overrides config.mask_ratio for this call when set (ViTMAEForPreTraining passes its own).
  std::optional<double> mask_ratio;
};

/// ViTMAEModelOutput. Per-sample matrices because K (kept patches) is the same for all samples
/// but rows are tokens: last_hidden_state[b] is (1+K, hidden), CLS first.
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
/// pixel_values must be [B, C, H, W]; returns sample b as (C, H*W).
template <class Scalar>
Matrix<Scalar> image_of(const Tensor<Scalar>& pixel_values, Index b) {
  const Index C = pixel_values.size(1), HW = pixel_values.size(2) * pixel_values.size(3);
  return Eigen::Map<const Matrix<Scalar>>(pixel_values.ptr() + b * C * HW, C, HW);
}

inline std::string torch_dtype_name(io::DType d) {
  switch (d) {
    case io::DType::F64: return "float64";
    case io::DType::F16: return "float16";
    case io::DType::BF16: return "bfloat16";
    default: return "float32";
  }
}

inline void make_dir(const std::string& dir) {
  if (io::dir_exists(dir)) return;
  detail::require(::mkdir(dir.c_str(), 0755) == 0 || io::dir_exists(dir), dir, ": cannot create folder: ",
                  std::strerror(errno));
}

/// Config of a checkpoint: its config.json (beside a weights file, or in the folder), or a preset.
inline Config checkpoint_config(const std::string& path, const std::string& preset) {
  return preset.empty() ? Config::load(io::join_path(io::checkpoint_folder(path), "config.json")) : Config::preset(preset);
}

/// save_pretrained of either model: model.safetensors (HF names, "format": "pt" metadata, which
/// transformers requires) and config.json naming the architecture.
template <class Module>
void save_checkpoint(Module& module, const Config& config, const std::string& dir, io::DType dtype,
                     const std::string& architecture) {
  make_dir(dir);
  io::SafetensorsWriter w;
  w.set_metadata("format", "pt");
  io::add_state_dict(module, w, "", dtype);
  w.save(io::join_path(dir, "model.safetensors"));
  config.save(io::join_path(dir, "config.json"), architecture, torch_dtype_name(dtype));
}

/// The key every ViTMAE checkpoint has, in each naming layout.
inline const char* kPatchWeightKey = "embeddings.patch_embeddings.projection.weight";
}  // namespace detail

template <class Scalar = float>
struct Model {
  Config config;
  Embeddings<Scalar> embeddings;
  Encoder<Scalar> encoder;
  LayerNorm<Scalar> layernorm;

  /// Builds the modules for `c` with fixed sin-cos position tables and other weights at their
  /// constructor values (zeros, LayerNorm ones); call init_weights for a random start.
  explicit Model(const Config& c)
      : config((c.validate(), c)), embeddings(c), encoder(c), layernorm(c.hidden_size, c.layer_norm_eps) {}

  /// HF's _init_weights, seeded (see detail::init_weights).
  void init_weights(std::mt19937_64& rng) { detail::init_weights(*this, config.initializer_range, rng); }

  /// Patches of an input of height x width.
  Index num_patches_for(Index height, Index width) const {
    return (height / config.patch_size) * (width / config.patch_size);
  }

  /// Checks pixel_values [B, C, H, W] and noise (B, L). @throws vitmae::Error naming what is off.
  void check_inputs(const Tensor<Scalar>& pixel_values, const Matrix<Scalar>& noise, bool interpolate) const {
    detail::require(pixel_values.dim() == 4, "ViTMAEModel.forward: pixel_values must be [batch, channels, height, width], got ",
                    detail::shape_str(pixel_values.shape));
    detail::require(pixel_values.size(1) == config.num_channels, "ViTMAEModel.forward: pixel_values have ",
                    pixel_values.size(1), " channels, expected num_channels = ", config.num_channels);
    const Index H = pixel_values.size(2), W = pixel_values.size(3);
    detail::require(interpolate || (H == config.image_size && W == config.image_size),
                    "ViTMAEModel.forward: input image size (", H, "*", W, ") doesn't match model (",
                    config.image_size, "*", config.image_size, "); pass interpolate_pos_encoding to run other sizes");
    detail::require(H >= config.patch_size && W >= config.patch_size, "ViTMAEModel.forward: image ", H, "x", W,
                    " is smaller than one patch (", config.patch_size, ")");
    const Index L = num_patches_for(H, W);
    detail::require(noise.rows() == pixel_values.size(0) && noise.cols() == L, "ViTMAEModel.forward: noise has shape [",
                    noise.rows(), ", ", noise.cols(), "], expected [batch, num_patches] = [", pixel_values.size(0),
                    ", ", L, "]");
  }

  /// pixel_values [B, C, H, W]; noise (B, L) decides the masking as in HF (argsort ascending,
  /// keep the first int(L * (1 - mask_ratio))). @throws vitmae::Error on bad shapes.
  ModelOutput<Scalar> forward(const Tensor<Scalar>& pixel_values, const Matrix<Scalar>& noise,
                              const ForwardOptions& opts = {}) const {
    check_inputs(pixel_values, noise, opts.interpolate_pos_encoding);
    const Index B = pixel_values.size(0), H = pixel_values.size(2), W = pixel_values.size(3);
    const Index L = noise.cols();
    const double mask_ratio = opts.mask_ratio ? *opts.mask_ratio : config.mask_ratio;
    detail::require(mask_ratio >= 0.0 && mask_ratio < 1.0, "ViTMAEModel.forward: mask_ratio must be in [0, 1), got ",
                    mask_ratio);
    const Matrix<Scalar> pos = embeddings.position_table(H, W, opts.interpolate_pos_encoding);  // (1+L, hidden)
    ModelOutput<Scalar> out;
    out.last_hidden_state.resize(static_cast<size_t>(B));
    out.mask.resize(B, L);
    out.ids_restore.resize(B, L);
    const size_t n_hidden = opts.output_hidden_states ? encoder.layer.size() + 1 : 0;
    const size_t n_attn = opts.output_attentions ? encoder.layer.size() : 0;
    out.hidden_states.assign(n_hidden, std::vector<Matrix<Scalar>>(static_cast<size_t>(B)));
    out.attentions.assign(n_attn, std::vector<Matrix<Scalar>>(static_cast<size_t>(B)));
    // Embed and mask each sample, then run the whole batch through the encoder stacked as one
    // (B*(1+K), hidden) matrix: every product sees all samples at once.
    const Index T = 1 + ops::num_kept(L, mask_ratio);
    Matrix<Scalar> x(B * T, config.hidden_size);  // (B*(1+K), hidden)
    for (Index b = 0; b < B; ++b) {
      ops::Masking masking;
      const RowVector<Scalar> noise_row = noise.row(b);
      x.middleRows(b * T, T) = embeddings.forward(detail::image_of(pixel_values, b), H, W, pos, noise_row, mask_ratio,
                                                  opts.interpolate_pos_encoding, masking);  // (1+K, hidden)
      for (Index l = 0; l < L; ++l) {
        out.mask(b, l) = static_cast<Scalar>(masking.mask[static_cast<size_t>(l)]);
        out.ids_restore(b, l) = masking.ids_restore[static_cast<size_t>(l)];
      }
    }
    std::vector<Matrix<Scalar>> hs, at;
    x = encoder.forward(std::move(x), n_hidden ? &hs : nullptr, n_attn ? &at : nullptr, T);
    x = layernorm.forward(x);  // sequence_output = layernorm(encoder_outputs[0])
    const Index HT = config.num_attention_heads * T;
    for (Index b = 0; b < B; ++b) {
      out.last_hidden_state[static_cast<size_t>(b)] = x.middleRows(b * T, T);
      for (size_t i = 0; i < n_hidden; ++i) out.hidden_states[i][static_cast<size_t>(b)] = hs[i].middleRows(b * T, T);
      for (size_t i = 0; i < n_attn; ++i) out.attentions[i][static_cast<size_t>(b)] = at[i].middleRows(b * HT, HT);
    }
    return out;
  }

  /// As above with noise drawn from `rng` (ops::uniform_noise: documented, platform-independent).
  ModelOutput<Scalar> forward(const Tensor<Scalar>& pixel_values, std::mt19937_64& rng,
                              const ForwardOptions& opts = {}) const {
    detail::require(pixel_values.dim() == 4, "ViTMAEModel.forward: pixel_values must be [batch, channels, height, width], got ",
                    detail::shape_str(pixel_values.shape));
    return forward(pixel_values,
                   ops::uniform_noise<Scalar>(pixel_values.size(0), num_patches_for(pixel_values.size(2), pixel_values.size(3)), rng),
                   opts);
  }

  template <class V>
  void visit_parameters(const std::string& prefix, V&& visit) {
    embeddings.visit_parameters(prefix + "embeddings.", visit);
    encoder.visit_parameters(prefix + "encoder.", visit);
    layernorm.visit_parameters(prefix + "layernorm.", visit);
  }

  /// Loads weights from `source`: HF's ViTMAEModel layout (unprefixed) or a ViTMAEForPreTraining
  /// checkpoint (`vit.` prefix; its decoder is ignored). A missing position table is
  /// regenerated (it is fixed sin-cos); any other missing tensor is an error listing them.
  void load_weights(const io::TensorSource& source) {
    const bool prefixed = source.contains(std::string("vit.") + detail::kPatchWeightKey);
    detail::require(prefixed || source.contains(detail::kPatchWeightKey), source.where(),
                    ": not a ViTMAE checkpoint: it has neither 'vit.", detail::kPatchWeightKey, "' nor '",
                    detail::kPatchWeightKey, "'");
    const io::LoadReport r = io::load_state_dict(*this, source, prefixed ? "vit." : "",
                                                 prefixed ? std::vector<std::string>{"decoder."} : std::vector<std::string>{});
    std::vector<std::string> missing;
    for (const auto& n : r.missing)
      if (n != "embeddings.position_embeddings") missing.push_back(n);
    detail::require(missing.empty(), "load_state_dict: ", source.where(), ": missing tensors: ", io::join_names(missing));
    detail::require(r.unexpected.empty(), "load_state_dict: ", source.where(), ": unexpected tensors: ",
                    io::join_names(r.unexpected));
  }

  /// HF's from_pretrained: a checkpoint folder (config.json plus model.safetensors, a sharded
  /// index, pytorch_model.bin or an MAE-release .pth) or a weights file with config.json beside
  /// it. `preset` (Config::preset) replaces config.json for the MAE release's files.
  /// @throws vitmae::Error.
  static Model from_pretrained(const std::string& path, const std::string& preset = "") {
    Model m(detail::checkpoint_config(path, preset));
    m.load_weights(*io::open_checkpoint_weights(path));
    return m;
  }

  /// Writes config.json and model.safetensors (unprefixed names, like HF's ViTMAEModel).
  /// dtype: storage type, by default the Scalar's own (bit-exact round trip).
  void save_pretrained(const std::string& dir, io::DType dtype = std::is_same_v<Scalar, double> ? io::DType::F64
                                                                                                  : io::DType::F32) {
    detail::save_checkpoint(*this, config, dir, dtype, "ViTMAEModel");
  }
};

template <class Scalar = float>
using ViTMAEModel = Model<Scalar>;

}  // namespace vitmae
