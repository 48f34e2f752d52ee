// SPDX-License-Identifier: Apache-2.0
// AdamW as torch.optim.AdamW computes it, with the MAE recipe's parameter groups, and the
// learning-rate schedule of the MAE paper (linear warm-up, then cosine decay).
#pragma once

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "vitmae/for_pre_training.hpp"

namespace vitmae::train {

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.05;
};

/// MAE's groups: no weight decay on 1-D tensors (biases, norms), *.bias, cls_token, mask_token.
inline bool decays(const std::string& name, const std::vector<Index>& hf_shape) {
  auto ends = [&](const char* s) { return detail::ends_with(name, s); };
  return !(hf_shape.size() <= 1 || ends(".bias") || ends("cls_token") || ends("mask_token"));
}
/// The fixed sin-cos tables are not trained (requires_grad False in the reference).
inline bool trainable(const std::string& name) {
  return !(detail::ends_with(name, "position_embeddings") || detail::ends_with(name, "decoder_pos_embed"));
}

/// torch.optim.AdamW: p *= 1 - lr*wd (decoupled, decaying groups only); m = lerp(m, g, 1 - b1);
/// v = b2 v + (1 - b2) g²; p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
template <class S>
class AdamW {
 public:
  explicit AdamW(ForPreTraining<S>& model, AdamWOptions o = {}) : opts_(o) {
    model.visit_parameters("", [&](const std::string& n, auto& t, const std::vector<Index>&) {
      if (!trainable(n)) return;
      m_[n] = Matrix<S>::Zero(1, t.size());
      v_[n] = Matrix<S>::Zero(1, t.size());
    });
  }

  const AdamWOptions& options() const { return opts_; }
  long step_count() const { return step_; }

  /// One update of `model` with `grads` (a twin holding the gradients) at learning rate lr.
  void step(ForPreTraining<S>& model, ForPreTraining<S>& grads, double lr) {
    ++step_;
    std::map<std::string, S*> g;
    grads.visit_parameters("", [&](const std::string& n, auto& t, const std::vector<Index>&) { g[n] = t.data(); });
    const S b1 = static_cast<S>(opts_.beta1), b2 = static_cast<S>(opts_.beta2);
    const S bc1 = S(1) - static_cast<S>(std::pow(opts_.beta1, static_cast<double>(step_)));
    const S bc2_sqrt = std::sqrt(S(1) - static_cast<S>(std::pow(opts_.beta2, static_cast<double>(step_))));
    const S step_size = static_cast<S>(lr) / bc1, eps = static_cast<S>(opts_.eps);
    const S decay = S(1) - static_cast<S>(lr * opts_.weight_decay);
    model.visit_parameters("", [&](const std::string& n, auto& t, const std::vector<Index>& shape) {
      if (!trainable(n)) return;
      S* p = t.data();
      const S* gr = g.at(n);
      S* m = m_.at(n).data();
      S* v = v_.at(n).data();
      const bool wd = decays(n, shape);
      for (Index i = 0; i < t.size(); ++i) {
        if (wd) p[i] *= decay;
        m[i] += (gr[i] - m[i]) * (S(1) - b1);  // exp_avg.lerp_(grad, 1 - beta1)
        v[i] = v[i] * b2 + (S(1) - b2) * gr[i] * gr[i];
        p[i] -= step_size * m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps);
      }
    });
  }

  /// Moments by parameter name, for saving and resuming.
  std::map<std::string, Matrix<S>>& exp_avg() { return m_; }
  std::map<std::string, Matrix<S>>& exp_avg_sq() { return v_; }
  void set_step_count(long s) { step_ = s; }

 private:
  AdamWOptions opts_;
  long step_ = 0;
  std::map<std::string, Matrix<S>> m_, v_;
};

/// The MAE paper's schedule: lr = base_lr * batch / 256, linear warm-up over warmup_steps from
/// 0, then half-cosine decay to min_lr at total_steps. step counts from 0.
inline double mae_learning_rate(long step, long warmup_steps, long total_steps, double peak_lr, double min_lr = 0.0) {
  if (step < warmup_steps) return peak_lr * static_cast<double>(step) / static_cast<double>(warmup_steps);
  const double progress = static_cast<double>(step - warmup_steps) / static_cast<double>(std::max(1L, total_steps - warmup_steps));
  return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + std::cos(M_PI * std::min(1.0, progress)));
}

}  // namespace vitmae::train
