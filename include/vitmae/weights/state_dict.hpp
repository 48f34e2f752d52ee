// SPDX-License-Identifier: Apache-2.0
// Strict state-dict loading and saving through a module's visit_parameters, the one list of
// HF tensor names (torch's load_state_dict(strict=True) / state_dict()).
#pragma once

#include <algorithm>
#include <cstdint>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "vitmae/detail/int8.hpp"
#include "vitmae/error.hpp"
#include "vitmae/io/safetensors.hpp"
#include "vitmae/io/tensor_source.hpp"
#include "vitmae/parameter.hpp"
#include "vitmae/tensor.hpp"
#include "vitmae/weights/quantize.hpp"

namespace vitmae {

namespace detail {
inline std::vector<std::int64_t> squeeze_leading(std::vector<std::int64_t> s) {
  while (s.size() > 1 && s.front() == 1) s.erase(s.begin());
  return s;
}
}  // namespace detail

/// Joins names for an error message, at most `most` of them.
inline std::string join_names(const std::vector<std::string>& names, size_t most = 20) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < most; ++i) s += (i ? ", " : "") + std::string("'") + names[i] + "'";
  if (names.size() > most) s += ", ... (" + std::to_string(names.size()) + " in all)";
  return s;
}

/// What load_state_dict found.
struct LoadReport {
  std::vector<std::string> missing;     // parameter names (without key_prefix) not in the source
  std::vector<ParamKind> missing_kind;  // their kinds
  std::vector<std::string> unexpected;  // source names neither loaded nor ignored
  bool int8 = false;                    // int8 weights were loaded (the model then runs in int8)

  /// @throws vitmae::Error listing the missing tensors (fixed position tables aside: they keep
  /// their sin-cos values) and the unexpected ones.
  void require_complete(const io::TensorSource& source) const {
    std::vector<std::string> lacking;
    for (size_t i = 0; i < missing.size(); ++i)
      if (missing_kind[i] != ParamKind::fixed_table) lacking.push_back(missing[i]);
    detail::require(lacking.empty(), "load_state_dict: ", source.where(), ": missing tensors: ", join_names(lacking));
    detail::require(unexpected.empty(), "load_state_dict: ", source.where(),
                    ": unexpected tensors: ", join_names(unexpected));
  }
};

/// One tensor a module will have, known before the module exists: the HF key (below the
/// visit's prefix), HF's shape, the kind, and for each dimension the config value it comes from
/// ("hidden_size 768"; "" for a literal 1), which messages quote.
struct TensorSpec {
  std::string name;
  std::vector<std::int64_t> shape;
  ParamKind kind = ParamKind::weight;
  std::vector<std::string> from;  // one per dimension of shape
};

/// The checks load_state_dict makes, run on `specs` instead of a module, so weights that do not
/// fit a config are refused before the module is allocated: each spec's `source[key_prefix +
/// name]` must have its shape (leading 1-dims aside), and every spec but a fixed table must be
/// there. The first mismatch throws, naming the tensor, both shapes and the config values
/// `config_where` (a config.json, a preset) asks for; then the missing tensors, as
/// LoadReport::require_complete names them. Unexpected tensors are left to the loader.
inline void check_state_dict_shapes(const std::vector<TensorSpec>& specs, const io::TensorSource& source,
                                    const std::string& key_prefix, const std::string& config_where) {
  std::vector<std::string> missing;
  for (const TensorSpec& t : specs) {
    const std::string key = key_prefix + t.name;
    if (!source.contains(key)) {
      if (t.kind != ParamKind::fixed_table) missing.push_back(t.name);
      continue;
    }
    const std::vector<std::int64_t> found = source.shape(key);
    const std::vector<std::int64_t> a = detail::squeeze_leading(found), b = detail::squeeze_leading(t.shape);
    if (a == b) continue;
    // The config values behind the dimensions that differ (aligned from the last), or behind
    // every dimension when the ranks differ.
    std::vector<std::string> why;
    for (size_t k = 0; k < b.size(); ++k) {
      const std::string& f = t.from[t.from.size() - b.size() + k];
      const bool differs = a.size() != b.size() || a[k] != b[k];
      if (differs && !f.empty() && std::find(why.begin(), why.end(), f) == why.end()) why.push_back(f);
    }
    std::string asks;
    for (size_t k = 0; k < why.size(); ++k) asks += (k ? (k + 1 == why.size() ? " and " : ", ") : "") + why[k];
    detail::fail("load_state_dict: ", source.where(), ": '", key, "' has shape ", detail::shape_str(found),
                 ", expected ", detail::shape_str(t.shape),
                 asks.empty() ? std::string() : " (" + config_where + " asks for " + asks + ")");
  }
  detail::require(missing.empty(), "load_state_dict: ", source.where(), ": missing tensors: ", join_names(missing));
}

