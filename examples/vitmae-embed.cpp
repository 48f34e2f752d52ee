// SPDX-License-Identifier: Apache-2.0
// vitmae-embed: images to features. Per image the CLS token and the mean of the patch tokens of
// ViTMAEModel's last_hidden_state (after the final layernorm), with no masking by default.
#include <vitmae/cli/program.hpp>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr const char* kUsage =
    "usage: vitmae-embed --model DIR --image PATH [--image PATH ...] --out FEATURES.safetensors\n"
    "                    [--npy PREFIX] [--batch N] [--mask-ratio R] [--seed N] [--threads N]\n"
    "                    [--dtype float32|int8]\n"
    "Per image, the CLS token and the mean of the patch tokens of ViTMAEModel's last_hidden_state.\n"
    "  --model DIR       (required) an HF checkpoint folder (its preprocessor_config.json decides the\n"
    "                    preprocessing; without one, ViTImageProcessor's defaults at the model's size)\n"
    "  --image PATH      (required, one or more) an image: PNG, JPEG, BMP, TGA, GIF, PNM, PSD or HDR\n"
    "  --out FILE        (required) writes 'cls' and 'mean' [images, hidden] (float32, one row per\n"
    "                    image in input order; the image paths are in the metadata)\n"
    "  --npy PREFIX      also write PREFIX_cls.npy and PREFIX_mean.npy (default: none)\n"
    "  --batch N         images per forward pass; the features do not depend on it (default 8)\n"
    "  --mask-ratio R    fraction of patches hidden, in [0, 1) (default 0: every patch seen)\n"
    "  --seed N          draws the masks when --mask-ratio is above 0 (default 0)\n"
    "  --threads N       threads for the matrix products (default: all cores)\n"
    "  --dtype T         float32 (default) or int8: the Linear layers and the patch projection in\n"
    "                    int8 (weights per channel, activations per token), about half the time\n"
    "  -h, --help        print this text and exit\n";

/// A NumPy .npy (format 1.0, little-endian float32, C order).
std::string npy(const std::vector<float>& data, long rows, long cols) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " +
                       std::to_string(cols) + "), }";
  while ((10 + header.size() + 1) % 64 != 0) header.push_back(' ');
  header.push_back('\n');
  std::string out("\x93NUMPY\x01\x00", 8);
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>(header.size() >> 8));
  out += header;
  out.append(reinterpret_cast<const char*>(data.data()), data.size() * sizeof(float));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  return vitmae::cli::run_main("vitmae-embed", kUsage, [&] {
    std::string model_dir, out, npy_prefix, dtype = "float32";
    std::vector<std::string> images;
    long batch = 8;
    double mask_ratio = 0.0;
    std::uint64_t seed = 0;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--model") model_dir = vitmae::cli::value(argc, argv, i);
      else if (a == "--image") images.push_back(vitmae::cli::value(argc, argv, i));
      else if (a == "--out") out = vitmae::cli::value(argc, argv, i);
      else if (a == "--npy") npy_prefix = vitmae::cli::value(argc, argv, i);
      else if (a == "--batch") batch = static_cast<long>(vitmae::cli::to_int(a, vitmae::cli::value(argc, argv, i), 1, 4096));
      else if (a == "--mask-ratio") {
        mask_ratio = vitmae::cli::to_double(a, vitmae::cli::value(argc, argv, i));
        if (!(mask_ratio >= 0.0 && mask_ratio < 1.0)) throw vitmae::cli::UsageError("--mask-ratio must be in [0, 1)");
      } else if (a == "--seed") seed = static_cast<std::uint64_t>(vitmae::cli::to_int(a, vitmae::cli::value(argc, argv, i), 0, INT64_MAX));
      else if (a == "--dtype") vitmae::cli::check_dtype(dtype = vitmae::cli::value(argc, argv, i));
      else if (a == "--threads") vitmae::cli::set_threads(static_cast<int>(vitmae::cli::to_int(a, vitmae::cli::value(argc, argv, i), 1, 1024)));
      else if (a == "-h" || a == "--help") {
        std::cout << kUsage;
        return;
      } else throw vitmae::cli::UsageError("unknown argument '" + a + "'");
    }
    if (model_dir.empty() || images.empty() || out.empty()) throw vitmae::cli::UsageError("--model, --image and --out are required");

    vitmae::cli::doing("loading the model " + model_dir);
    auto model = vitmae::load_for_inference<vitmae::ViTMAEModel<float>>(model_dir, "", dtype == "int8");
    model.config.mask_ratio = mask_ratio;
    const auto proc = vitmae::ImageProcessor::for_checkpoint(model_dir, model.config);
    const long D = static_cast<long>(model.config.hidden_size), N = static_cast<long>(images.size());
    std::vector<float> cls(static_cast<size_t>(N * D)), mean(static_cast<size_t>(N * D));
    // One noise stream over all images in input order, so batching does not change the masks.
    std::mt19937_64 rng(seed);
    for (long start = 0; start < N; start += batch) {
      const long n = std::min(batch, N - start);
      std::vector<vitmae::io::Image8> imgs;
      for (long k = 0; k < n; ++k) imgs.push_back(vitmae::io::load_image(images[static_cast<size_t>(start + k)], static_cast<int>(model.config.num_channels)));
      vitmae::cli::doing("embedding images " + std::to_string(start + 1) + " to " + std::to_string(start + n));
      const vitmae::Tensor<float> px = proc.preprocess<float>(imgs);
      vitmae::ForwardOptions opts;
      opts.interpolate_pos_encoding = px.size(2) != model.config.image_size || px.size(3) != model.config.image_size;
      const vitmae::Matrix<float> noise = vitmae::ops::uniform_noise<float>(n, model.num_patches_for(px.size(2), px.size(3)), rng);
      const auto r = model.forward(px, noise, opts);
      for (long k = 0; k < n; ++k) {
        const vitmae::Matrix<float>& h = r.last_hidden_state[static_cast<size_t>(k)];  // (1+K, hidden)
        const vitmae::RowVector<float> c = h.row(0);
        const vitmae::RowVector<float> m = h.bottomRows(h.rows() - 1).colwise().mean();
        std::copy(c.data(), c.data() + D, cls.begin() + (start + k) * D);
        std::copy(m.data(), m.data() + D, mean.begin() + (start + k) * D);
      }
    }
    vitmae::io::SafetensorsWriter w;
    w.add("cls", cls.data(), {N, D}, vitmae::io::DType::F32);
    w.add("mean", mean.data(), {N, D}, vitmae::io::DType::F32);
    w.set_metadata("images", nlohmann::json(images).dump());
    w.set_metadata("mask_ratio", std::to_string(mask_ratio));
    w.save(out);
    if (!npy_prefix.empty()) {
      vitmae::io::write_file_atomic(npy_prefix + "_cls.npy", npy(cls, N, D));
      vitmae::io::write_file_atomic(npy_prefix + "_mean.npy", npy(mean, N, D));
    }
    std::printf("wrote %s: cls and mean, %ld images x %ld\n", out.c_str(), N, D);
  });
}
