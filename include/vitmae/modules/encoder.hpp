// SPDX-License-Identifier: Apache-2.0
// ViTMAEEncoder: the stack of layers (HF's list is named `layer`, singular), with its backward.
#pragma once

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "vitmae/config.hpp"
#include "vitmae/modules/layer.hpp"

namespace vitmae {

/// A stack of Layers run in order; Encoder and the decoder's layer list share it. For a
/// backward every layer keeps its own activations; a forward alone (for_backward false) runs
/// every layer in one cache, so inference holds one layer's activations at a time.
template <class Scalar>
struct LayerStackCache {
  std::vector<typename Layer<Scalar>::Cache> layer;
  typename Layer<Scalar>::Cache scratch;  // the backward's buffers, shared by every layer
  Matrix<Scalar> buf, dbuf;
  bool for_backward = true;
  /// Called by the backward with each layer's gradients once they are complete (the last layer
  /// first): a data-parallel trainer starts summing them over its ranks (train/overlap.hpp).
  std::function<void(Layer<Scalar>&)> layer_done;
};

namespace detail {

/// x -> y through `layers` (y must not be x). hidden_states, when given, receives each layer's
/// input and then the last output; attentions each layer's probabilities (B*heads*T, T).
template <class Scalar>
void layer_stack_forward(const std::vector<Layer<Scalar>>& layers, const Matrix<Scalar>& x, Index seq_len,
                         Matrix<Scalar>& y, LayerStackCache<Scalar>& c, std::vector<Matrix<Scalar>>* hidden_states,
                         std::vector<Matrix<Scalar>>* attentions) {
  const size_t n = layers.size();
  c.layer.resize(c.for_backward ? n : std::min<size_t>(n, 1));
  if (n == 0) y = x;
  const Matrix<Scalar>* in = &x;
  for (size_t i = 0; i < n; ++i) {
    if (hidden_states) hidden_states->push_back(*in);
    Matrix<Scalar>& out = (n - 1 - i) % 2 == 0 ? y : c.buf;  // ping-pong so that the last output lands in y
    typename Layer<Scalar>::Cache& lc = c.layer[c.for_backward ? i : 0];
    lc.for_backward = c.for_backward;
    lc.attention.attention.keep_probs = c.for_backward || attentions;
    layers[i].forward(*in, seq_len, out, lc);
    if (attentions) attentions->push_back(lc.attention.attention.probs);
    in = &out;
  }
  if (hidden_states) hidden_states->push_back(y);
}

/// dy -> dx back through `layers` (dx must not be dy), adding parameter gradients into g.
template <class Scalar>
void layer_stack_backward(const std::vector<Layer<Scalar>>& layers, const Matrix<Scalar>& dy, Index seq_len,
                          LayerStackCache<Scalar>& c, std::vector<Layer<Scalar>>& g, Matrix<Scalar>& dx) {
  const size_t n = layers.size();
  detail::require(c.for_backward && c.layer.size() == n, "backward: the forward ran without keeping activations");
  if (n == 0) dx = dy;
  const Matrix<Scalar>* in = &dy;
  for (size_t i = n; i-- > 0;) {
    Matrix<Scalar>& out = i % 2 == 0 ? dx : c.dbuf;  // the last (layer 0) lands in dx
    c.layer[i].swap_scratch(c.scratch);
    layers[i].backward(*in, seq_len, c.layer[i], g[i], out);
    c.layer[i].swap_scratch(c.scratch);
    if (c.layer_done) c.layer_done(g[i]);
    in = &out;
  }
}

}  // namespace detail

template <class Scalar = float>
struct Encoder {
  std::vector<Layer<Scalar>> layer;

  using Cache = LayerStackCache<Scalar>;

  Encoder() = default;
  explicit Encoder(const EncoderConfig& c, Storage s = Storage::zeros) : layer(detail::layers<Scalar>(c, s)) {}

  /// x: (tokens, hidden) -> y: the last layer's output, before the final layernorm. x may stack
  /// sequences of seq_len tokens (see SelfAttention). hidden_states / attentions as HF's
  /// output_hidden_states / output_attentions (see detail::layer_stack_forward).
  void forward(const Matrix<Scalar>& x, Index seq_len, Matrix<Scalar>& y, Cache& c,
               std::vector<Matrix<Scalar>>* hidden_states = nullptr,
               std::vector<Matrix<Scalar>>* attentions = nullptr) const {
    detail::layer_stack_forward(layer, x, seq_len, y, c, hidden_states, attentions);
  }
  void backward(const Matrix<Scalar>& dy, Index seq_len, Cache& c, Encoder& g, Matrix<Scalar>& dx) const {
    detail::layer_stack_backward(layer, dy, seq_len, c, g.layer, dx);
  }

  template <class Self, class V>
  static void parameters(Self& m, const std::string& prefix, V& visit) {
    for (size_t i = 0; i < m.layer.size(); ++i)
      m.layer[i].visit_parameters(prefix + "layer." + std::to_string(i) + ".", visit);
  }
  VITMAE_VISIT_PARAMETERS
};

}  // namespace vitmae
