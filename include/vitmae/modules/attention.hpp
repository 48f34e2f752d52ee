// SPDX-License-Identifier: Apache-2.0
// ViTMAESelfAttention, ViTMAESelfOutput and ViTMAEAttention.
#pragma once

#include <cmath>
#include <string>

#include "vitmae/config.hpp"
#include "vitmae/modules/linear.hpp"
#include "vitmae/ops/softmax.hpp"

namespace vitmae {

/// Multi-head scaled dot-product attention. Head h is the column block middleCols(h*d, d) of
/// the projections (HF's view(B, T, H, d)). HF names: query, key, value.
template <class Scalar = float>
struct SelfAttention {
  Linear<Scalar> query, key, value;
  Index num_attention_heads = 1;

  SelfAttention() = default;
  explicit SelfAttention(const Config& c)
      : query(c.hidden_size, c.hidden_size, c.qkv_bias), key(c.hidden_size, c.hidden_size, c.qkv_bias),
        value(c.hidden_size, c.hidden_size, c.qkv_bias), num_attention_heads(c.num_attention_heads) {}

  /// x: (tokens, hidden) -> context (tokens, hidden). When `probs` is given it receives the
  /// softmax probabilities, heads stacked: (heads*tokens, tokens).
  Matrix<Scalar> forward(const Matrix<Scalar>& x, Matrix<Scalar>* probs = nullptr) const {
    const Index T = x.rows(), H = num_attention_heads, d = query.out_features() / H;
    const Matrix<Scalar> q = query.forward(x);  // (T, hidden)
    const Matrix<Scalar> k = key.forward(x);    // (T, hidden)
    const Matrix<Scalar> v = value.forward(x);  // (T, hidden)
    const Scalar scale = Scalar(1) / std::sqrt(static_cast<Scalar>(d));
    Matrix<Scalar> context(T, H * d);  // (T, hidden)
    Matrix<Scalar> scores(T, T);       // (T, T)
    if (probs) probs->resize(H * T, T);
    for (Index h = 0; h < H; ++h) {
      // attention_scores = q @ kᵀ / sqrt(d); softmax(dim=-1)
      scores.noalias() = q.middleCols(h * d, d) * k.middleCols(h * d, d).transpose();
      scores *= scale;
      ops::softmax_rows_inplace(scores);
      if (probs) probs->middleRows(h * T, T) = scores;
      context.middleCols(h * d, d).noalias() = scores * v.middleCols(h * d, d);
    }
    return context;
  }

  template <class V>
  void visit_parameters(const std::string& prefix, V&& visit) {
    query.visit_parameters(prefix + "query.", visit);
    key.visit_parameters(prefix + "key.", visit);
    value.visit_parameters(prefix + "value.", visit);
  }
};

/// The attention output projection. Unlike Output, it does not add the residual (Layer does).
template <class Scalar = float>
struct SelfOutput {
  Linear<Scalar> dense;
  SelfOutput() = default;
  explicit SelfOutput(const Config& c) : dense(c.hidden_size, c.hidden_size) {}
  Matrix<Scalar> forward(const Matrix<Scalar>& x) const { return dense.forward(x); }
  template <class V>
  void visit_parameters(const std::string& prefix, V&& visit) {
    dense.visit_parameters(prefix + "dense.", visit);
  }
};

/// HF names: attention.{query,key,value}, output.dense.
template <class Scalar = float>
struct Attention {
  SelfAttention<Scalar> attention;
  SelfOutput<Scalar> output;
  Attention() = default;
  explicit Attention(const Config& c) : attention(c), output(c) {}
  Matrix<Scalar> forward(const Matrix<Scalar>& x, Matrix<Scalar>* probs = nullptr) const {
    return output.forward(attention.forward(x, probs));  // (tokens, hidden)
  }
  template <class V>
  void visit_parameters(const std::string& prefix, V&& visit) {
    attention.visit_parameters(prefix + "attention.", visit);
    output.visit_parameters(prefix + "output.", visit);
  }
};

}  // namespace vitmae
