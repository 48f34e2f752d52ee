// SPDX-License-Identifier: Apache-2.0
// The models (ViTMAEModel, ViTMAEForPreTraining, ViTForImageClassification). Forward: the product
// backend, batching, determinism, masking edge cases, interpolate_pos_encoding, errors and the
// classifier's loss. Loading and saving: save_pretrained and from_pretrained under HF's names, an
// MAE checkpoint as a classifier, the loader's errors, a config.json that does not fit refused early.
#include "test_util.hpp"

#include <sys/resource.h>
#include <algorithm>
#include <chrono>
#include <fstream>
#include <set>

using vitmae::Index;
using vitmae::Matrix;
using vitmae::Tensor;
namespace io = vitmae::io;
using test::file_names;
using test::oversized_config_beside;
using test::small_config;

namespace {

template <class Scalar>
Tensor<Scalar> random_pixels(Index B, const vitmae::Config& c, unsigned seed, Index H = -1, Index W = -1) {
  Tensor<Scalar> t({B, c.num_channels, H < 0 ? c.image_size : H, W < 0 ? c.image_size : W});
  std::mt19937_64 rng(seed);
  vitmae::NormalGenerator<std::mt19937_64> normal(rng);
  for (auto& x : t.data) x = static_cast<Scalar>(normal());
  return t;
}

/// Copies a fixture checkpoint, applying `edit` to its tensor list.
std::string edited_checkpoint(const std::string& name, const std::string& fixture,
                              const std::function<void(std::map<std::string, Tensor<float>>&)>& edit) {
  const std::string dir = test::tmp_dir(name);
  std::system(("cp " + test::data(fixture) + "/config.json " + dir).c_str());
  io::SafetensorsFile in(test::data(fixture + "/model.safetensors"));
  std::map<std::string, Tensor<float>> tensors;
  for (const auto& kv : in.tensors()) tensors[kv.first] = in.get<float>(kv.first);
  edit(tensors);
  io::SafetensorsWriter w;
  w.set_metadata("format", "pt");
  for (const auto& [n, t] : tensors)
    w.add(n, t.ptr(), std::vector<std::int64_t>(t.shape.begin(), t.shape.end()), io::DType::F32);
  w.save(dir + "/model.safetensors");
  return dir;
}

/// Since `start`, under a second and nothing near a 9.6 GB model touched.
void check_refused_in_milliseconds(std::chrono::steady_clock::time_point start) {
  CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < 1.0);
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  CHECK(usage.ru_maxrss < 1'000'000);  // KB
}

}  // namespace

// ---------------------------------------------------------------- forward

TEST_CASE("the product backend: oneDNN when built with it, Eigen when VITMAE_BACKEND=eigen") {
  // ctest runs this file twice in a oneDNN build, the second time with VITMAE_BACKEND=eigen.
  const char* env = std::getenv("VITMAE_BACKEND");
  const bool eigen = !vitmae::onednn_available() || (env && std::string(env) == "eigen");
  CHECK(vitmae::product_backend() == (eigen ? vitmae::Backend::eigen : vitmae::Backend::onednn));
  const std::string backend = vitmae::backend_name(vitmae::product_backend());
  MESSAGE(backend);
}

TEST_CASE_TEMPLATE("a batch gives the same rows as its samples one by one", Scalar, float, double) {
  const auto model = vitmae::ForPreTraining<Scalar>::from_pretrained(test::data("hf/tiny"));
  const Tensor<Scalar> px = random_pixels<Scalar>(3, model.config(), 11);
  std::mt19937_64 rng(5);
  const Matrix<Scalar> noise = vitmae::ops::uniform_noise<Scalar>(3, 64, rng);
  const auto all = model.forward(px, noise);
  for (Index b = 0; b < 3; ++b) {
    Tensor<Scalar> one({1, 3, 32, 32});
    std::copy(px.data.begin() + b * 3072, px.data.begin() + (b + 1) * 3072, one.data.begin());
    const auto single = model.forward(one, Matrix<Scalar>(noise.row(b)));
    // Equal up to float rounding: the batch goes through each product stacked, and a GEMM's
    // blocking (so its summation order) depends on the number of rows, as in PyTorch.
    const double tol = std::is_same_v<Scalar, float> ? 1e-5 : 1e-12;
    CHECK((single.last_hidden_state[0] - all.last_hidden_state[static_cast<size_t>(b)]).cwiseAbs().maxCoeff() <= tol);
    CHECK((single.logits[0] - all.logits[static_cast<size_t>(b)]).cwiseAbs().maxCoeff() <= tol);
    CHECK(single.ids_restore.row(0) == all.ids_restore.row(b));
    CHECK(single.mask.row(0) == all.mask.row(b));
  }
}

