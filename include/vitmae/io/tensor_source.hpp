// SPDX-License-Identifier: Apache-2.0
// Where tensors come from: a name -> (shape, values) source over one or more safetensors files;
// the PyTorch reader and renaming views plug in the same way.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "vitmae/error.hpp"
#include "vitmae/io/safetensors.hpp"

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
  /// True for a tensor stored as int8 (an int8 checkpoint's quantised weight, beside its
  /// "<name>_scale"): read() gives its integers, which the loader scales.
  virtual bool is_int8(const std::string& name) const {
    (void)name;
    return false;
  }
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
  bool is_int8(const std::string& name) const override { return file(name).info(name).dtype == DType::I8; }
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
  bool is_int8(const std::string& name) const override { return base_->is_int8(target(name).source); }

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

}  // namespace vitmae::io
