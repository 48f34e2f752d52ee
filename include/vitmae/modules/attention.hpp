// SPDX-License-Identifier: Apache-2.0
// ViTMAESelfAttention, ViTMAESelfOutput and ViTMAEAttention.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>

#include "vitmae/config.hpp"
#include "vitmae/detail/parallel.hpp"
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

  /// x: (B*T, hidden), B sequences of `seq_len` tokens stacked (seq_len <= 0: one sequence)
  /// -> context (B*T, hidden). Sequences attend only within themselves. When `probs` is given
  /// it receives the softmax probabilities, (B*heads*T, T): sequence b, head h in rows
  /// (b*heads + h)*T ... (HF's [B, heads, T, T]).
  Matrix<Scalar> forward(const Matrix<Scalar>& x, Matrix<Scalar>* probs = nullptr, Index seq_len = 0) const {
    const Index T = seq_len > 0 ? seq_len : x.rows(), B = x.rows() / T, H = num_attention_heads, d = query.out_features() / H;
    detail::require(B * T == x.rows(), "SelfAttention: ", x.rows(), " rows are not a whole number of ", T, "-token sequences");
    const Matrix<Scalar> q = query.forward(x);  // (B*T, hidden)
    const Matrix<Scalar> k = key.forward(x);    // (B*T, hidden)
    const Matrix<Scalar> v = value.forward(x);  // (B*T, hidden)
    const Scalar scale = Scalar(1) / std::sqrt(static_cast<Scalar>(d));
    Matrix<Scalar> context(B * T, H * d);  // (B*T, hidden)
    if (probs) probs->resize(B * H * T, T);
    // (sequence, head) pairs are independent: one per thread, each with its own scores buffer.
    const Index pairs = B * H;
    const int threads = static_cast<int>(std::min<Index>(detail::available_threads(), pairs));
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && pairs * T * T * d >= 100000)
#endif
    for (Index bh = 0; bh < pairs; ++bh) {
      const Index b = bh / H, h = bh % H;
      Matrix<Scalar> scores(T, T);  // (T, T)
      // attention_scores = q @ kᵀ / sqrt(d); softmax(dim=-1)
      scores.noalias() = q.block(b * T, h * d, T, d) * k.block(b * T, h * d, T, d).transpose();
      scores *= scale;
      ops::softmax_rows_inplace(scores);
      if (probs) probs->middleRows(bh * T, T) = scores;
      context.block(b * T, h * d, T, d).noalias() = scores * v.block(b * T, h * d, T, d);
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
  Matrix<Scalar> forward(const Matrix<Scalar>& x, Matrix<Scalar>* probs = nullptr, Index seq_len = 0) const {
    return output.forward(attention.forward(x, probs, seq_len));  // (tokens, hidden)
  }
  template <class V>
  void visit_parameters(const std::string& prefix, V&& visit) {
    attention.visit_parameters(prefix + "attention.", visit);
    output.visit_parameters(prefix + "output.", visit);
  }
};

}  // namespace vitmae
