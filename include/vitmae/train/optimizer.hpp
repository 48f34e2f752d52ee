// SPDX-License-Identifier: Apache-2.0
// AdamW as torch.optim.AdamW computes it, with MAE's parameter groups decided by each
// parameter's kind, and the learning-rate schedule of the MAE paper (linear warm-up, then cosine).
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "vitmae/detail/exact_sqrt.hpp"
#include "vitmae/detail/parallel.hpp"
#include "vitmae/parameter.hpp"
#include "vitmae/train/grads.hpp"

namespace vitmae::train {

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.05;
};

/// torch.optim.AdamW over a model M (ViTMAEForPreTraining, or any module with a scalar_type and
/// visit_parameters): p *= 1 - lr*wd (decoupled; weights only, Parameter::decays: MAE's groups
/// leave biases, norms, tokens alone); m = lerp(m, g, 1 - b1); v = b2 v + (1 - b2) g²;
/// p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps). Fixed tables are not trained.
/// The moments are twins of the model, so they carry the HF names. Every element's update is
/// independent of the others, so the parameters are split over threads with no effect on the bits.
template <class M>
class AdamW {
 public:
  using S = typename M::scalar_type;

  explicit AdamW(const M& model, AdamWOptions o = {})
      : opts_(o), m_(zero_grads_like(model)), v_(zero_grads_like(model)) {}

  const AdamWOptions& options() const { return opts_; }
  long step_count() const { return step_; }
  void set_step_count(long s) { step_ = s; }

  /// One update of `model` with `grads` (a twin holding the gradients) at learning rate lr.
  void step(M& model, const M& grads, double lr) {
    step(model, grads, lr, [](const Parameter<S>&) { return 1.0; });
  }
  /// The same with lr_scale(p) scaling the rate of parameter p (layer-wise decay).
  template <class Scale>
  void step(M& model, const M& grads, double lr, Scale&& lr_scale) {
    ++step_;
    const auto p = parameter_list(model);
    const auto g = parameter_list(grads);
    const auto m = parameter_list(m_);
    const auto v = parameter_list(v_);
    detail::require(g.size() == p.size(), "AdamW: the gradients do not match the model");
    // The constants as torch.optim.AdamW has them: computed in double (Python floats), each
    // rounded once to the parameters' type.
    const double t = static_cast<double>(step_);
    const S b2 = static_cast<S>(opts_.beta2), eps = static_cast<S>(opts_.eps);
    const S one_minus_b1 = static_cast<S>(1.0 - opts_.beta1), one_minus_b2 = static_cast<S>(1.0 - opts_.beta2);
    const S bc2_sqrt = static_cast<S>(std::sqrt(1.0 - std::pow(opts_.beta2, t)));
    const double bc1 = 1.0 - std::pow(opts_.beta1, t);
    detail::parallel_for(p.size(), [&](size_t k) {
      if (!p[k].trainable()) return;
      const double rate = lr * lr_scale(p[k]);
      const S step_size = static_cast<S>(rate / bc1);
      const S decay = static_cast<S>(1.0 - rate * opts_.weight_decay);
      const bool wd = p[k].decays();
      // Eigen array expressions over chunks that stay in L1, with a correctly rounded vectorised
      // sqrt (detail::ExactSqrt): g++ does not vectorise a loop calling std::sqrt (errno), which
      // made the update 2.5x slower.
      using Array = Eigen::Array<S, Eigen::Dynamic, 1>;
      constexpr Index chunk = 1024;
      for (Index i = 0; i < p[k].size; i += chunk) {
        const Index n = std::min(chunk, p[k].size - i);
        Eigen::Map<Array> w(p[k].data + i, n), mk(m[k].data + i, n), vk(v[k].data + i, n);
        const Eigen::Map<const Array> gr(g[k].data + i, n);
        if (wd) w *= decay;                     // param.mul_(1 - lr * weight_decay)
        mk += (gr - mk) * one_minus_b1;         // exp_avg.lerp_(grad, 1 - beta1)
        vk = vk * b2 + one_minus_b2 * gr * gr;  // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
        w -= step_size * mk /
             (vk.unaryExpr(detail::ExactSqrt<S>()) / bc2_sqrt + eps);  // addcdiv_(exp_avg, denom, -step_size)
      }
    });
  }

  /// The moments (twins of the model), for saving and resuming.
  M& exp_avg() { return m_; }
  M& exp_avg_sq() { return v_; }
  const M& exp_avg() const { return m_; }
  const M& exp_avg_sq() const { return v_; }

 private:
  AdamWOptions opts_;
  long step_ = 0;
  M m_, v_;
};

/// The mean of `accum` accumulated gradients, their norm over the trainable tensors (summed in
/// parameter order) and torch.nn.utils.clip_grad_norm_ at clip (0: none). Returns the norm.
template <class M>
double finish_gradients(M& grads, int accum, double clip) {
  using S = typename M::scalar_type;
  const auto g = parameter_list(grads);
  std::vector<double> sq(g.size(), 0.0);
  const S inv_accum = S(1) / static_cast<S>(accum);
  detail::parallel_for(g.size(), [&](size_t k) {
    if (!g[k].trainable()) return;
    if (accum > 1) g[k].values() *= inv_accum;
    sq[k] = static_cast<double>(g[k].values().squaredNorm());
  });
  double total = 0;
  for (double v : sq) total += v;
  const double norm = std::sqrt(total);
  if (clip > 0) {
    const double coef = clip / (norm + 1e-6);
    if (coef < 1) detail::parallel_for(g.size(), [&](size_t k) { g[k].values() *= static_cast<S>(coef); });
  }
  return norm;
}

/// The layer id MAE's fine-tuning gives a parameter of ViTForImageClassification (its
/// param_groups_lrd): 0 for vit.embeddings.* (CLS token, position table, patch projection), i+1
/// for vit.encoder.layer.i.*, num_layers+1 for the rest (the final layernorm, the classifier).
inline long vit_layer_id(const std::string& name, long num_layers) {
  if (name.rfind("vit.embeddings.", 0) == 0) return 0;
  const std::string layer = "vit.encoder.layer.";
  if (name.rfind(layer, 0) == 0) return std::stol(name.substr(layer.size())) + 1;
  return num_layers + 1;
}

/// Layer-wise learning-rate decay: the rate of `name` is scaled by decay^(num_layers+1-id).
inline double layer_decay_scale(const std::string& name, long num_layers, double decay) {
  return std::pow(decay, static_cast<double>(num_layers + 1 - vit_layer_id(name, num_layers)));
}

/// The MAE paper's schedule: lr = base_lr * batch / 256, linear warm-up over warmup_steps from
/// 0, then half-cosine decay to min_lr at total_steps. step counts from 0.
inline double mae_learning_rate(long step, long warmup_steps, long total_steps, double peak_lr, double min_lr = 0.0) {
  if (step < warmup_steps) return peak_lr * static_cast<double>(step) / static_cast<double>(warmup_steps);
  const double progress =
      static_cast<double>(step - warmup_steps) / static_cast<double>(std::max(1L, total_steps - warmup_steps));
  return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + std::cos(M_PI * std::min(1.0, progress)));
}

}  // namespace vitmae::train