TEST_CASE("the same noise (or seed) gives identical output") {
  const auto model = vitmae::ForPreTraining<float>::from_pretrained(test::data("hf/tiny"));
  const Tensor<float> px = random_pixels<float>(2, model.config(), 3);
  std::mt19937_64 r1(9), r2(9), r3(10);
  const auto a = model.forward(px, r1);
  const auto b = model.forward(px, r2);
  const auto c = model.forward(px, r3);
  CHECK(a.loss == b.loss);
  CHECK(a.logits[1] == b.logits[1]);
  CHECK(a.ids_restore == b.ids_restore);
  CHECK(a.ids_restore != c.ids_restore);
}

TEST_CASE("mask_ratio 0 keeps every patch, the loss is NaN as in the reference (0/0)") {
  auto model = vitmae::ForPreTraining<float>::from_pretrained(test::data("hf/tiny"));
  model.config().mask_ratio = 0.0;
  std::mt19937_64 rng(1);
  const auto out = model.forward(random_pixels<float>(2, model.config(), 1), rng);
  CHECK(out.last_hidden_state[0].rows() == 65);
  CHECK(out.mask.sum() == 0.0f);
  CHECK(std::isnan(out.loss));
}

TEST_CASE("forward errors: channels, size without interpolation, noise shape, patchify of odd sizes") {
  const auto model = vitmae::ForPreTraining<float>::from_pretrained(test::data("hf/tiny"));
  std::mt19937_64 rng(0);
  CHECK_THROWS_WITH_AS(model.forward(Tensor<float>({1, 1, 32, 32}), rng),
                       doctest::Contains("pixel_values have 1 channels, expected num_channels = 3"), vitmae::Error);
  CHECK_THROWS_WITH_AS(model.forward(Tensor<float>({1, 3, 48, 48}), rng),
                       doctest::Contains("input image size (48*48) doesn't match model (32*32)"), vitmae::Error);
  CHECK_THROWS_WITH_AS(model.forward(Tensor<float>({3, 32, 32}), rng),
                       doctest::Contains("pixel_values must be [batch, channels, height, width], got [3, 32, 32]"),
                       vitmae::Error);
  CHECK_THROWS_WITH_AS(model.forward(Tensor<float>({2, 3, 32, 32}), Matrix<float>::Zero(1, 64)),
                       doctest::Contains("noise has shape [1, 64], expected [batch, num_patches] = [2, 64]"),
                       vitmae::Error);
  vitmae::ForwardOptions interp;
  interp.interpolate_pos_encoding = true;
  CHECK_THROWS_WITH_AS(model.forward(Tensor<float>({1, 3, 2, 40}), rng, interp),
                       doctest::Contains("smaller than one patch"), vitmae::Error);
  // Like torch's reshape in HF's patchify, the loss needs sizes divisible by the patch.
  CHECK_THROWS_WITH_AS(model.forward(Tensor<float>({1, 3, 34, 32}), rng, interp),
                       doctest::Contains("not divisible by the patch size 4"), vitmae::Error);
  // The encoder alone runs such a size: the convolution drops the remainder.
  const auto enc = vitmae::ViTMAEModel<float>::from_pretrained(test::data("hf/tiny"));
  CHECK(enc.forward(Tensor<float>({1, 3, 34, 32}), rng, interp).mask.cols() == 64);
}

