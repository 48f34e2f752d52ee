// SPDX-License-Identifier: Apache-2.0
// The inference API on top of the models: a forward's inputs read from and its outputs written to
// safetensors under HF's names (outputs.hpp), compared with PyTorch's tensors, and .npy format 1.0
// (io/npy.hpp); the pipelines (pipelines.hpp: image files to features and to top-k classes), the
// FLOP counts vitmae-bench reports (flops.hpp) and the reconstruction panels (visualize.hpp).
#include "test_util.hpp"

#include <vitmae/images/pipelines.hpp>
#include <vitmae/io/npy.hpp>
#include <vitmae/models/flops.hpp>
#include <vitmae/models/outputs.hpp>

#include <cmath>
#include <cstring>
#include <set>

namespace io = vitmae::io;

namespace {

/// The names a file holds (without __metadata__).
std::set<std::string> tensor_names(const io::SafetensorsFile& f) {
  std::set<std::string> names;
  for (const auto& [name, info] : f.tensors()) names.insert(name);
  return names;
}

/// `got`'s tensor `name` is what `written` holds, bit for bit, and within `atol` of the
/// fixture's, with the fixture's shape.
template <class Scalar>
void check_written(const io::SafetensorsFile& got, const io::SafetensorsFile& fixture, const std::string& name,
                   const std::vector<Scalar>& written, double atol) {
  CAPTURE(name);
  REQUIRE(got.contains(name));
  CHECK(got.info(name).shape == fixture.info(name).shape);
  CHECK(got.get<Scalar>(name).data == written);
  test::check_close(name, written.data(), static_cast<long>(written.size()), fixture.get<double>(name), atol);
}

const std::vector<std::string>& pipeline_photos() {
  static const std::vector<std::string> p{test::data("images/chelsea.png"), test::data("images/camera.png"),
                                          test::data("images/rocket.jpg")};
  return p;
}

}  // namespace

// ---------------------------------------------------------------- outputs written out

TEST_CASE("add_outputs: ViTMAEForPreTraining's outputs under HF's names, as PyTorch's, read back bit for bit") {
  const io::SafetensorsFile in(test::data("hf/tiny/io.safetensors"));
  const auto model = vitmae::ViTMAEForPreTraining<float>::from_pretrained(test::data("hf/tiny"));
  const vitmae::Tensor<float> pixels = vitmae::read_pixel_values<float>(in);
  const std::optional<vitmae::Matrix<float>> noise = vitmae::read_noise<float>(in);
  REQUIRE(noise);
  CHECK(noise->rows() == 2);
  CHECK(noise->cols() == 64);
  vitmae::ForwardOptions opts;
  opts.output_hidden_states = opts.output_attentions = true;
  const vitmae::PreTrainingOutput<float> out = model.forward(pixels, *noise, opts);

  io::SafetensorsWriter w;
  vitmae::add_outputs(w, out, io::DType::F32);
  CHECK(w.names() == std::vector<std::string>{"last_hidden_state", "mask", "ids_restore", "logits", "loss",
                                              "hidden_states.0", "hidden_states.1", "hidden_states.2", "attentions.0",
                                              "attentions.1"});
  const std::string path = test::tmp_dir("outputs_pretraining") + "/out.safetensors";
  w.save(path);
  const io::SafetensorsFile got(path);
  CHECK(got.info("ids_restore").dtype == io::DType::I64);
  CHECK(got.info("attentions.0").shape == std::vector<std::int64_t>{2, 4, 17, 17});
  check_written(got, in, "last_hidden_state", test::flatten(out.last_hidden_state), 1e-4);
  check_written(got, in, "logits", test::flatten(out.logits), 1e-4);
  check_written(got, in, "loss", std::vector<float>{out.loss}, 1e-5);
  check_written(got, in, "mask", std::vector<float>(out.mask.data(), out.mask.data() + out.mask.size()), 0.0);
  check_written(got, in, "ids_restore",
                std::vector<std::int64_t>(out.ids_restore.data(), out.ids_restore.data() + out.ids_restore.size()),
                0.0);
  for (int i = 0; i < 3; ++i)
    check_written(got, in, "hidden_states." + std::to_string(i),
                  test::flatten(out.hidden_states[static_cast<size_t>(i)]), 1e-4);
  for (int i = 0; i < 2; ++i)
    check_written(got, in, "attentions." + std::to_string(i), test::flatten(out.attentions[static_cast<size_t>(i)]),
                  1e-4);
}

