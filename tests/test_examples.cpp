// SPDX-License-Identifier: Apache-2.0
// vitmae-reconstruct and vitmae-embed end to end on the hf/tiny fixture model and sample photos.
#include "test_util.hpp"

#include <sys/wait.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <regex>

namespace io = vitmae::io;

using test::Run;

TEST_CASE("vitmae-reconstruct writes the documented panel, visible patches exact, loss = the library's") {
  const std::string dir = test::tmp_dir("reconstruct");
  const std::string model = test::data("hf/tiny"), image = test::data("images/chelsea.png");
  const Run r = test::run_program(VITMAE_RECONSTRUCT_EXE, "--model " + model + " --image " + image + " --out " + dir +
                                                              "/panel.png --mask-ratio 0.75 --seed 42");
  INFO(r.err);
  REQUIRE(r.status == 0);

  // The library on the same image and seed.
  auto m = vitmae::ViTMAEForPreTraining<float>::from_pretrained(model);
  const auto proc = vitmae::ImageProcessor::for_checkpoint(model, m.config());
  const io::Image8 resized = proc.resize(io::load_image(image, 3));
  const vitmae::Tensor<float> px = proc.preprocess<float>({io::load_image(image, 3)});
  std::mt19937_64 rng(42);
  const auto out = m.forward(px, rng);

  std::smatch match;
  REQUIRE(std::regex_search(r.out, match, std::regex("masked-patch loss ([0-9.]+), mean-fill baseline ([0-9.]+)")));
  CHECK(std::stod(match[1]) == doctest::Approx(out.loss).epsilon(1e-5));
  const float baseline =
      vitmae::mean_fill_loss(m, vitmae::image_of(px, 0), 32, 32, vitmae::RowVector<float>(out.mask.row(0)));
  CHECK(std::stod(match[2]) == doctest::Approx(baseline).epsilon(1e-5));

  // Layout: 4 columns of 32x32 scaled by ceil(224/32) = 7, 4-pixel gaps.
  const io::Image8 panel = io::load_image_raw(dir + "/panel.png");
  REQUIRE(panel.width == 4 * 224 + 3 * 4);
  REQUIRE(panel.height == 224);
  REQUIRE(panel.channels == 3);
  int visible = 0, masked = 0;
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 32; ++x) {
      const bool is_masked = out.mask(0, (y / 4) * 8 + x / 4) != 0.0f;
      for (int c = 0; c < 3; ++c) {
        const std::uint8_t truth = resized.at(y, x, c);
        CHECK(panel.at(y * 7, x * 7 + 0 * 228, c) == truth);                              // original
        CHECK(panel.at(y * 7 + 6, x * 7 + 1 * 228 + 6, c) == (is_masked ? 128 : truth));  // masked input
        if (!is_masked) CHECK(panel.at(y * 7 + 3, x * 7 + 3 * 228 + 3, c) == truth);      // reconstruction + visible
      }
      (is_masked ? masked : visible)++;
    }
  CHECK(visible == 16 * 16);
  CHECK(masked == 48 * 16);
}

TEST_CASE("vitmae-reconstruct errors: bad image, bad flags, no bundled model named") {
  const std::string model = test::data("hf/tiny");
  Run r = test::run_program(VITMAE_RECONSTRUCT_EXE, "--model " + model + " --image " +
                                                        test::data("images/truncated.jpg") + " --out /tmp/never.png");
  CHECK(r.status == 1);
  CHECK(r.err.find("truncated.jpg: ") != std::string::npos);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  r = test::run_program(VITMAE_RECONSTRUCT_EXE, "--mask-ratio 1.5");
  CHECK(r.status == 2);
  r = test::run_program(VITMAE_RECONSTRUCT_EXE, "--model " + model + " --out /nonexistent/dir/panel.png");
  CHECK(r.status == 1);
  CHECK(r.err.find("/nonexistent/dir/panel.png") != std::string::npos);
}

