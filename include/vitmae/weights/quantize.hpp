// SPDX-License-Identifier: Apache-2.0
// int8 inference: quantize_int8(model) switches every Linear layer and the patch projection of a
// float model (ViTMAEModel, ViTMAEForPreTraining, ViTForImageClassification) to int8 products
// (weights per output channel, activations per token at run time; see detail/int8.hpp). The
// LayerNorms, softmax, GELU, attention's products and the loss stay in float. The float weights
// stay too (save_pretrained writes them) unless pack_for_inference releases them; a quantised
// model has no backward.
//
// pack_for_inference(model) makes a float model inference-only: its weights packed once for
// oneDNN's matmul (see detail/packed.hpp), or, after quantize_int8, its float weights released.
#pragma once

#include "vitmae/detail/gemm.hpp"
#include "vitmae/io/tensor_source.hpp"
#include "vitmae/modules/linear.hpp"
#include "vitmae/parameter.hpp"

namespace vitmae {

/// Where load_state_dict puts an int8 checkpoint's Linear and patch-projection weights in a
/// float model.
enum class Int8Weights {
  dequantised,  ///< into the float weights (integers times scales); the model then runs in int8
  kept,         ///< straight into the int8 layers with the file's integers and scales, their float
                ///< weights released unwritten (load_for_inference, whose model is built with
                ///< Storage::unwritten); a double model still gets the dequantised values
};

namespace detail {
struct Int8Switch : ModulesOnly {
  bool on = true;
  int modules = 0;
  bool keep_released = false;  // leave the int8 layers whose float weights are released as they are
  template <class L>
  void layer(L& l) {
    ++modules;
    if (!on) return l.dequantize();
    if (!(keep_released && !l.int8.empty() && l.packed_for_inference())) l.quantize_int8();
  }
  void module(Linear<float>& l) { layer(l); }
  void module(PatchConv2d<float>& c) { layer(c); }
};
/// How many float Linear and patch-projection layers there are, run in int8, or have their
/// float weight released (is_int8, is_packed).
struct FormCount : ModulesOnly {
  int modules = 0, quantised = 0, released = 0;
  template <class L>
  void layer(const L& l) {
    ++modules, quantised += !l.int8.empty(), released += l.packed_for_inference();
  }
  void module(const Linear<float>& l) { layer(l); }
  void module(const PatchConv2d<float>& c) { layer(c); }
};
/// Walks `model`'s modules with a ModulesOnly visitor; returns it.
template <class M, class S>
S walk_modules(M& model, S s) {
  model.visit_parameters("", s);
  return s;
}
/// quantize_int8 of every layer but the int8 ones whose float weights are released (loaded
/// straight from an int8 checkpoint, load_for_inference): they keep the file's integers.
template <class M>
void quantize_all_but_released(M& model) {
  Int8Switch s;
  s.keep_released = true;
  walk_modules(model, s);
}
struct PackSwitch : ModulesOnly {
  bool on = true;
  int released = 0;
  template <class L>
  void layer(L& l) {
    if (on) released += l.pack();
    else l.unpack();
  }
  void module(Linear<float>& l) { layer(l); }
  void module(PatchConv2d<float>& c) { layer(c); }
};
}  // namespace detail

/// Quantises every Linear layer and the patch projection of `model` to int8; returns how many
/// (0 for a double model: int8 products are for float models).
template <class M>
int quantize_int8(M& model) {
  return detail::walk_modules(model, detail::Int8Switch{}).modules;
}

/// Back to float products. On a model whose float weights pack_for_inference released (or one
/// loaded from an int8 checkpoint), the float weights are the int8 ones dequantised.
template <class M>
void dequantize(M& model) {
  detail::walk_modules(model, detail::Int8Switch{{}, false});
}

/// Prepares a float model for inference only: every Linear layer's and the patch projection's
/// float weight is released, its products then running on the weight packed once for oneDNN's
/// matmul (a float weight; faster at every batch, most at batch 1) or on the int8 weight
/// (after quantize_int8). The model's memory stays the same (int8: the float weights go). The
/// results do not depend on the number of threads (each thread takes a range of tokens through
/// the whole packed weight). Nothing is packed for double, or for float products on Eigen (a build
/// without oneDNN, or set_product_backend(Backend::eigen)); int8 weights are still released.
/// Until unpack(model), the model has no backward, and reading its parameters (saving, loading,
/// training, optimizers) throws a vitmae::Error naming the weight. Returns how many weights
/// were released.
template <class M>
int pack_for_inference(M& model) {
  return detail::walk_modules(model, detail::PackSwitch{}).released;
}

/// Undoes pack_for_inference: the float weights come back (exactly the packed ones; an int8
/// layer's dequantised values, its products staying int8).
template <class M>
void unpack(M& model) {
  detail::walk_modules(model, detail::PackSwitch{{}, false});
}

/// True when some weight of `model` was released by pack_for_inference.
template <class M>
bool is_packed(const M& model) {
  return detail::walk_modules(model, detail::FormCount{}).released > 0;
}

/// Builds a model of type M (ViTMAEModel or ViTMAEForPreTraining) for `config` and loads `source`
/// into it for inference only, as pack_for_inference leaves it (`int8`: quantised first, as
/// quantize_int8). The float weights are allocated but not written before loading
/// (Storage::unwritten: every one is then read, or the load throws and the model is gone), and
/// an int8 checkpoint's weights go straight into the int8 layers (Int8Weights::kept) with the file's own integers and
/// scales, their float weights released unwritten: the float model is never resident, so the resident peak is about the
/// int8 weights' size, not the float model's. (The address space still holds the float weights
/// while loading.) `M m(config); m.load_weights(source); pack_for_inference(m);` gives the same
/// float products; an int8 checkpoint's layers are then quantised again from the dequantised
/// weights, whose scales may differ in the last bit. Until unpack(model) the model has no
/// backward, and saving or training it throws (see pack_for_inference). checkpoint.hpp has the
/// form that takes a checkpoint's path, which checks the weights against the config first.
/// @throws vitmae::Error as load_weights.
template <class M, class Config>
M load_for_inference(const Config& config, const io::TensorSource& source, bool int8 = false) {
  M m(config, Storage::unwritten);
  m.load_weights(source, Int8Weights::kept);
  if (int8) detail::quantize_all_but_released(m);  // an int8 checkpoint's layers stay as loaded
  pack_for_inference(m);
  return m;
}

/// True when every Linear layer and the patch projection of `model` runs in int8.
template <class M>
bool is_int8(const M& model) {
  const detail::FormCount c = detail::walk_modules(model, detail::FormCount{});
  return c.modules > 0 && c.quantised == c.modules;
}

}  // namespace vitmae
