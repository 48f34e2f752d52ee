// SPDX-License-Identifier: Apache-2.0
// Random initialisation as ViTMAEPreTrainedModel._init_weights and the MAE release's
// initialize_weights do it, decided by each parameter's kind (visit_parameters).
#pragma once

#include <cmath>

#include "vitmae/parameter.hpp"
#include "vitmae/random.hpp"

namespace vitmae {

/// Which model's _init_weights to follow.
enum class InitScheme {
  /// ViTMAE (HF's ViTMAEPreTrainedModel and the MAE release): Linear weights ~ N(0, std), the
  /// patch projection xavier-uniform over its (hidden, C*p*p) view (MAE initialises it like a
  /// Linear), cls_token and mask_token ~ N(0, std) (the MAE release's init; HF's _init_weights
  /// zeroes mask_token only when it re-runs on a loaded decoder).
  mae,
  /// ViT (HF's ViTPreTrainedModel): every weight, the patch projection, cls_token and the learned
  /// position table ~ truncated normal (mean 0, std, cut at -2 and 2, torch's trunc_normal_).
  vit,
};

/// Random initialisation by kind: weights and tokens as `scheme` says, biases 0, LayerNorm
/// scales 1; fixed position tables keep their sin-cos values. Draws come from `rng` in visit
/// order (NormalGenerator).
template <class Module, class Engine>
void init_weights(Module& module, double initializer_range, Engine& rng, InitScheme scheme = InitScheme::mae) {
  NormalGenerator<Engine> normal(rng);
  auto truncated = [&] {  // torch.nn.init.trunc_normal_(std=initializer_range, a=-2, b=2)
    for (;;) {
      const double x = normal() * initializer_range;
      if (x >= -2.0 && x <= 2.0) return x;
    }
  };
  module.visit_parameters("", [&](const auto& p) {
    using S = std::remove_const_t<std::remove_pointer_t<decltype(p.data)>>;
    switch (p.kind) {
      case ParamKind::weight:
      case ParamKind::token:
        if (scheme == InitScheme::vit) {
          for (Index i = 0; i < p.size; ++i) p.data[i] = static_cast<S>(truncated());
          break;
        }
        if (p.kind == ParamKind::weight && p.shape.size() == 4) {  // xavier_uniform_ on the (out, in) view
          const double fan_out = static_cast<double>(p.shape[0]);
          const double fan_in = static_cast<double>(p.size) / fan_out;
          const double bound = std::sqrt(6.0 / (fan_in + fan_out));
          for (Index i = 0; i < p.size; ++i) p.data[i] = static_cast<S>((2.0 * normal.uniform() - 1.0) * bound);
          break;
        }
        for (Index i = 0; i < p.size; ++i) p.data[i] = static_cast<S>(normal() * initializer_range);
        break;
      case ParamKind::bias:
        p.values().setZero();
        break;
      case ParamKind::norm:
        p.values().setOnes();
        break;
      case ParamKind::fixed_table:
        break;
    }
  });
}

}  // namespace vitmae