TEST_CASE("save_outputs: ViTMAEModel in float64 against PyTorch's float64 references, with metadata") {
  const io::SafetensorsFile in(test::data("hf/tiny/io.safetensors"));
  const auto model = vitmae::ViTMAEModel<double>::from_pretrained(test::data("hf/tiny"));
  const vitmae::ModelOutput<double> out =
      model.forward(vitmae::read_pixel_values<double>(in), *vitmae::read_noise<double>(in));
  const std::string path = test::tmp_dir("outputs_model") + "/out.safetensors";
  vitmae::save_outputs(path, out, io::DType::F64, {{"interpolate_pos_encoding", "false"}});
  const io::SafetensorsFile got(path);
  CHECK(tensor_names(got) ==
        std::set<std::string>{"last_hidden_state", "mask", "ids_restore"});  // no decoder: no logits, no loss
  CHECK(got.metadata().at("interpolate_pos_encoding") == "false");
  CHECK(got.info("last_hidden_state").dtype == io::DType::F64);
  const vitmae::Tensor<double> h = got.get<double>("last_hidden_state");
  CHECK(h.shape == std::vector<vitmae::Index>{2, 17, 64});
  test::check_close("last_hidden_state", h.ptr(), static_cast<long>(h.numel()), in.get<double>("last_hidden_state_f64"),
                    1e-12);
  const vitmae::Tensor<double> ids = got.get<double>("ids_restore");
  test::check_close("ids_restore", ids.ptr(), static_cast<long>(ids.numel()), in.get<double>("ids_restore"), 0.0);
}

TEST_CASE("add_outputs: ViTForImageClassification's logits, last_hidden_state and loss with the fixture's labels") {
  const io::SafetensorsFile in(test::data("hf_vit/cls_tiny/io.safetensors"));
  const auto model = vitmae::ViTForImageClassification<float>::from_pretrained(test::data("hf_vit/cls_tiny"));
  const std::optional<vitmae::Labels<float>> labels = vitmae::read_labels<float>(in);
  REQUIRE(labels);
  CHECK(labels->integer);
  CHECK(labels->classes == in.get<std::int64_t>("labels").data);
  CHECK_FALSE(vitmae::read_noise<float>(in));
  const auto out = model.forward(vitmae::read_pixel_values<float>(in), &*labels);
  io::SafetensorsWriter w;
  vitmae::add_outputs(w, out, io::DType::F32);
  CHECK(w.names() == std::vector<std::string>{"logits", "last_hidden_state", "loss"});
  const std::string path = test::tmp_dir("outputs_classifier") + "/out.safetensors";
  w.save(path);
  const io::SafetensorsFile got(path);
  check_written(got, in, "logits", std::vector<float>(out.logits.data(), out.logits.data() + out.logits.size()), 1e-4);
  check_written(got, in, "last_hidden_state", test::flatten(out.last_hidden_state), 1e-4);
  check_written(got, in, "loss", std::vector<float>{*out.loss}, 1e-5);
  // Without labels there is no loss.
  io::SafetensorsWriter w2;
  vitmae::add_outputs(w2, model.forward(vitmae::read_pixel_values<float>(in)), io::DType::F32);
  CHECK(w2.names() == std::vector<std::string>{"logits", "last_hidden_state"});
}

