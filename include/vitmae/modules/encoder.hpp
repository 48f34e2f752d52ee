// SPDX-License-Identifier: Apache-2.0
// ViTMAEEncoder: the stack of layers (HF's list is named `layer`, singular).
#pragma once

#include <string>
#include <vector>

#include "vitmae/config.hpp"
#include "vitmae/modules/layer.hpp"

namespace vitmae {

template <class Scalar = float>
struct Encoder {
  std::vector<Layer<Scalar>> layer;

  Encoder() = default;
  explicit Encoder(const Config& c) : layer(static_cast<size_t>(c.num_hidden_layers), Layer<Scalar>(c)) {}

  /// x: (tokens, hidden) -> the last layer's output, before the final layernorm.
  /// hidden_states, when given, receives each layer's input and then the last output
  /// (num_layers + 1 entries); attentions each layer's probabilities (heads*tokens, tokens).
  /// x may stack sequences of seq_len tokens (see SelfAttention).
  Matrix<Scalar> forward(Matrix<Scalar> x, std::vector<Matrix<Scalar>>* hidden_states = nullptr,
                         std::vector<Matrix<Scalar>>* attentions = nullptr, Index seq_len = 0) const {
    for (const Layer<Scalar>& l : layer) {
      if (hidden_states) hidden_states->push_back(x);
      Matrix<Scalar> probs;
      x = l.forward(x, attentions ? &probs : nullptr, seq_len);  // (tokens, hidden)
      if (attentions) attentions->push_back(std::move(probs));
    }
    if (hidden_states) hidden_states->push_back(x);
    return x;
  }

  template <class V>
  void visit_parameters(const std::string& prefix, V&& visit) {
    for (size_t i = 0; i < layer.size(); ++i) layer[i].visit_parameters(prefix + "layer." + std::to_string(i) + ".", visit);
  }
};

}  // namespace vitmae
