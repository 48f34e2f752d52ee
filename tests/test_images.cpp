// SPDX-License-Identifier: Apache-2.0
// Images (io/image.hpp, image_processor.hpp): stb decoding of every sample file (against an
// independent PNG decoder), channel conversion, the loader's errors as whole lines, writing PNG,
// JPEG and BMP, and ViTImageProcessor's parity with PIL/HF and its defaults.
#include "test_util.hpp"

#include <vitmae/images/image_processor.hpp>

#include <fstream>
#include <thread>

namespace io = vitmae::io;
using test::kNotAnImage;

namespace {

std::uint64_t fnv1a64(const std::vector<std::uint8_t>& d) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (std::uint8_t x : d) h = (h ^ x) * 0x100000001b3ULL;
  return h;
}

struct PngDigest {
  const char* file;
  int width, height, channels;
  std::uint64_t digest;
};

// Printed by tests/tools/png_digest.py, a PNG decoder written on Python's zlib alone.
const PngDigest kPngs[] = {
    {"astronaut.png", 512, 512, 3, 0xfa4e6bff08e5e8fbULL},   {"camera.png", 512, 512, 1, 0x15fd86556e657c04ULL},
    {"chelsea.png", 451, 300, 3, 0xb2179687966157a8ULL},     {"coffee.png", 600, 400, 3, 0xd261c1b91ef6ee1eULL},
    {"foo3x5x4indexed.png", 5, 3, 4, 0xd75cac6c2bc30bb4ULL}, {"palette_color.png", 10, 10, 3, 0x75075ef3769146dcULL},
};

}  // namespace

TEST_CASE("stb decodes every sample PNG (palette, grey, RGB) exactly as an independent decoder") {
  for (const auto& p : kPngs) {
    INFO(p.file);
    const io::Image8 img = io::load_image_raw(test::data(std::string("images/") + p.file));
    CHECK(img.width == p.width);
    CHECK(img.height == p.height);
    CHECK(img.channels == p.channels);
    CHECK(fnv1a64(img.data) == p.digest);
  }
  const io::Image8 rocket = io::load_image_raw(test::data("images/rocket.jpg"));
  CHECK(rocket.width == 640);
  CHECK(rocket.height == 427);
  CHECK(rocket.channels == 3);
}

TEST_CASE("channel conversion: grey to RGB, alpha dropped, RGB to L as PIL's convert(\"L\")") {
  const io::Image8 grey = io::load_image_raw(test::data("images/camera.png"));
  const io::Image8 rgb = io::to_channels(grey, 3);
  CHECK(rgb.at(10, 20, 0) == grey.at(10, 20, 0));
  CHECK(rgb.at(10, 20, 2) == grey.at(10, 20, 0));
  const io::Image8 rgba = io::load_image_raw(test::data("images/foo3x5x4indexed.png"));
  const io::Image8 three = io::to_channels(rgba, 3);
  CHECK(three.channels == 3);
  CHECK(three.at(2, 4, 1) == rgba.at(2, 4, 1));
  // L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16: 255,0,0 -> 76; 0,255,0 -> 150; 0,0,255 -> 29.
  CHECK(io::pil_luma(255, 0, 0) == 76);
  CHECK(io::pil_luma(0, 255, 0) == 150);
  CHECK(io::pil_luma(0, 0, 255) == 29);
  CHECK(io::pil_luma(255, 255, 255) == 255);
  const io::Image8 chelsea = io::load_image_raw(test::data("images/chelsea.png"));
  const io::Image8 l = io::to_channels(chelsea, 1);
  CHECK(l.at(7, 9, 0) == io::pil_luma(chelsea.at(7, 9, 0), chelsea.at(7, 9, 1), chelsea.at(7, 9, 2)));
}

