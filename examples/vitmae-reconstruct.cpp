// SPDX-License-Identifier: Apache-2.0
// vitmae-reconstruct: hide part of each image, let the model paint it back, and write a panel
// original | masked | reconstruction | reconstruction + visible (PNG, JPEG or BMP); print the
// masked-patch loss beside a mean-fill baseline's.
#include <vitmae/cli/inference_flags.hpp>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace {

struct Args : vitmae::cli::InferenceArgs {
  std::string out = "panel.png";
  std::vector<std::string> images;
  double mask_ratio = -1;  // -1: the model's
  std::uint64_t seed = 0;
};

vitmae::cli::CommandLine command_line(Args& a) {
  vitmae::cli::CommandLine cl(
      "vitmae-reconstruct",
      "usage: vitmae-reconstruct [--model DIR] [--image PATH ...] [--out PANEL] [--mask-ratio R]\n"
      "                          [--seed N] [--threads N] [--dtype float32|bfloat16|int8]\n"
      "Hides part of each image, lets the model paint it back and writes a panel, one row per image:\n"
      "original | masked | reconstruction | reconstruction + visible. Prints per image the masked-patch\n"
      "loss (the model's normalised pixel space) and the loss of filling masked patches with the mean\n"
      "colour of the visible ones.\n");
  vitmae::cli::add_inference_flags(
      cl, a, {"a ViTMAEForPreTraining checkpoint folder (default: the bundled model,\nexamples/model)"});
  cl.section("Flags");
  cl.list("--image", "PATH", a.images,
          "an image, repeatable: PNG, JPEG, BMP, TGA, GIF, PNM, PSD or HDR (default: the\nbundled photo, "
          "examples/data/chelsea.png)");
  cl.text(
      "--out", "PANEL", a.out,
      "the panel, in the format its extension names: .png, .jpg/.jpeg (quality 95) or\n.bmp (default " + a.out + ")");
  cl.number(
      "--mask-ratio", "R", a.mask_ratio, [](double x) { return x > 0 && x < 1; }, "in (0, 1)",
      "fraction of patches hidden, in (0, 1) (default: the model's, 0.75 in HF's)");
  cl.integer("--seed", "N", a.seed, 0, INT64_MAX, "draws the masks (default 0)");
  return cl;
}

void check(Args& a) {
  if (vitmae::io::image_format_for_path(a.out).empty())
    throw vitmae::cli::UsageError("--out must end in .png, .jpg, .jpeg or .bmp (the panel's format), got '" + a.out +
                                  "'");
  if (a.model.empty()) {
    a.model = VITMAE_DEFAULT_MODEL_DIR;
    vitmae::detail::require(vitmae::io::dir_exists(a.model), a.model,
                            ": the bundled model is missing (it ships in examples/model): pass --model DIR");
  }
  if (a.images.empty()) a.images.push_back(VITMAE_DEFAULT_IMAGE);
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  vitmae::cli::CommandLine cl = command_line(a);
  return vitmae::cli::run_main("vitmae-reconstruct", cl.head().c_str(), [&] {
    cl.parse(argc, argv);
    a.dtype = vitmae::cli::usable_dtype("vitmae-reconstruct", a.dtype);
    check(a);
    vitmae::cli::set_threads(a.threads);
    using Scalar = float;
    vitmae::cli::doing("loading the model " + a.model);
    auto model = vitmae::load_for_inference<vitmae::ViTMAEForPreTraining<Scalar>>(a.model, "",
                                                                                  vitmae::cli::precision_of(a.dtype));
    if (a.mask_ratio > 0) model.config().mask_ratio = a.mask_ratio;
    const auto proc = vitmae::ImageProcessor::for_checkpoint(a.model, model.config());
    vitmae::cli::doing("reconstructing " + std::to_string(a.images.size()) + " image" +
                       (a.images.size() == 1 ? "" : "s"));
    std::vector<vitmae::io::Image8> resized;
    for (const auto& path : a.images)
      resized.push_back(proc.resize(vitmae::io::load_image(path, static_cast<int>(model.config().num_channels))));
    vitmae::ImageProcessor no_resize = proc;
    no_resize.do_resize = false;
    const vitmae::Tensor<Scalar> pixels = no_resize.preprocess<Scalar>(resized);
    const vitmae::Index H = pixels.size(2), W = pixels.size(3);
    std::mt19937_64 rng(a.seed);
    vitmae::ForwardOptions opts;
    opts.interpolate_pos_encoding = H != model.config().image_size || W != model.config().image_size;
    const auto result = model.forward(pixels, rng, opts);

    std::vector<vitmae::ReconstructionImages> rows;
    for (size_t b = 0; b < a.images.size(); ++b) {
      const vitmae::Matrix<Scalar> img = vitmae::image_of(pixels, static_cast<vitmae::Index>(b));
      const vitmae::RowVector<Scalar> mask = result.mask.row(static_cast<vitmae::Index>(b));
      const auto [num, den] = model.loss_terms(img, H, W, result.logits[b], mask);
      const Scalar baseline = vitmae::mean_fill_loss(model, img, H, W, mask);
      std::printf("%s: masked-patch loss %.6f, mean-fill baseline %.6f, ratio %.3f\n", a.images[b].c_str(),
                  static_cast<double>(num / den), static_cast<double>(baseline),
                  static_cast<double>(num / den / baseline));
      rows.push_back(vitmae::reconstruction_images(model, no_resize, resized[b], img, result.logits[b], mask));
    }
    vitmae::PanelLayout layout;
    layout.scale = vitmae::PanelLayout::scale_for(static_cast<int>(H), static_cast<int>(W));
    vitmae::io::save_image(a.out, vitmae::make_panel(rows, layout));  // atomic, in the format --out names
    std::printf("wrote %s (%zu row%s: original | masked %.0f%% | reconstruction | reconstruction + visible)\n",
                a.out.c_str(), rows.size(), rows.size() == 1 ? "" : "s", 100.0 * model.config().mask_ratio);
  });
}
