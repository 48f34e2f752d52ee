// SPDX-License-Identifier: Apache-2.0
// vitmae-run: runs a checkpoint (ViTMAE, or a ViT classifier) on pixel_values (and noise, or
// labels) from a safetensors file and writes every output HF gives, under HF's names, to another
// safetensors file.
#include <vitmae/cli/program.hpp>

#include <optional>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr const char* kUsage =
    "usage: vitmae-run --model DIR --input IN.safetensors --output OUT.safetensors\n"
    "                  [--interpolate-pos-encoding] [--dtype float32|float64|int8]\n"
    "                  [--hidden-states] [--attentions] [--seed N] [--preset NAME] [--threads N]\n"
    "Runs a checkpoint on pixel_values (and noise) and writes every output HF gives, under HF's names;\n"
    "prints one line saying what ran and what it wrote.\n"
    "  --model DIR                 (required) an HF checkpoint folder (safetensors, sharded,\n"
    "                              pytorch_model.bin) or an MAE-release folder or .pth file; a ViT\n"
    "                              classifier (config.json model_type \"vit\") runs as\n"
    "                              ViTForImageClassification\n"
    "  --input IN                  (required) a safetensors file holding pixel_values [B,C,H,W] and\n"
    "                              optionally noise [B,L], which decides the masking; for a classifier\n"
    "                              optionally labels (I64 [B] classes, or float [B,N] / [B] targets)\n"
    "  --output OUT                (required) gets last_hidden_state, mask, ids_restore and, when the\n"
    "                              checkpoint has a decoder, logits and loss; for a classifier\n"
    "                              logits, last_hidden_state and, with labels, loss\n"
    "  --interpolate-pos-encoding  accept images of another size than the config's, interpolating the\n"
    "                              position tables as HF does (default: off)\n"
    "  --dtype float32|float64|int8 the precision of the computation and of OUT (default float32;\n"
    "                              int8: Linear layers and the patch projection in int8, OUT float32)\n"
    "  --hidden-states             also write hidden_states.i, every layer's input and the last\n"
    "                              layer's output (default: off)\n"
    "  --attentions                also write attentions.i, every layer's attention probabilities\n"
    "                              [B, heads, T, T] (default: off)\n"
    "  --seed N                    draws the noise when IN has none (default 0)\n"
    "  --preset NAME               mae-vit-base, mae-vit-large or mae-vit-huge: the sizes of the MAE\n"
    "                              release, for a checkpoint without config.json (default: none, read\n"
    "                              DIR's config.json)\n"
    "  --threads N                 threads for the products (default: all cores)\n"
    "  -h, --help                  print this text and exit\n";

struct Args {
  std::string model, input, output, dtype = "float32", preset;
  bool interpolate = false, hidden_states = false, attentions = false;
  std::uint64_t seed = 0;
  int threads = 0;
};

Args parse(int argc, char** argv) {
  using vitmae::cli::UsageError;
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    auto value = [&] { return vitmae::cli::value(argc, argv, i); };
    if (s == "--model") a.model = value();
    else if (s == "--input") a.input = value();
    else if (s == "--output") a.output = value();
    else if (s == "--dtype") a.dtype = value();
    else if (s == "--preset") a.preset = value();
    else if (s == "--seed") a.seed = static_cast<std::uint64_t>(vitmae::cli::to_int(s, value(), 0, INT64_MAX));
    else if (s == "--threads") a.threads = static_cast<int>(vitmae::cli::to_int(s, value(), 1, 1024));
    else if (s == "--interpolate-pos-encoding") a.interpolate = true;
    else if (s == "--hidden-states") a.hidden_states = true;
    else if (s == "--attentions") a.attentions = true;
    else if (s == "-h" || s == "--help") {
      std::cout << kUsage;
      std::exit(0);
    } else throw UsageError("unknown argument '" + s + "'");
  }
  if (a.model.empty() || a.input.empty() || a.output.empty())
    throw UsageError("--model, --input and --output are required");
  if (a.dtype != "float32" && a.dtype != "float64" && a.dtype != "int8")
    throw UsageError("--dtype expects float32, float64 or int8, got '" + a.dtype + "'");
  if (!a.preset.empty()) vitmae::cli::check_preset(a.preset);
  return a;
}