TEST_CASE("read_pixel_values, read_noise, read_labels: float targets, and files that lack or misshape them") {
  const std::string dir = test::tmp_dir("outputs_inputs");
  io::SafetensorsWriter w;
  const std::vector<float> targets{0.f, 1.f, 0.5f, 1.f, 0.f, 0.25f};
  w.add("labels", targets.data(), {2, 3}, io::DType::F32);
  w.add("noise", targets.data(), {6}, io::DType::F32);
  w.add("pixel_values", targets.data(), {2, 3}, io::DType::F32);
  w.save(dir + "/bad.safetensors");
  const io::SafetensorsFile f(dir + "/bad.safetensors");
  const std::optional<vitmae::Labels<float>> labels = vitmae::read_labels<float>(f);
  REQUIRE(labels);
  CHECK_FALSE(labels->integer);
  REQUIRE(labels->targets.rows() == 2);
  REQUIRE(labels->targets.cols() == 3);
  CHECK(labels->targets(1, 2) == 0.25f);
  CHECK_THROWS_WITH_AS(
      vitmae::read_pixel_values<float>(f),
      ("vitmae: " + dir + "/bad.safetensors: 'pixel_values' must be [batch, channels, height, width], got [2, 3]")
          .c_str(),
      vitmae::Error);
  CHECK_THROWS_WITH_AS(
      vitmae::read_noise<float>(f),
      ("vitmae: " + dir + "/bad.safetensors: 'noise' has shape [6], expected [batch, num_patches]").c_str(),
      vitmae::Error);

  io::SafetensorsWriter empty;
  empty.add("x", targets.data(), {1}, io::DType::F32);
  empty.save(dir + "/empty.safetensors");
  const io::SafetensorsFile e(dir + "/empty.safetensors");
  CHECK_THROWS_WITH_AS(vitmae::read_pixel_values<float>(e),
                       ("vitmae: " + dir + "/empty.safetensors: no tensor 'pixel_values'").c_str(), vitmae::Error);
  CHECK_FALSE(vitmae::read_labels<float>(e));
}

TEST_CASE(
    "io::npy: format 1.0 bytes, numpy's header dict padded with spaces to a multiple of 64, data little-endian C "
    "order") {
  const std::vector<float> x{1.5f, -2.f, 3.25f, 0.f, 7.f, -0.5f};
  const std::string b = io::npy(x.data(), {2, 3});
  // magic, version 1.0, header length 118 (little-endian), the dict, spaces to byte 127, '\n'.
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  const std::string header = dict + std::string(117 - dict.size(), ' ') + "\n";
  CHECK(b.substr(0, 10) == std::string("\x93NUMPY\x01\x00\x76\x00", 10));
  CHECK(b.substr(10, 118) == header);
  REQUIRE(b.size() == 128 + x.size() * 4);
  CHECK(std::memcmp(b.data() + 128, x.data(), x.size() * 4) == 0);
  CHECK(b.substr(128, 4) == std::string("\x00\x00\xc0\x3f", 4));  // 1.5f little-endian

  // One dimension is Python's one-element tuple; doubles and int64 name their own descr.
  const std::vector<double> d{0.25, 1e300, -3};
  const std::string bd = io::npy(d.data(), {3});
  CHECK(bd.substr(10, 57) == "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }");
  CHECK(bd.substr(8, 2) == std::string("\x76\x00", 2));  // 118 bytes of header again: the data at 128
  CHECK(bd.substr(67, 61) == std::string(60, ' ') + "\n");
  REQUIRE(bd.size() == 128 + 24);
  CHECK(std::memcmp(bd.data() + 128, d.data(), 24) == 0);
  const std::vector<std::int64_t> ids{7, -1};
  const std::string bi = io::npy(ids.data(), {1, 2});
  CHECK(bi.find("{'descr': '<i8', 'fortran_order': False, 'shape': (1, 2), }") == 10);
  CHECK(bi.size() == 128 + 16);

  const std::string path = test::tmp_dir("npy") + "/x.npy";
  io::save_npy(path, x.data(), {2, 3});
  CHECK(test::slurp(path) == b);
}

// ---------------------------------------------------------------- pipelines and FLOP counts

