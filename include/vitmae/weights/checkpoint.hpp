// SPDX-License-Identifier: Apache-2.0
// ViTMAE checkpoints: the MAE release's timm names mapped to HF's, the weights and config of a
// checkpoint path as from_pretrained reads them, the check that they fit each other before a
// model is allocated (the model's own visit_parameters, run without storage), and
// save_pretrained's folder. The io/ headers
// below it know no model; this one knows ViTMAE's names.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "vitmae/config.hpp"
#include "vitmae/io/checkpoint.hpp"
#include "vitmae/io/file.hpp"
#include "vitmae/io/json_file.hpp"
#include "vitmae/io/safetensors.hpp"
#include "vitmae/io/tensor_source.hpp"
#include "vitmae/parameter.hpp"
#include "vitmae/vit_config.hpp"
#include "vitmae/weights/quantize.hpp"
#include "vitmae/weights/state_dict.hpp"

namespace vitmae {

/// The key every ViTMAE checkpoint has, in each naming layout (ViTMAEModel's, or with `vit.`).
inline constexpr const char* kPatchWeightKey = "embeddings.patch_embeddings.projection.weight";

/// True when the names are timm's (the original MAE release), not HF's.
inline bool has_timm_names(const io::TensorSource& s) { return s.contains("patch_embed.proj.weight"); }

/// Maps the MAE release's timm names to HF's ViTMAEForPreTraining names, splitting each
/// attn.qkv into query, key and value (stacked in that order along dim 0). Names it does not
/// know keep their own (so the strict loader reports them as unexpected).
inline std::unique_ptr<io::TensorSource> timm_to_hf(std::shared_ptr<io::TensorSource> base) {
  std::map<std::string, io::RenamedSource::Target> out;
  auto block = [&](const std::string& from, const std::string& to, const std::string& rest) -> bool {
    static const std::pair<const char*, const char*> simple[] = {{"norm1.", "layernorm_before."},
                                                                 {"norm2.", "layernorm_after."},
                                                                 {"attn.proj.", "attention.output.dense."},
                                                                 {"mlp.fc1.", "intermediate.dense."},
                                                                 {"mlp.fc2.", "output.dense."}};
    for (const auto& [a, b] : simple)
      if (rest.rfind(a, 0) == 0) {
        out[to + b + rest.substr(std::string(a).size())] = {from + rest};
        return true;
      }
    if (rest == "attn.qkv.weight" || rest == "attn.qkv.bias") {
      const std::vector<std::int64_t> s = base->shape(from + rest);
      detail::require(!s.empty() && s[0] % 3 == 0, base->where(), ": '", from + rest, "' has shape ",
                      detail::shape_str(s), ", expected 3 * hidden rows (query, key, value)");
      const std::int64_t h = s[0] / 3;
      const std::string kind = rest.substr(9);  // "weight" / "bias"
      const char* parts[] = {"query.", "key.", "value."};
      for (int k = 0; k < 3; ++k)
        out[to + "attention.attention." + parts[k] + kind] = {from + rest, k * h, (k + 1) * h};
      return true;
    }
    return false;
  };
  for (const std::string& n : base->names()) {
    static const std::pair<const char*, const char*> top[] = {
        {"cls_token", "vit.embeddings.cls_token"},
        {"pos_embed", "vit.embeddings.position_embeddings"},
        {"patch_embed.proj.weight", "vit.embeddings.patch_embeddings.projection.weight"},
        {"patch_embed.proj.bias", "vit.embeddings.patch_embeddings.projection.bias"},
        {"norm.weight", "vit.layernorm.weight"},
        {"norm.bias", "vit.layernorm.bias"},
        {"mask_token", "decoder.mask_token"},
        {"decoder_pos_embed", "decoder.decoder_pos_embed"},
        {"decoder_embed.weight", "decoder.decoder_embed.weight"},
        {"decoder_embed.bias", "decoder.decoder_embed.bias"},
        {"decoder_norm.weight", "decoder.decoder_norm.weight"},
        {"decoder_norm.bias", "decoder.decoder_norm.bias"},
        {"decoder_pred.weight", "decoder.decoder_pred.weight"},
        {"decoder_pred.bias", "decoder.decoder_pred.bias"}};
    bool done = false;
    for (const auto& [a, b] : top)
      if (n == a) {
        out[b] = {n};
        done = true;
      }
    for (const auto& [pre, to] : {std::pair<std::string, std::string>{"blocks.", "vit.encoder.layer."},
                                  {"decoder_blocks.", "decoder.decoder_layers."}})
      if (!done && n.rfind(pre, 0) == 0) {
        const size_t dot = n.find('.', pre.size());
        if (dot == std::string::npos) continue;
        const std::string idx = n.substr(pre.size(), dot - pre.size());
        done = block(pre + idx + ".", to + idx + ".", n.substr(dot + 1));
      }
    if (!done) out[n] = {n};
  }
  return std::make_unique<io::RenamedSource>(std::move(base), std::move(out));
}

/// Reads a ViTMAE config.json file (transformers' ViTMAEConfig.from_json_file).
/// @throws vitmae::Error naming the file.
inline Config load_config(const std::string& path) {
  return Config::from_json(io::read_json_file(path, "config file"), path);
}

/// Reads a ViT config.json file (transformers' ViTConfig.from_json_file).
/// @throws vitmae::Error naming the file.
inline ViTConfig load_vit_config(const std::string& path) {
  return ViTConfig::from_json(io::read_json_file(path, "config file"), path);
}

/// The weights from_pretrained loads for `path` (io::open_checkpoint_weights), with the MAE
/// release's timm names mapped to HF's.
inline std::shared_ptr<io::TensorSource> open_pretrained_weights(const std::string& path) {
  std::shared_ptr<io::TensorSource> src = io::open_checkpoint_weights(path);
  if (has_timm_names(*src)) return timm_to_hf(std::move(src));
  return src;
}

/// Config of a checkpoint: its config.json (beside a weights file, or in the folder), or a preset.
inline Config checkpoint_config(const std::string& path, const std::string& preset) {
  return preset.empty() ? load_config(io::join_path(io::checkpoint_folder(path), "config.json"))
                        : Config::preset(preset);
}

namespace detail {
/// A config value a dimension of a tensor can come from, as messages quote it ("hidden_size
/// 768"), and whether the encoder's or the decoder's tensors (names "decoder.*") use it.
struct NamedSize {
  std::int64_t value;
  std::string text;
  bool encoder, decoder;
};
inline std::string named(const char* key, std::int64_t v) { return std::string(key) + " " + std::to_string(v); }
inline std::vector<NamedSize> encoder_sizes(const EncoderConfig& c) {
  const std::int64_t positions = 1 + c.num_patches();
  return {{c.hidden_size, named("hidden_size", c.hidden_size), true, true},
          {c.intermediate_size, named("intermediate_size", c.intermediate_size), true, false},
          {c.num_channels, named("num_channels", c.num_channels), true, false},
          {c.patch_size, named("patch_size", c.patch_size), true, false},
          {positions,
           "1 + (image_size " + std::to_string(c.image_size) + " / patch_size " + std::to_string(c.patch_size) +
               ")^2 = " + std::to_string(positions) + " positions",
           true, true}};
}
/// The named sizes of ViTMAE's config: the encoder's and the decoder's.
inline std::vector<NamedSize> named_sizes(const Config& c) {
  std::vector<NamedSize> out = encoder_sizes(c);
  const std::int64_t P = c.patch_size * c.patch_size * c.num_channels;
  out.push_back({c.decoder_hidden_size, named("decoder_hidden_size", c.decoder_hidden_size), false, true});
  out.push_back(
      {c.decoder_intermediate_size, named("decoder_intermediate_size", c.decoder_intermediate_size), false, true});
  out.push_back({P,
                 "patch_size " + std::to_string(c.patch_size) + "^2 * num_channels " + std::to_string(c.num_channels) +
                     " = " + std::to_string(P) + " values per patch",
                 false, true});
  return out;
}
/// The named sizes of ViT's config: the encoder's and the labels.
inline std::vector<NamedSize> named_sizes(const ViTConfig& c) {
  std::vector<NamedSize> out = encoder_sizes(c);
  out.push_back({static_cast<std::int64_t>(c.num_labels()),
                 named("num_labels", static_cast<std::int64_t>(c.num_labels())) + " (id2label)", true, false});
  return out;
}
}  // namespace detail

/// The tensors of a model of type M (ViTMAEModel, ViTMAEForPreTraining, ViTModel,
/// ViTForImageClassification) for `config`, in visit_parameters order (the one list of names),
/// with HF's shapes and kinds: visit_parameters of M built without storage (Storage::none), so
/// nothing is allocated and any size can be listed. Each dimension's `from` names the config
/// values of that size (for messages; "" for none).
/// @throws vitmae::Error when a field of the config is invalid.
template <class M>
std::vector<TensorSpec> tensor_specs(const typename M::config_type& config) {
  const M shapes(config, Storage::none);
  const std::vector<detail::NamedSize> sizes = detail::named_sizes(config);
  std::vector<TensorSpec> out;
  shapes.visit_parameters("", [&](const auto& p) {
    TensorSpec t{p.name, std::vector<std::int64_t>(p.shape.begin(), p.shape.end()), p.kind, {}};
    const bool decoder = p.name.rfind("decoder.", 0) == 0;
    for (const std::int64_t d : t.shape) {
      std::string from;
      for (const detail::NamedSize& n : sizes)
        if (n.value == d && (decoder ? n.decoder : n.encoder)) from += (from.empty() ? "" : " or ") + n.text;
      t.from.push_back(from);
    }
    out.push_back(std::move(t));
  });
  return out;
}

namespace detail {
template <class M, class = void>
struct has_decoder_member : std::false_type {};
template <class M>
struct has_decoder_member<M, std::void_t<decltype(std::declval<M&>().decoder)>> : std::true_type {};
}  // namespace detail

/// Refuses weights that do not fit `config` before any model is allocated (milliseconds, no
/// memory): every tensor's shape in the checkpoint's header against tensor_specs<M>, then the
/// missing tensors (check_state_dict_shapes; `config_where` names the config in messages). M:
/// ViTMAEForPreTraining (its `vit.` and `decoder.` names), ViTMAEModel or ViTModel (unprefixed or
/// `vit.` names). A source in neither of the model's layouts is left to load_weights, which
/// says what it is. @throws vitmae::Error naming the first tensor that does not fit.
template <class M>
void check_weights_fit(const typename M::config_type& config, const io::TensorSource& source,
                       const std::string& config_where) {
  const std::string prefixed = std::string("vit.") + kPatchWeightKey;
  if constexpr (detail::has_decoder_member<M>::value) {
    if (!source.contains(prefixed) || !source.contains("decoder.decoder_pred.weight")) return;
    check_state_dict_shapes(tensor_specs<M>(config), source, "", config_where);
  } else {
    if (!source.contains(prefixed) && !source.contains(kPatchWeightKey)) return;
    check_state_dict_shapes(tensor_specs<M>(config), source, source.contains(prefixed) ? "vit." : "", config_where);
  }
}

/// What messages call the config of checkpoint_config(path, preset).
inline std::string checkpoint_config_name(const std::string& path, const std::string& preset) {
  return preset.empty() ? io::join_path(io::checkpoint_folder(path), "config.json") : "preset '" + preset + "'";
}

/// A checkpoint as from_pretrained reads it: its config (config.json, or `preset`) and its
/// weights (opened and parsed once), checked against each other for a model of type M
/// (check_weights_fit: ViTMAEModel or ViTMAEForPreTraining) before any model is allocated.
struct PretrainedCheckpoint {
  Config config;
  std::shared_ptr<io::TensorSource> weights;
};
template <class M>
PretrainedCheckpoint open_pretrained(const std::string& path, const std::string& preset) {
  PretrainedCheckpoint c{checkpoint_config(path, preset), open_pretrained_weights(path)};
  check_weights_fit<M>(c.config, *c.weights, checkpoint_config_name(path, preset));
  return c;
}

/// load_for_inference (quantize.hpp) of the checkpoint at `path`, opened and checked as
/// from_pretrained does (open_pretrained). M: ViTMAEModel or ViTMAEForPreTraining.
/// @throws vitmae::Error as from_pretrained.
template <class M>
M load_for_inference(const std::string& path, const std::string& preset, Precision precision) {
  const PretrainedCheckpoint c = open_pretrained<M>(path, preset);
  return load_for_inference<M>(c.config, *c.weights, precision);
}
template <class M>
M load_for_inference(const std::string& path, const std::string& preset = "", bool int8 = false) {
  return load_for_inference<M>(path, preset, int8 ? Precision::int8 : Precision::float32);
}

/// save_pretrained of a model: model.safetensors (HF names, "format": "pt" metadata, which
/// transformers requires) and config.json naming the architecture, each written atomically.
template <class Module, class ModelConfig>
void save_checkpoint(const Module& module, const ModelConfig& config, const std::string& dir, io::DType dtype,
                     const std::string& architecture) {
  io::make_dirs(dir);
  io::SafetensorsWriter w;
  w.set_metadata("format", "pt");
  if (dtype == io::DType::I8)
    w.set_metadata("vitmae_quantization",
                   "int8: Linear and patch-projection weights per output channel (symmetric), "
                   "<name>_scale float32 [out]; other tensors float32");
  add_state_dict(module, w, "", dtype);
  w.save(io::join_path(dir, "model.safetensors"));
  io::write_file_atomic(io::join_path(dir, "config.json"),
                        config.to_json(architecture, io::torch_dtype_name(dtype)).dump(2) + "\n");
}

}  // namespace vitmae