TEST_CASE("image errors name the file: missing, empty, not an image, truncated, too many pixels") {
  const std::string dir = test::tmp_dir("image_errors");
  CHECK_THROWS_WITH_AS(io::load_image_raw(dir + "/missing.png"), doctest::Contains("missing.png: cannot open image"),
                       vitmae::Error);
  std::ofstream(dir + "/empty.png").close();
  CHECK_THROWS_WITH_AS(io::load_image_raw(dir + "/empty.png"), doctest::Contains("empty.png: image file is empty"),
                       vitmae::Error);
  std::ofstream(dir + "/text.png") << "hello, I am not a picture";
  CHECK_THROWS_WITH_AS(io::load_image_raw(dir + "/text.png"), doctest::Contains("text.png: not a readable image"),
                       vitmae::Error);
  CHECK_THROWS_WITH_AS(io::load_image_raw(test::data("images/truncated.jpg")), doctest::Contains("truncated.jpg: "),
                       vitmae::Error);
  CHECK_THROWS_WITH_AS(io::load_image_raw(test::data("images/truncated.jpg")), doctest::Contains("truncated"),
                       vitmae::Error);
  // A PNG cut in half: stb reports the damage.
  std::ifstream in(test::data("images/chelsea.png"), std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ofstream(dir + "/half.png", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  CHECK_THROWS_WITH_AS(io::load_image_raw(dir + "/half.png"), doctest::Contains("half.png: cannot decode image"),
                       vitmae::Error);
  CHECK_THROWS_WITH_AS(io::load_image_raw(test::data("images/chelsea.png"), 1000),
                       doctest::Contains("451x300 = 135300 pixels, more than the limit of 1000"), vitmae::Error);
  CHECK_NOTHROW(io::load_image_raw(test::data("images/chelsea.png"), 135300));
}

TEST_CASE("image errors are whole lines that name the file and the right format") {
  const std::string notice = test::data("images/NOTICE");
  CHECK_THROWS_WITH_AS(io::load_image_raw(notice), ("vitmae: " + notice + kNotAnImage).c_str(), vitmae::Error);
  // stb_image's failure reason is per thread and null in a new one: it must not cut the message.
  std::string in_thread;
  std::thread([&] {
    try {
      io::load_image_raw(notice);
    } catch (const vitmae::Error& e) {
      in_thread = e.what();
    }
  }).join();
  CHECK(in_thread == "vitmae: " + notice + kNotAnImage);

  const std::string folder = test::data("images");
  CHECK_THROWS_WITH_AS(io::load_image_raw(folder),
                       ("vitmae: " + folder + ": is a directory, expected an image file").c_str(), vitmae::Error);
  // A JPEG cut inside its header tables: stb's loader fails without a reason of its own and its
  // last reason is the PNG test's "bad png sig", which must not be shown.
  const std::string truncated = test::data("images/truncated.jpg");
  CHECK_THROWS_WITH_AS(io::load_image_raw(truncated),
                       ("vitmae: " + truncated + ": cannot decode image: truncated or corrupt JPEG").c_str(),
                       vitmae::Error);
  const std::string dir = test::tmp_dir("new_user_messages");
  const std::string rocket = test::slurp(test::data("images/rocket.jpg"));
  io::write_file_atomic(dir + "/half.jpg", rocket.substr(0, rocket.size() / 2));
  CHECK_THROWS_WITH_AS(
      io::load_image_raw(dir + "/half.jpg"),
      ("vitmae: " + dir + "/half.jpg: cannot decode image: truncated or corrupt JPEG (stb_image: expected marker)")
          .c_str(),
      vitmae::Error);
  io::write_file_atomic(dir + "/head.jpg", rocket.substr(0, 300));
  CHECK_THROWS_WITH_AS(io::load_image_raw(dir + "/head.jpg"),
                       ("vitmae: " + dir + "/head.jpg: cannot read the JPEG header: truncated or corrupt JPEG").c_str(),
                       vitmae::Error);
  const std::string chelsea = test::slurp(test::data("images/chelsea.png"));
  io::write_file_atomic(dir + "/half.png", chelsea.substr(0, chelsea.size() / 2));
  CHECK_THROWS_WITH_AS(
      io::load_image_raw(dir + "/half.png"),
      ("vitmae: " + dir + "/half.png: cannot decode image: truncated or corrupt PNG (stb_image: outofdata)").c_str(),
      vitmae::Error);
}

TEST_CASE("io::save_image writes PNG, JPEG or BMP as the extension says, and refuses others") {
  const std::string dir = test::tmp_dir("new_user_save_image");
  const io::Image8 img = io::load_image(test::data("images/chelsea.png"), 3);
  for (const auto& [name, magic] : std::vector<std::pair<std::string, std::string>>{{"/a.png", "\x89PNG\r\n\x1a\n"},
                                                                                    {"/a.jpeg", "\xff\xd8\xff"},
                                                                                    {"/a.Jpg", "\xff\xd8\xff"},
                                                                                    {"/a.bmp", "BM"}}) {
    INFO(name);
    io::save_image(dir + name, img);
    CHECK(test::slurp(dir + name).substr(0, magic.size()) == magic);
    const io::Image8 back = io::load_image_raw(dir + name);
    CHECK(back.width == img.width);
    CHECK(back.height == img.height);
  }
  CHECK(io::load_image_raw(dir + "/a.bmp").data == img.data);
  CHECK_THROWS_WITH_AS(io::save_image(dir + "/x.tiff", img),
                       ("vitmae: " + dir +
                        "/x.tiff: cannot tell the image format from the extension, expected .png, .jpg, .jpeg or .bmp")
                           .c_str(),
                       vitmae::Error);
  CHECK_FALSE(io::file_exists(dir + "/x.tiff"));
}

TEST_CASE("ViTImageProcessor parity: PIL 8-bit resize exact and pixel_values within 1/255/std") {
  const io::SafetensorsFile ref(test::data("preprocess/preprocess.safetensors"));
  int compared = 0;
  for (const char* stem : {"chelsea", "camera"})
    for (const auto& rs : {std::pair<const char*, int>{"bilinear", 2}, {"bicubic", 3}})
      for (const auto& hw : {std::pair<int, int>{224, 224}, {64, 64}, {200, 300}}) {
        const std::string key =
            std::string(stem) + "." + rs.first + "." + std::to_string(hw.first) + "x" + std::to_string(hw.second);
        INFO(key);
        vitmae::ImageProcessor p;
        p.resample = rs.second;
        p.height = hw.first;
        p.width = hw.second;
        const io::Image8 img = io::load_image(test::data(std::string("images/") + stem + ".png"), 3);
        const io::Image8 out = p.resize(img);
        const auto expected = ref.get<double>(key + ".resized_uint8");  // [H, W, 3]
        REQUIRE(out.data.size() == expected.data.size());
        int max_diff = 0;
        for (size_t i = 0; i < out.data.size(); ++i)
          max_diff = std::max(max_diff, std::abs(static_cast<int>(out.data[i]) - static_cast<int>(expected.data[i])));
        INFO("max uint8 difference " << max_diff);
        CHECK(max_diff == 0);  // measured: bit-exact with PIL on every case (the issue allows 1)
        ++compared;
        if (hw.first != 224) continue;
        for (const char* stats : {"imagenet_default", "imagenet_standard"}) {
          if (std::string(stats) == "imagenet_default") {
            p.image_mean = {0.485, 0.456, 0.406};
            p.image_std = {0.229, 0.224, 0.225};
          } else {
            p.image_mean = p.image_std = {0.5, 0.5, 0.5};
          }
          const vitmae::Tensor<float> pv = p.preprocess<float>({img});
          const auto e = ref.get<double>(key + "." + stats + ".pixel_values");
          REQUIRE(pv.numel() == e.numel());
          for (int c = 0; c < 3; ++c) {
            const double tol = 1.0 / 255.0 / p.image_std[static_cast<size_t>(c)] + 1e-6;
            const long n = 224 * 224;
            const auto r = test::allclose(pv.ptr() + c * n, e.ptr() + c * n, n, 0.0, tol);
            INFO(stats << " channel " << c << ": max abs diff " << r.max_abs << "; " << r.message);
            CHECK(r.ok);
          }
        }
      }
  CHECK(compared == 12);
}

TEST_CASE("preprocessor_config.json: HF's fields, defaults, errors, round trip") {
  const auto def = vitmae::ImageProcessor{};
  CHECK(def.height == 224);
  CHECK(def.resample == 2);
  CHECK(def.image_mean == std::vector<double>{0.5, 0.5, 0.5});
  const nlohmann::json hub = nlohmann::json::parse(R"({"do_normalize": true, "do_resize": true,
    "feature_extractor_type": "ViTFeatureExtractor", "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225], "resample": 3, "size": 224})");
  const auto p = vitmae::ImageProcessor::from_json(hub);
  CHECK(p.height == 224);
  CHECK(p.width == 224);
  CHECK(p.resample == 3);
  CHECK(p.image_std[2] == 0.225);
  const auto q = vitmae::ImageProcessor::from_json(nlohmann::json::parse(R"({"size": {"height": 32, "width": 48}})"));
  CHECK(q.height == 32);
  CHECK(q.width == 48);
  CHECK(vitmae::ImageProcessor::from_json(p.to_json()).to_json() == p.to_json());
  CHECK_THROWS_WITH_AS(vitmae::ImageProcessor::from_json(nlohmann::json::parse(R"({"size": "big"})")),
                       doctest::Contains("'size' must be an integer or {\"height\": int, \"width\": int}"),
                       vitmae::Error);
  CHECK_THROWS_WITH_AS(vitmae::ImageProcessor::from_json(nlohmann::json::parse(R"({"resample": 9})")),
                       doctest::Contains("'resample' must be a PIL filter 0..5"), vitmae::Error);
  CHECK_THROWS_WITH_AS(vitmae::ImageProcessor::from_json(nlohmann::json::parse(R"({"image_std": [0.5, 0, 0.5]})")),
                       doctest::Contains("'image_std' must be non-zero"), vitmae::Error);
  CHECK_THROWS_WITH_AS(vitmae::ImageProcessor::from_json(nlohmann::json::parse(R"({"size": 0})")),
                       doctest::Contains("'size' must be positive"), vitmae::Error);
  // Without a preprocessor_config.json the processor takes the model's image size.
  const auto cfg = vitmae::load_config(test::data("hf/tiny/config.json"));
  CHECK(vitmae::ImageProcessor::for_checkpoint(test::data("hf/tiny"), cfg).height == 32);
}

TEST_CASE(
    "without preprocessor_config.json, ViTImageProcessor's defaults at the model's size, one statistic a channel") {
  const std::string in = test::data("hf/tiny_gray_p8");  // a grey model without preprocessor_config.json
  REQUIRE_FALSE(io::file_exists(in + "/preprocessor_config.json"));
  const vitmae::Config grey = vitmae::load_config(in + "/config.json");
  const vitmae::ImageProcessor g = vitmae::ImageProcessor::for_checkpoint(in, grey);
  nlohmann::json expected = nlohmann::json::parse(R"({"do_normalize": true, "do_rescale": true, "do_resize": true,
      "image_mean": [0.5], "image_processor_type": "ViTImageProcessor", "image_std": [0.5], "resample": 2,
      "size": {"height": 48, "width": 48}})");
  expected["rescale_factor"] = 1.0 / 255.0;
  CHECK(g.to_json() == expected);
  CHECK(g.preprocess<float>({io::load_image(test::data("images/camera.png"), 1)}).size(1) == 1);
}

TEST_CASE("nearest and lanczos resizes: sizes, constants preserved, nearest picks source pixels") {
  io::Image8 img{5, 3, 1, {10, 20, 30, 40, 50, 11, 21, 31, 41, 51, 12, 22, 32, 42, 52}};
  const io::Image8 up = vitmae::detail::pil_resize(img, 10, 6, vitmae::detail::Resample::nearest);
  CHECK(up.at(0, 0, 0) == 10);
  CHECK(up.at(0, 1, 0) == 10);
  CHECK(up.at(0, 2, 0) == 20);
  CHECK(up.at(5, 9, 0) == 52);
  io::Image8 flat{7, 7, 3, std::vector<std::uint8_t>(147, 77)};
  for (auto r : {vitmae::detail::Resample::lanczos, vitmae::detail::Resample::bicubic, vitmae::detail::Resample::box,
                 vitmae::detail::Resample::hamming, vitmae::detail::Resample::bilinear}) {
    const io::Image8 o = vitmae::detail::pil_resize(flat, 3, 11, r);
    CHECK(o.width == 3);
    CHECK(o.height == 11);
    CHECK(std::all_of(o.data.begin(), o.data.end(), [](std::uint8_t v) { return v == 77; }));
  }
}