TEST_CASE(
    "interpolate_pos_encoding on non-square inputs: both tables equal an independent bicubic, the same size is the "
    "stored table") {
  const auto model = vitmae::ForPreTraining<double>::from_pretrained(
      test::data("hf/tiny_tables"));  // non-zero tables, the decoder's too
  vitmae::ForwardOptions interp;
  interp.interpolate_pos_encoding = true;
  std::mt19937_64 rng(4);
  const auto px = random_pixels<double>(2, model.config(), 2, 32, 48);
  const auto out = model.forward(px, rng, interp);
  CHECK(out.mask.cols() == 8 * 12);
  CHECK(out.logits[0].rows() == 96);
  CHECK(std::isfinite(out.loss));
  // The tables' values against an independent bicubic (torch's upsample_bicubic2d written out
  // from its definition: A = -0.75, align_corners=False, border taps clamped).
  auto cubic = [](double x) {
    const double A = -0.75;
    x = std::abs(x);
    if (x <= 1) return ((A + 2) * x - (A + 3)) * x * x + 1;
    if (x < 2) return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
    return 0.0;
  };
  auto taps = [&](Index in, double scale, Index o, Index k) {  // k-th tap of output o: (index, weight)
    const double src = scale * (static_cast<double>(o) + 0.5) - 0.5;
    const double i0 = std::floor(src), t = src - i0;
    const Index idx = std::clamp<Index>(static_cast<Index>(i0) - 1 + k, 0, in - 1);
    return std::make_pair(idx, cubic(t - static_cast<double>(k - 1)));
  };
  const vitmae::Matrix<double>& enc = model.vit.embeddings.position_embeddings;            // (1+64, 64), an 8x8 grid
  const vitmae::Matrix<double> table = model.vit.embeddings.position_table(32, 48, true);  // 8x12 grid
  REQUIRE(table.rows() == 1 + 96);
  CHECK(table.row(0) == enc.row(0));
  double worst = 0;
  for (Index oy = 0; oy < 8; ++oy)
    for (Index ox = 0; ox < 12; ++ox)
      for (Index d = 0; d < table.cols(); ++d) {
        double v = 0;
        for (Index a = 0; a < 4; ++a)
          for (Index b = 0; b < 4; ++b) {
            const auto [iy, wy] = taps(8, 8.0 / 8.0, oy, a);
            const auto [ix, wx] = taps(8, 8.0 / 12.0, ox, b);
            v += wy * wx * enc(1 + iy * 8 + ix, d);
          }
        worst = std::max(worst, std::abs(v - table(1 + oy * 12 + ox, d)));
      }
  CHECK(worst < 1e-12);
  // The decoder's: HF stretches the 64 patch rows as a 1 x 64 strip to 1 x 96 (scale_factor 1.5).
  const vitmae::Matrix<double>& dec = model.decoder.decoder_pos_embed;
  const vitmae::Matrix<double> dtable = model.decoder.position_table(96, true);
  REQUIRE(dtable.rows() == 1 + 96);
  worst = 0;
  for (Index o = 0; o < 96; ++o)
    for (Index d = 0; d < dtable.cols(); ++d) {
      double v = 0;
      for (Index k = 0; k < 4; ++k) {
        const auto [i, w] = taps(64, 1.0 / 1.5, o, k);
        v += w * dec(1 + i, d);
      }
      worst = std::max(worst, std::abs(v - dtable(1 + o, d)));
    }
  CHECK(worst < 1e-12);
  CHECK(model.vit.embeddings.position_table(32, 32, true) == model.vit.embeddings.position_embeddings);
  CHECK((model.decoder.position_table(64, true) - model.decoder.decoder_pos_embed).cwiseAbs().maxCoeff() == 0.0);
  // Matches running without the flag at the model's own size.
  std::mt19937_64 a(3), b(3);
  const auto px32 = random_pixels<double>(1, model.config(), 8);
  CHECK(model.forward(px32, a, interp).loss == model.forward(px32, b).loss);
}