/// The line a successful run prints: what ran on what, and what it wrote.
template <class Scalar>
void say_done(const Args& a, const char* kind, const vitmae::Tensor<Scalar>& pixels, const vitmae::io::SafetensorsWriter& w,
              const Scalar* loss) {
  std::string names;
  for (const std::string& n : w.names()) {
    if (n.rfind("hidden_states.", 0) == 0 || n.rfind("attentions.", 0) == 0) continue;
    names += (names.empty() ? "" : ", ") + n;
  }
  if (a.hidden_states) names += ", hidden_states.*";
  if (a.attentions) names += ", attentions.*";
  std::printf("vitmae-run: %s on pixel_values %s (%s, %d threads): wrote %s (%s)", kind, vitmae::detail::shape_str(pixels.shape).c_str(),
              a.dtype.c_str(), vitmae::available_threads(), a.output.c_str(), names.c_str());
  if (loss) std::printf(", loss %.6g", static_cast<double>(*loss));
  std::printf("\n");
}

/// B matrices of (rows, cols) -> one [B, rows, cols] tensor (or [B, heads, T, T] via shape).
template <class Scalar>
void add_stack(vitmae::io::SafetensorsWriter& w, const std::string& name, const std::vector<vitmae::Matrix<Scalar>>& ms,
               std::vector<std::int64_t> shape, vitmae::io::DType dtype) {
  std::vector<Scalar> flat;
  for (const auto& m : ms) flat.insert(flat.end(), m.data(), m.data() + m.size());
  w.add(name, flat.data(), shape, dtype);
}

template <class Scalar>
std::string forward_activity(const Args& a, const vitmae::Tensor<Scalar>& pixels) {
  return "running the model on " + a.input + "'s pixel_values " + vitmae::detail::shape_str(pixels.shape) +
         (a.attentions ? " with --attentions" : "");
}

/// A ViT classifier: logits, last_hidden_state, loss with labels, hidden_states.i, attentions.i.
template <class Scalar>
void run_classifier(const Args& a, vitmae::io::DType dtype) {
  using namespace vitmae;
  io::SafetensorsFile in(a.input);
  detail::require(in.contains("pixel_values"), a.input, ": no tensor 'pixel_values'");
  const Tensor<Scalar> pixels = in.get<Scalar>("pixel_values");
  detail::require(pixels.dim() == 4, a.input, ": 'pixel_values' must be [batch, channels, height, width], got ",
                  detail::shape_str(pixels.shape));
  std::optional<Labels<Scalar>> labels;
  if (in.contains("labels")) {
    const auto& info = in.tensors().at("labels");
    if (info.dtype == io::DType::I64 || info.dtype == io::DType::I32) {
      labels = Labels<Scalar>::of_classes(in.get<std::int64_t>("labels").data);
    } else {
      const Tensor<Scalar> t = in.get<Scalar>("labels");
      detail::require(t.dim() == 1 || t.dim() == 2, a.input, ": 'labels' must be [batch] or [batch, num_labels], got ",
                      detail::shape_str(t.shape));
      labels = Labels<Scalar>::of_targets(Eigen::Map<const Matrix<Scalar>>(t.ptr(), t.size(0), t.dim() == 2 ? t.size(1) : 1));
    }
  }
  vitmae::cli::doing("loading the classifier " + a.model);
  auto model = ViTForImageClassification<Scalar>::from_pretrained(a.model);
  vitmae::cli::apply_dtype(model, a.dtype);
  ForwardOptions opts;
  opts.interpolate_pos_encoding = a.interpolate;
  opts.output_hidden_states = a.hidden_states;
  opts.output_attentions = a.attentions;
  vitmae::cli::doing(forward_activity(a, pixels));
  const ClassificationOutput<Scalar> out = model.forward(pixels, labels ? &*labels : nullptr, opts);
  vitmae::cli::doing("writing " + a.output);
  const std::int64_t B = pixels.size(0), H = model.config().hidden_size;
  const std::int64_t T = out.last_hidden_state.empty() ? 1 : out.last_hidden_state[0].rows();
  io::SafetensorsWriter w;
  w.add("logits", out.logits.data(), {B, out.logits.cols()}, dtype);
  add_stack(w, "last_hidden_state", out.last_hidden_state, {B, T, H}, dtype);
  if (out.loss) w.add("loss", &*out.loss, {1}, dtype);
  for (size_t i = 0; i < out.hidden_states.size(); ++i)
    add_stack(w, "hidden_states." + std::to_string(i), out.hidden_states[i], {B, T, H}, dtype);
  for (size_t i = 0; i < out.attentions.size(); ++i)
    add_stack(w, "attentions." + std::to_string(i), out.attentions[i], {B, model.config().num_attention_heads, T, T}, dtype);
  w.set_metadata("interpolate_pos_encoding", a.interpolate ? "true" : "false");
  w.save(a.output);
  say_done(a, "ViTForImageClassification", pixels, w, out.loss ? &*out.loss : nullptr);
}

