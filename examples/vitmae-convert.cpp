// SPDX-License-Identifier: Apache-2.0
// vitmae-convert: any checkpoint vitmae reads (HF safetensors, sharded, pytorch_model.bin, the
// MAE release's .pth) to an HF-layout folder: config.json, model.safetensors,
// preprocessor_config.json, which HF transformers loads too.
#include <vitmae/cli/program.hpp>

#include <fstream>
#include <iostream>
#include <string>

namespace {

constexpr const char* kUsage =
    "usage: vitmae-convert --input PATH --out DIR [--preset NAME] [--dtype float32|float16|bfloat16|int8]\n"
    "                      [--num-labels N | --labels FILE] [--seed N]\n"
    "Writes DIR/config.json, DIR/model.safetensors and DIR/preprocessor_config.json, which vitmae and\n"
    "HF transformers load. With --num-labels or --labels, DIR is a ViTForImageClassification: the\n"
    "MAE encoder of PATH (its sin-cos table as the learned position_embeddings; the decoder dropped)\n"
    "and a classifier drawn as HF does (truncated normal, std initializer_range; bias 0). A ViT\n"
    "classifier at PATH is converted as it is (its labels replaced when given).\n"
    "  --input PATH   (required) an HF checkpoint folder or weights file (safetensors, sharded index,\n"
    "                 pytorch_model.bin) or an MAE-release .pth, with config.json beside it (or --preset)\n"
    "  --out DIR      (required) the folder to write, created with its parents\n"
    "  --preset NAME  mae-vit-base, mae-vit-large or mae-vit-huge: the sizes of the MAE release, for a\n"
    "                 checkpoint without config.json (default: none, read PATH's config.json)\n"
    "  --dtype T      storage type of DIR/model.safetensors: float32, float16, bfloat16 (default\n"
    "                 float32) or int8 (Linear and patch weights int8 per output channel with\n"
    "                 <name>_scale, the rest float32; vitmae loads it and runs it in int8)\n"
    "  --num-labels N a classifier for N classes named LABEL_0 ... LABEL_{N-1} (default: none)\n"
    "  --labels FILE  a classifier for the classes named in FILE, one per line, in class order\n"
    "                 (default: none)\n"
    "  --seed N       seed of a classifier drawn afresh (default 0)\n"
    "  -h, --help     print this text and exit\n"
    "preprocessor_config.json is copied from PATH's folder when it has one. Otherwise DIR gets what\n"
    "vitmae uses for a folder without one, so converting does not change how images are\n"
    "preprocessed: HF ViTImageProcessor's defaults (bilinear resampling, mean and std 0.5) at the\n"
    "model's image size. For MAE's own normalisation (ImageNet mean and std, bicubic), put that\n"
    "preprocessor_config.json beside the checkpoint before converting.\n";

}  // namespace

int main(int argc, char** argv) {
  return vitmae::cli::run_main("vitmae-convert", kUsage, [&] {
    using vitmae::cli::UsageError;
    std::string input, out, preset, dtype = "float32", labels_file;
    long num_labels = -1;
    std::uint64_t seed = 0;
    for (int i = 1; i < argc; ++i) {
      const std::string s = argv[i];
      if (s == "--input") input = vitmae::cli::value(argc, argv, i);
      else if (s == "--out") out = vitmae::cli::value(argc, argv, i);
      else if (s == "--preset") preset = vitmae::cli::value(argc, argv, i);
      else if (s == "--dtype") dtype = vitmae::cli::value(argc, argv, i);
      else if (s == "--num-labels") num_labels = static_cast<long>(vitmae::cli::to_int(s, vitmae::cli::value(argc, argv, i), 0, 1000000));
      else if (s == "--labels") labels_file = vitmae::cli::value(argc, argv, i);
      else if (s == "--seed") seed = static_cast<std::uint64_t>(vitmae::cli::to_int(s, vitmae::cli::value(argc, argv, i), 0, INT64_MAX));
      else if (s == "-h" || s == "--help") {
        std::cout << kUsage;
        return;
      } else throw UsageError("unknown argument '" + s + "'");
    }
    if (input.empty() || out.empty()) throw UsageError("--input and --out are required");
    if (dtype != "float32" && dtype != "float16" && dtype != "bfloat16" && dtype != "int8")
      throw UsageError("--dtype expects float32, float16, bfloat16 or int8, got '" + dtype + "'");
    if (!preset.empty()) vitmae::cli::check_preset(preset);
    if (num_labels >= 0 && !labels_file.empty()) throw UsageError("give --num-labels or --labels, not both");

    using namespace vitmae;
    const io::DType dt = dtype == "float16" ? io::DType::F16 : dtype == "bfloat16" ? io::DType::BF16
                         : dtype == "int8"   ? io::DType::I8
                                             : io::DType::F32;
    const std::string folder = io::checkpoint_folder(input);
    const std::string src_pre = io::join_path(folder, "preprocessor_config.json");
    auto write_preprocessor = [&](const Config& config) {
      // The folder's own file, copied as it is; else what the library uses for a folder without one.
      const nlohmann::json pre =
          io::file_exists(src_pre) ? io::read_json_file(src_pre) : ImageProcessor::for_checkpoint(input, config).to_json();
      io::write_file_atomic(io::join_path(out, "preprocessor_config.json"), pre.dump(2) + "\n");
      std::cout << "wrote " << out << "/{config.json, model.safetensors, preprocessor_config.json}\n";
    };
    if (num_labels >= 0 || !labels_file.empty() || checkpoint_model_type(input, preset) == "vit") {
      ClassifierLoadOptions o;
      o.preset = preset;
      o.seed = seed;
      if (num_labels >= 0) o.labels = ViTConfig::default_labels(num_labels);
      if (!labels_file.empty()) o.labels = vitmae::cli::read_label_names(labels_file);
      std::vector<std::string> notes;
      vitmae::cli::doing("loading " + input + " as a ViTForImageClassification");
      const auto m = ViTForImageClassification<float>::from_pretrained(input, o, &notes);
      for (const std::string& n : notes) std::cerr << "vitmae-convert: " << n << "\n";
      m.save_pretrained(out, dt);
      write_preprocessor(m.config().mae_config());
      return;
    }
    const Config config = checkpoint_config(input, preset);
    const auto weights = vitmae::open_pretrained_weights(input);
    const bool pretraining = ForPreTraining<float>::has_decoder(*weights);
    if (pretraining)  // before allocating
      check_weights_fit<ForPreTraining<float>>(config, *weights, checkpoint_config_name(input, preset));
    else
      check_weights_fit<Model<float>>(config, *weights, checkpoint_config_name(input, preset));
    vitmae::cli::doing("allocating the model of " + checkpoint_config_name(input, preset) + " (" +
                    vitmae::cli::model_size(config, pretraining) + ")");
    if (pretraining) {
      ForPreTraining<float> m(config);
      m.load_weights(*weights);
      m.save_pretrained(out, dt);
    } else {
      Model<float> m(config);
      m.load_weights(*weights);
      m.save_pretrained(out, dt);
    }
    write_preprocessor(config);
  });
}