TEST_CASE("top_classes: softmax or sigmoid scores, best first, ties in class order, at most num_labels") {
  vitmae::ViTConfig c;
  c.id2label = {"a", "b", "c"};
  vitmae::Matrix<float> logits(2, 3);
  logits << 0.f, std::log(3.f), 0.f,  // exp: 1, 3, 1 -> 0.2, 0.6, 0.2
      5.f, 5.f, 5.f;                  // all equal: class order
  auto top = vitmae::top_classes(c, logits, 2);
  REQUIRE(top.size() == 2);
  REQUIRE(top[0].size() == 2);
  CHECK(top[0][0].index == 1);
  CHECK(top[0][0].label == "b");
  CHECK(top[0][0].score == doctest::Approx(0.6).epsilon(1e-7));
  CHECK(top[0][1].index == 0);
  CHECK(top[0][1].score == doctest::Approx(0.2).epsilon(1e-7));
  CHECK(top[1][0].index == 0);
  CHECK(top[1][1].index == 1);
  CHECK(top[1][0].score == doctest::Approx(1.0 / 3));
  CHECK(vitmae::top_classes(c, logits, 10)[0].size() == 3);

  c.problem_type = "multi_label_classification";  // each logit through the sigmoid, independently
  top = vitmae::top_classes(c, logits, 3);
  CHECK(top[0][0].score == doctest::Approx(0.75).epsilon(1e-7));  // sigmoid(ln 3) = 3 / 4
  CHECK(top[0][1].score == doctest::Approx(0.5));
  CHECK(top[1][2].score == doctest::Approx(1 / (1 + std::exp(-5.0))));

  vitmae::ViTConfig one;
  one.id2label = {"x"};
  const vitmae::Matrix<double> z = vitmae::Matrix<double>::Constant(1, 1, -std::log(4.0));
  CHECK(vitmae::top_classes(one, z, 5)[0][0].score == doctest::Approx(0.2));  // one label: sigmoid, 1 / (1 + 4)
  CHECK_THROWS_WITH_AS(vitmae::top_classes(one, logits, 1),
                       "vitmae: top_classes: logits have 3 columns, expected num_labels = 1", vitmae::Error);
}

TEST_CASE(
    "image_features: each image's CLS and mean patch token as the model's forward gives them, whatever the batch") {
  const std::string dir = test::data("hf/tiny");
  auto model = vitmae::ViTMAEModel<float>::from_pretrained(dir);
  model.config.mask_ratio = 0.5;  // masked: the noise stream must not depend on the batch either
  const auto proc = vitmae::ImageProcessor::for_checkpoint(dir, model.config);
  std::vector<std::pair<size_t, size_t>> batches;
  std::mt19937_64 rng2(7), rng1(7), rng_ref(7);
  const vitmae::ImageFeatures<float> f2 = vitmae::image_features(
      model, proc, pipeline_photos(), 2, rng2, [&](size_t b, size_t e) { batches.emplace_back(b, e); });
  CHECK(batches == std::vector<std::pair<size_t, size_t>>{{0, 2}, {2, 3}});
  const vitmae::ImageFeatures<float> f1 = vitmae::image_features(model, proc, pipeline_photos(), 1, rng1);
  REQUIRE(f2.cls.rows() == 3);
  REQUIRE(f2.cls.cols() == 64);
  for (vitmae::Index i = 0; i < 3; ++i) {
    CAPTURE(i);
    const auto px = proc.preprocess<float>({vitmae::io::load_image(pipeline_photos()[static_cast<size_t>(i)], 3)});
    const vitmae::Matrix<float> h = model.forward(px, rng_ref).last_hidden_state[0];  // (1 + 32, 64)
    REQUIRE(h.rows() == 33);
    const vitmae::RowVector<float> mean = h.bottomRows(32).colwise().mean();
    CHECK((f1.cls.row(i) - h.row(0)).cwiseAbs().maxCoeff() == 0.f);  // batch 1: the same computation
    CHECK((f1.mean.row(i) - mean).cwiseAbs().maxCoeff() == 0.f);
    CHECK((f2.cls.row(i) - h.row(0)).cwiseAbs().maxCoeff() <= 1e-5f);  // a batch's products are stacked: float rounding
    CHECK((f2.mean.row(i) - mean).cwiseAbs().maxCoeff() <= 1e-5f);
  }
  const vitmae::ImageFeatures<float> pooled = vitmae::pool_features(
      std::vector<vitmae::Matrix<float>>{(vitmae::Matrix<float>(3, 2) << 1, 2, 3, 4, 5, 8).finished()});
  CHECK(pooled.cls == (vitmae::Matrix<float>(1, 2) << 1, 2).finished());
  CHECK(pooled.mean == (vitmae::Matrix<float>(1, 2) << 4, 6).finished());
  CHECK_THROWS_WITH_AS(vitmae::image_features(model, proc, {test::data("images/truncated.jpg")}, 1, rng1),
                       doctest::Contains("truncated.jpg"), vitmae::Error);
}

