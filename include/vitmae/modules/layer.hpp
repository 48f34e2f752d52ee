// SPDX-License-Identifier: Apache-2.0
// ViTMAEIntermediate, ViTMAEOutput and ViTMAELayer (pre-norm transformer block).
#pragma once

#include <string>

#include "vitmae/config.hpp"
#include "vitmae/modules/attention.hpp"
#include "vitmae/modules/layer_norm.hpp"
#include "vitmae/modules/linear.hpp"
#include "vitmae/ops/activations.hpp"

namespace vitmae {

/// dense then the config's activation. HF names: dense.
template <class Scalar = float>
struct Intermediate {
  Linear<Scalar> dense;
  ops::Activation act = ops::Activation::gelu;
  Intermediate() = default;
  explicit Intermediate(const Config& c)
      : dense(c.hidden_size, c.intermediate_size), act(ops::activation_from_name(c.hidden_act)) {}
  Matrix<Scalar> forward(const Matrix<Scalar>& x) const {
    Matrix<Scalar> y = dense.forward(x);  // (tokens, intermediate)
    ops::activate_inplace(act, y);
    return y;
  }
  template <class V>
  void visit_parameters(const std::string& prefix, V&& visit) {
    dense.visit_parameters(prefix + "dense.", visit);
  }
};

/// dense then the residual: HF's `hidden_states = dense(h); hidden_states + input_tensor`.
template <class Scalar = float>
struct Output {
  Linear<Scalar> dense;
  Output() = default;
  explicit Output(const Config& c) : dense(c.intermediate_size, c.hidden_size) {}
  Matrix<Scalar> forward(const Matrix<Scalar>& h, const Matrix<Scalar>& input) const {
    Matrix<Scalar> y = dense.forward(h);  // (tokens, hidden)
    y += input;
    return y;
  }
  template <class V>
  void visit_parameters(const std::string& prefix, V&& visit) {
    dense.visit_parameters(prefix + "dense.", visit);
  }
};

/// HF names: attention.*, intermediate.dense, output.dense, layernorm_before, layernorm_after.
template <class Scalar = float>
struct Layer {
  Attention<Scalar> attention;
  Intermediate<Scalar> intermediate;
  Output<Scalar> output;
  LayerNorm<Scalar> layernorm_before, layernorm_after;

  Layer() = default;
  explicit Layer(const Config& c)
      : attention(c), intermediate(c), output(c), layernorm_before(c.hidden_size, c.layer_norm_eps),
        layernorm_after(c.hidden_size, c.layer_norm_eps) {}

  /// x: (tokens, hidden) -> same shape; tokens may stack sequences of seq_len (see SelfAttention).
  Matrix<Scalar> forward(const Matrix<Scalar>& x, Matrix<Scalar>* probs = nullptr, Index seq_len = 0) const {
    // attention_output = attention(layernorm_before(hidden_states)); hidden_states = attention_output + hidden_states
    Matrix<Scalar> h = attention.forward(layernorm_before.forward(x), probs, seq_len);  // (tokens, hidden)
    h += x;
    // layer_output = output(intermediate(layernorm_after(hidden_states)), hidden_states)
    return output.forward(intermediate.forward(layernorm_after.forward(h)), h);
  }

  template <class V>
  void visit_parameters(const std::string& prefix, V&& visit) {
    attention.visit_parameters(prefix + "attention.", visit);
    intermediate.visit_parameters(prefix + "intermediate.", visit);
    output.visit_parameters(prefix + "output.", visit);
    layernorm_before.visit_parameters(prefix + "layernorm_before.", visit);
    layernorm_after.visit_parameters(prefix + "layernorm_after.", visit);
  }
};

}  // namespace vitmae
