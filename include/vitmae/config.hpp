// SPDX-License-Identifier: Apache-2.0
// ViTMAEConfig: mirrors transformers.ViTMAEConfig. Field names are the config.json keys and
// defaults are the HF code defaults.
#pragma once

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

#include "vitmae/error.hpp"

namespace vitmae {

/// An HF activation, as config.json names it (`hidden_act`); ops/activations.hpp computes it.
enum class Activation { gelu, gelu_tanh, gelu_fast, quick_gelu, relu, silu, tanh, sigmoid, mish, linear };

/// Maps an HF `hidden_act` name to its function. "gelu" is the exact erf GELU; "gelu_new",
/// "gelu_pytorch_tanh" and "gelu_accurate" are the tanh approximation.
/// @throws vitmae::Error for a name HF does not define.
inline Activation activation_from_name(const std::string& name, const std::string& where = "hidden_act") {
  if (name == "gelu" || name == "gelu_python") return Activation::gelu;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_accurate") return Activation::gelu_tanh;
  if (name == "gelu_fast") return Activation::gelu_fast;
  if (name == "quick_gelu") return Activation::quick_gelu;
  if (name == "relu") return Activation::relu;
  if (name == "silu" || name == "swish") return Activation::silu;
  if (name == "tanh") return Activation::tanh;
  if (name == "sigmoid") return Activation::sigmoid;
  if (name == "mish") return Activation::mish;
  if (name == "linear") return Activation::linear;
  detail::fail(where, ": unknown activation '", name,
               "', expected one of gelu, gelu_python, gelu_new, gelu_pytorch_tanh, gelu_accurate, "
               "gelu_fast, quick_gelu, relu, silu, swish, tanh, sigmoid, mish, linear");
}

namespace detail {

/// Reads typed fields of a config.json object, each error naming the file and the key. Absent
/// keys leave the field at its default (HF's code defaults).
struct JsonFields {
  const nlohmann::json& j;
  const std::string& where;

  void get(const char* key, std::int64_t& out) const {
    auto it = j.find(key);
    if (it == j.end()) return;
    if (it->is_number_integer()) {
      out = it->get<std::int64_t>();
      return;
    }
    // An integral float such as 224.0 is what Python writes for some converted configs.
    if (it->is_number_float()) {
      const double v = it->get<double>();
      if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9.0e15) {
        out = static_cast<std::int64_t>(v);
        return;
      }
    }
    detail::fail(where, ": '", key, "' must be an integer, got ", it->dump());
  }
  void get(const char* key, double& out) const {
    auto it = j.find(key);
    if (it == j.end()) return;
    detail::require(it->is_number(), where, ": '", key, "' must be a number, got ", it->dump());
    out = it->get<double>();
  }
  void get(const char* key, bool& out) const {
    auto it = j.find(key);
    if (it == j.end()) return;
    detail::require(it->is_boolean(), where, ": '", key, "' must be true or false, got ", it->dump());
    out = it->get<bool>();
  }
  void get(const char* key, std::string& out) const {
    auto it = j.find(key);
    if (it == j.end()) return;
    detail::require(it->is_string(), where, ": '", key, "' must be a string, got ", it->dump());
    out = it->get<std::string>();
  }
};

}  // namespace detail

/// The fields ViTConfig and ViTMAEConfig share: the ViT encoder's sizes (and what the encoder
/// modules are built from). Field names are the config.json keys, defaults HF's code defaults.
struct EncoderConfig {
  std::int64_t hidden_size = 768;
  std::int64_t num_hidden_layers = 12;
  std::int64_t num_attention_heads = 12;
  std::int64_t intermediate_size = 3072;
  std::string hidden_act = "gelu";
  double hidden_dropout_prob = 0.0;
  double attention_probs_dropout_prob = 0.0;
  double initializer_range = 0.02;
  double layer_norm_eps = 1e-12;
  std::int64_t image_size = 224;
  std::int64_t patch_size = 16;
  std::int64_t num_channels = 3;
  bool qkv_bias = true;

  /// Patches per side and in all at the configured image size.
  std::int64_t grid_size() const { return image_size / patch_size; }
  std::int64_t num_patches() const { return grid_size() * grid_size(); }

