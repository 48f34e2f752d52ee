// SPDX-License-Identifier: Apache-2.0
// vitmae-reconstruct: hide part of each image, let the model paint it back, and write a panel
// original | masked | reconstruction | reconstruction + visible (PNG, JPEG or BMP); print the
// masked-patch loss beside a mean-fill baseline's.
#include <vitmae/cli/program.hpp>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr const char* kUsage =
    "usage: vitmae-reconstruct [--model DIR] [--image PATH ...] [--out PANEL] [--mask-ratio R]\n"
    "                          [--seed N] [--threads N] [--dtype float32|int8]\n"
    "Hides part of each image, lets the model paint it back and writes a panel, one row per image:\n"
    "original | masked | reconstruction | reconstruction + visible. Prints per image the masked-patch\n"
    "loss (the model's normalised pixel space) and the loss of filling masked patches with the mean\n"
    "colour of the visible ones.\n"
    "  --model DIR      a ViTMAEForPreTraining checkpoint folder (default: the bundled model,\n"
    "                   examples/model)\n"
    "  --image PATH     an image, repeatable: PNG, JPEG, BMP, TGA, GIF, PNM, PSD or HDR (default: the\n"
    "                   bundled photo, examples/data/chelsea.png)\n"
    "  --out PANEL      the panel, in the format its extension names: .png, .jpg/.jpeg (quality 95) or\n"
    "                   .bmp (default panel.png)\n"
    "  --mask-ratio R   fraction of patches hidden, in (0, 1) (default: the model's, 0.75 in HF's)\n"
    "  --seed N         draws the masks (default 0)\n"
    "  --threads N      threads for the matrix products (default: all cores)\n"
    "  --dtype T        float32 (default) or int8 (Linear layers and patch projection in int8)\n"
    "  -h, --help       print this text and exit\n";

}  // namespace

int main(int argc, char** argv) {
  return vitmae::cli::run_main("vitmae-reconstruct", kUsage, [&] {
    std::string model_dir, out = "panel.png", dtype = "float32";
    std::vector<std::string> images;
    double mask_ratio = -1;
    std::uint64_t seed = 0;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--model") model_dir = vitmae::cli::value(argc, argv, i);
      else if (a == "--image") images.push_back(vitmae::cli::value(argc, argv, i));
      else if (a == "--out") out = vitmae::cli::value(argc, argv, i);
      else if (a == "--mask-ratio") {
        mask_ratio = vitmae::cli::to_double(a, vitmae::cli::value(argc, argv, i));
        if (!(mask_ratio > 0.0 && mask_ratio < 1.0)) throw vitmae::cli::UsageError("--mask-ratio must be in (0, 1)");
      } else if (a == "--seed") seed = static_cast<std::uint64_t>(vitmae::cli::to_int(a, vitmae::cli::value(argc, argv, i), 0, INT64_MAX));
      else if (a == "--dtype") vitmae::cli::check_dtype(dtype = vitmae::cli::value(argc, argv, i));
      else if (a == "--threads") vitmae::cli::set_threads(static_cast<int>(vitmae::cli::to_int(a, vitmae::cli::value(argc, argv, i), 1, 1024)));
      else if (a == "-h" || a == "--help") {
        std::cout << kUsage;
        return;
      } else throw vitmae::cli::UsageError("unknown argument '" + a + "'");
    }
    if (vitmae::io::image_format_for_path(out).empty())
      throw vitmae::cli::UsageError("--out must end in .png, .jpg, .jpeg or .bmp (the panel's format), got '" + out + "'");
    if (model_dir.empty()) {
      model_dir = VITMAE_DEFAULT_MODEL_DIR;
      vitmae::detail::require(vitmae::io::dir_exists(model_dir), model_dir,
                              ": the bundled model is missing (it ships in examples/model): pass --model DIR");
    }
    if (images.empty()) images.push_back(VITMAE_DEFAULT_IMAGE);

    using Scalar = float;
    vitmae::cli::doing("loading the model " + model_dir);
    auto model = vitmae::load_for_inference<vitmae::ViTMAEForPreTraining<Scalar>>(model_dir, "", dtype == "int8");
    if (mask_ratio > 0) model.config().mask_ratio = mask_ratio;
    const auto proc = vitmae::ImageProcessor::for_checkpoint(model_dir, model.config());
    vitmae::cli::doing("reconstructing " + std::to_string(images.size()) + " image" + (images.size() == 1 ? "" : "s"));
    std::vector<vitmae::io::Image8> resized;
    for (const auto& path : images) resized.push_back(proc.resize(vitmae::io::load_image(path, static_cast<int>(model.config().num_channels))));
    vitmae::ImageProcessor no_resize = proc;
    no_resize.do_resize = false;
    const vitmae::Tensor<Scalar> pixels = no_resize.preprocess<Scalar>(resized);
    const vitmae::Index H = pixels.size(2), W = pixels.size(3);
    std::mt19937_64 rng(seed);
    vitmae::ForwardOptions opts;
    opts.interpolate_pos_encoding = H != model.config().image_size || W != model.config().image_size;
    const auto result = model.forward(pixels, rng, opts);

    std::vector<vitmae::ReconstructionImages> rows;
    for (size_t b = 0; b < images.size(); ++b) {
      const vitmae::Matrix<Scalar> img = vitmae::image_of(pixels, static_cast<vitmae::Index>(b));
      const vitmae::RowVector<Scalar> mask = result.mask.row(static_cast<vitmae::Index>(b));
      const auto [num, den] = model.loss_terms(img, H, W, result.logits[b], mask);
      const Scalar baseline = vitmae::mean_fill_loss(model, img, H, W, mask);
      std::printf("%s: masked-patch loss %.6f, mean-fill baseline %.6f, ratio %.3f\n", images[b].c_str(),
                  static_cast<double>(num / den), static_cast<double>(baseline), static_cast<double>(num / den / baseline));
      rows.push_back(vitmae::reconstruction_images(model, no_resize, resized[b], img, result.logits[b], mask));
    }
    vitmae::PanelLayout layout;
    layout.scale = vitmae::PanelLayout::scale_for(static_cast<int>(H), static_cast<int>(W));
    vitmae::io::save_image(out, vitmae::make_panel(rows, layout));  // atomic, in the format --out names
    std::printf("wrote %s (%zu row%s: original | masked %.0f%% | reconstruction | reconstruction + visible)\n", out.c_str(),
                rows.size(), rows.size() == 1 ? "" : "s", 100.0 * model.config().mask_ratio);
  });
}
