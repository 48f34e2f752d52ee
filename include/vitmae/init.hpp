// SPDX-License-Identifier: Apache-2.0
// Random initialisation as ViTMAEPreTrainedModel._init_weights and the MAE release's
// initialize_weights do it, decided by each parameter's kind (visit_parameters).
#pragma once

#include <cmath>

#include "vitmae/parameter.hpp"
#include "vitmae/random.hpp"

namespace vitmae {

/// Linear weights ~ N(0, initializer_range), the patch projection xavier-uniform over its
/// (hidden, C*p*p) view (MAE initialises it like a Linear), biases 0, LayerNorm scales 1,
/// cls_token and mask_token ~ N(0, initializer_range) (the MAE release's init; HF's
/// _init_weights zeroes mask_token only when it re-runs on a loaded decoder). Fixed position
/// tables keep their sin-cos values. Draws come from `rng` in visit order (NormalGenerator).
template <class Module, class Engine>
void init_weights(Module& module, double initializer_range, Engine& rng) {
  NormalGenerator<Engine> normal(rng);
  module.visit_parameters("", [&](const auto& p) {
    using S = std::remove_const_t<std::remove_pointer_t<decltype(p.data)>>;
    switch (p.kind) {
      case ParamKind::weight:
        if (p.shape.size() == 4) {  // xavier_uniform_ on the (out, in) view
          const double fan_out = static_cast<double>(p.shape[0]);
          const double fan_in = static_cast<double>(p.size) / fan_out;
          const double bound = std::sqrt(6.0 / (fan_in + fan_out));
          for (Index i = 0; i < p.size; ++i) p.data[i] = static_cast<S>((2.0 * normal.uniform() - 1.0) * bound);
          break;
        }
        [[fallthrough]];
      case ParamKind::token:
        for (Index i = 0; i < p.size; ++i) p.data[i] = static_cast<S>(normal() * initializer_range);
        break;
      case ParamKind::bias: p.values().setZero(); break;
      case ParamKind::norm: p.values().setOnes(); break;
      case ParamKind::fixed_table: break;
    }
  });
}

}  // namespace vitmae
