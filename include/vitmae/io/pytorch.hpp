// SPDX-License-Identifier: Apache-2.0
// PyTorch checkpoints (torch.save since 1.6: a zip of data.pkl + data/<key> storages), as a
// TensorSource: HF's pytorch_model.bin and the original MAE release's .pth files.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "vitmae/error.hpp"
#include "vitmae/io/pickle.hpp"
#include "vitmae/io/state_dict.hpp"
#include "vitmae/io/zip.hpp"

namespace vitmae::io {

class PytorchSource : public TensorSource {
 public:
  explicit PytorchSource(const std::string& path) : zip_(std::make_shared<ZipArchive>(path)) {
    std::string pkl;
    for (const auto& kv : zip_->entries()) {
      const std::string& n = kv.first;
      if (n.size() >= 9 && n.compare(n.size() - 9, 9, "/data.pkl") == 0 && n.find('/') == n.size() - 9) {
        pkl = n;
        break;
      }
    }
    detail::require(!pkl.empty(), path, ": zip archive has no '<name>/data.pkl': not a PyTorch checkpoint");
    prefix_ = pkl.substr(0, pkl.size() - 8);  // "<name>/"
    const auto& e = zip_->entry(pkl);
    pickle::Unpickler u(zip_->data(e), static_cast<std::size_t>(e.size), path);
    const pickle::Ptr root = u.load();
    detail::require(root->kind == pickle::Value::Kind::Dict, path, ": checkpoint holds a ", root->kind_name(),
                    ", expected a dict (state dict)");
    // The MAE release wraps the state dict: {"model": state_dict, "epoch": ..., ...}.
    const pickle::Value* sd = root.get();
    for (const auto& [k, v] : root->dict)
      if (k->kind == pickle::Value::Kind::Str && (k->s == "model" || k->s == "state_dict") &&
          v->kind == pickle::Value::Kind::Dict)
        sd = v.get();
    for (const auto& [k, v] : sd->dict) {
      if (k->kind != pickle::Value::Kind::Str || v->kind != pickle::Value::Kind::Tensor) continue;  // e.g. "epoch"
      detail::require(tensors_.emplace(k->s, v->tensor).second, path, ": duplicate tensor name '", k->s, "'");
      check_view(k->s, v->tensor);
    }
  }

  std::vector<std::string> names() const override {
    std::vector<std::string> n;
    for (const auto& kv : tensors_) n.push_back(kv.first);
    return n;
  }
  bool contains(const std::string& name) const override { return tensors_.count(name) != 0; }
  std::vector<std::int64_t> shape(const std::string& name) const override { return ref(name).size; }
  void read(const std::string& name, float* dst) const override { read_into(name, dst); }
  void read(const std::string& name, double* dst) const override { read_into(name, dst); }
  std::string where() const override { return zip_->path(); }

 private:
  const pickle::TensorRef& ref(const std::string& name) const {
    auto it = tensors_.find(name);
    detail::require(it != tensors_.end(), where(), ": no tensor '", name, "'");
    return it->second;
  }

  /// The storage's bytes must hold the whole view: offset + sum((size_i - 1) * stride_i).
  void check_view(const std::string& name, const pickle::TensorRef& t) const {
    const std::string entry = prefix_ + "data/" + t.storage.key;
    detail::require(zip_->contains(entry), where(), ": tensor '", name, "' refers to storage '", t.storage.key,
                    "' which is not in the archive");
    const std::uint64_t elems = zip_->entry(entry).size / dtype_size(t.storage.dtype);
    bool empty = false;
    std::int64_t last = t.offset;
    detail::require(t.offset >= 0, where(), ": tensor '", name, "' has a negative storage offset");
    for (size_t d = 0; d < t.size.size(); ++d) {
      detail::require(t.size[d] >= 0 && t.stride[d] >= 0, where(), ": tensor '", name, "' has a negative size or stride");
      if (t.size[d] == 0) empty = true;
      else {
        detail::require(t.size[d] < (std::int64_t(1) << 40) && t.stride[d] < (std::int64_t(1) << 40), where(),
                        ": tensor '", name, "' has an absurd size or stride");
        last += (t.size[d] - 1) * t.stride[d];
      }
    }
    detail::require(empty || static_cast<std::uint64_t>(last) < elems, where(), ": tensor '", name, "' (shape ",
                    detail::shape_str(t.size), ", offset ", t.offset, ") needs ", last + 1, " elements but storage '",
                    t.storage.key, "' holds ", elems, ": storage shorter than its view");
  }

