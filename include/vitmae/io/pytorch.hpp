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
#include "vitmae/io/tensor_source.hpp"
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
      detail::require(t.size[d] >= 0 && t.stride[d] >= 0, where(), ": tensor '", name,
                      "' has a negative size or stride");
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
      convert_elements(t.storage.dtype, base + t.offset * static_cast<std::int64_t>(es), static_cast<std::size_t>(n),
                       dst);
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

}  // namespace vitmae::io
