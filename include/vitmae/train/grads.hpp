// SPDX-License-Identifier: Apache-2.0
// Gradients' storage: a twin of the model (llm.c style), so gradients and the optimiser's moments
// carry the HF names. What backward.hpp accumulates into and optimizer.hpp keeps its moments in.
#pragma once

#include "vitmae/detail/parallel.hpp"
#include "vitmae/parameter.hpp"

namespace vitmae::train {

/// Sets every parameter of `m` (a model or a twin) to zero, the parameters split over threads.
template <class M>
void zero_parameters(M& m) {
  const auto list = parameter_list(m);
  detail::parallel_for(list.size(), [&](size_t i) { list[i].values().setZero(); });
}

/// A zeroed twin of a model, to accumulate gradients (or optimiser moments) into.
template <class M>
M zero_grads_like(const M& m) {
  M g = m;
  zero_parameters(g);
  return g;
}

}  // namespace vitmae::train
