// SPDX-License-Identifier: Apache-2.0
// torch.nn.Linear and the patch projection torch.nn.Conv2d(kernel = stride = patch_size), each
// with its backward. The "cache" of a linear map is its input, which the caller keeps.
#pragma once

#include <string>
#include <type_traits>
#include <vector>

#include "vitmae/detail/gemm.hpp"
#include "vitmae/detail/int8.hpp"
#include "vitmae/detail/packed.hpp"
#include "vitmae/error.hpp"
#include "vitmae/parameter.hpp"
#include "vitmae/tensor.hpp"

namespace vitmae {

namespace detail {
/// A new float weight: zeros, allocated but not written (Storage::unwritten: load_for_inference
/// writes every one, or releases it for an int8 or bfloat16 weight, or the load throws and the
/// model is gone), or none.
template <class Scalar>
Matrix<Scalar> new_weight(Index rows, Index cols, Storage s) {
  if (s == Storage::none) return Matrix<Scalar>();
  return s == Storage::unwritten ? Matrix<Scalar>(rows, cols) : Matrix<Scalar>::Zero(rows, cols);
}

/// Visitors that walk modules only (quantize_int8, pack_for_inference) derive from this: they
/// never see tensors, so they also walk a model whose float weights were released.
struct ModulesOnly {
  template <class P>
  void operator()(const P&) const {}
};

/// The weight of a Linear layer or the patch projection: float (`weight`), and for inference
/// also int8 (`int8`, quantize_int8) or packed for oneDNN (`packed`, pack_for_inference). After
/// pack_for_inference the float weight is released (`weight` empty): the model is for inference
/// only until unpack.
template <class Scalar>
struct WeightForms {
  static bool released(const Matrix<Scalar>& w, const Int8Weight& q, const PackedWeight& p) {
    return w.size() == 0 && (!q.empty() || !p.empty());
  }
  static Index rows(const Matrix<Scalar>& w, const Int8Weight& q, const PackedWeight& p) {
    return !p.empty() ? p.out : released(w, q, p) ? q.out_features() : w.rows();
  }
  static Index cols(const Matrix<Scalar>& w, const Int8Weight& q, const PackedWeight& p) {
    return !p.empty() ? p.in : released(w, q, p) ? q.in_features() : w.cols();
  }
  /// y = x Wᵀ + b in the form the weight is in.
  static void forward(const Matrix<Scalar>& x, const Matrix<Scalar>& w, const Int8Weight& q, const PackedWeight& p,
                      const RowVector<Scalar>& b, Matrix<Scalar>& y) {
    if constexpr (std::is_same_v<Scalar, float>) {
      if (!q.empty()) return gemm_nt_int8(x, q, b, y);
      if (!p.empty()) return gemm_nt_packed(x, p, b, y);
    }
    gemm_nt(x, w, b, y, true);
  }
  /// Releases the float weight: an int8 weight keeps its integers; otherwise the weight is packed
  /// for oneDNN (as bfloat16 when `bf16`). Returns false (nothing done) for double, for a float
  /// weight when the products run on Eigen, or when already released.
  static bool pack(Matrix<Scalar>& w, const Int8Weight& q, PackedWeight& p, bool bf16) {
    if constexpr (std::is_same_v<Scalar, float>) {
      if (released(w, q, p) || (q.empty() && product_backend() != Backend::onednn)) return false;
      if (q.empty()) p = PackedWeight::of(std::move(w), bf16);
      w = Matrix<Scalar>();
      return true;
    }
    (void)w, (void)q, (void)p, (void)bf16;
    return false;
  }
  /// The float weight again: exactly the packed one, or the int8 weight's dequantised values.
  static void unpack(Matrix<Scalar>& w, const Int8Weight& q, PackedWeight& p) {
    if constexpr (std::is_same_v<Scalar, float>) {
      if (!p.empty()) w = p.unpacked();
      else if (released(w, q, p)) w = q.dequantized();
      p = PackedWeight();
    }
    (void)w, (void)q, (void)p;
  }
  template <class V, class W>
  static void visit(V& visit, std::string name, W& w, const Int8Weight& q, const PackedWeight& p,
                    std::vector<Index> shape) {
    if (!released(w, q, p)) return visit_tensor(visit, std::move(name), w, std::move(shape), ParamKind::weight);
    if constexpr (!std::is_base_of_v<ModulesOnly, std::decay_t<V>>)
      throw Error(name +
                  ": the model's float weights were released for inference (pack_for_inference); call "
                  "vitmae::unpack(model) before saving, loading, training or reading its parameters");
  }
};

/// quantize_int8 / dequantize / pack / unpack of a module with `weight`, `int8` and `packed`
/// (Linear, PatchConv2d), written once.
template <class Module, class Scalar>
struct WeightFormsOf {
  using Forms = WeightForms<Scalar>;
  /// The weight's shape (out, in), recorded by the constructor: all a module built without
  /// storage (Storage::none) has of it.
  Index out_size = 0, in_size = 0;