TEST_CASE("classify_images: top_classes of each image's logits, in input order, the same in batches") {
  const std::string dir = test::data("hf_vit/cls_tiny");
  const auto model = vitmae::ViTForImageClassification<float>::from_pretrained(dir);
  const auto proc = vitmae::ImageProcessor::for_checkpoint(dir, model.config().mae_config());
  const auto top = vitmae::classify_images(model, proc, pipeline_photos(), 3, 2);
  REQUIRE(top.size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    CAPTURE(i);
    const auto px = proc.preprocess<float>({vitmae::io::load_image(pipeline_photos()[i], 3)});
    const vitmae::Matrix<float> logits = model.forward(px).logits;  // (1, 10)
    const vitmae::RowVector<double> z = logits.row(0).cast<double>();
    const double sum = (z.array() - z.maxCoeff()).exp().sum();
    REQUIRE(top[i].size() == 3);
    vitmae::Index best = 0;
    z.maxCoeff(&best);
    CHECK(top[i][0].index == best);
    CHECK(top[i][0].label == model.config().id2label[static_cast<size_t>(best)]);
    CHECK(top[i][0].score == doctest::Approx(1.0 / sum).epsilon(1e-5));  // exp(max - max) / sum
    CHECK(top[i][0].score >= top[i][1].score);
    CHECK(top[i][1].score >= top[i][2].score);
  }
}

TEST_CASE("forward_flops: a hand count on the tiny config, and vit-mae-base as the bench page's table reports it") {
  const vitmae::Config tiny = vitmae::load_config(test::data("hf/tiny/config.json"));
  // One encoder layer on 17 tokens of 64 (MLP 128): 2*17*64*192 + 2*17*64*64 + 4*17*64*128 + 4*17*17*64.
  CHECK(vitmae::layer_flops(17, 64, 128) == 1188096.0);
  // Encoder at mask 0.75: the patch projection 2*64*48*64 plus 2 layers on 1 + 16 tokens.
  CHECK(vitmae::forward_flops(tiny, false, 0.75) == 2 * 64 * 48 * 64 + 2 * 1188096.0);
  CHECK(vitmae::forward_flops(tiny, true, 0.75) == 6250240.0);
  CHECK(vitmae::forward_flops(tiny, false, 0.0) == 11076096.0);
  vitmae::ViTConfig vit = vitmae::ViTConfig::from_mae(tiny, vitmae::ViTConfig::default_labels(10));
  CHECK(vitmae::forward_flops(vit) == 11076096.0 + 2 * 64 * 10);  // the classifier on the CLS token
  // vit-mae-base (HF's defaults): pretrain_b1 19.56 GFLOP, features_b1 35.13, finetune_b8 843.1 = 3 x 8 x 35.13.
  const vitmae::Config base;
  CHECK(vitmae::forward_flops(base, true, base.mask_ratio) / 1e9 == doctest::Approx(19.56).epsilon(5e-4));
  CHECK(vitmae::forward_flops(base, false, 0.0) / 1e9 == doctest::Approx(35.13).epsilon(5e-4));
  vit = vitmae::ViTConfig::from_mae(base, vitmae::ViTConfig::default_labels(1000));
  CHECK(3 * 8 * vitmae::forward_flops(vit) / 1e9 == doctest::Approx(843.1).epsilon(5e-4));
}

// ---------------------------------------------------------------- reconstruction panels

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