  /// Checks the encoder's fields; @throws vitmae::Error naming the field, what was expected and
  /// what was found.
  void validate_encoder(const std::string& where) const {
    auto positive = [&](const char* name, std::int64_t v) {
      detail::require(v > 0, where, ": '", name, "' must be positive, got ", v);
    };
    positive("hidden_size", hidden_size);
    positive("num_attention_heads", num_attention_heads);
    positive("intermediate_size", intermediate_size);
    positive("image_size", image_size);
    positive("patch_size", patch_size);
    positive("num_channels", num_channels);
    detail::require(num_hidden_layers >= 0, where, ": 'num_hidden_layers' must be >= 0, got ", num_hidden_layers);
    detail::require(hidden_size % num_attention_heads == 0, where, ": 'hidden_size' ", hidden_size,
                    " is not a multiple of 'num_attention_heads' ", num_attention_heads);
    detail::require(patch_size <= image_size, where, ": 'patch_size' ", patch_size, " is larger than 'image_size' ",
                    image_size);
    detail::require(image_size % patch_size == 0, where, ": 'image_size' ", image_size,
                    " is not a multiple of 'patch_size' ", patch_size);
    detail::require(std::isfinite(layer_norm_eps) && layer_norm_eps >= 0.0, where,
                    ": 'layer_norm_eps' must be a finite number >= 0, got ", layer_norm_eps);
    detail::require(std::isfinite(initializer_range) && initializer_range >= 0.0, where,
                    ": 'initializer_range' must be a finite number >= 0, got ", initializer_range);
    for (auto [name, p] : {std::pair<const char*, double>{"hidden_dropout_prob", hidden_dropout_prob},
                           {"attention_probs_dropout_prob", attention_probs_dropout_prob}})
      detail::require(p >= 0.0 && p <= 1.0, where, ": '", name, "' must be in [0, 1], got ", p);
    activation_from_name(hidden_act, where + ": 'hidden_act'");
  }

  /// Parameters of one transformer layer of width w and MLP width i (HF's ViTLayer).
  long double layer_parameters(long double w, long double i) const {
    return 4 * w * w + (qkv_bias ? 3 : 0) * w + w + 2 * w * i + i + w + 4 * w;
  }
  /// The encoder's parameters (embeddings with their position table, layers, final norm).
  long double encoder_parameters() const {
    using R = long double;
    const R grid = static_cast<R>(grid_size()), positions = 1 + grid * grid, h = static_cast<R>(hidden_size);
    const R pp = static_cast<R>(patch_size) * static_cast<R>(patch_size) * static_cast<R>(num_channels);
    return h + positions * h + h * pp + h +
           static_cast<R>(num_hidden_layers) * layer_parameters(h, static_cast<R>(intermediate_size)) + 2 * h;
  }
  /// Refuses a model larger than 4e9 parameters (16 GB as float32; MAE's ViT-H is 0.66e9), so
  /// that a config asking for an absurd one (image_size 65536 with patch_size 1, a million
  /// layers) fails with the numbers rather than as bad_alloc or an exhausted machine.
  void check_model_size(long double parameters, const std::string& where, const std::string& sizes) const {
    if (parameters <= 4e9L) return;
    char count[64], gb[64];
    std::snprintf(count, sizeof count, "%.0Lf", parameters);
    std::snprintf(gb, sizeof gb, "%.1Lf", parameters * 4 / 1e9L);
    detail::fail(where, ": the model would have ", count, " parameters (", gb,
                 " GB as float32), more than the limit of 4000000000: check image_size ", image_size, " / patch_size ",
                 patch_size, " (", std::to_string(grid_size() * grid_size()), " patches), hidden_size ", hidden_size,
                 " x num_hidden_layers ", num_hidden_layers, sizes);
  }

  /// Hands each encoder field to f(config.json key, field), for reading and writing alike.
  template <class Self, class F>
  static void encoder_fields(Self& c, F&& f) {
    f("hidden_size", c.hidden_size);
    f("num_hidden_layers", c.num_hidden_layers);
    f("num_attention_heads", c.num_attention_heads);
    f("intermediate_size", c.intermediate_size);
    f("hidden_act", c.hidden_act);
    f("hidden_dropout_prob", c.hidden_dropout_prob);
    f("attention_probs_dropout_prob", c.attention_probs_dropout_prob);
    f("initializer_range", c.initializer_range);
    f("layer_norm_eps", c.layer_norm_eps);
    f("image_size", c.image_size);
    f("patch_size", c.patch_size);
    f("num_channels", c.num_channels);
    f("qkv_bias", c.qkv_bias);
  }
  void read_encoder(const detail::JsonFields& f) {
    encoder_fields(*this, [&](const char* key, auto& field) { f.get(key, field); });
  }
  void write_encoder(nlohmann::json& j) const {
    encoder_fields(*this, [&](const char* key, const auto& field) { j[key] = field; });
  }
};

/// transformers.ViTMAEConfig: the encoder's fields, the decoder's and the masking.
struct Config : EncoderConfig {
  // HF's docstring says 12 here; the code default is 16, and the code is what runs.
  std::int64_t decoder_num_attention_heads = 16;
  std::int64_t decoder_hidden_size = 512;
  std::int64_t decoder_num_hidden_layers = 8;
  std::int64_t decoder_intermediate_size = 2048;
  double mask_ratio = 0.75;
  bool norm_pix_loss = false;

