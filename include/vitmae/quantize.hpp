// SPDX-License-Identifier: Apache-2.0
// int8 inference: quantize_int8(model) switches every Linear layer and the patch projection of a
// float model (ViTMAEModel, ViTMAEForPreTraining, ViTForImageClassification) to int8 products
// (weights per output channel, activations per token at run time; see detail/int8.hpp). The
// LayerNorms, softmax, GELU, attention's products and the loss stay in float. The float weights
// stay too (save_pretrained writes them); a quantised model has no backward.
#pragma once

#include "vitmae/modules/linear.hpp"
#include "vitmae/parameter.hpp"

namespace vitmae {

namespace detail {
struct Int8Switch {
  bool on = true;
  int modules = 0;
  void module(Linear<float>& l) { on ? l.quantize_int8() : l.dequantize(), ++modules; }
  void module(PatchConv2d<float>& c) { on ? c.quantize_int8() : c.dequantize(), ++modules; }
  template <class P>
  void operator()(const P&) const {}
};
struct Int8Count {
  int quantised = 0, modules = 0;
  void module(const Linear<float>& l) { quantised += !l.int8.empty(), ++modules; }
  void module(const PatchConv2d<float>& c) { quantised += !c.int8.empty(), ++modules; }
  template <class P>
  void operator()(const P&) const {}
};
}  // namespace detail

/// Quantises every Linear layer and the patch projection of `model` to int8; returns how many
/// (0 for a double model: int8 products are for float models).
template <class M>
int quantize_int8(M& model) {
  detail::Int8Switch s;
  model.visit_parameters("", s);
  return s.modules;
}

/// Back to float products.
template <class M>
void dequantize(M& model) {
  detail::Int8Switch s{false};
  model.visit_parameters("", s);
}

/// True when every Linear layer and the patch projection of `model` runs in int8.
template <class M>
bool is_int8(const M& model) {
  detail::Int8Count c;
  model.visit_parameters("", c);
  return c.modules > 0 && c.quantised == c.modules;
}

}  // namespace vitmae
