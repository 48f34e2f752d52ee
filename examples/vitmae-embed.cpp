// SPDX-License-Identifier: Apache-2.0
// vitmae-embed: images to features. Per image the CLS token and the mean of the patch tokens of
// ViTMAEModel's last_hidden_state (after the final layernorm), with no masking by default.
#include <vitmae/cli/inference_flags.hpp>
#include <vitmae/images/pipelines.hpp>
#include <vitmae/io/npy.hpp>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace {

struct Args : vitmae::cli::InferenceArgs {
  std::string out, npy;
  std::vector<std::string> images;
  double mask_ratio = 0.0;
  std::uint64_t seed = 0;
};

vitmae::cli::CommandLine command_line(Args& a) {
  vitmae::cli::CommandLine cl(
      "vitmae-embed",
      "usage: vitmae-embed --model DIR --image PATH [--image PATH ...] --out FEATURES.safetensors\n"
      "                    [--npy PREFIX] [--batch N] [--mask-ratio R] [--seed N] [--threads N]\n"
      "                    [--dtype float32|bfloat16|int8]\n"
      "Per image, the CLS token and the mean of the patch tokens of ViTMAEModel's last_hidden_state.\n");
  vitmae::cli::add_inference_flags(cl, a,
                                   {"(required) an HF checkpoint folder (its preprocessor_config.json decides the\n"
                                    "preprocessing; without one, ViTImageProcessor's defaults at the model's size)",
                                    {"float32", "bfloat16", "int8"},
                                    true});
  cl.section("Flags");
  cl.list("--image", "PATH", a.images, "(required, one or more) an image: PNG, JPEG, BMP, TGA, GIF, PNM, PSD or HDR");
  cl.text("--out", "FILE", a.out,
          "(required) writes 'cls' and 'mean' [images, hidden] (float32, one row per\n"
          "image in input order; the image paths are in the metadata)");
  cl.text("--npy", "PREFIX", a.npy, "also write PREFIX_cls.npy and PREFIX_mean.npy (default: none)");
  cl.number(
      "--mask-ratio", "R", a.mask_ratio, [](double x) { return x >= 0 && x < 1; }, "in [0, 1)",
      "fraction of patches hidden, in [0, 1) (default 0: every patch seen)");
  cl.integer("--seed", "N", a.seed, 0, INT64_MAX, "draws the masks when --mask-ratio is above 0 (default 0)");
  return cl;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  vitmae::cli::CommandLine cl = command_line(a);
  return vitmae::cli::run_main("vitmae-embed", cl.head().c_str(), [&] {
    cl.parse(argc, argv);
    a.dtype = vitmae::cli::usable_dtype("vitmae-embed", a.dtype);
    if (a.model.empty() || a.images.empty() || a.out.empty())
      throw vitmae::cli::UsageError("--model, --image and --out are required");
    vitmae::cli::set_threads(a.threads);
    vitmae::cli::doing("loading the model " + a.model);
    auto model =
        vitmae::load_for_inference<vitmae::ViTMAEModel<float>>(a.model, "", vitmae::cli::precision_of(a.dtype));
    model.config.mask_ratio = a.mask_ratio;
    const auto proc = vitmae::ImageProcessor::for_checkpoint(a.model, model.config);
    std::mt19937_64 rng(a.seed);
    const vitmae::ImageFeatures<float> f =
        vitmae::image_features(model, proc, a.images, a.batch, rng, [](size_t begin, size_t end) {
          vitmae::cli::doing("embedding images " + std::to_string(begin + 1) + " to " + std::to_string(end));
        });
    const long N = static_cast<long>(f.cls.rows()), D = static_cast<long>(f.cls.cols());
    vitmae::io::SafetensorsWriter w;
    w.add("cls", f.cls.data(), {N, D}, vitmae::io::DType::F32);
    w.add("mean", f.mean.data(), {N, D}, vitmae::io::DType::F32);
    w.set_metadata("images", nlohmann::json(a.images).dump());
    w.set_metadata("mask_ratio", std::to_string(a.mask_ratio));
    w.save(a.out);
    if (!a.npy.empty()) {
      vitmae::io::save_npy(a.npy + "_cls.npy", f.cls.data(), {N, D});
      vitmae::io::save_npy(a.npy + "_mean.npy", f.mean.data(), {N, D});
    }
    std::printf("wrote %s: cls and mean, %ld images x %ld\n", a.out.c_str(), N, D);
  });
}