TEST_CASE("vitmae-embed: a batch gives the per-image rows, equal to ViTMAEModel's, in input order") {
  const std::string dir = test::tmp_dir("embed");
  const std::string model = test::data("hf/tiny");
  const std::string imgs = " --image " + test::data("images/chelsea.png") + " --image " +
                           test::data("images/camera.png") + " --image " + test::data("images/rocket.jpg");
  Run r = test::run_program(
      VITMAE_EMBED_EXE, "--model " + model + imgs + " --out " + dir + "/b3.safetensors --batch 3 --npy " + dir + "/b3");
  INFO(r.err);
  REQUIRE(r.status == 0);
  r = test::run_program(VITMAE_EMBED_EXE, "--model " + model + imgs + " --out " + dir + "/b1.safetensors --batch 1");
  REQUIRE(r.status == 0);
  const io::SafetensorsFile b3(dir + "/b3.safetensors"), b1(dir + "/b1.safetensors");
  CHECK(b3.info("cls").shape == std::vector<std::int64_t>{3, 64});
  // Equal up to float rounding (a batch's products are stacked; see test_model.cpp).
  for (const char* name : {"cls", "mean"}) {
    const auto x = b3.get<double>(name), y = b1.get<double>(name);
    const auto r = test::allclose(x.ptr(), y.ptr(), static_cast<long>(x.numel()), 0.0, 1e-5);
    INFO(name << ": max abs diff " << r.max_abs);
    CHECK(r.ok);
  }

  // Row 1 is camera.png through the library: CLS token and mean of the 64 patch tokens.
  const auto m = vitmae::ViTMAEModel<float>::from_pretrained(model);
  const auto proc = vitmae::ImageProcessor::for_checkpoint(model, m.config);
  const auto px = proc.preprocess<float>({io::load_image(test::data("images/camera.png"), 3)});
  auto cfg_model = m;
  cfg_model.config.mask_ratio = 0.0;
  std::mt19937_64 rng(0);
  const auto h = cfg_model.forward(px, rng).last_hidden_state[0];
  REQUIRE(h.rows() == 65);
  const auto cls = b3.get<float>("cls").data;
  const auto mean = b3.get<float>("mean").data;
  const vitmae::RowVector<float> patch_mean = h.bottomRows(64).colwise().mean();
  for (int d = 0; d < 64; ++d) {
    CHECK(cls[static_cast<size_t>(64 + d)] == doctest::Approx(h(0, d)).epsilon(1e-4));
    CHECK(mean[static_cast<size_t>(64 + d)] == doctest::Approx(patch_mean(d)).epsilon(1e-4));
  }
  // The .npy files hold the same numbers after a version-1.0 header.
  std::ifstream npy(dir + "/b3_cls.npy", std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(npy)), std::istreambuf_iterator<char>());
  REQUIRE(bytes.size() == 128 + 3 * 64 * 4);
  CHECK(bytes.substr(0, 6) == "\x93NUMPY");
  CHECK(bytes.find("'shape': (3, 64)") != std::string::npos);
  CHECK(std::memcmp(bytes.data() + 128, cls.data(), cls.size() * 4) == 0);
  CHECK(test::run_program(VITMAE_EMBED_EXE, "--model " + model).status == 2);
}

TEST_CASE("norm_pix_loss panels never use a masked patch's own statistics") {
  // Changing the hidden content of a masked patch must not change how its prediction is shown.
  const auto m = vitmae::ViTMAEForPreTraining<double>::from_pretrained(test::data("hf/tiny_normpix_gelu_new"));
  REQUIRE(m.config().norm_pix_loss);
  const auto proc = vitmae::ImageProcessor::for_checkpoint(test::data("hf/tiny_normpix_gelu_new"), m.config());
  const auto px = proc.preprocess<double>({io::load_image(test::data("images/coffee.png"), 3)});
  std::mt19937_64 rng(3);
  const auto out = m.forward(px, rng);
  const vitmae::RowVector<double> mask = out.mask.row(0);
  vitmae::Matrix<double> img = vitmae::image_of(px, 0);
  const vitmae::Matrix<double> shown = vitmae::predicted_pixels(m, img, 32, 32, out.logits[0], mask);
  vitmae::Index l = 0;
  while (mask(l) == 0.0) ++l;  // the first masked patch
  const vitmae::Index y0 = (l / 8) * 4, x0 = (l % 8) * 4;
  for (vitmae::Index y = 0; y < 4; ++y)
    for (vitmae::Index x = 0; x < 4; ++x) img.col((y0 + y) * 32 + x0 + x) *= 5.0;  // new hidden content
  const vitmae::Matrix<double> shown2 = vitmae::predicted_pixels(m, img, 32, 32, out.logits[0], mask);
  CHECK(shown2.row(l) == shown.row(l));
  // Visible patches are shown with their own statistics: de-normalising the prediction there.
  vitmae::Index v = 0;
  while (mask(v) != 0.0) ++v;
  const vitmae::Matrix<double> patches = m.patchify(vitmae::image_of(px, 0), 32, 32);
  const double mean = patches.row(v).mean();
  const double var = (patches.row(v).array() - mean).square().sum() / 47.0;
  CHECK(shown(v, 0) == doctest::Approx(out.logits[0](v, 0) * std::sqrt(var + 1e-6) + mean));
}

