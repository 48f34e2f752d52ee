// SPDX-License-Identifier: Apache-2.0
// A forward's inputs and outputs as safetensors files, under HF's names: pixel_values, noise and
// labels in; last_hidden_state, mask, ids_restore, logits, loss, hidden_states.i, attentions.i
// out (ViTMAEModelOutput, ViTMAEForPreTrainingOutput, ImageClassifierOutput), each batch stacked
// as torch holds it ([B, T, hidden], [B, heads, T, T]), so a file written here compares tensor
// for tensor with one a Python run saves with safetensors.torch.save_file.
#pragma once

#include "vitmae/error.hpp"
#include "vitmae/io/safetensors.hpp"
#include "vitmae/models/for_pre_training.hpp"
#include "vitmae/models/model.hpp"
#include "vitmae/models/vit_for_image_classification.hpp"
#include "vitmae/tensor.hpp"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace vitmae {

/// `in`'s pixel_values, [B, C, H, W]. @throws vitmae::Error naming the file when it has none
/// or another rank.
template <class Scalar>
Tensor<Scalar> read_pixel_values(const io::SafetensorsFile& in) {
  detail::require(in.contains("pixel_values"), in.path(), ": no tensor 'pixel_values'");
  Tensor<Scalar> pixels = in.get<Scalar>("pixel_values");
  detail::require(pixels.dim() == 4, in.path(), ": 'pixel_values' must be [batch, channels, height, width], got ",
                  detail::shape_str(pixels.shape));
  return pixels;
}

/// `in`'s noise [B, L], which decides ViTMAE's masking, or nothing when it has none (the model's
/// forward checks B and L against the pixels). @throws vitmae::Error when it is not 2-d.
template <class Scalar>
std::optional<Matrix<Scalar>> read_noise(const io::SafetensorsFile& in) {
  if (!in.contains("noise")) return std::nullopt;
  const Tensor<Scalar> n = in.get<Scalar>("noise");
  detail::require(n.dim() == 2, in.path(), ": 'noise' has shape ", detail::shape_str(n.shape),
                  ", expected [batch, num_patches]");
  return Matrix<Scalar>(Eigen::Map<const Matrix<Scalar>>(n.ptr(), n.size(0), n.size(1)));
}

/// `in`'s labels for ViTForImageClassification, as HF takes them: integer classes (I64 or I32
/// [B]) or float targets ([B, num_labels], or [B] for regression); nothing when it has none.
/// @throws vitmae::Error when float labels have another rank.
template <class Scalar>
std::optional<Labels<Scalar>> read_labels(const io::SafetensorsFile& in) {
  if (!in.contains("labels")) return std::nullopt;
  const io::DType type = in.info("labels").dtype;
  if (type == io::DType::I64 || type == io::DType::I32)
    return Labels<Scalar>::of_classes(in.get<std::int64_t>("labels").data);
  const Tensor<Scalar> t = in.get<Scalar>("labels");
  detail::require(t.dim() == 1 || t.dim() == 2, in.path(), ": 'labels' must be [batch] or [batch, num_labels], got ",
                  detail::shape_str(t.shape));
  return Labels<Scalar>::of_targets(Eigen::Map<const Matrix<Scalar>>(t.ptr(), t.size(0), t.dim() == 2 ? t.size(1) : 1));
}