template <class Scalar>
void run(const Args& a) {
  using namespace vitmae;
  const io::DType dtype = std::is_same_v<Scalar, double> ? io::DType::F64 : io::DType::F32;
  if (checkpoint_model_type(a.model, a.preset) == "vit") return run_classifier<Scalar>(a, dtype);
  const Config config = checkpoint_config(a.model, a.preset);
  const auto weights = vitmae::open_pretrained_weights(a.model);
  const bool pretraining = ForPreTraining<Scalar>::has_decoder(*weights);
  // Before allocating: every tensor's shape against what the config implies.
  const std::string config_name = checkpoint_config_name(a.model, a.preset);
  if (pretraining) check_weights_fit<ForPreTraining<Scalar>>(config, *weights, config_name);
  else check_weights_fit<Model<Scalar>>(config, *weights, config_name);

  io::SafetensorsFile in(a.input);
  detail::require(in.contains("pixel_values"), a.input, ": no tensor 'pixel_values'");
  const Tensor<Scalar> pixels = in.get<Scalar>("pixel_values");
  detail::require(pixels.dim() == 4, a.input, ": 'pixel_values' must be [batch, channels, height, width], got ",
                  detail::shape_str(pixels.shape));
  const Index B = pixels.size(0);
  const Index L = (pixels.size(2) / config.patch_size) * (pixels.size(3) / config.patch_size);
  Matrix<Scalar> noise;
  if (in.contains("noise")) {
    const Tensor<Scalar> n = in.get<Scalar>("noise");
    detail::require(n.dim() == 2, a.input, ": 'noise' has shape ", detail::shape_str(n.shape),
                    ", expected [batch, num_patches]");
    noise = Eigen::Map<const Matrix<Scalar>>(n.ptr(), n.size(0), n.size(1));  // forward checks the sizes
  } else {
    std::mt19937_64 rng(a.seed);
    noise = ops::uniform_noise<Scalar>(B, L, rng);
  }
  ForwardOptions opts;
  opts.interpolate_pos_encoding = a.interpolate;
  opts.output_hidden_states = a.hidden_states;
  opts.output_attentions = a.attentions;

  PreTrainingOutput<Scalar> out;
  std::int64_t heads = config.num_attention_heads;
  vitmae::cli::doing("allocating the model of " + checkpoint_config_name(a.model, a.preset) + " (" +
                  vitmae::cli::model_size(config, pretraining) + ")");
  if (pretraining) {
    auto model = load_for_inference<ForPreTraining<Scalar>>(config, *weights, a.dtype == "int8");
    vitmae::cli::doing(forward_activity(a, pixels));
    out = model.forward(pixels, noise, opts);
  } else {
    auto model = load_for_inference<Model<Scalar>>(config, *weights, a.dtype == "int8");
    vitmae::cli::doing(forward_activity(a, pixels));
    ModelOutput<Scalar> enc = model.forward(pixels, noise, opts);
    out.last_hidden_state = std::move(enc.last_hidden_state);
    out.mask = std::move(enc.mask);
    out.ids_restore = std::move(enc.ids_restore);
    out.hidden_states = std::move(enc.hidden_states);
    out.attentions = std::move(enc.attentions);
  }

  vitmae::cli::doing("writing " + a.output);
  io::SafetensorsWriter w;
  const std::int64_t T = out.last_hidden_state.empty() ? 1 : out.last_hidden_state[0].rows();
  add_stack(w, "last_hidden_state", out.last_hidden_state, {B, T, config.hidden_size}, dtype);
  w.add("mask", out.mask.data(), {B, L}, dtype);
  w.add("ids_restore", out.ids_restore.data(), {B, L}, io::DType::I64);
  if (pretraining) {
    add_stack(w, "logits", out.logits, {B, L, config.patch_size * config.patch_size * config.num_channels}, dtype);
    w.add("loss", &out.loss, {1}, dtype);
  }
  for (size_t i = 0; i < out.hidden_states.size(); ++i)
    add_stack(w, "hidden_states." + std::to_string(i), out.hidden_states[i], {B, T, config.hidden_size}, dtype);
  for (size_t i = 0; i < out.attentions.size(); ++i)
    add_stack(w, "attentions." + std::to_string(i), out.attentions[i], {B, heads, T, T}, dtype);
  w.set_metadata("interpolate_pos_encoding", a.interpolate ? "true" : "false");
  w.save(a.output);
  say_done(a, pretraining ? "ViTMAEForPreTraining" : "ViTMAEModel", pixels, w, pretraining ? &out.loss : nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  return vitmae::cli::run_main("vitmae-run", kUsage, [&] {
    const Args args = parse(argc, argv);
    vitmae::cli::set_threads(args.threads);
    if (args.dtype == "float64") run<double>(args);
    else run<float>(args);
  });
}