  /// Quantises the weight to int8 per output channel for the forward (float only; the float weight
  /// stays for saving). dequantize() goes back to float products.
  void quantize_int8() {
    static_assert(std::is_same_v<Scalar, float>, "int8 products are for float models");
    Module& m = self();
    Forms::unpack(m.weight, m.int8, m.packed);
    m.int8 = Int8Weight::of(m.weight);
    m.int8.pack();
  }
  void dequantize() {
    Module& m = self();
    Forms::unpack(m.weight, m.int8, m.packed);
    m.int8 = Int8Weight();
  }
  /// pack_for_inference (to_bfloat16: `bf16`) / unpack for this layer (see WeightForms).
  bool pack(bool bf16 = false) { return Forms::pack(self().weight, self().int8, self().packed, bf16); }
  /// True when the forward's products are bfloat16 (to_bfloat16).
  bool bfloat16() const { return self().packed.bf16 && !self().packed.empty(); }
  void unpack() { Forms::unpack(self().weight, self().int8, self().packed); }
  bool packed_for_inference() const { return Forms::released(self().weight, self().int8, self().packed); }
  Index out_features() const { return stored() ? Forms::rows(self().weight, self().int8, self().packed) : out_size; }
  Index in_features() const { return stored() ? Forms::cols(self().weight, self().int8, self().packed) : in_size; }

 protected:
  WeightFormsOf() = default;
  WeightFormsOf(Index out, Index in) : out_size(out), in_size(in) {}

 private:
  /// False for a module built without storage (or a weight of no values).
  bool stored() const { return self().weight.size() > 0 || !self().int8.empty() || !self().packed.empty(); }
  Module& self() { return static_cast<Module&>(*this); }
  const Module& self() const { return static_cast<const Module&>(*this); }
};
}  // namespace detail

/// y = x Wᵀ + b. HF names: <prefix>weight (out, in), <prefix>bias (out), bias optional
/// (the query/key/value projections have none when qkv_bias is false).
template <class Scalar = float>
struct Linear : detail::WeightFormsOf<Linear<Scalar>, Scalar> {
  Matrix<Scalar> weight;   // (out, in)
  RowVector<Scalar> bias;  // (out), empty when has_bias is false
  bool has_bias = true;
  detail::Int8Weight int8;      // after quantize_int8 (float only): the forward's product in int8
  detail::PackedWeight packed;  // after pack_for_inference (float, oneDNN): replaces `weight`

  Linear() = default;
  Linear(Index in, Index out, bool with_bias = true, Storage s = Storage::zeros)
      : detail::WeightFormsOf<Linear<Scalar>, Scalar>(out, in),
        weight(detail::new_weight<Scalar>(out, in, s)),
        bias(detail::zeros<RowVector<Scalar>>(s, with_bias ? out : 0)),
        has_bias(with_bias) {}

  using Forms = detail::WeightForms<Scalar>;
  using detail::WeightFormsOf<Linear<Scalar>, Scalar>::in_features;
  using detail::WeightFormsOf<Linear<Scalar>, Scalar>::out_features;

  /// x: (tokens, in) -> y: (tokens, out); y's storage is reused when its shape already fits.
  /// @throws vitmae::Error on a width mismatch.
  void forward(const Matrix<Scalar>& x, Matrix<Scalar>& y) const {
    detail::require(x.cols() == in_features(), "Linear: input has ", x.cols(), " features, expected ", in_features());
    Forms::forward(x, weight, int8, packed, bias, y);  // (tokens, out); bias is empty without one
  }
  Matrix<Scalar> forward(const Matrix<Scalar>& x) const {
    Matrix<Scalar> y;
    forward(x, y);
    return y;
  }

  /// x: the forward's input; dy = dL/dy. Adds dyᵀ x to g.weight and Σ dy to g.bias; when dx is
  /// given, dx = dy W (or dx += dy W when `accumulate`).
  void backward(const Matrix<Scalar>& x, const Matrix<Scalar>& dy, Linear& g, Matrix<Scalar>* dx,
                bool accumulate = false) const {
    detail::require(int8.empty(), "Linear: an int8 model is for inference only (no backward)");
    detail::require(packed.empty(),
                    "Linear: a model packed for inference has no backward (vitmae::unpack(model) first)");
    detail::gemm_tn_add(dy, x, g.weight);  // (out, in)
    if (has_bias) g.bias += dy.colwise().sum();
    if (dx) detail::gemm_nn(dy, weight, *dx, accumulate, true);  // (tokens, in)
  }

