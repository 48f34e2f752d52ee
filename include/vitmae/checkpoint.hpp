// SPDX-License-Identifier: Apache-2.0
// ViTMAE checkpoints: the MAE release's timm names mapped to HF's, the weights and config of a
// checkpoint path as from_pretrained reads them, and save_pretrained's folder. The io/ headers
// below it know no model; this one knows ViTMAE's names.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "vitmae/config.hpp"
#include "vitmae/io/checkpoint.hpp"
#include "vitmae/io/file.hpp"
#include "vitmae/io/safetensors.hpp"
#include "vitmae/io/tensor_source.hpp"
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

/// save_pretrained of a model: model.safetensors (HF names, "format": "pt" metadata, which
/// transformers requires) and config.json naming the architecture, each written atomically.
template <class Module>
void save_checkpoint(const Module& module, const Config& config, const std::string& dir, io::DType dtype,
                     const std::string& architecture) {
  io::make_dirs(dir);
  io::SafetensorsWriter w;
  w.set_metadata("format", "pt");
  add_state_dict(module, w, "", dtype);
  w.save(io::join_path(dir, "model.safetensors"));
  io::write_file_atomic(io::join_path(dir, "config.json"),
                        config.to_json(architecture, io::torch_dtype_name(dtype)).dump(2) + "\n");
}

}  // namespace vitmae