TEST_CASE("the bundled model beats the mean-fill baseline on chelsea.png, which it never saw (10 seeds)") {
  auto m = vitmae::ViTMAEForPreTraining<float>::from_pretrained(VITMAE_BUNDLED_MODEL);
  CHECK(m.config().image_size == 64);
  CHECK(m.config().mask_ratio == 0.75);
  CHECK_FALSE(m.config().norm_pix_loss);
  const auto proc = vitmae::ImageProcessor::for_checkpoint(VITMAE_BUNDLED_MODEL, m.config());
  const vitmae::Tensor<float> px = proc.preprocess<float>({io::load_image(test::data("images/chelsea.png"), 3)});
  const vitmae::Matrix<float> img = vitmae::image_of(px, 0);
  double loss = 0, baseline = 0;
  for (std::uint64_t seed = 0; seed < 10; ++seed) {
    std::mt19937_64 rng(seed);  // vitmae-reconstruct's --seed
    const auto out = m.forward(px, rng);
    loss += out.loss;
    baseline += vitmae::mean_fill_loss(m, img, 64, 64, vitmae::RowVector<float>(out.mask.row(0)));
  }
  MESSAGE("chelsea, 10 seeds: masked-patch loss " << loss / 10 << ", mean-fill baseline " << baseline / 10 << ", ratio "
                                                  << loss / baseline);
  CHECK(loss / baseline < 1.0);

  // The program's defaults are this model and this photo.
  const std::string dir = test::tmp_dir("reconstruct_default");
  const Run r = test::run_program(VITMAE_RECONSTRUCT_EXE, "--out " + dir + "/panel.png --seed 0");
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.out.find("chelsea.png: masked-patch loss") != std::string::npos);

  // The printed numbers against the panel the program drew, computed here from its pixels alone
  // (not through the library call the program makes): columns original | masked | reconstruction
  // | pasted, each 64 px scaled 4x, 4 px apart; a patch is masked where the masked column is grey.
  std::smatch match;
  REQUIRE(std::regex_search(r.out, match, std::regex("masked-patch loss ([0-9.]+), mean-fill baseline ([0-9.]+)")));
  const double printed_loss = std::stod(match[1]), printed_baseline = std::stod(match[2]);
  const io::Image8 panel = io::load_image_raw(dir + "/panel.png");
  REQUIRE(panel.width == 4 * 256 + 3 * 4);
  const double mean[3] = {0.485, 0.456, 0.406}, stdev[3] = {0.229, 0.224, 0.225};
  auto norm = [&](int column, int y, int x, int c) {
    return (panel.at(y * 4, x * 4 + column * 260, c) / 255.0 - mean[c]) / stdev[c];
  };
  std::vector<bool> masked(64);
  double colour[3] = {0, 0, 0};
  int visible_pixels = 0;
  for (int l = 0; l < 64; ++l) {
    bool grey = true;
    for (int y = 0; y < 8; ++y)
      for (int x = 0; x < 8; ++x)
        for (int c = 0; c < 3; ++c)
          grey = grey && panel.at(((l / 8) * 8 + y) * 4, ((l % 8) * 8 + x) * 4 + 260, c) == 128;
    masked[static_cast<size_t>(l)] = grey;
    if (grey) continue;
    for (int y = 0; y < 8; ++y)
      for (int x = 0; x < 8; ++x, ++visible_pixels)
        for (int c = 0; c < 3; ++c) colour[c] += norm(0, (l / 8) * 8 + y, (l % 8) * 8 + x, c);
  }
  CHECK(std::count(masked.begin(), masked.end(), true) == 48);
  double recomputed = 0, drawn = 0;
  for (int l = 0; l < 64; ++l) {
    if (!masked[static_cast<size_t>(l)]) continue;
    double b = 0, d = 0;
    for (int y = 0; y < 8; ++y)
      for (int x = 0; x < 8; ++x)
        for (int c = 0; c < 3; ++c) {
          const double truth = norm(0, (l / 8) * 8 + y, (l % 8) * 8 + x, c);
          b += std::pow(colour[c] / visible_pixels - truth, 2);
          d += std::pow(norm(2, (l / 8) * 8 + y, (l % 8) * 8 + x, c) - truth, 2);
        }
    recomputed += b / 192 / 48, drawn += d / 192 / 48;
  }
  MESSAGE("printed loss " << printed_loss << ", from the drawn reconstruction " << drawn << "; printed baseline "
                          << printed_baseline << ", recomputed " << recomputed);
  CHECK(printed_baseline == doctest::Approx(recomputed).epsilon(1e-5));
  // The drawn reconstruction is rounded to 8 bits (and clipped to [0, 255]): within 2%.
  CHECK(printed_loss == doctest::Approx(drawn).epsilon(0.02));
}