  template <class Scalar>
  void read_into(const std::string& name, Scalar* dst) const {
    const pickle::TensorRef& t = ref(name);
    const auto& e = zip_->entry(prefix_ + "data/" + t.storage.key);
    const unsigned char* base = zip_->data(e);
    const std::size_t es = dtype_size(t.storage.dtype);
    std::int64_t n = 1;
    for (auto s : t.size) n *= s;
    if (n == 0) return;
    // Contiguous (row-major) views convert in one go; others gather element by element.
    bool contiguous = true;
    std::int64_t expect = 1;
    for (size_t d = t.size.size(); d-- > 0;) {
      if (t.size[d] != 1 && t.stride[d] != expect) contiguous = false;
      expect *= t.size[d];
    }
    if (contiguous) {
      convert_elements(t.storage.dtype, base + t.offset * static_cast<std::int64_t>(es), static_cast<std::size_t>(n), dst);
      return;
    }
    std::vector<std::int64_t> idx(t.size.size(), 0);
    for (std::int64_t k = 0; k < n; ++k) {
      std::int64_t off = t.offset;
      for (size_t d = 0; d < idx.size(); ++d) off += idx[d] * t.stride[d];
      convert_elements(t.storage.dtype, base + off * static_cast<std::int64_t>(es), 1, dst + k);
      for (size_t d = idx.size(); d-- > 0;) {
        if (++idx[d] < t.size[d]) break;
        idx[d] = 0;
      }
    }
  }

  std::shared_ptr<ZipArchive> zip_;
  std::string prefix_;
  std::map<std::string, pickle::TensorRef> tensors_;
};

/// Presents another source under new names, optionally as a row range of a source tensor
/// (for the MAE release's fused qkv projection).
class RenamedSource : public TensorSource {
 public:
  struct Target {
    std::string source;
    std::int64_t row_begin = 0, row_end = -1;  // along dim 0; -1: all rows
  };
  RenamedSource(std::shared_ptr<TensorSource> base, std::map<std::string, Target> names)
      : base_(std::move(base)), names_(std::move(names)) {}

  std::vector<std::string> names() const override {
    std::vector<std::string> n;
    for (const auto& kv : names_) n.push_back(kv.first);
    return n;
  }
  bool contains(const std::string& name) const override { return names_.count(name) != 0; }
  std::vector<std::int64_t> shape(const std::string& name) const override {
    const Target& t = target(name);
    std::vector<std::int64_t> s = base_->shape(t.source);
    if (t.row_end >= 0) s[0] = t.row_end - t.row_begin;
    return s;
  }
  void read(const std::string& name, float* dst) const override { read_into(name, dst); }
  void read(const std::string& name, double* dst) const override { read_into(name, dst); }
  std::string where() const override { return base_->where(); }

 private:
  const Target& target(const std::string& name) const {
    auto it = names_.find(name);
    detail::require(it != names_.end(), where(), ": no tensor '", name, "'");
    return it->second;
  }
  template <class Scalar>
  void read_into(const std::string& name, Scalar* dst) const {
    const Target& t = target(name);
    if (t.row_end < 0) return base_->read(t.source, dst);
    const std::vector<std::int64_t> s = base_->shape(t.source);
    std::int64_t n = 1, row = 1;
    for (auto d : s) n *= d;
    for (size_t d = 1; d < s.size(); ++d) row *= s[d];
    std::vector<Scalar> all(static_cast<size_t>(n));
    base_->read(t.source, all.data());
    std::copy(all.begin() + t.row_begin * row, all.begin() + t.row_end * row, dst);
  }
  std::shared_ptr<TensorSource> base_;
  std::map<std::string, Target> names_;
};

/// True when the names are timm's (the original MAE release), not HF's.
inline bool has_timm_names(const TensorSource& s) {
  return s.contains("patch_embed.proj.weight");
}

/// Maps the MAE release's timm names to HF's ViTMAEForPreTraining names, splitting each
/// attn.qkv into query, key and value (stacked in that order along dim 0). Names it does not
/// know keep their own (so the strict loader reports them as unexpected).
inline std::unique_ptr<TensorSource> timm_to_hf(std::shared_ptr<TensorSource> base) {
  std::map<std::string, RenamedSource::Target> out;
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
  return std::make_unique<RenamedSource>(std::move(base), std::move(out));
}

}  // namespace vitmae::io