namespace detail {

/// B per-sample matrices, each (rows, cols), as one tensor: [B, rows, cols], or [B, heads,
/// T, T] for attention probabilities (rows = heads * T, cols = T).
template <class Scalar>
void add_stacked(io::SafetensorsWriter& w, const std::string& name, const std::vector<Matrix<Scalar>>& per_sample,
                 bool attention, io::DType dtype) {
  const std::int64_t B = static_cast<std::int64_t>(per_sample.size());
  const std::int64_t rows = B ? per_sample[0].rows() : 0, cols = B ? per_sample[0].cols() : 0;
  std::vector<Scalar> flat;
  flat.reserve(static_cast<size_t>(B * rows * cols));
  for (const Matrix<Scalar>& m : per_sample) {
    require(m.rows() == rows && m.cols() == cols, "add_outputs: '", name, "' has samples of different sizes");
    flat.insert(flat.end(), m.data(), m.data() + m.size());
  }
  const std::vector<std::int64_t> shape = attention ? std::vector<std::int64_t>{B, cols ? rows / cols : 0, cols, cols}
                                                    : std::vector<std::int64_t>{B, rows, cols};
  w.add(name, flat.data(), shape, dtype);
}

/// hidden_states.i and attentions.i, one tensor a layer, when the forward returned them.
template <class Scalar>
void add_layers(io::SafetensorsWriter& w, const std::vector<std::vector<Matrix<Scalar>>>& hidden_states,
                const std::vector<std::vector<Matrix<Scalar>>>& attentions, io::DType dtype) {
  for (size_t i = 0; i < hidden_states.size(); ++i)
    add_stacked(w, "hidden_states." + std::to_string(i), hidden_states[i], false, dtype);
  for (size_t i = 0; i < attentions.size(); ++i)
    add_stacked(w, "attentions." + std::to_string(i), attentions[i], true, dtype);
}

/// mask [B, L] in `dtype` and ids_restore [B, L] as I64.
template <class Scalar>
void add_masking(io::SafetensorsWriter& w, const Matrix<Scalar>& mask, const IndexMatrix& ids_restore,
                 io::DType dtype) {
  w.add("mask", mask.data(), {mask.rows(), mask.cols()}, dtype);
  w.add("ids_restore", ids_restore.data(), {ids_restore.rows(), ids_restore.cols()}, io::DType::I64);
}

}  // namespace detail

/// Adds ViTMAEModel's outputs to `w` under HF's names: last_hidden_state [B, 1+K, hidden],
/// mask and ids_restore [B, L], then hidden_states.i [B, 1+K, hidden] and attentions.i [B,
/// heads, 1+K, 1+K] when the forward returned them. Floats are stored as `dtype` (F32 or F64;
/// F16 and BF16 round); ids_restore is always I64.
template <class Scalar>
void add_outputs(io::SafetensorsWriter& w, const ModelOutput<Scalar>& out, io::DType dtype) {
  detail::add_stacked(w, "last_hidden_state", out.last_hidden_state, false, dtype);
  detail::add_masking(w, out.mask, out.ids_restore, dtype);
  detail::add_layers(w, out.hidden_states, out.attentions, dtype);
}

/// ViTMAEForPreTraining's: as ViTMAEModel's, with logits [B, L, patch_size^2 * num_channels]
/// (patch order restored) and loss [1] after ids_restore.
template <class Scalar>
void add_outputs(io::SafetensorsWriter& w, const PreTrainingOutput<Scalar>& out, io::DType dtype) {
  detail::add_stacked(w, "last_hidden_state", out.last_hidden_state, false, dtype);
  detail::add_masking(w, out.mask, out.ids_restore, dtype);
  detail::add_stacked(w, "logits", out.logits, false, dtype);
  w.add("loss", &out.loss, {1}, dtype);
  detail::add_layers(w, out.hidden_states, out.attentions, dtype);
}

/// ViTForImageClassification's: logits [B, num_labels], last_hidden_state [B, 1+L, hidden],
/// loss [1] when labels were given, then hidden_states.i and attentions.i.
template <class Scalar>
void add_outputs(io::SafetensorsWriter& w, const ClassificationOutput<Scalar>& out, io::DType dtype) {
  w.add("logits", out.logits.data(), {out.logits.rows(), out.logits.cols()}, dtype);
  detail::add_stacked(w, "last_hidden_state", out.last_hidden_state, false, dtype);
  if (out.loss) w.add("loss", &*out.loss, {1}, dtype);
  detail::add_layers(w, out.hidden_states, out.attentions, dtype);
}

/// Writes a forward's outputs (any of the three) to `path`, as add_outputs() names them, with
/// `metadata` as the file's __metadata__. @throws vitmae::Error when the file cannot be written.
template <class Output>
void save_outputs(const std::string& path, const Output& out, io::DType dtype,
                  const std::map<std::string, std::string>& metadata = {}) {
  io::SafetensorsWriter w;
  add_outputs(w, out, dtype);
  for (const auto& [k, v] : metadata) w.set_metadata(k, v);
  w.save(path);
}

}  // namespace vitmae
