// SPDX-License-Identifier: Apache-2.0
// Shared test helpers: fixture paths, fixture loading and allclose with a useful report.
#pragma once

#include <doctest/doctest.h>
#include <vitmae/vitmae.hpp>

#include <sys/wait.h>
#include <unistd.h>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace test {

inline std::string data(const std::string& rel) { return std::string(VITMAE_TEST_DATA) + "/" + rel; }

/// A fresh scratch folder under the build tree, private to this process (ctest -j runs test
/// cases in parallel processes).
inline std::string tmp_dir(const std::string& name) {
  const std::filesystem::path d =
      std::filesystem::path(VITMAE_TEST_TMP) / std::to_string(static_cast<long>(::getpid())) / name;
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d.string();
}

/// Writes `image` as a PNG at each of `files` (paths below `root`, folders made as needed).
inline void write_pngs(const std::string& root, std::initializer_list<const char*> files,
                       const vitmae::io::Image8& image) {
  for (const char* f : files) {
    std::filesystem::create_directories(std::filesystem::path(root + "/" + f).parent_path());
    vitmae::io::save_png(root + "/" + f, image);
  }
}

/// Two ImageFolder splits under `dir`, train/ and val/, each with classes "dark" (values 0-60)
/// and "light" (190-255): `train` and `val` 8x8 RGB PNGs per class, noise from a fixed generator.
inline void write_dark_light_folders(const std::string& dir, int train, int val) {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> dark(0, 60), light(190, 255);
  for (const char* split : {"train", "val"})
    for (const char* cls : {"dark", "light"})
      for (int i = 0; i < (std::string(split) == "train" ? train : val); ++i) {
        vitmae::io::Image8 im{8, 8, 3, std::vector<std::uint8_t>(192)};
        for (auto& v : im.data) v = static_cast<std::uint8_t>(std::string(cls) == "dark" ? dark(rng) : light(rng));
        write_pngs(dir + "/" + split + "/" + cls, {(std::to_string(i) + ".png").c_str()}, im);
      }
}