  template <class Self, class V>
  static void parameters(Self& m, const std::string& prefix, V& visit) {
    detail::visit_module(visit, m);
    Forms::visit(visit, prefix + "weight", m.weight, m.int8, m.packed, {m.out_features(), m.in_features()});
    if (m.has_bias)
      detail::visit_tensor(visit, prefix + "bias", m.bias, {m.bias.size() > 0 ? m.bias.size() : m.out_features()},
                           ParamKind::bias);
  }
  VITMAE_VISIT_PARAMETERS
};

/// The strided patch projection nn.Conv2d(C, hidden, kernel_size=p, stride=p), done as a GEMM on
/// the image's patches (im2col). HF names: <prefix>weight (hidden, C, p, p), stored here as
/// (hidden, C*p*p) flattened (c, kh, kw) like torch's memory; <prefix>bias (hidden).
template <class Scalar = float>
struct PatchConv2d : detail::WeightFormsOf<PatchConv2d<Scalar>, Scalar> {
  Matrix<Scalar> weight;   // (hidden, C*p*p)
  RowVector<Scalar> bias;  // (hidden)
  Index in_channels = 0, kernel_size = 0;
  detail::Int8Weight int8;      // after quantize_int8 (float only)
  detail::PackedWeight packed;  // after pack_for_inference (float, oneDNN): replaces `weight`
  using Forms = detail::WeightForms<Scalar>;

  PatchConv2d() = default;
  PatchConv2d(Index channels, Index hidden, Index patch, Storage s = Storage::zeros)
      : detail::WeightFormsOf<PatchConv2d<Scalar>, Scalar>(hidden, channels * patch * patch),
        weight(detail::new_weight<Scalar>(hidden, channels * patch * patch, s)),
        bias(detail::zeros<RowVector<Scalar>>(s, hidden)),
        in_channels(channels),
        kernel_size(patch) {}

  /// image (C, H*W) -> rows [row0, row0 + nh*nw) of cols (.., C*p*p): each patch flattened in the
  /// (c, kh, kw) order of the weight; like the convolution, pixels that do not fill a patch are dropped.
  static void im2col(const Scalar* image, Index channels, Index height, Index width, Index p, Matrix<Scalar>& cols,
                     Index row0) {
    const Index nh = height / p, nw = width / p;
    for (Index h = 0; h < nh; ++h)
      for (Index w = 0; w < nw; ++w)
        for (Index c = 0; c < channels; ++c)
          for (Index y = 0; y < p; ++y)
            cols.row(row0 + h * nw + w).segment((c * p + y) * p, p) =
                Eigen::Map<const RowVector<Scalar>>(image + c * height * width + (h * p + y) * width + w * p, p);
  }
  /// The adjoint of im2col: adds the rows [row0, row0 + nh*nw) of dcols into the image gradient.
  static void col2im_add(const Matrix<Scalar>& dcols, Index row0, Index channels, Index height, Index width, Index p,
                         Scalar* dimage) {
    const Index nh = height / p, nw = width / p;
    for (Index h = 0; h < nh; ++h)
      for (Index w = 0; w < nw; ++w)
        for (Index c = 0; c < channels; ++c)
          for (Index y = 0; y < p; ++y)
            Eigen::Map<RowVector<Scalar>>(dimage + c * height * width + (h * p + y) * width + w * p, p) +=
                dcols.row(row0 + h * nw + w).segment((c * p + y) * p, p);
  }

  /// cols: im2col of the images (patches, C*p*p) -> y (patches, hidden).
  void forward(const Matrix<Scalar>& cols, Matrix<Scalar>& y) const {
    Forms::forward(cols, weight, int8, packed, bias, y);  // (patches, hidden)
  }
  /// cols: the forward's input; dy: (patches, hidden). Adds the weight and bias gradients; when
  /// dcols is given, dcols = dy W.
  void backward(const Matrix<Scalar>& cols, const Matrix<Scalar>& dy, PatchConv2d& g, Matrix<Scalar>* dcols) const {
    detail::require(int8.empty(), "PatchConv2d: an int8 model is for inference only (no backward)");
    detail::require(packed.empty(),
                    "PatchConv2d: a model packed for inference has no backward (vitmae::unpack(model) first)");
    detail::gemm_tn_add(dy, cols, g.weight);
    g.bias += dy.colwise().sum();
    if (dcols) detail::gemm_nn(dy, weight, *dcols, false, true);
  }

  using detail::WeightFormsOf<PatchConv2d<Scalar>, Scalar>::out_features;

  template <class Self, class V>
  static void parameters(Self& m, const std::string& prefix, V& visit) {
    detail::visit_module(visit, m);
    Forms::visit(visit, prefix + "weight", m.weight, m.int8, m.packed,
                 {m.out_features(), m.in_channels, m.kernel_size, m.kernel_size});
    detail::visit_tensor(visit, prefix + "bias", m.bias, {m.bias.size() > 0 ? m.bias.size() : m.out_features()},
                         ParamKind::bias);
  }
  VITMAE_VISIT_PARAMETERS
};

}  // namespace vitmae
