// SPDX-License-Identifier: Apache-2.0
// Gradients' storage: a twin of the model (llm.c style), so gradients and the optimiser's moments
// carry the HF names. What backward.hpp accumulates into and optimizer.hpp keeps its moments in.
#pragma once

#include <utility>
#include <vector>

#include "vitmae/detail/gemm.hpp"
#include "vitmae/detail/parallel.hpp"
#include "vitmae/parameter.hpp"

namespace vitmae::train {

/// Sets every parameter of `m` (a model or a twin) to zero, the parameters split over threads.
template <class M>
void zero_parameters(M& m) {
  const auto list = parameter_list(m);
  detail::parallel_for(list.size(), [&](size_t i) { list[i].values().setZero(); });
}

/// As zero_parameters, but the Linear and patch-projection weights' gradients (ParamKind::weight,
/// the ones a backward writes first through one product, detail::gemm_tn_add) are only marked
/// zero (detail::PendingZeros): their first product overwrites them instead of adding to zeros.
/// settle_parameters(m) must run before anything else reads or adds to them.
template <class M>
void zero_parameters_deferred(M& m) {
  const auto list = parameter_list(m);
  detail::parallel_for(list.size(), [&](size_t i) {
    if (list[i].kind == ParamKind::weight && list[i].size > 0)
      detail::PendingZeros::instance().add(list[i].data, static_cast<size_t>(list[i].size) * sizeof(list[i].data[0]));
    else list[i].values().setZero();
  });
}

/// Zeroes the parameters of `m` (a model, a twin or a layer) that zero_parameters_deferred
/// marked and no product wrote since.
/// (noexcept: out of memory even for its list and then for the parameters' names, it terminates.)
template <class M>
void settle_parameters(M& m) noexcept {
  auto each_weight = [&](auto&& f) {
    m.visit_parameters("", [&](const auto& p) {
      if (p.kind == ParamKind::weight)
        f(const_cast<void*>(static_cast<const void*>(p.data)), static_cast<size_t>(p.size) * sizeof(p.data[0]));
    });
  };
  try {
    std::vector<std::pair<void*, size_t>> weights;
    each_weight([&](void* w, size_t bytes) { weights.emplace_back(w, bytes); });
    detail::parallel_for(weights.size(), [&](size_t i) {
      detail::PendingZeros::instance().settle(weights[i].first, weights[i].second);
    });
  } catch (...) {  // (bad_alloc: one at a time)
    each_weight([](void* w, size_t bytes) { detail::PendingZeros::instance().settle(w, bytes); });
  }
}

/// zero_parameters_deferred(m) for its lifetime, settle_parameters(m) at its end, however it ends:
/// no buffer is left marked (a freed one would be zeroed later, a reused address overwritten).
template <class M>
class DeferredZeros {
 public:
  explicit DeferredZeros(M& m) : m_(m) { zero_parameters_deferred(m_); }
  ~DeferredZeros() { settle_parameters(m_); }
  DeferredZeros(const DeferredZeros&) = delete;
  DeferredZeros& operator=(const DeferredZeros&) = delete;

 private:
  M& m_;
};

/// A zeroed twin of a model, to accumulate gradients (or optimiser moments) into.
template <class M>
M zero_grads_like(const M& m) {
  M g = m;
  zero_parameters(g);
  return g;
}

}  // namespace vitmae::train