namespace detail {
/// load_state_dict's visitor: f(tensor, weight, int8, packed) for every tensor; for the first
/// tensor after a Linear or patch projection (float) was visited (its weight), that layer's float,
/// int8 and packed weights, otherwise nullptr (Int8Weights::kept loads int8 weights straight into
/// `int8`, Int8Weights::bfloat16 every weight into `packed`).
template <class F>
struct LoadVisitor {
  F f;
  Matrix<float>* weight = nullptr;
  Int8Weight* int8 = nullptr;
  PackedWeight* packed = nullptr;
  template <class P>
  void operator()(const P& p) {
    f(p, weight, int8, packed);
    weight = nullptr, int8 = nullptr, packed = nullptr;
  }
  template <class L>
  void module(L& l) {
    if constexpr (std::is_same_v<L, Linear<float>> || std::is_same_v<L, PatchConv2d<float>>)
      weight = &l.weight, int8 = &l.int8, packed = &l.packed;
  }
};
template <class F>
LoadVisitor<F> load_visitor(F f) {
  return {std::move(f)};
}
}  // namespace detail

/// Loads every parameter `module` visits from `source[key_prefix + name]`, converting to Scalar.
/// Shapes must match HF's (leading 1-dims aside, like cls_token (1, 1, D) vs (D)): a mismatch
/// throws naming the tensor and both shapes. Missing names are collected in the report (the
/// caller decides which it can regenerate); source names starting with one of
/// `ignore_prefixes` are not reported as unexpected. `int8_weights`: see Int8Weights.
template <class Module>
LoadReport load_state_dict(Module& module, const io::TensorSource& source, const std::string& key_prefix,
                           const std::vector<std::string>& ignore_prefixes = {},
                           Int8Weights int8_weights = Int8Weights::dequantised) {
  LoadReport report;
  std::set<std::string> used;
  auto visitor = detail::load_visitor([&](const auto& p, Matrix<float>* layer_weight, detail::Int8Weight* layer_int8,
                                          detail::PackedWeight* layer_packed) {
    (void)layer_weight, (void)layer_int8, (void)layer_packed;  // (for double models)
    using S = std::remove_const_t<std::remove_pointer_t<decltype(p.data)>>;
    const std::string key = key_prefix + p.name;
    if (!source.contains(key)) {
      report.missing.push_back(p.name);
      report.missing_kind.push_back(p.kind);
      return;
    }
    used.insert(key);
    const std::vector<std::int64_t> expected(p.shape.begin(), p.shape.end());
    const std::vector<std::int64_t> found = source.shape(key);
    detail::require(detail::squeeze_leading(found) == detail::squeeze_leading(expected),
                    "load_state_dict: ", source.where(), ": '", key, "' has shape ", detail::shape_str(found),
                    ", expected ", detail::shape_str(expected));
    // This tensor is a float Linear's or the patch projection's weight (Int8Weights::kept and
    // ::bfloat16 put it elsewhere).
    const bool layer_weight_here =
        layer_weight && static_cast<const void*>(layer_weight->data()) == static_cast<const void*>(p.data);
    // Int8Weights::bfloat16: the weight read (or dequantised below) into `dst`, one weight's worth
    // of floats, then packed; the layer's float weight (never written) is released.
    const bool to_bf16 = std::is_same_v<S, float> && int8_weights == Int8Weights::bfloat16 && layer_weight_here;
    Matrix<float> staged;
    S* dst = p.data;
    if constexpr (std::is_same_v<S, float>) {
      if (to_bf16) staged.resize(layer_weight->rows(), layer_weight->cols()), dst = staged.data();
    }
    auto done = [&] {
      if constexpr (std::is_same_v<S, float>) {
        if (!to_bf16) return;
        *layer_packed = detail::PackedWeight::of(std::move(staged), true);
        *layer_weight = Matrix<float>();
      }
    };
    if (p.kind != ParamKind::weight || !source.is_int8(key)) {
      source.read(key, dst);
      return done();
    }
    // An int8 checkpoint: the integers times "<key>_scale" (one per output channel).
    const std::string sk = key + "_scale";
    detail::require(source.contains(sk), "load_state_dict: ", source.where(), ": '", key, "' is int8 but '", sk,
                    "' (its per-channel scales) is missing");
    detail::require(expected[0] > 0 && source.shape(sk) == std::vector<std::int64_t>{expected[0]},
                    "load_state_dict: ", source.where(), ": '", sk, "' has shape ", detail::shape_str(source.shape(sk)),
                    ", expected [", expected[0], "]");
    used.insert(sk);
    if (!to_bf16) report.int8 = true;  // (bfloat16: the model runs in bfloat16, not int8)
    std::vector<S> scale(static_cast<size_t>(expected[0]));
    source.read(sk, scale.data());
    const Index rows = expected[0], row = p.size / rows;
    if constexpr (std::is_same_v<S, float>) {
      if (int8_weights == Int8Weights::kept && layer_weight_here) {
        // Straight into the int8 layer, through one weight's worth of floats; the layer's float
        // weight (never written) is released.
        std::vector<float> integers(static_cast<size_t>(p.size));
        source.read(key, integers.data());
        *layer_int8 = detail::Int8Weight::of_stored(integers.data(), rows, row, scale.data());
        layer_int8->pack();
        *layer_weight = Matrix<float>();
        return;
      }
    }
    source.read(key, dst);
    for (Index r = 0; r < rows; ++r)
      for (Index k = 0; k < row; ++k) dst[r * row + k] *= scale[static_cast<size_t>(r)];
    done();
  });
  module.visit_parameters("", visitor);
  // An int8 checkpoint runs in int8: the float weights above are exactly its dequantised values,
  // and quantising them again gives back its integers. A model that was already int8 is
  // quantised again from its new weights (not left stale). The layers loaded straight into int8
  // (their float weights released: a model being loaded has no other released weight, whose
  // visit would have thrown) keep the checkpoint's integers and scales.
  if (int8_weights != Int8Weights::bfloat16 && (report.int8 || is_int8(module)))
    detail::quantize_all_but_released(module);
  for (const std::string& n : source.names()) {
    if (used.count(n)) continue;
    bool ignored = false;
    for (const auto& p : ignore_prefixes) ignored = ignored || n.rfind(p, 0) == 0;
    if (!ignored) report.unexpected.push_back(n);
  }
  return report;
}