TEST_CASE("cross-entropy ignores -100 like torch, and refuses labels out of range") {
  vitmae::ClassificationLoss loss{"", 3, 0.0};
  Matrix<double> logits(2, 3);
  logits << 1, 2, 3, 0.5, -1, 2;
  const double only_first =
      loss.forward(logits, vitmae::Labels<double>::of_classes({2, -100}), static_cast<Matrix<double>*>(nullptr));
  CHECK(only_first == doctest::Approx(std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 3.0).epsilon(1e-14));
  CHECK(std::isnan(
      loss.forward(logits, vitmae::Labels<double>::of_classes({-100, -100}), static_cast<Matrix<double>*>(nullptr))));
  CHECK_THROWS_WITH_AS(
      loss.forward(logits, vitmae::Labels<double>::of_classes({3, 0}), static_cast<Matrix<double>*>(nullptr)),
      doctest::Contains("label 3 of sample 0 is out of range: the model has 3 labels"), vitmae::Error);
  CHECK_THROWS_WITH_AS(
      loss.forward(logits, vitmae::Labels<double>::of_classes({1}), static_cast<Matrix<double>*>(nullptr)),
      doctest::Contains("1 labels for a batch of 2"), vitmae::Error);
  CHECK(loss.resolved(true) == "single_label_classification");
  CHECK(loss.resolved(false) == "multi_label_classification");
  CHECK(vitmae::ClassificationLoss{"", 1, 0.0}.resolved(true) == "regression");
}

// ---------------------------------------------------------------- loading and saving

TEST_CASE_TEMPLATE("save_pretrained then from_pretrained round-trips bit-exactly with HF's names", Scalar, float,
                   double) {
  const auto model = vitmae::ForPreTraining<Scalar>::from_pretrained(test::data("hf/tiny_normpix_gelu_new"));
  const std::string dir = test::tmp_dir(std::string("roundtrip_") + (sizeof(Scalar) == 4 ? "f32" : "f64"));
  auto copy = model;
  copy.save_pretrained(dir);
  CHECK(file_names(dir + "/model.safetensors") == file_names(test::data("hf/tiny_normpix_gelu_new/model.safetensors")));
  CHECK(io::SafetensorsFile(dir + "/model.safetensors").metadata().at("format") == "pt");
  auto back = vitmae::ForPreTraining<Scalar>::from_pretrained(dir);
  CHECK(back.config().to_json() == model.config().to_json());
  std::map<std::string, std::vector<Scalar>> a, b;
  copy.visit_parameters("", [&](const auto& p) { a[p.name].assign(p.data, p.data + p.size); });
  back.visit_parameters("", [&](const auto& p) { b[p.name].assign(p.data, p.data + p.size); });
  CHECK(a == b);

  // The encoder alone saves HF's ViTMAEModel layout.
  const std::string enc_dir = dir + "_encoder";
  auto enc = vitmae::ViTMAEModel<Scalar>::from_pretrained(test::data("hf/tiny_normpix_gelu_new"));
  enc.save_pretrained(enc_dir);
  for (const auto& [n, s] : file_names(enc_dir + "/model.safetensors")) CHECK(n.rfind("vit.", 0) == std::string::npos);
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(enc_dir + "/config.json"));
  CHECK(cfg["architectures"][0] == "ViTMAEModel");
}

TEST_CASE("a checkpoint without position tables regenerates them (fixed sin-cos)") {
  const std::string dir =
      edited_checkpoint("no_pos", "hf/tiny", [](auto& t) { t.erase("vit.embeddings.position_embeddings"); });
  const auto m = vitmae::ForPreTraining<float>::from_pretrained(dir);
  const auto ref = vitmae::ForPreTraining<float>::from_pretrained(test::data("hf/tiny"));
  CHECK(m.vit.embeddings.position_embeddings == ref.vit.embeddings.position_embeddings);
}

