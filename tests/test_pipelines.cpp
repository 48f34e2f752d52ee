// SPDX-License-Identifier: Apache-2.0
// pipelines.hpp: image files to features (ViTMAEModel, CLS and mean patch token) and to top-k
// classes (ViTForImageClassification, softmax or sigmoid as HF's pipeline), checked against the
// model's own forward image by image and against scores computed by hand; flops.hpp: the FLOP
// counts vitmae-bench reports, against a hand count and the table of examples/bench/README.md.
#include "test_util.hpp"

#include <vitmae/images/pipelines.hpp>
#include <vitmae/models/flops.hpp>

#include <cmath>

namespace {

const std::vector<std::string>& pipeline_photos() {
  static const std::vector<std::string> p{test::data("images/chelsea.png"), test::data("images/camera.png"),
                                          test::data("images/rocket.jpg")};
  return p;
}

}  // namespace

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