/// Writes every parameter `module` visits under `key_prefix + name` with HF's shapes. dtype I8
/// writes an int8 checkpoint: every Linear and patch-projection weight as its int8 quantisation
/// (per output channel, as quantize_int8) with "<name>_scale" (float32, one per output channel);
/// everything else float32.
template <class Module>
void add_state_dict(const Module& module, io::SafetensorsWriter& writer, const std::string& key_prefix,
                    io::DType dtype) {
  module.visit_parameters("", [&](const auto& p) {
    const std::vector<std::int64_t> shape(p.shape.begin(), p.shape.end());
    if (dtype != io::DType::I8) return writer.add(key_prefix + p.name, p.data, shape, dtype);
    if (p.kind != ParamKind::weight) return writer.add(key_prefix + p.name, p.data, shape, io::DType::F32);
    const Matrix<float> w = Eigen::Map<const Matrix<std::remove_const_t<std::remove_pointer_t<decltype(p.data)>>>>(
                                p.data, shape[0], p.size / shape[0])
                                .template cast<float>();
    const detail::Int8Weight q = detail::Int8Weight::of(w);
    writer.add_raw(key_prefix + p.name, io::DType::I8, shape,
                   std::string(reinterpret_cast<const char*>(q.q.data()), static_cast<size_t>(q.q.size())));
    writer.add(key_prefix + p.name + "_scale", q.scale.data(), {shape[0]}, io::DType::F32);
  });
}

}  // namespace vitmae
