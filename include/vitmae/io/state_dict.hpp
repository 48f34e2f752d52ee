// SPDX-License-Identifier: Apache-2.0
// Strict state-dict loading and saving through a module's visit_parameters, the one list of
// HF tensor names (torch's load_state_dict(strict=True) / state_dict()).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "vitmae/error.hpp"
#include "vitmae/io/safetensors.hpp"
#include "vitmae/tensor.hpp"

namespace vitmae::io {

/// Where tensors come from: one or more safetensors files (a pytorch reader plugs in the same way).
class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual std::vector<std::string> names() const = 0;
  virtual bool contains(const std::string& name) const = 0;
  virtual std::vector<std::int64_t> shape(const std::string& name) const = 0;
  virtual void read(const std::string& name, float* dst) const = 0;
  virtual void read(const std::string& name, double* dst) const = 0;
  /// What to call the source in messages (a file or folder).
  virtual std::string where() const = 0;
};

/// One safetensors file, or the shards of a model.safetensors.index.json.
class SafetensorsSource : public TensorSource {
 public:
  SafetensorsSource(std::string where, std::vector<std::shared_ptr<SafetensorsFile>> files,
                    std::map<std::string, size_t> owner)
      : where_(std::move(where)), files_(std::move(files)), owner_(std::move(owner)) {}

  /// A single file: every tensor in it.
  explicit SafetensorsSource(const std::string& path) : where_(path) {
    files_.push_back(std::make_shared<SafetensorsFile>(path));
    for (const auto& kv : files_[0]->tensors()) owner_[kv.first] = 0;
  }

  std::vector<std::string> names() const override {
    std::vector<std::string> n;
    for (const auto& kv : owner_) n.push_back(kv.first);
    return n;
  }
  bool contains(const std::string& name) const override { return owner_.count(name) != 0; }
  std::vector<std::int64_t> shape(const std::string& name) const override { return file(name).info(name).shape; }
  void read(const std::string& name, float* dst) const override { file(name).read(name, dst); }
  void read(const std::string& name, double* dst) const override { file(name).read(name, dst); }
  std::string where() const override { return where_; }
  const SafetensorsFile& file(const std::string& name) const {
    auto it = owner_.find(name);
    detail::require(it != owner_.end(), where_, ": no tensor '", name, "'");
    return *files_[it->second];
  }

 private:
  std::string where_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> owner_;
};

namespace detail_sd {
inline std::vector<std::int64_t> squeeze_leading(std::vector<std::int64_t> s) {
  while (s.size() > 1 && s.front() == 1) s.erase(s.begin());
  return s;
}
}  // namespace detail_sd

/// What load_state_dict found.
struct LoadReport {
  std::vector<std::string> missing;     // parameter names (without key_prefix) not in the source
  std::vector<std::string> unexpected;  // source names neither loaded nor ignored
};

/// Loads every parameter `module` visits from `source[key_prefix + name]`, converting to Scalar.
/// Shapes must match HF's (leading 1-dims aside, like cls_token (1, 1, D) vs (D)): a mismatch
/// throws naming the tensor and both shapes. Missing names are collected in the report (the
/// caller decides which it can regenerate); source names starting with one of
/// `ignore_prefixes` are not reported as unexpected.
template <class Module>
LoadReport load_state_dict(Module& module, const TensorSource& source, const std::string& key_prefix,
                           const std::vector<std::string>& ignore_prefixes = {}) {
  LoadReport report;
  std::set<std::string> used;
  module.visit_parameters("", [&](const std::string& name, auto& tensor, const std::vector<Index>& hf_shape) {
    const std::string key = key_prefix + name;
    if (!source.contains(key)) {
      report.missing.push_back(name);
      return;
    }
    used.insert(key);
    const std::vector<std::int64_t> expected(hf_shape.begin(), hf_shape.end());
    const std::vector<std::int64_t> found = source.shape(key);
    detail::require(detail_sd::squeeze_leading(found) == detail_sd::squeeze_leading(expected), "load_state_dict: ",
                    source.where(), ": '", key, "' has shape ", detail::shape_str(found), ", expected ",
                    detail::shape_str(expected));
    source.read(key, tensor.data());
  });
  for (const std::string& n : source.names()) {
    if (used.count(n)) continue;
    bool ignored = false;
    for (const auto& p : ignore_prefixes) ignored = ignored || n.rfind(p, 0) == 0;
    if (!ignored) report.unexpected.push_back(n);
  }
  return report;
}

/// Joins names for an error message, at most `most` of them.
inline std::string join_names(const std::vector<std::string>& names, size_t most = 20) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < most; ++i) s += (i ? ", " : "") + std::string("'") + names[i] + "'";
  if (names.size() > most) s += ", ... (" + std::to_string(names.size()) + " in all)";
  return s;
}

/// Writes every parameter `module` visits under `key_prefix + name` with HF's shapes.
template <class Module>
void add_state_dict(Module& module, SafetensorsWriter& writer, const std::string& key_prefix, DType dtype) {
  module.visit_parameters("", [&](const std::string& name, auto& tensor, const std::vector<Index>& hf_shape) {
    writer.add(key_prefix + name, tensor.data(), std::vector<std::int64_t>(hf_shape.begin(), hf_shape.end()), dtype);
  });
}

}  // namespace vitmae::io
