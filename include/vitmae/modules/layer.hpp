// SPDX-License-Identifier: Apache-2.0
// ViTMAEIntermediate, ViTMAEOutput and ViTMAELayer (pre-norm transformer block), with the
// layer's backward.
#pragma once

#include <string>
#include <type_traits>
#include <vector>

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
  explicit Intermediate(const EncoderConfig& c, Storage s = Storage::zeros)
      : dense(c.hidden_size, c.intermediate_size, true, s), act(ops::activation_from_name(c.hidden_act)) {}

  /// x: (tokens, hidden) -> z = dense(x) (kept for the backward) and y = act(z).
  void forward(const Matrix<Scalar>& x, Matrix<Scalar>& z, Matrix<Scalar>& y) const {
    if constexpr (std::is_same_v<Scalar, float>) {
      if (!dense.int8.empty()) {  // int8: each row's activation as the product completes it, in cache
        y.resize(x.rows(), dense.out_features());
        detail::gemm_nt_int8(x, dense.int8, dense.bias, z, [&](Index i) {
          auto row = y.row(i);
          row = z.row(i);
          ops::activate_inplace(act, row);
        });
        return;
      }
    }
    dense.forward(x, z);  // (tokens, intermediate)
    y.resize(z.rows(), z.cols());
    // (an activation costs about 8 additions an element: the rows split 8x earlier than an add)
    detail::split_rows(z.rows(), static_cast<double>(z.size()) * 8, [&](Index first, Index count) {
      auto rows = y.middleRows(first, count);
      rows = z.middleRows(first, count);
      ops::activate_inplace(act, rows);
    });
  }
  /// int8 (dense quantised; inference): act(dense(x)) quantised per row into yq, for the next
  /// int8 product. Each row is activated and quantised while it is in cache; z and act(z) are
  /// not kept (no backward reads them).
  void forward_quantized(const detail::Int8Rows& xq, detail::Int8Rows& yq) const {
    detail::gemm_nt_int8_quantized(
        xq, dense.int8, dense.bias,
        [&](float* row, Index n) {
          Eigen::Map<RowVector<float>> r(row, n);
          ops::activate_inplace(act, r);
        },
        yq);
  }
  /// dy: gradient of act(z); overwritten with the gradient of z, then dense's backward.
  void backward(const Matrix<Scalar>& x, const Matrix<Scalar>& z, Matrix<Scalar>& dy, Intermediate& g,
                Matrix<Scalar>& dx) const {
    ops::activation_backward_inplace(act, z, dy);
    dense.backward(x, dy, g.dense, &dx);
  }

  template <class Self, class V>
  static void parameters(Self& m, const std::string& prefix, V& visit) {
    m.dense.visit_parameters(prefix + "dense.", visit);
  }
  VITMAE_VISIT_PARAMETERS
};

/// dense then the residual: HF's `hidden_states = dense(h); hidden_states + input_tensor`.
template <class Scalar = float>
struct Output {
  Linear<Scalar> dense;
  Output() = default;
  explicit Output(const EncoderConfig& c, Storage s = Storage::zeros)
      : dense(c.intermediate_size, c.hidden_size, true, s) {}
  void forward(const Matrix<Scalar>& h, const Matrix<Scalar>& input, Matrix<Scalar>& y) const {
    dense.forward(h, y);  // (tokens, hidden)
    detail::add_rows(y, input);
  }
  /// int8 (dense quantised): h already quantised; the residual added to each row as the product
  /// completes it.
  void forward(const detail::Int8Rows& hq, const Matrix<float>& input, Matrix<float>& y) const {
    detail::gemm_nt_int8(hq, dense.int8, dense.bias, y, [&](Index i) { y.row(i) += input.row(i); });
  }
  template <class Self, class V>
  static void parameters(Self& m, const std::string& prefix, V& visit) {
    m.dense.visit_parameters(prefix + "dense.", visit);
  }
  VITMAE_VISIT_PARAMETERS
};

/// HF names: attention.*, intermediate.dense, output.dense, layernorm_before, layernorm_after.
template <class Scalar = float>
struct Layer {
  Attention<Scalar> attention;
  Intermediate<Scalar> intermediate;
  Output<Scalar> output;
  LayerNorm<Scalar> layernorm_before, layernorm_after;

  /// The block's activations (what the backward reads) and its backward scratch. Kept between
  /// calls, so a training loop allocates them once. A forward alone (for_backward false) leaves the
  /// LayerNorms' statistics unwritten, and an int8 MLP (inference only) leaves z and a unwritten.
  struct Cache {
    typename LayerNorm<Scalar>::Cache ln_before, ln_after;
    typename Attention<Scalar>::Cache attention;
    Matrix<Scalar> ln1, h, ln2, z, a;  // layernorm_before(x), x + attention, layernorm_after(h), fc1 out, act(z)
    Matrix<Scalar> dh, da, dln, tmp;   // backward scratch
    bool for_backward = true;          // false: a forward alone; the LayerNorms keep no statistics