/// A rows x cols float matrix of uniform values in [-1, 1) drawn from `rng` (vitmae::uniform53, in
/// storage order).
template <class Engine>
vitmae::Matrix<float> uniform_matrix(vitmae::Index rows, vitmae::Index cols, Engine& rng) {
  vitmae::Matrix<float> m(rows, cols);
  for (vitmae::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<float>(vitmae::uniform53(rng) * 2 - 1);
  return m;
}

/// Restores the product backend and OpenMP's thread count when the test case leaves, even by an
/// exception (tests that try each backend and thread count change both).
struct RestoreBackendAndThreads {
  vitmae::Backend backend = vitmae::product_backend();
#ifdef _OPENMP
  int threads = omp_get_max_threads();
#endif
  ~RestoreBackendAndThreads() {
    vitmae::set_product_backend(backend);
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
  }
};

/// The last line of a program's output, without its newline (trailing blank lines dropped).
inline std::string last_line(const std::string& output) {
  std::string s = output;
  while (!s.empty() && s.back() == '\n') s.pop_back();
  const size_t nl = s.rfind('\n');
  return nl == std::string::npos ? s : s.substr(nl + 1);
}

/// A whole file's bytes ("" when it cannot be read).
inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// A program's exit status (-1 when it did not exit normally) and what it printed.
struct Run {
  int status = -1;
  std::string out, err;
};

/// Runs `exe args` through the shell, capturing stdout and stderr.
inline Run run_program(const std::string& exe, const std::string& args) {
  const std::string dir = tmp_dir("run_program");
  const int rc = std::system((exe + " " + args + " > " + dir + "/out.txt 2> " + dir + "/err.txt").c_str());
  Run r;
  r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  std::ifstream o(dir + "/out.txt"), e(dir + "/err.txt");
  r.out.assign(std::istreambuf_iterator<char>(o), std::istreambuf_iterator<char>());
  r.err.assign(std::istreambuf_iterator<char>(e), std::istreambuf_iterator<char>());
  return r;
}

struct CloseReport {
  bool ok = true;
  double max_abs = 0;
  long first_bad = -1;
  std::string message;
};

/// |a - b| <= atol + rtol * |b| elementwise (NaN equal to NaN), like llm.c's check_tensor.
template <class A, class B>
CloseReport allclose(const A* a, const B* b, long n, double rtol, double atol) {
  CloseReport r;
  for (long i = 0; i < n; ++i) {
    const double x = static_cast<double>(a[i]), y = static_cast<double>(b[i]);
    if (std::isnan(x) && std::isnan(y)) continue;
    const double d = std::fabs(x - y);
    if (!(d <= r.max_abs)) r.max_abs = std::isnan(d) ? INFINITY : std::max(r.max_abs, d);
    if (!(d <= atol + rtol * std::fabs(y)) && r.first_bad < 0) {
      r.first_bad = i;
      r.ok = false;
      std::ostringstream s;
      s.precision(10);
      s << "first bad index " << i << ": got " << x << ", expected " << y;
      r.message = s.str();
    }
  }
  if (r.ok) r.message = "ok";
  return r;
}

/// Checks `got` (n values) against fixture tensor `name`, with an informative failure message.
template <class Scalar>
void check_close(const std::string& what, const Scalar* got, long n, const vitmae::Tensor<double>& expected,
                 double atol, double rtol = 0.0) {
  INFO(what);
  REQUIRE(n == static_cast<long>(expected.numel()));
  const CloseReport r = allclose(got, expected.ptr(), n, rtol, atol);
  INFO("max abs diff " << r.max_abs << "; " << r.message);
  CHECK(r.ok);
}

/// Concatenates per-sample matrices into one flat vector (batch-major).
template <class Scalar>
std::vector<Scalar> flatten(const std::vector<vitmae::Matrix<Scalar>>& ms) {
  std::vector<Scalar> v;
  for (const auto& m : ms) v.insert(v.end(), m.data(), m.data() + m.size());
  return v;
}

// Helpers several test files share. A file takes the ones it calls with a using-declaration
// (`using test::processor;`): the test executable is a unity build, where two files' own copies
// of a helper would clash in one translation unit.

/// Copies a file (cp); the test case fails when it cannot.
inline void copy(const std::string& from, const std::string& to) {
  REQUIRE(std::system(("cp '" + from + "' '" + to + "'").c_str()) == 0);
}

/// What the library's image loader says after the file's name when a file is not an image.
inline const char* const kNotAnImage = ": not a readable image: expected PNG, JPEG, BMP, TGA, GIF, PNM, PSD or HDR";

/// `fixture`'s weights copied into `dir` beside its config.json with the sizes (hidden
/// 2048, 48 layers, MLP 8192: a 9.6 GB model beside a 64-wide checkpoint); returns the message
/// that must refuse it.
inline std::string oversized_config_beside(const std::string& fixture, const std::string& dir) {
  copy(test::data(fixture + "/model.safetensors"), dir + "/model.safetensors");
  nlohmann::json j = vitmae::io::read_json_file(test::data(fixture + "/config.json"));
  j["hidden_size"] = 2048;
  j["num_hidden_layers"] = 48;
  j["intermediate_size"] = 8192;
  vitmae::io::write_file_atomic(dir + "/config.json", j.dump(2));
  return "vitmae: load_state_dict: " + dir +
         "/model.safetensors: 'vit.embeddings.cls_token' has shape [1, 1, 64], "
         "expected [1, 1, 2048] (" +
         dir + "/config.json asks for hidden_size 2048)";
}

/// name -> shape of every tensor a safetensors file holds.
inline std::map<std::string, std::vector<std::int64_t>> file_names(const std::string& path) {
  std::map<std::string, std::vector<std::int64_t>> names;
  const vitmae::io::SafetensorsFile f(path);
  for (const auto& [n, info] : f.tensors()) names[n] = info.shape;
  return names;
}

/// The labels of an hf_vit fixture: I64 [B] class indices, F32 [B, N] multi-label targets, F32 [B]
/// regression targets.
template <class Scalar>
vitmae::Labels<Scalar> fixture_labels(const vitmae::io::SafetensorsFile& f, const std::string& name = "labels") {
  if (f.tensors().at(name).dtype == vitmae::io::DType::I64) {
    const auto t = f.get<std::int64_t>(name);
    return vitmae::Labels<Scalar>::of_classes(t.data);
  }
  const auto t = f.get<Scalar>(name);
  const vitmae::Index B = t.size(0), N = t.dim() > 1 ? t.size(1) : 1;
  return vitmae::Labels<Scalar>::of_targets(Eigen::Map<const vitmae::Matrix<Scalar>>(t.ptr(), B, N));
}

/// A small random ViT classifier's config (8x8, 2 channels, hidden 8, one layer) for finite
/// differences and quick training.
inline vitmae::ViTConfig small_config(vitmae::Index labels, const char* act = "gelu") {
  vitmae::ViTConfig c;
  c.hidden_size = 8, c.num_hidden_layers = 1, c.num_attention_heads = 2, c.intermediate_size = 12;
  c.image_size = 8, c.patch_size = 4, c.num_channels = 2, c.hidden_act = act;
  c.id2label = vitmae::ViTConfig::default_labels(labels);
  return c;
}

/// hf/tiny's config at 16x16 pixels (16 patches): seconds of training.
inline vitmae::Config tiny16_config() {
  vitmae::Config c = vitmae::load_config(test::data("hf/tiny/config.json"));
  c.image_size = 16;
  return c;
}

/// A ViTImageProcessor resizing to size x size with PIL's bicubic.
inline vitmae::ImageProcessor processor(int size) {
  vitmae::ImageProcessor p;
  p.height = p.width = size;
  p.resample = 3;
  return p;
}

}  // namespace test
