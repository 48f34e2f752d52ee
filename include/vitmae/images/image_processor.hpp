// SPDX-License-Identifier: Apache-2.0
// ViTImageProcessor: resize (PIL, 8-bit), rescale, normalise, channels first; its
// preprocessor_config.json; and the inverse for showing pixels.
#pragma once

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "vitmae/config.hpp"
#include "vitmae/error.hpp"
#include "vitmae/images/pil_resize.hpp"
#include "vitmae/io/checkpoint.hpp"
#include "vitmae/io/file.hpp"
#include "vitmae/io/image.hpp"
#include "vitmae/io/json_file.hpp"
#include "vitmae/tensor.hpp"

namespace vitmae {

struct ImageProcessor {
  bool do_resize = true;
  std::int64_t height = 224, width = 224;  // size {height, width}
  int resample = 2;                        // PIL: 0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box, 5 hamming
  bool do_rescale = true;
  double rescale_factor = 1.0 / 255.0;
  bool do_normalize = true;
  std::vector<double> image_mean{0.5, 0.5, 0.5};  // ViTImageProcessor's IMAGENET_STANDARD_MEAN
  std::vector<double> image_std{0.5, 0.5, 0.5};

  /// Reads preprocessor_config.json's fields (unknown keys ignored). @throws vitmae::Error.
  static ImageProcessor from_json(const nlohmann::json& j, const std::string& where = "preprocessor_config.json") {
    detail::require(j.is_object(), where, ": expected a JSON object, got ", j.type_name());
    ImageProcessor p;
    auto get_bool = [&](const char* k, bool& out) {
      if (!j.contains(k)) return;
      detail::require(j[k].is_boolean(), where, ": '", k, "' must be true or false, got ", j[k].dump());
      out = j[k].get<bool>();
    };
    get_bool("do_resize", p.do_resize);
    get_bool("do_rescale", p.do_rescale);
    get_bool("do_normalize", p.do_normalize);
    if (j.contains("size")) {
      const auto& s = j["size"];
      if (s.is_number_integer()) {
        p.height = p.width = s.get<std::int64_t>();
      } else {
        detail::require(s.is_object() && s.contains("height") && s.contains("width") &&
                            s["height"].is_number_integer() && s["width"].is_number_integer(),
                        where, ": 'size' must be an integer or {\"height\": int, \"width\": int}, got ", s.dump());
        p.height = s["height"].get<std::int64_t>();
        p.width = s["width"].get<std::int64_t>();
      }
      detail::require(p.height > 0 && p.width > 0 && p.height <= 65536 && p.width <= 65536, where,
                      ": 'size' must be positive and at most 65536, got ", s.dump());
    }
    if (j.contains("resample")) {
      detail::require(
          j["resample"].is_number_integer() && j["resample"].get<int>() >= 0 && j["resample"].get<int>() <= 5, where,
          ": 'resample' must be a PIL filter 0..5 (0 nearest, 1 lanczos, 2 bilinear, 3 bicubic, 4 box, "
          "5 hamming), got ",
          j["resample"].dump());
      p.resample = j["resample"].get<int>();
    }
    if (j.contains("rescale_factor")) {
      detail::require(j["rescale_factor"].is_number(), where, ": 'rescale_factor' must be a number, got ",
                      j["rescale_factor"].dump());
      p.rescale_factor = j["rescale_factor"].get<double>();
    }
    auto get_list = [&](const char* k, std::vector<double>& out) {
      if (!j.contains(k)) return;
      const auto& v = j[k];
      if (v.is_number()) {
        out.assign(1, v.get<double>());
        return;
      }
      detail::require(v.is_array() && !v.empty(), where, ": '", k, "' must be a number or a list of numbers, got ",
                      v.dump());
      out.clear();
      for (const auto& x : v) {
        detail::require(x.is_number(), where, ": '", k, "' must be a number or a list of numbers, got ", v.dump());
        out.push_back(x.get<double>());
      }
    };
    get_list("image_mean", p.image_mean);
    get_list("image_std", p.image_std);
    for (double s : p.image_std) detail::require(s != 0.0 && std::isfinite(s), where, ": 'image_std' must be non-zero");
    return p;
  }

  nlohmann::json to_json() const {
    return {{"do_normalize", do_normalize},
            {"do_rescale", do_rescale},
            {"do_resize", do_resize},
            {"image_mean", image_mean},
            {"image_processor_type", "ViTImageProcessor"},
            {"image_std", image_std},
            {"resample", resample},
            {"rescale_factor", rescale_factor},
            {"size", {{"height", height}, {"width", width}}}};
  }

  static ImageProcessor load(const std::string& path) { return from_json(io::read_json_file(path), path); }

  void save(const std::string& path) const { io::write_file_atomic(path, to_json().dump(2) + "\n"); }