  /// Checks every field; @throws vitmae::Error naming the field, what was expected and what was found.
  void validate(const std::string& where = "config") const {
    validate_encoder(where);
    auto positive = [&](const char* name, std::int64_t v) {
      detail::require(v > 0, where, ": '", name, "' must be positive, got ", v);
    };
    positive("decoder_hidden_size", decoder_hidden_size);
    positive("decoder_num_attention_heads", decoder_num_attention_heads);
    positive("decoder_intermediate_size", decoder_intermediate_size);
    detail::require(decoder_num_hidden_layers >= 0, where, ": 'decoder_num_hidden_layers' must be >= 0, got ",
                    decoder_num_hidden_layers);
    detail::require(decoder_hidden_size % decoder_num_attention_heads == 0, where, ": 'decoder_hidden_size' ",
                    decoder_hidden_size, " is not a multiple of 'decoder_num_attention_heads' ",
                    decoder_num_attention_heads);
    detail::require(std::isfinite(mask_ratio) && mask_ratio >= 0.0 && mask_ratio < 1.0, where,
                    ": 'mask_ratio' must be in [0, 1), got ", mask_ratio);
    // ViTMAEForPreTraining's parameters, position tables included, counted as its
    // visit_parameters lists them (tensor_specs, checkpoint.hpp), in long double: exact below 2^64.
    using R = long double;
    const R grid = static_cast<R>(grid_size()), positions = 1 + grid * grid;
    const R h = static_cast<R>(hidden_size), dh = static_cast<R>(decoder_hidden_size);
    const R pp = static_cast<R>(patch_size) * static_cast<R>(patch_size) * static_cast<R>(num_channels);
    const R decoder =
        dh + positions * dh + dh * h + dh +  // mask token, positions, decoder_embed
        static_cast<R>(decoder_num_hidden_layers) * layer_parameters(dh, static_cast<R>(decoder_intermediate_size)) +
        2 * dh + pp * dh + pp;  // decoder_norm, decoder_pred
    check_model_size(encoder_parameters() + decoder, where,
                     ", decoder_hidden_size " + std::to_string(decoder_hidden_size) + " x decoder_num_hidden_layers " +
                         std::to_string(decoder_num_hidden_layers));
  }

  /// Reads an HF config.json object. Unknown keys are ignored (HF keeps them as attributes).
  /// @throws vitmae::Error on a wrong JSON type or an invalid value.
  static Config from_json(const nlohmann::json& j, const std::string& where = "config.json") {
    detail::require(j.is_object(), where, ": expected a JSON object, got ", j.type_name());
    Config c;
    const detail::JsonFields f{j, where};
    c.read_encoder(f);
    f.get("decoder_num_attention_heads", c.decoder_num_attention_heads);
    f.get("decoder_hidden_size", c.decoder_hidden_size);
    f.get("decoder_num_hidden_layers", c.decoder_num_hidden_layers);
    f.get("decoder_intermediate_size", c.decoder_intermediate_size);
    f.get("mask_ratio", c.mask_ratio);
    f.get("norm_pix_loss", c.norm_pix_loss);
    c.validate(where);
    return c;
  }

  /// The config.json object HF writes; `architecture` is "ViTMAEForPreTraining" or "ViTMAEModel".
  nlohmann::json to_json(const std::string& architecture = "ViTMAEForPreTraining",
                         const std::string& torch_dtype = "float32") const {
    nlohmann::json j;
    j["architectures"] = {architecture};
    write_encoder(j);
    j["decoder_hidden_size"] = decoder_hidden_size;
    j["decoder_intermediate_size"] = decoder_intermediate_size;
    j["decoder_num_attention_heads"] = decoder_num_attention_heads;
    j["decoder_num_hidden_layers"] = decoder_num_hidden_layers;
    j["mask_ratio"] = mask_ratio;
    j["model_type"] = "vit_mae";
    j["norm_pix_loss"] = norm_pix_loss;
    j["torch_dtype"] = torch_dtype;
    return j;
  }

  /// The sizes of the original MAE release (facebookresearch/mae): "mae-vit-base" (ViT-B/16),
  /// "mae-vit-large" (ViT-L/16), "mae-vit-huge" (ViT-H/14), all with the 512-wide, 8-layer,
  /// 16-head decoder and timm's LayerNorm eps 1e-6. @throws vitmae::Error for another name.
  static Config preset(const std::string& name) {
    Config c;
    c.layer_norm_eps = 1e-6;
    if (name == "mae-vit-base") return c;
    if (name == "mae-vit-large") {
      c.hidden_size = 1024, c.num_hidden_layers = 24, c.num_attention_heads = 16, c.intermediate_size = 4096;
      return c;
    }
    if (name == "mae-vit-huge") {
      c.hidden_size = 1280, c.num_hidden_layers = 32, c.num_attention_heads = 16, c.intermediate_size = 5120;
      c.patch_size = 14;
      return c;
    }
    detail::fail("preset: unknown name '", name, "', expected mae-vit-base, mae-vit-large or mae-vit-huge");
  }

  /// The decoder's view of the config, as HF's deepcopy with decoder_* sizes swapped in.
  Config decoder_config() const {
    Config d = *this;
    d.hidden_size = decoder_hidden_size;
    d.num_hidden_layers = decoder_num_hidden_layers;
    d.num_attention_heads = decoder_num_attention_heads;
    d.intermediate_size = decoder_intermediate_size;
    return d;
  }
};

using ViTMAEConfig = Config;

}  // namespace vitmae
