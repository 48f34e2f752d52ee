// SPDX-License-Identifier: Apache-2.0
// int8 inference: quantize_int8(model) switches every Linear layer and the patch projection of a
// float model (ViTMAEModel, ViTMAEForPreTraining, ViTForImageClassification) to int8 products
// (weights per output channel, activations per token at run time; see detail/int8.hpp). The
// LayerNorms, softmax, GELU and the loss stay in float; attention's two products per head run in
// bfloat16 where the CPU has bf16 products (SelfAttention::bf16_heads), else float, and in float
// when the probabilities are kept (output_attentions). The float weights
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
  bfloat16,     ///< every Linear and patch-projection weight (an int8 one dequantised) straight
                ///< into a bfloat16 packed weight, as to_bfloat16 packs it, through one weight's
                ///< worth of floats, its float weight released unwritten (load_for_inference
                ///< with Precision::bfloat16); a double model gets the float values
};

/// The products of a model loaded for inference (load_for_inference): float32 (packed for
/// oneDNN where the build has it), bfloat16 (to_bfloat16) or int8 (quantize_int8).
enum class Precision { float32, bfloat16, int8 };

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
  int modules = 0, quantised = 0, released = 0, bf16 = 0;
  template <class L>
  void layer(const L& l) {
    ++modules, quantised += !l.int8.empty(), released += l.packed_for_inference(), bf16 += l.bfloat16();
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
  bool bf16 = false;  // (on) every layer float again, then packed as bfloat16
  int released = 0;
  template <class L>
  void layer(L& l) {
    if (on && bf16 && l.bfloat16()) return;  // (already: rounding again changes nothing)
    if (on && bf16) l.dequantize();          // (unpacks too)
    if (on) released += l.pack(bf16);
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

/// Makes a float model inference-only with bfloat16 products, as torch.autocast("cpu",
/// dtype=torch.bfloat16) runs its Linear layers: every Linear layer's and the patch projection's
/// weight is rounded to bfloat16 (to nearest even) and packed for oneDNN's bf16 matmul (half the
/// float32 bytes), and each product rounds its input the same way and accumulates in float32.
/// Attention's two products per head run in bf16 too (SelfAttention::bf16_heads: as autocast runs
/// torch.matmul, with float32 scores), unless the probabilities are kept (output_attentions).
/// Everything else (LayerNorm, softmax, GELU, the residual stream, the loss) stays float32. An
/// int8 or packed model is taken back to float first (an int8 one: its dequantised weights). The
/// results do not depend on the number of threads. unpack(model) gives float32 products again, on
/// the rounded weights. Returns how many weights are bfloat16.
/// @throws vitmae::Error for a double model, a build without oneDNN, products set to Eigen, or a
/// CPU without bfloat16 products (bfloat16_supported(): AVX512_BF16 or AMX), which oneDNN would
/// only emulate, slower than float32.
template <class M>
int to_bfloat16(M& model) {
  const detail::FormCount c = detail::walk_modules(model, detail::FormCount{});
  detail::require(c.modules > 0, "to_bfloat16: bfloat16 products are for float models");
  detail::require_bfloat16("to_bfloat16");
  detail::PackSwitch s;
  s.bf16 = true;
  detail::walk_modules(model, s);
  return detail::walk_modules(model, detail::FormCount{}).bf16;
}

/// True when every Linear layer and the patch projection of `model` has bfloat16 products.
template <class M>
bool is_bfloat16(const M& model) {
  const detail::FormCount c = detail::walk_modules(model, detail::FormCount{});
  return c.modules > 0 && c.bf16 == c.modules;
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
/// backward, and saving or training it throws (see pack_for_inference). Precision::bfloat16
/// reads each Linear and patch-projection weight (F32, F16, BF16 or I8 in the file) into one
/// weight's worth of floats and packs it as bfloat16 at once, its float weight released unwritten:
/// the model is resident at its bfloat16 size, the same model as `to_bfloat16` of the loaded one.
/// checkpoint.hpp has the form that takes a checkpoint's path, which checks the weights against
/// the config first.
/// @throws vitmae::Error as load_weights; for Precision::bfloat16 where there are no bfloat16
/// products (see to_bfloat16), before reading anything.
template <class M, class Config>
M load_for_inference(const Config& config, const io::TensorSource& source, Precision precision) {
  if (precision == Precision::bfloat16) {  // (before anything is read)
    detail::require(std::is_same_v<typename M::scalar_type, float>,
                    "load_for_inference: bfloat16 products are for float models");
    detail::require_bfloat16("load_for_inference");
  }
  M m(config, Storage::unwritten);
  m.load_weights(source, precision == Precision::bfloat16 ? Int8Weights::bfloat16 : Int8Weights::kept);
  if (precision == Precision::int8) detail::quantize_all_but_released(m);  // an int8 checkpoint's layers stay as loaded
  if (precision == Precision::bfloat16) to_bfloat16(m);  // (packed as loaded: only a layer that was not)
  else pack_for_inference(m);
  return m;
}
template <class M, class Config>
M load_for_inference(const Config& config, const io::TensorSource& source, bool int8 = false) {
  return load_for_inference<M>(config, source, int8 ? Precision::int8 : Precision::float32);
}

/// True when every Linear layer and the patch projection of `model` runs in int8.
template <class M>
bool is_int8(const M& model) {
  const detail::FormCount c = detail::walk_modules(model, detail::FormCount{});
  return c.modules > 0 && c.quantised == c.modules;
}

}  // namespace vitmae