    /// Exchanges the backward's scratch buffers (not the activations) with another cache's, so
    /// a stack of layers can run every backward in one hot set of buffers.
    void swap_scratch(Cache& o) {
      dh.swap(o.dh), da.swap(o.da), dln.swap(o.dln), tmp.swap(o.tmp);
      attention.dcontext.swap(o.attention.dcontext);
      attention.attention.dq.swap(o.attention.attention.dq);
      attention.attention.dk.swap(o.attention.attention.dk);
      attention.attention.dv.swap(o.attention.attention.dv);
    }
  };

  Layer() = default;
  explicit Layer(const EncoderConfig& c, Storage s = Storage::zeros)
      : attention(c, s),
        intermediate(c, s),
        output(c, s),
        layernorm_before(c.hidden_size, c.layer_norm_eps, s),
        layernorm_after(c.hidden_size, c.layer_norm_eps, s) {}

  /// x: (tokens, hidden) -> y, same shape; tokens stack sequences of seq_len (see SelfAttention).
  /// The attention probabilities stay in c.attention.attention.probs.
  void forward(const Matrix<Scalar>& x, Index seq_len, Matrix<Scalar>& y, Cache& c) const {
    // attention_output = attention(layernorm_before(hidden_states))
    layernorm_before.forward(x, c.ln1, c.for_backward ? &c.ln_before : nullptr);
    // hidden_states = attention_output + hidden_states
    attention.forward(c.ln1, seq_len, c.h, c.attention, &x);
    // layer_output = output(intermediate(layernorm_after(hidden_states)), hidden_states)
    layernorm_after.forward(c.h, c.ln2, c.for_backward ? &c.ln_after : nullptr);
    if constexpr (std::is_same_v<Scalar, float>) {
      if (!intermediate.dense.int8.empty() && !output.dense.int8.empty()) {
        // int8 (inference only): act(z) goes from one product to the next quantised, in cache;
        // c.z and c.a are not kept (no backward reads them)
        thread_local detail::Int8Rows xq, aq;
        detail::Int8Rows::quantize(c.ln2, xq);
        intermediate.forward_quantized(xq, aq);
        output.forward(aq, c.h, y);
        return;
      }
    }
    intermediate.forward(c.ln2, c.z, c.a);
    output.forward(c.a, c.h, y);
  }
  Matrix<Scalar> forward(const Matrix<Scalar>& x, Index seq_len) const {
    Cache c;
    Matrix<Scalar> y;
    forward(x, seq_len, y, c);
    return y;
  }

  /// dy: (tokens, hidden) -> dx, adding every parameter's gradient into g.
  void backward(const Matrix<Scalar>& dy, Index seq_len, Cache& c, Layer& g, Matrix<Scalar>& dx) const {
    detail::require(c.for_backward, "Layer::backward: the forward ran without keeping activations (for_backward)");
    // y = h + fc2(a): the residual passes dy to h
    output.dense.backward(c.a, dy, g.output.dense, &c.da);
    intermediate.backward(c.ln2, c.z, c.da, g.intermediate, c.dln);
    layernorm_after.backward(c.dln, c.ln_after, g.layernorm_after, c.dh);
    c.dh += dy;
    // h = x + attention(ln1): the residual passes dh to x
    attention.backward(c.ln1, seq_len, c.dh, c.attention, g.attention, c.dln);
    layernorm_before.backward(c.dln, c.ln_before, g.layernorm_before, dx);
    dx += c.dh;
  }

  template <class Self, class V>
  static void parameters(Self& m, const std::string& prefix, V& visit) {
    m.attention.visit_parameters(prefix + "attention.", visit);
    m.intermediate.visit_parameters(prefix + "intermediate.", visit);
    m.output.visit_parameters(prefix + "output.", visit);
    m.layernorm_before.visit_parameters(prefix + "layernorm_before.", visit);
    m.layernorm_after.visit_parameters(prefix + "layernorm_after.", visit);
  }
  VITMAE_VISIT_PARAMETERS
};

namespace detail {
/// The c.num_hidden_layers layers of a stack, each built from the config (not copies of one: a
/// copy writes every weight, which Storage::unwritten's weights must not be).
template <class Scalar>
std::vector<Layer<Scalar>> layers(const EncoderConfig& c, Storage s = Storage::zeros) {
  std::vector<Layer<Scalar>> out;
  out.reserve(static_cast<size_t>(c.num_hidden_layers));
  for (Index i = 0; i < c.num_hidden_layers; ++i) out.emplace_back(c, s);
  return out;
}
}  // namespace detail

}  // namespace vitmae
