// SPDX-License-Identifier: Apache-2.0
// The one parameter list. Every module's visit_parameters hands each of its tensors to a visitor
// as a Parameter: HF state-dict key, storage, HF shape and kind. Init, the optimiser's groups, the
// loaders and save_pretrained decide by kind, never by a name suffix.
#pragma once

#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "vitmae/error.hpp"
#include "vitmae/tensor.hpp"

namespace vitmae {

/// What a tensor is, which decides how it is initialised, decayed, trained and loaded.
enum class ParamKind {
  weight,       ///< Linear (out, in) or patch-projection (hidden, C, p, p) weight: random init, weight decay
  bias,         ///< a bias, LayerNorm's included: zero init, no weight decay
  norm,         ///< LayerNorm's scale: init 1, no weight decay
  token,        ///< cls_token / mask_token / ViT's learned position table: random init, no weight decay
  fixed_table,  ///< a fixed sin-cos position table: not trained, regenerated when a checkpoint lacks it
};

inline const char* kind_name(ParamKind k) {
  switch (k) {
    case ParamKind::weight:
      return "weight";
    case ParamKind::bias:
      return "bias";
    case ParamKind::norm:
      return "norm";
    case ParamKind::token:
      return "token";
    case ParamKind::fixed_table:
      return "fixed_table";
  }
  return "?";
}

/// What a module's constructor does with its tensors' memory. Every module's constructor takes
/// one (last, default `zeros`) and hands it to its children, so the choice is the caller's,
/// explicit, for the whole tree.
enum class Storage {
  zeros,      ///< every tensor allocated and set: weights 0, LayerNorm scales 1, sin-cos position tables
  unwritten,  ///< as zeros, but the Linear and patch-projection weights are allocated and not written
              ///< (untouched memory is not resident): load_for_inference, which writes or releases each
  none,       ///< no tensor allocated, only the shapes: visit_parameters then hands over each tensor's
              ///< name, HF shape and kind, with data nullptr and size 0 (the check of a checkpoint
              ///< against a config before the model is built: tensor_specs in checkpoint.hpp)
};

namespace detail {
/// make(), or an empty tensor when the module is built without storage.
template <class T, class F>
T allocated(Storage s, F&& make) {
  return s == Storage::none ? T() : T(make());
}
/// A zero tensor of n values (a row vector) or rows x cols, empty without storage.
template <class T>
T zeros(Storage s, Index n) {
  return s == Storage::none ? T() : T(T::Zero(n));
}
template <class T>
T zeros(Storage s, Index rows, Index cols) {
  return s == Storage::none ? T() : T(T::Zero(rows, cols));
}
}  // namespace detail

/// One tensor of a module. S is the scalar (float, double) or its const form (const visit).
/// Storage is contiguous: `size` values at `data`, in torch's row-major order of `shape`.
template <class S>
struct Parameter {
  std::string name;  // the HF state-dict key below the visit's prefix
  S* data = nullptr;
  Index size = 0;
  std::vector<Index> shape;  // HF's shape (cls_token (1, 1, hidden), projection (hidden, C, p, p), ...)
  ParamKind kind = ParamKind::weight;

  /// A mutable parameter passes where a read-only one is asked for.
  template <class T = S, class = std::enable_if_t<!std::is_const_v<T>>>
  operator Parameter<const T>() const {
    return {name, data, size, shape, kind};
  }

  bool trainable() const { return kind != ParamKind::fixed_table; }
  /// MAE's weight-decay groups: only weights (no biases, norms, tokens or tables) decay.
  bool decays() const { return kind == ParamKind::weight; }
  Eigen::Map<Eigen::Matrix<std::remove_const_t<S>, 1, Eigen::Dynamic>, Eigen::Unaligned> values() const {
    return {const_cast<std::remove_const_t<S>*>(data), size};
  }
};

namespace detail {

/// Hands a module itself to visitors that ask for it (a member `module(M&)`: quantize_int8 walks
/// the Linear layers this way); other visitors see only tensors.
template <class V, class M>
auto visit_module_impl(V& visit, M& m, int) -> decltype(visit.module(m), void()) {
  visit.module(m);
}
template <class V, class M>
void visit_module_impl(V&, M&, long) {}
template <class V, class M>
void visit_module(V& visit, M& m) {
  visit_module_impl(visit, m, 0);
}

/// Hands `t` (an Eigen matrix or row vector, const or not) to `visit` as a Parameter.
template <class V, class T>
void visit_tensor(V& visit, std::string name, T& t, std::vector<Index> shape, ParamKind kind) {
  using S = std::remove_pointer_t<decltype(t.data())>;
  visit(Parameter<S>{std::move(name), t.data(), static_cast<Index>(t.size()), std::move(shape), kind});
}

}  // namespace detail

/// Gives a module both forms of visit_parameters(prefix, visit) from its one static
/// `parameters(self, prefix, visit)`, written once for the const and the mutable module.
#define VITMAE_VISIT_PARAMETERS                                       \
  template <class V>                                                  \
  void visit_parameters(const std::string& prefix, V&& visit) {       \
    parameters(*this, prefix, visit);                                 \
  }                                                                   \
  template <class V>                                                  \
  void visit_parameters(const std::string& prefix, V&& visit) const { \
    parameters(*this, prefix, visit);                                 \
  }

/// Every parameter of `m` (a module with a `scalar_type`), in visit order; const when m is.
template <class M>
auto parameter_list(M& m) {
  using Base = typename std::remove_const_t<M>::scalar_type;
  using S = std::conditional_t<std::is_const_v<M>, const Base, Base>;
  std::vector<Parameter<S>> list;
  m.visit_parameters("", [&](Parameter<S> p) { list.push_back(std::move(p)); });
  return list;
}

/// Walks `model` and twins of the same type (gradients, Adam moments) together:
/// visit(p, q...) with p the model's Parameter and q the twins' parameters of the same name.
/// @throws vitmae::Error when a twin's parameter list differs from the model's.
template <class M, class V, class... Twins>
void visit_lockstep(M& model, V&& visit, Twins&... twins) {
  const auto lists = std::make_tuple(parameter_list(twins)...);
  size_t i = 0;
  model.visit_parameters("", [&](const auto& p) {
    std::apply(
        [&](const auto&... l) {
          (detail::require(i < l.size() && l[i].name == p.name && l[i].size == p.size,
                           "visit_lockstep: a twin does not match the model at '", p.name, "'"),
           ...);
          visit(p, l[i]...);
        },
        lists);
    ++i;
  });
}

}  // namespace vitmae
