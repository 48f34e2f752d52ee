// SPDX-License-Identifier: Apache-2.0
// vitmae-run: runs a checkpoint (ViTMAE, or a ViT classifier) on pixel_values (and noise, or
// labels) from a safetensors file and writes every output HF gives, under HF's names, to another
// safetensors file.
#include <vitmae/cli/inference_flags.hpp>
#include <vitmae/models/outputs.hpp>

#include <optional>
#include <random>
#include <string>

namespace {

struct Args : vitmae::cli::InferenceArgs {
  std::string input, output, preset;
  vitmae::ForwardOptions forward;  // --interpolate-pos-encoding, --hidden-states, --attentions
  std::uint64_t seed = 0;
};

vitmae::cli::CommandLine command_line(Args& a) {
  vitmae::cli::CommandLine cl(
      "vitmae-run",
      "usage: vitmae-run --model DIR --input IN.safetensors --output OUT.safetensors\n"
      "                  [--interpolate-pos-encoding] [--dtype float32|float64|bfloat16|int8]\n"
      "                  [--hidden-states] [--attentions] [--seed N] [--preset NAME] [--threads N]\n"
      "Runs a checkpoint on pixel_values (and noise) and writes every output HF gives, under HF's names;\n"
      "prints one line saying what ran and what it wrote.\n");
  vitmae::cli::add_inference_flags(cl, a,
                                   {"(required) an HF checkpoint folder (safetensors, sharded, pytorch_model.bin)\n"
                                    "or an MAE-release folder or .pth file; a ViT classifier (config.json\n"
                                    "model_type \"vit\") runs as ViTForImageClassification",
                                    {"float32", "float64", "bfloat16", "int8"}});
  cl.section("Flags");
  cl.text("--input", "IN", a.input,
          "(required) a safetensors file holding pixel_values [B,C,H,W] and optionally\n"
          "noise [B,L], which decides the masking; for a classifier optionally labels\n"
          "(I64 [B] classes, or float [B,N] / [B] targets)");
  cl.text("--output", "OUT", a.output,
          "(required) gets last_hidden_state, mask, ids_restore and, when the checkpoint\n"
          "has a decoder, logits and loss; for a classifier logits, last_hidden_state\n"
          "and, with labels, loss");
  cl.toggle(
      "--interpolate-pos-encoding", a.forward.interpolate_pos_encoding, true,
      "accept images of another size than the config's, interpolating the position\ntables as HF does (default: off)");
  cl.toggle("--hidden-states", a.forward.output_hidden_states, true,
            "also write hidden_states.i, every layer's input and the last layer's output\n(default: off)");
  cl.toggle("--attentions", a.forward.output_attentions, true,
            "also write attentions.i, every layer's attention probabilities\n[B, heads, T, T] (default: off)");
  cl.integer("--seed", "N", a.seed, 0, INT64_MAX, "draws the noise when IN has none (default 0)");
  cl.text("--preset", "NAME", a.preset,
          "mae-vit-base, mae-vit-large or mae-vit-huge: the sizes of the MAE release, for\n"
          "a checkpoint without config.json (default: none, read DIR's config.json)");
  return cl;
}

template <class Scalar>
std::string forward_activity(const Args& a, const vitmae::Tensor<Scalar>& pixels) {
  return "running the model on " + a.input + "'s pixel_values " + vitmae::detail::shape_str(pixels.shape) +
         (a.forward.output_attentions ? " with --attentions" : "");
}

/// Writes OUT and prints the line a successful run prints: what ran on what, and what it wrote.
template <class Scalar, class Output>
void write(const Args& a, const char* kind, const vitmae::Tensor<Scalar>& pixels, const Output& out,
           std::optional<double> loss) {
  vitmae::cli::doing("writing " + a.output);
  vitmae::io::SafetensorsWriter w;
  vitmae::add_outputs(w, out, std::is_same_v<Scalar, double> ? vitmae::io::DType::F64 : vitmae::io::DType::F32);
  w.set_metadata("interpolate_pos_encoding", a.forward.interpolate_pos_encoding ? "true" : "false");
  w.save(a.output);
  std::string names;
  for (const std::string& n : w.names())  // the per-layer tensors (hidden_states.i, attentions.i) summed up below
    if (n.find('.') == std::string::npos) names += (names.empty() ? "" : ", ") + n;
  if (a.forward.output_hidden_states) names += ", hidden_states.*";
  if (a.forward.output_attentions) names += ", attentions.*";
  std::printf("vitmae-run: %s on pixel_values %s (%s, %d threads): wrote %s (%s)", kind,
              vitmae::detail::shape_str(pixels.shape).c_str(), a.dtype.c_str(), vitmae::available_threads(),
              a.output.c_str(), names.c_str());
  if (loss) std::printf(", loss %.6g", *loss);
  std::printf("\n");
}

/// A ViT classifier: logits, last_hidden_state, loss with labels, hidden_states.i, attentions.i.
template <class Scalar>
void run_classifier(const Args& a) {
  const vitmae::io::SafetensorsFile in(a.input);
  const vitmae::Tensor<Scalar> pixels = vitmae::read_pixel_values<Scalar>(in);
  const std::optional<vitmae::Labels<Scalar>> labels = vitmae::read_labels<Scalar>(in);
  vitmae::cli::doing("loading the classifier " + a.model);
  auto model = vitmae::ViTForImageClassification<Scalar>::from_pretrained(a.model);
  vitmae::cli::apply_dtype(model, a.dtype);
  vitmae::cli::doing(forward_activity(a, pixels));
  const auto out = model.forward(pixels, labels ? &*labels : nullptr, a.forward);
  write(a, "ViTForImageClassification", pixels, out, out.loss ? std::optional<double>(*out.loss) : std::nullopt);
}

/// ViTMAEForPreTraining (M = ForPreTraining) or ViTMAEModel (an encoder-only checkpoint).
template <class M, class Scalar = typename M::scalar_type>
void run_mae(const Args& a, const vitmae::Config& config, const vitmae::io::TensorSource& weights) {
  // Before allocating: every tensor's shape against what the config implies.
  vitmae::check_weights_fit<M>(config, weights, vitmae::checkpoint_config_name(a.model, a.preset));
  const vitmae::io::SafetensorsFile in(a.input);
  const vitmae::Tensor<Scalar> pixels = vitmae::read_pixel_values<Scalar>(in);
  std::optional<vitmae::Matrix<Scalar>> noise = vitmae::read_noise<Scalar>(in);
  if (!noise) {
    std::mt19937_64 rng(a.seed);
    const vitmae::Index L = (pixels.size(2) / config.patch_size) * (pixels.size(3) / config.patch_size);
    noise = vitmae::ops::uniform_noise<Scalar>(pixels.size(0), L, rng);
  }
  constexpr bool pretraining = std::is_same_v<M, vitmae::ForPreTraining<Scalar>>;
  vitmae::cli::doing("allocating the model of " + vitmae::checkpoint_config_name(a.model, a.preset) + " (" +
                     vitmae::cli::model_size(config, pretraining) + ")");
  const M model = vitmae::load_for_inference<M>(config, weights, vitmae::cli::precision_of(a.dtype));
  vitmae::cli::doing(forward_activity(a, pixels));
  const auto out = model.forward(pixels, *noise, a.forward);
  if constexpr (pretraining) write(a, "ViTMAEForPreTraining", pixels, out, static_cast<double>(out.loss));
  else write(a, "ViTMAEModel", pixels, out, std::nullopt);
}

template <class Scalar>
void run(const Args& a) {
  if (vitmae::checkpoint_model_type(a.model, a.preset) == "vit") return run_classifier<Scalar>(a);
  const vitmae::Config config = vitmae::checkpoint_config(a.model, a.preset);
  const auto weights = vitmae::open_pretrained_weights(a.model);
  if (vitmae::ForPreTraining<Scalar>::has_decoder(*weights))
    run_mae<vitmae::ForPreTraining<Scalar>>(a, config, *weights);
  else run_mae<vitmae::Model<Scalar>>(a, config, *weights);
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  vitmae::cli::CommandLine cl = command_line(a);
  return vitmae::cli::run_main("vitmae-run", cl.head().c_str(), [&] {
    cl.parse(argc, argv);
    a.dtype = vitmae::cli::usable_dtype("vitmae-run", a.dtype);
    if (a.model.empty() || a.input.empty() || a.output.empty())
      throw vitmae::cli::UsageError("--model, --input and --output are required");
    if (!a.preset.empty()) vitmae::cli::check_preset(a.preset);
    vitmae::cli::set_threads(a.threads);
    if (a.dtype == "float64") run<double>(a);
    else run<float>(a);
  });
}
