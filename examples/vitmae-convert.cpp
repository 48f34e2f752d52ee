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
    "PATH: an HF checkpoint folder or weights file, or an MAE-release .pth (with config.json beside\n"
    "it, or --preset mae-vit-base|mae-vit-large|mae-vit-huge). DIR receives config.json,\n"
    "model.safetensors and preprocessor_config.json (copied from PATH's folder when it has one).\n";

/// ViTImageProcessor settings of the hub's MAE checkpoints (ImageNet statistics, bicubic).
nlohmann::json default_preprocessor(const vitmae::Config& c) {
  return {{"do_normalize", true},
          {"do_rescale", true},
          {"do_resize", true},
          {"image_mean", {0.485, 0.456, 0.406}},
          {"image_processor_type", "ViTImageProcessor"},
          {"image_std", {0.229, 0.224, 0.225}},
          {"resample", 3},
          {"rescale_factor", 1.0 / 255.0},
          {"size", {{"height", c.image_size}, {"width", c.image_size}}}};
}

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

    using namespace vitmae;
    const io::DType dt = dtype == "float16" ? io::DType::F16 : dtype == "bfloat16" ? io::DType::BF16 : io::DType::F32;
    const std::string folder = io::checkpoint_folder(input);
    const Config config = checkpoint_config(input, preset);
    const auto weights = vitmae::open_pretrained_weights(input);
    if (ForPreTraining<float>::has_decoder(*weights)) {
      ForPreTraining<float> m(config);
      m.load_weights(*weights);
      m.save_pretrained(out, dt);
    } else {
      Model<float> m(config);
      m.load_weights(*weights);
      m.save_pretrained(out, dt);
    }
    const std::string src_pre = io::join_path(folder, "preprocessor_config.json");
    const nlohmann::json pre = io::file_exists(src_pre) ? io::read_json_file(src_pre) : default_preprocessor(config);
    io::write_file_atomic(io::join_path(out, "preprocessor_config.json"), pre.dump(2) + "\n");
    std::cout << "wrote " << out << "/{config.json, model.safetensors, preprocessor_config.json}\n";
  });
}
