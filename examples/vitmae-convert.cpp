// SPDX-License-Identifier: Apache-2.0
// vitmae-convert: any checkpoint vitmae reads (HF safetensors, sharded, pytorch_model.bin, the
// MAE release's .pth) to an HF-layout folder: config.json, model.safetensors,
// preprocessor_config.json, which HF transformers loads too.
#include "common.hpp"

#include <fstream>
#include <iostream>
#include <string>

namespace {

constexpr const char* kUsage =
    "usage: vitmae-convert --input PATH --out DIR [--preset NAME] [--dtype float32|float16|bfloat16]\n"
    "Writes DIR/config.json, DIR/model.safetensors and DIR/preprocessor_config.json, which vitmae and\n"
    "HF transformers load.\n"
    "  --input PATH   (required) an HF checkpoint folder or weights file (safetensors, sharded index,\n"
    "                 pytorch_model.bin) or an MAE-release .pth, with config.json beside it (or --preset)\n"
    "  --out DIR      (required) the folder to write, created with its parents\n"
    "  --preset NAME  mae-vit-base, mae-vit-large or mae-vit-huge: the sizes of the MAE release, for a\n"
    "                 checkpoint without config.json (default: none, read PATH's config.json)\n"
    "  --dtype T      storage type of DIR/model.safetensors: float32, float16 or bfloat16 (default\n"
    "                 float32)\n"
    "  -h, --help     print this text and exit\n"
    "preprocessor_config.json is copied from PATH's folder when it has one. Otherwise DIR gets what\n"
    "vitmae uses for a folder without one, so converting does not change how images are\n"
    "preprocessed: HF ViTImageProcessor's defaults (bilinear resampling, mean and std 0.5) at the\n"
    "model's image size. For MAE's own normalisation (ImageNet mean and std, bicubic), put that\n"
    "preprocessor_config.json beside the checkpoint before converting.\n";

}  // namespace

int main(int argc, char** argv) {
  return examples::run_main("vitmae-convert", kUsage, [&] {
    using examples::UsageError;
    std::string input, out, preset, dtype = "float32";
    for (int i = 1; i < argc; ++i) {
      const std::string s = argv[i];
      if (s == "--input") input = examples::value(argc, argv, i);
      else if (s == "--out") out = examples::value(argc, argv, i);
      else if (s == "--preset") preset = examples::value(argc, argv, i);
      else if (s == "--dtype") dtype = examples::value(argc, argv, i);
      else if (s == "-h" || s == "--help") {
        std::cout << kUsage;
        return;
      } else throw UsageError("unknown argument '" + s + "'");
    }
    if (input.empty() || out.empty()) throw UsageError("--input and --out are required");
    if (dtype != "float32" && dtype != "float16" && dtype != "bfloat16")
      throw UsageError("--dtype expects float32, float16 or bfloat16, got '" + dtype + "'");
    if (!preset.empty()) examples::check_preset(preset);

    using namespace vitmae;
    const io::DType dt = dtype == "float16" ? io::DType::F16 : dtype == "bfloat16" ? io::DType::BF16 : io::DType::F32;
    const std::string folder = io::checkpoint_folder(input);
    const Config config = checkpoint_config(input, preset);
    const auto weights = vitmae::open_pretrained_weights(input);
    const bool pretraining = ForPreTraining<float>::has_decoder(*weights);
    check_weights_fit(config, *weights, pretraining, checkpoint_config_name(input, preset));  // before allocating
    examples::doing("allocating the model of " + checkpoint_config_name(input, preset) + " (" +
                    examples::model_size(config, pretraining) + ")");
    if (pretraining) {
      ForPreTraining<float> m(config);
      m.load_weights(*weights);
      m.save_pretrained(out, dt);
    } else {
      Model<float> m(config);
      m.load_weights(*weights);
      m.save_pretrained(out, dt);
    }
    const std::string src_pre = io::join_path(folder, "preprocessor_config.json");
    // The folder's own file, copied as it is; else what the library uses for a folder without one.
    const nlohmann::json pre = io::file_exists(src_pre) ? io::read_json_file(src_pre) : ImageProcessor::for_checkpoint(input, config).to_json();
    io::write_file_atomic(io::join_path(out, "preprocessor_config.json"), pre.dump(2) + "\n");
    std::cout << "wrote " << out << "/{config.json, model.safetensors, preprocessor_config.json}\n";
  });
}
