// SPDX-License-Identifier: Apache-2.0
// vitmae-convert: any checkpoint vitmae reads (HF safetensors, sharded, pytorch_model.bin, the
// MAE release's .pth) to an HF-layout folder: config.json, model.safetensors,
// preprocessor_config.json, which HF transformers loads too.
#include <vitmae/cli/inference_flags.hpp>

#include <iostream>
#include <string>

namespace {

struct Args {
  std::string input, out, preset, dtype = "float32", labels;
  long num_labels = -1;  // -1: not a classifier
  std::uint64_t seed = 0;
};

vitmae::cli::CommandLine command_line(Args& a) {
  vitmae::cli::CommandLine cl(
      "vitmae-convert",
      "usage: vitmae-convert --input PATH --out DIR [--preset NAME] [--dtype float32|float16|bfloat16|int8]\n"
      "                      [--num-labels N | --labels FILE] [--seed N]\n"
      "Writes DIR/config.json, DIR/model.safetensors and DIR/preprocessor_config.json, which vitmae and\n"
      "HF transformers load. With --num-labels or --labels, DIR is a ViTForImageClassification: the\n"
      "MAE encoder of PATH (its sin-cos table as the learned position_embeddings; the decoder dropped)\n"
      "and a classifier drawn as HF does (truncated normal, std initializer_range; bias 0). A ViT\n"
      "classifier at PATH is converted as it is (its labels replaced when given).\n"
      "preprocessor_config.json is copied from PATH's folder when it has one. Otherwise DIR gets what\n"
      "vitmae uses for a folder without one, so converting does not change how images are\n"
      "preprocessed: HF ViTImageProcessor's defaults (bilinear resampling, mean and std 0.5) at the\n"
      "model's image size. For MAE's own normalisation (ImageNet mean and std, bicubic), put that\n"
      "preprocessor_config.json beside the checkpoint before converting.\n");
  cl.section("Flags");
  cl.text("--input", "PATH", a.input,
          "(required) an HF checkpoint folder or weights file (safetensors, sharded\n"
          "index, pytorch_model.bin) or an MAE-release .pth, with config.json beside it\n"
          "(or --preset)");
  cl.text("--out", "DIR", a.out, "(required) the folder to write, created with its parents");
  cl.text("--preset", "NAME", a.preset,
          "mae-vit-base, mae-vit-large or mae-vit-huge: the sizes of the MAE release, for\n"
          "a checkpoint without config.json (default: none, read PATH's config.json)");
  vitmae::cli::choice(cl, "--dtype", "T", a.dtype, {"float32", "float16", "bfloat16", "int8"},
                      "storage type of DIR/model.safetensors: float32, float16, bfloat16 (default\n"
                      "float32) or int8 (Linear and patch weights int8 per output channel with\n"
                      "<name>_scale, the rest float32; vitmae loads it and runs it in int8)");
  cl.integer("--num-labels", "N", a.num_labels, 0, 1000000,
             "a classifier for N classes named LABEL_0 ... LABEL_{N-1} (default: none)");
  cl.text("--labels", "FILE", a.labels,
          "a classifier for the classes named in FILE, one per line, in class order\n(default: none)");
  cl.integer("--seed", "N", a.seed, 0, INT64_MAX, "seed of a classifier drawn afresh (default 0)");
  return cl;
}

/// DIR/preprocessor_config.json: PATH's folder's own file, copied as it is; else what the
/// library uses for a folder without one.
void write_preprocessor(const Args& a, const vitmae::Config& config) {
  using namespace vitmae;
  const std::string src = io::join_path(io::checkpoint_folder(a.input), "preprocessor_config.json");
  const nlohmann::json pre =
      io::file_exists(src) ? io::read_json_file(src) : ImageProcessor::for_checkpoint(a.input, config).to_json();
  io::write_file_atomic(io::join_path(a.out, "preprocessor_config.json"), pre.dump(2) + "\n");
  std::cout << "wrote " << a.out << "/{config.json, model.safetensors, preprocessor_config.json}\n";
}

/// A ViTForImageClassification: a ViT classifier as it is, or an MAE encoder with a new head.
void convert_classifier(const Args& a, vitmae::io::DType dtype) {
  vitmae::ClassifierLoadOptions o;
  o.preset = a.preset;
  o.seed = a.seed;
  if (a.num_labels >= 0) o.labels = vitmae::ViTConfig::default_labels(a.num_labels);
  if (!a.labels.empty()) o.labels = vitmae::cli::read_label_names(a.labels);
  std::vector<std::string> notes;
  vitmae::cli::doing("loading " + a.input + " as a ViTForImageClassification");
  const auto m = vitmae::ViTForImageClassification<float>::from_pretrained(a.input, o, &notes);
  for (const std::string& n : notes) std::cerr << "vitmae-convert: " << n << "\n";
  m.save_pretrained(a.out, dtype);
  write_preprocessor(a, m.config().mae_config());
}

/// ViTMAEForPreTraining, or ViTMAEModel for an encoder-only checkpoint.
template <class M>
void convert(const Args& a, const vitmae::Config& config, const vitmae::io::TensorSource& weights,
             vitmae::io::DType dtype) {
  const std::string config_name = vitmae::checkpoint_config_name(a.input, a.preset);
  vitmae::check_weights_fit<M>(config, weights, config_name);  // before allocating
  vitmae::cli::doing("allocating the model of " + config_name + " (" +
                     vitmae::cli::model_size(config, std::is_same_v<M, vitmae::ForPreTraining<float>>) + ")");
  M m(config);
  m.load_weights(weights);
  m.save_pretrained(a.out, dtype);
  write_preprocessor(a, config);
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  vitmae::cli::CommandLine cl = command_line(a);
  return vitmae::cli::run_main("vitmae-convert", cl.head().c_str(), [&] {
    cl.parse(argc, argv);
    if (a.input.empty() || a.out.empty()) throw vitmae::cli::UsageError("--input and --out are required");
    if (!a.preset.empty()) vitmae::cli::check_preset(a.preset);
    if (a.num_labels >= 0 && !a.labels.empty())
      throw vitmae::cli::UsageError("give --num-labels or --labels, not both");
    using vitmae::io::DType;
    const DType dtype = a.dtype == "float16"    ? DType::F16
                        : a.dtype == "bfloat16" ? DType::BF16
                        : a.dtype == "int8"     ? DType::I8
                                                : DType::F32;
    if (a.num_labels >= 0 || !a.labels.empty() || vitmae::checkpoint_model_type(a.input, a.preset) == "vit")
      return convert_classifier(a, dtype);
    const vitmae::Config config = vitmae::checkpoint_config(a.input, a.preset);
    const auto weights = vitmae::open_pretrained_weights(a.input);
    if (vitmae::ForPreTraining<float>::has_decoder(*weights))
      convert<vitmae::ForPreTraining<float>>(a, config, *weights, dtype);
    else convert<vitmae::Model<float>>(a, config, *weights, dtype);
  });
}