TEST_CASE("loader errors: missing tensors listed, shape mismatch named, unexpected tensors, encoder-only") {
  {
    const std::string dir = edited_checkpoint("missing", "hf/tiny", [](auto& t) {
      t.erase("vit.layernorm.weight");
      t.erase("decoder.decoder_pred.bias");
    });
    CHECK_THROWS_WITH_AS(vitmae::ForPreTraining<float>::from_pretrained(dir),
                         doctest::Contains("missing tensors: 'vit.layernorm.weight', 'decoder.decoder_pred.bias'"),
                         vitmae::Error);
  }
  {
    const std::string dir =
        edited_checkpoint("shape", "hf/tiny", [](auto& t) { t["vit.layernorm.weight"] = Tensor<float>({63}); });
    CHECK_THROWS_WITH_AS(vitmae::ForPreTraining<float>::from_pretrained(dir),
                         doctest::Contains("'vit.layernorm.weight' has shape [63], expected [64]"), vitmae::Error);
  }
  {
    const std::string dir =
        edited_checkpoint("unexpected", "hf/tiny", [](auto& t) { t["vit.pooler.dense.weight"] = Tensor<float>({2}); });
    CHECK_THROWS_WITH_AS(vitmae::ForPreTraining<float>::from_pretrained(dir),
                         doctest::Contains("unexpected tensors: 'vit.pooler.dense.weight'"), vitmae::Error);
  }
  CHECK_THROWS_WITH_AS(vitmae::ForPreTraining<float>::from_pretrained(test::data("formats/encoder_only")),
                       doctest::Contains("encoder-only ViTMAEModel checkpoint"), vitmae::Error);
  // A pre-training checkpoint loads as ViTMAEModel, its decoder ignored.
  CHECK_NOTHROW(vitmae::ViTMAEModel<float>::from_pretrained(test::data("hf/tiny")));
  CHECK_THROWS_WITH_AS(vitmae::ViTMAEModel<float>::from_pretrained("/nonexistent"),
                       doctest::Contains("/nonexistent/config.json: cannot open"), vitmae::Error);
  const std::string empty = test::tmp_dir("no_weights");
  std::system(("cp " + test::data("hf/tiny/config.json") + " " + empty).c_str());
  CHECK_THROWS_WITH_AS(vitmae::ViTMAEModel<float>::from_pretrained(empty),
                       doctest::Contains("no weights found, expected model.safetensors, model.safetensors.index.json, "
                                         "pytorch_model.bin or a .pth file"),
                       vitmae::Error);
}

TEST_CASE("an MAE checkpoint becomes a classifier: the encoder's tensors unchanged, the decoder dropped") {
  std::vector<std::string> notes;
  vitmae::ClassifierLoadOptions o;
  o.labels = vitmae::ViTConfig::default_labels(3);
  auto m = vitmae::ViTForImageClassification<float>::from_pretrained(test::data("hf/tiny"), o, &notes);
  const io::SafetensorsSource ref(test::data("hf_vit/cls_from_mae_tiny/model.safetensors"));
  size_t compared = 0;
  m.visit_parameters("", [&](const vitmae::Parameter<float>& p) {
    REQUIRE(ref.contains(p.name));
    if (p.name.rfind("classifier.", 0) == 0) return;  // drawn with another generator than torch's
    ++compared;
    std::vector<float> e(static_cast<size_t>(p.size));
    ref.read(p.name, e.data());
    INFO(p.name);
    CHECK(std::equal(e.begin(), e.end(), p.data));
  });
  CHECK(compared == 38);  // every vit.* tensor of the case
  REQUIRE(notes.size() == 2);
  CHECK(notes[0].find("decoder") != std::string::npos);
  CHECK(notes[1].find("classifier.weight and classifier.bias are not in") != std::string::npos);
  // The fresh classifier: truncated normal with std initializer_range (0.02), bias 0.
  CHECK(m.classifier.bias.isZero());
  CHECK(m.classifier.weight.cwiseAbs().maxCoeff() > 0.0f);
  CHECK(m.classifier.weight.cwiseAbs().maxCoeff() < 0.1f);
  // With the case's classifier, the case's logits.
  vitmae::load_state_dict(m.classifier, ref, "classifier.", {""}).require_complete(ref);
  const io::SafetensorsFile f(test::data("hf_vit/cls_from_mae_tiny/io.safetensors"));
  const auto out = m.forward(f.get<float>("pixel_values"));
  test::check_close("logits", out.logits.data(), static_cast<long>(out.logits.size()), f.get<double>("logits"), 1e-4);
  CHECK(!out.loss.has_value());
  // Without labels an MAE checkpoint is refused with what to do.
  CHECK_THROWS_WITH_AS(vitmae::ViTForImageClassification<float>::from_pretrained(test::data("hf/tiny")),
                       doctest::Contains("an MAE checkpoint has no classifier: give the labels"), vitmae::Error);
}

