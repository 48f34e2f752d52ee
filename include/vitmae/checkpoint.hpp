// SPDX-License-Identifier: Apache-2.0
// ViTMAE checkpoints: the MAE release's timm names mapped to HF's, the weights and config of a
// checkpoint path as from_pretrained reads them, the check that they fit each other before a
// model is allocated, and save_pretrained's folder. The io/ headers
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
#include "vitmae/io/safetensors.hpp"
#include "vitmae/io/tensor_source.hpp"
#include "vitmae/quantize.hpp"
#include "vitmae/state_dict.hpp"

namespace vitmae {

/// The key every ViTMAE checkpoint has, in each naming layout (ViTMAEModel's, or with `vit.`).
inline constexpr const char* kPatchWeightKey = "embeddings.patch_embeddings.projection.weight";

/// True when the names are timm's (the original MAE release), not HF's.
inline bool has_timm_names(const io::TensorSource& s) {
  return s.contains("patch_embed.proj.weight");
}

/// Maps the MAE release's timm names to HF's ViTMAEForPreTraining names, splitting each
/// attn.qkv into query, key and value (stacked in that order along dim 0). Names it does not
/// know keep their own (so the strict loader reports them as unexpected).
inline std::unique_ptr<io::TensorSource> timm_to_hf(std::shared_ptr<io::TensorSource> base) {
  std::map<std::string, io::RenamedSource::Target> out;
  auto block = [&](const std::string& from, const std::string& to, const std::string& rest) -> bool {
    static const std::pair<const char*, const char*> simple[] = {
        {"norm1.", "layernorm_before."}, {"norm2.", "layernorm_after."}, {"attn.proj.", "attention.output.dense."},
        {"mlp.fc1.", "intermediate.dense."}, {"mlp.fc2.", "output.dense."}};
    for (const auto& [a, b] : simple)
      if (rest.rfind(a, 0) == 0) {
        out[to + b + rest.substr(std::string(a).size())] = {from + rest};
        return true;
      }
    if (rest == "attn.qkv.weight" || rest == "attn.qkv.bias") {
      const std::vector<std::int64_t> s = base->shape(from + rest);
      detail::require(!s.empty() && s[0] % 3 == 0, base->where(), ": '", from + rest, "' has shape ", detail::shape_str(s),
                      ", expected 3 * hidden rows (query, key, value)");
      const std::int64_t h = s[0] / 3;
      const std::string kind = rest.substr(9);  // "weight" / "bias"
      const char* parts[] = {"query.", "key.", "value."};
      for (int k = 0; k < 3; ++k) out[to + "attention.attention." + parts[k] + kind] = {from + rest, k * h, (k + 1) * h};
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

/// The weights from_pretrained loads for `path` (io::open_checkpoint_weights), with the MAE
/// release's timm names mapped to HF's.
inline std::shared_ptr<io::TensorSource> open_pretrained_weights(const std::string& path) {
  std::shared_ptr<io::TensorSource> src = io::open_checkpoint_weights(path);
  if (has_timm_names(*src)) return timm_to_hf(std::move(src));
  return src;
}

/// Config of a checkpoint: its config.json (beside a weights file, or in the folder), or a preset.
inline Config checkpoint_config(const std::string& path, const std::string& preset) {
  return preset.empty() ? Config::load(io::join_path(io::checkpoint_folder(path), "config.json")) : Config::preset(preset);
}

/// The tensors of ViTMAEModel (`for_pre_training` false: its unprefixed names) or of
/// ViTMAEForPreTraining (`vit.` and `decoder.` names) for `c`, in visit_parameters order, with
/// HF's shapes and kinds, computed without allocating anything: what a checkpoint is checked
/// against before its model is built. It restates the modules' visit_parameters (the one list of
/// names) as sizes; tests/test_new_user.cpp holds the two equal for several configs.
inline std::vector<TensorSpec> parameter_specs(const Config& c, bool for_pre_training) {
  std::vector<TensorSpec> out;
  auto v = [](const char* key, std::int64_t x) { return std::string(key) + " " + std::to_string(x); };
  const std::int64_t positions = 1 + c.num_patches(), P = c.patch_size * c.patch_size * c.num_channels;
  const std::string pos = "1 + (image_size " + std::to_string(c.image_size) + " / patch_size " + std::to_string(c.patch_size) +
                          ")^2 = " + std::to_string(positions) + " positions";
  const std::string pred = "patch_size " + std::to_string(c.patch_size) + "^2 * num_channels " + std::to_string(c.num_channels) +
                           " = " + std::to_string(P) + " values per patch";
  auto add = [&](const std::string& name, std::vector<std::int64_t> shape, ParamKind kind, std::vector<std::string> from) {
    out.push_back({name, std::move(shape), kind, std::move(from)});
  };
  auto linear = [&](const std::string& p, std::int64_t in, const std::string& in_from, std::int64_t o, const std::string& o_from,
                    bool bias = true) {
    add(p + "weight", {o, in}, ParamKind::weight, {o_from, in_from});
    if (bias) add(p + "bias", {o}, ParamKind::bias, {o_from});
  };
  auto layer_norm = [&](const std::string& p, std::int64_t n, const std::string& n_from) {
    add(p + "weight", {n}, ParamKind::norm, {n_from});
    add(p + "bias", {n}, ParamKind::bias, {n_from});
  };
  // One Layer: HF's ViTMAELayer, with the encoder's or the decoder's sizes.
  auto layer = [&](const std::string& p, std::int64_t h, const char* h_key, std::int64_t i, const char* i_key) {
    const std::string hf = v(h_key, h), f = v(i_key, i);
    for (const char* q : {"query.", "key.", "value."}) linear(p + "attention.attention." + q, h, hf, h, hf, c.qkv_bias);
    linear(p + "attention.output.dense.", h, hf, h, hf);
    linear(p + "intermediate.dense.", h, hf, i, f);
    linear(p + "output.dense.", i, f, h, hf);
    layer_norm(p + "layernorm_before.", h, hf);
    layer_norm(p + "layernorm_after.", h, hf);
  };
  const std::string e = for_pre_training ? "vit." : "";
  const std::string hidden = v("hidden_size", c.hidden_size);
  add(e + "embeddings.cls_token", {1, 1, c.hidden_size}, ParamKind::token, {"", "", hidden});
  add(e + "embeddings.position_embeddings", {1, positions, c.hidden_size}, ParamKind::fixed_table, {"", pos, hidden});
  add(e + "embeddings.patch_embeddings.projection.weight", {c.hidden_size, c.num_channels, c.patch_size, c.patch_size},
      ParamKind::weight, {hidden, v("num_channels", c.num_channels), v("patch_size", c.patch_size), v("patch_size", c.patch_size)});
  add(e + "embeddings.patch_embeddings.projection.bias", {c.hidden_size}, ParamKind::bias, {hidden});
  for (std::int64_t i = 0; i < c.num_hidden_layers; ++i)
    layer(e + "encoder.layer." + std::to_string(i) + ".", c.hidden_size, "hidden_size", c.intermediate_size, "intermediate_size");
  layer_norm(e + "layernorm.", c.hidden_size, hidden);
  if (!for_pre_training) return out;
  const std::string dh = v("decoder_hidden_size", c.decoder_hidden_size);
  add("decoder.mask_token", {1, 1, c.decoder_hidden_size}, ParamKind::token, {"", "", dh});
  add("decoder.decoder_pos_embed", {1, positions, c.decoder_hidden_size}, ParamKind::fixed_table, {"", pos, dh});
  linear("decoder.decoder_embed.", c.hidden_size, hidden, c.decoder_hidden_size, dh);
  for (std::int64_t i = 0; i < c.decoder_num_hidden_layers; ++i)
    layer("decoder.decoder_layers." + std::to_string(i) + ".", c.decoder_hidden_size, "decoder_hidden_size",
          c.decoder_intermediate_size, "decoder_intermediate_size");
  layer_norm("decoder.decoder_norm.", c.decoder_hidden_size, dh);
  linear("decoder.decoder_pred.", c.decoder_hidden_size, dh, P, pred);
  return out;
}

/// Refuses weights that do not fit `config` before any model is allocated (milliseconds, no
/// memory): every tensor's shape in the checkpoint's header against parameter_specs, then the
/// missing tensors (check_state_dict_shapes; `config_where` names the config in messages). A
/// source in neither of the model's layouts is left to load_weights, which says what it is.
/// @throws vitmae::Error naming the first tensor that does not fit.
inline void check_weights_fit(const Config& config, const io::TensorSource& source, bool for_pre_training,
                              const std::string& config_where) {
  const std::string prefixed = std::string("vit.") + kPatchWeightKey;
  if (for_pre_training) {
    if (!source.contains(prefixed) || !source.contains("decoder.decoder_pred.weight")) return;
    check_state_dict_shapes(parameter_specs(config, true), source, "", config_where);
  } else {
    if (!source.contains(prefixed) && !source.contains(kPatchWeightKey)) return;
    check_state_dict_shapes(parameter_specs(config, false), source, source.contains(prefixed) ? "vit." : "", config_where);
  }
}

/// What messages call the config of checkpoint_config(path, preset).
inline std::string checkpoint_config_name(const std::string& path, const std::string& preset) {
  return preset.empty() ? io::join_path(io::checkpoint_folder(path), "config.json") : "preset '" + preset + "'";
}

/// A checkpoint as from_pretrained reads it: its config (config.json, or `preset`) and its
/// weights (opened and parsed once), checked against each other (check_weights_fit, for
/// ViTMAEForPreTraining's names when `for_pre_training`) before any model is allocated.
struct PretrainedCheckpoint {
  Config config;
  std::shared_ptr<io::TensorSource> weights;
};
inline PretrainedCheckpoint open_pretrained(const std::string& path, const std::string& preset, bool for_pre_training) {
  PretrainedCheckpoint c{checkpoint_config(path, preset), open_pretrained_weights(path)};
  check_weights_fit(c.config, *c.weights, for_pre_training, checkpoint_config_name(path, preset));
  return c;
}

namespace detail {
template <class M, class = void>
struct has_decoder_member : std::false_type {};
template <class M>
struct has_decoder_member<M, std::void_t<decltype(std::declval<M&>().decoder)>> : std::true_type {};
}  // namespace detail

/// load_for_inference (quantize.hpp) of the checkpoint at `path`, opened and checked as
/// from_pretrained does (open_pretrained). M: ViTMAEModel or ViTMAEForPreTraining.
/// @throws vitmae::Error as from_pretrained.
template <class M>
M load_for_inference(const std::string& path, const std::string& preset = "", bool int8 = false) {
  const PretrainedCheckpoint c = open_pretrained(path, preset, detail::has_decoder_member<M>::value);
  return load_for_inference<M>(c.config, *c.weights, int8);
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
