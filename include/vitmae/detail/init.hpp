// SPDX-License-Identifier: Apache-2.0
// Random initialisation as ViTMAEPreTrainedModel._init_weights and the modules' own
// initialize_weights do it, driven by the parameter names (visit_parameters).
#pragma once

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "vitmae/tensor.hpp"

namespace vitmae::detail {

/// Standard normal numbers from a mt19937_64 by Box-Muller on 53-bit uniforms: the same seed
/// gives the same weights everywhere (std::normal_distribution's algorithm is the library's).
class NormalGenerator {
 public:
  explicit NormalGenerator(std::mt19937_64& rng) : rng_(rng) {}
  double uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }
  double operator()() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1 = uniform();
    while (u1 <= 0.0) u1 = uniform();
    const double u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = r * std::sin(2.0 * M_PI * u2);
    has_spare_ = true;
    return r * std::cos(2.0 * M_PI * u2);
  }

 private:
  std::mt19937_64& rng_;
  double spare_ = 0.0;
  bool has_spare_ = false;
};

inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// Linear weights ~ N(0, initializer_range), biases 0, LayerNorm weight 1 and bias 0, the patch
/// projection xavier-uniform over its (hidden, C*p*p) view (MAE initialises it like a Linear),
/// cls_token and mask_token ~ N(0, initializer_range) (the MAE release's init; HF's
/// _init_weights zeroes mask_token only when it re-runs on a loaded decoder). Position tables
/// keep their fixed sin-cos values.
template <class Module>
void init_weights(Module& module, double initializer_range, std::mt19937_64& rng) {
  NormalGenerator normal(rng);
  module.visit_parameters("", [&](const std::string& name, auto& t, const std::vector<Index>& hf_shape) {
    using Scalar = typename std::decay_t<decltype(t)>::Scalar;
    if (ends_with(name, "position_embeddings") || ends_with(name, "decoder_pos_embed")) return;
    if (ends_with(name, "cls_token") || ends_with(name, "mask_token") ||
        (hf_shape.size() == 2 && ends_with(name, "weight"))) {
      for (Index i = 0; i < t.size(); ++i) t.data()[i] = static_cast<Scalar>(normal() * initializer_range);
    } else if (hf_shape.size() == 4) {
      const double fan_out = static_cast<double>(hf_shape[0]);
      const double fan_in = static_cast<double>(t.size()) / fan_out;
      const double bound = std::sqrt(6.0 / (fan_in + fan_out));
      for (Index i = 0; i < t.size(); ++i) t.data()[i] = static_cast<Scalar>((2.0 * normal.uniform() - 1.0) * bound);
    } else if (ends_with(name, "bias")) {
      t.setZero();
    } else if (hf_shape.size() == 1 && ends_with(name, "weight")) {
      t.setOnes();  // LayerNorm
    }
  });
}

}  // namespace vitmae::detail