TEST_CASE_TEMPLATE("classifier save_pretrained then from_pretrained round-trips bit-exactly", Scalar, float, double) {
  vitmae::ViTForImageClassification<Scalar> m(small_config(3));
  std::mt19937_64 rng(3);
  m.init_weights(rng);
  const std::string dir = test::tmp_dir("cls_roundtrip");
  m.save_pretrained(dir);
  const auto back = vitmae::ViTForImageClassification<Scalar>::from_pretrained(dir);
  CHECK(back.config().id2label == m.config().id2label);
  const auto a = vitmae::parameter_list(m), b = vitmae::parameter_list(back);
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CHECK(a[i].name == b[i].name);
    CHECK(a[i].values() == b[i].values());
  }
  const io::SafetensorsFile saved(dir + "/model.safetensors");
  CHECK(saved.contains("vit.embeddings.position_embeddings"));
  CHECK(saved.contains("classifier.weight"));
  CHECK(saved.tensors().size() == a.size());
}

TEST_CASE("a config.json that does not fit the checkpoint is refused in milliseconds, before allocating") {
  const std::string dir = test::tmp_dir("new_user_mismatch");
  const std::string expected = oversized_config_beside("hf/tiny", dir);  // the config
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH_AS(vitmae::ForPreTraining<float>::from_pretrained(dir), expected.c_str(), vitmae::Error);
  CHECK_THROWS_WITH_AS(vitmae::Model<float>::from_pretrained(dir), expected.c_str(), vitmae::Error);
  check_refused_in_milliseconds(start);

  // Another patch size names patch_size; a missing layer is named before allocating too.
  nlohmann::json j = io::read_json_file(test::data("hf/tiny/config.json"));
  j["patch_size"] = 8;
  io::write_file_atomic(dir + "/config.json", j.dump(2));
  CHECK_THROWS_WITH_AS(vitmae::ForPreTraining<float>::from_pretrained(dir),
                       ("vitmae: load_state_dict: " + dir +
                        "/model.safetensors: 'vit.embeddings.position_embeddings' has shape [1, 65, 64], "
                        "expected [1, 17, 64] (" +
                        dir + "/config.json asks for 1 + (image_size 32 / patch_size 8)^2 = 17 positions)")
                           .c_str(),
                       vitmae::Error);
  j["patch_size"] = 4;
  j["num_hidden_layers"] = 3;
  io::write_file_atomic(dir + "/config.json", j.dump(2));
  std::vector<std::string> layer2;
  for (const auto& t : vitmae::tensor_specs<vitmae::ForPreTraining<float>>(vitmae::load_config(dir + "/config.json")))
    if (t.name.rfind("vit.encoder.layer.2.", 0) == 0) layer2.push_back(t.name);
  REQUIRE(layer2.size() == 16);
  CHECK_THROWS_WITH_AS(
      vitmae::ForPreTraining<float>::from_pretrained(dir),
      ("vitmae: load_state_dict: " + dir + "/model.safetensors: missing tensors: " + vitmae::join_names(layer2))
          .c_str(),
      vitmae::Error);
}

TEST_CASE(
    "a classifier config.json that does not fit its checkpoint is refused before allocating, naming the file and the "
    "tensor") {
  const std::string dir = test::tmp_dir("new_user_classifier_mismatch");
  const std::string expected = oversized_config_beside("hf_vit/cls_tiny", dir);
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH_AS(vitmae::ViTForImageClassification<float>::from_pretrained(dir), expected.c_str(), vitmae::Error);
  check_refused_in_milliseconds(start);
  // Another patch size names the position table and patch_size.
  nlohmann::json j = io::read_json_file(test::data("hf_vit/cls_tiny/config.json"));
  j["patch_size"] = 8;
  io::write_file_atomic(dir + "/config.json", j.dump(2));
  CHECK_THROWS_WITH_AS(vitmae::ViTForImageClassification<float>::from_pretrained(dir),
                       doctest::Contains("/model.safetensors: 'vit.embeddings.position_embeddings' has shape"),
                       vitmae::Error);
  CHECK_THROWS_WITH_AS(vitmae::ViTForImageClassification<float>::from_pretrained(dir),
                       doctest::Contains("/config.json asks for 1 + (image_size 32 / patch_size 8)^2 = 17 positions)"),
                       vitmae::Error);
}