  /// The checkpoint's preprocessor_config.json, else ViTImageProcessor's defaults (bilinear,
  /// mean and std 0.5) with the model's image size (HF's default is 224 whatever the model: a
  /// smaller model would then refuse every image, so we size it to the model) and one mean and
  /// std per channel of the model (the same 0.5, so a grey model is served too).
  /// vitmae-convert writes this processor for a checkpoint that has no preprocessor_config.json.
  static ImageProcessor for_checkpoint(const std::string& path, const Config& config) {
    const std::string file = io::join_path(io::checkpoint_folder(path), "preprocessor_config.json");
    if (io::file_exists(file)) return load(file);
    ImageProcessor p;
    p.height = p.width = config.image_size;
    const size_t stats = config.num_channels <= 64 ? static_cast<size_t>(config.num_channels) : 1;  // 1 broadcasts
    p.image_mean.assign(stats, 0.5);
    p.image_std.assign(stats, 0.5);
    return p;
  }

  /// Per-channel statistic for channel c of a `channels`-channel model (a single value broadcasts).
  double stat(const std::vector<double>& v, int c, int channels, const char* name) const {
    detail::require(v.size() == 1 || static_cast<int>(v.size()) == channels, "ImageProcessor: '", name, "' has ",
                    v.size(), " values, expected 1 or num_channels = ", channels);
    return v.size() == 1 ? v[0] : v[static_cast<size_t>(c)];
  }

  /// Resizes like PIL when do_resize (8-bit result).
  io::Image8 resize(const io::Image8& img) const {
    if (!do_resize) return img;
    return detail::pil_resize(img, static_cast<int>(width), static_cast<int>(height),
                              static_cast<detail::Resample>(resample));
  }

  /// One 8-bit image (already resized) -> (C, H*W): x * rescale_factor (in double, then float
  /// like HF's numpy), then (x - mean) / std in float32 as HF does, then Scalar.
  template <class Scalar>
  Matrix<Scalar> to_pixel_values(const io::Image8& img) const {
    const int C = img.channels;
    Matrix<Scalar> out(C, static_cast<Index>(img.width) * img.height);
    for (int c = 0; c < C; ++c) {
      const float mean = static_cast<float>(stat(image_mean, c, C, "image_mean"));
      const float sd = static_cast<float>(stat(image_std, c, C, "image_std"));
      for (int y = 0; y < img.height; ++y)
        for (int x = 0; x < img.width; ++x) {
          float v =
              do_rescale ? static_cast<float>(img.at(y, x, c) * rescale_factor) : static_cast<float>(img.at(y, x, c));
          if (do_normalize) v = (v - mean) / sd;
          out(c, static_cast<Index>(y) * img.width + x) = static_cast<Scalar>(v);
        }
    }
    return out;
  }

  /// Images -> pixel_values [B, C, H, W]; all must have the same size after resizing.
  template <class Scalar>
  Tensor<Scalar> preprocess(const std::vector<io::Image8>& images) const {
    detail::require(!images.empty(), "ImageProcessor: no images");
    std::vector<io::Image8> resized;
    for (const auto& im : images) resized.push_back(resize(im));
    const int C = resized[0].channels, H = resized[0].height, W = resized[0].width;
    Tensor<Scalar> t({static_cast<Index>(images.size()), C, H, W});
    for (size_t b = 0; b < resized.size(); ++b) {
      detail::require(resized[b].channels == C && resized[b].height == H && resized[b].width == W,
                      "ImageProcessor: image ", b, " is ", resized[b].width, "x", resized[b].height, "x",
                      resized[b].channels, " after resizing, expected ", W, "x", H, "x", C, " like the first");
      const Matrix<Scalar> pv = to_pixel_values<Scalar>(resized[b]);
      std::copy(pv.data(), pv.data() + pv.size(), t.data.begin() + static_cast<long>(b * pv.size()));
    }
    return t;
  }

  /// The inverse for display: (C, H*W) pixel values -> 8-bit image, rounded and clipped.
  template <class Scalar>
  io::Image8 to_image(const Matrix<Scalar>& pixels, int height, int width) const {
    const int C = static_cast<int>(pixels.rows());
    io::Image8 img{width, height, C, std::vector<std::uint8_t>(static_cast<size_t>(width) * height * C)};
    for (int c = 0; c < C; ++c) {
      const double mean = stat(image_mean, c, C, "image_mean"), sd = stat(image_std, c, C, "image_std");
      for (int i = 0; i < height * width; ++i) {
        double v = static_cast<double>(pixels(c, i));
        if (do_normalize) v = v * sd + mean;
        if (do_rescale) v /= rescale_factor;
        v = std::isfinite(v) ? std::round(std::min(255.0, std::max(0.0, v))) : 0.0;
        img.data[static_cast<size_t>(i) * C + c] = static_cast<std::uint8_t>(v);
      }
    }
    return img;
  }
};

using ViTImageProcessor = ImageProcessor;

}  // namespace vitmae
