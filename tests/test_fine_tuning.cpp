// SPDX-License-Identifier: Apache-2.0
// Fine-tuning ViTForImageClassification (train/finetune.hpp, train/linear_probe.hpp): AdamW with
// layer-wise lr decay and label smoothing against the float64 reference, the classifier trainer and
// its resume, the linear probe, evaluation (top-1, top-5, confusion), and the shipped classifier.
#include "test_util.hpp"

#include <vitmae/train.hpp>

#include <map>
#include <random>

namespace io = vitmae::io;
using test::small_config;
using vitmae::Index;
using vitmae::Matrix;

TEST_CASE("8 fine-tuning steps (AdamW, layer decay 0.75, label smoothing 0.1) match the float64 reference") {
  auto m = vitmae::ViTForImageClassification<double>::from_pretrained(test::data("hf_vit/cls_tiny"));
  const io::SafetensorsFile ref(test::data("hf_vit/cls_tiny/train_steps.safetensors"));
  REQUIRE(ref.metadata().at("betas") == "0.9,0.999");
  const auto px = ref.get<double>("pixel_values");  // [8, 4, 3, 32, 32]
  const auto labels = ref.get<std::int64_t>("labels");
  const auto lr = ref.get<double>("lr").data;
  const auto losses = ref.get<double>("loss").data;
  vitmae::train::AdamWOptions ao;
  ao.beta1 = 0.9, ao.beta2 = 0.999, ao.eps = 1e-8, ao.weight_decay = 0.05;
  vitmae::train::AdamW<vitmae::ViTForImageClassification<double>> opt(m, ao);
  const long layers = static_cast<long>(m.config().num_hidden_layers);
  auto scale = [&](const vitmae::Parameter<double>& p) {
    return vitmae::train::layer_decay_scale(p.name, layers, 0.75);
  };
  auto grads = vitmae::train::zero_grads_like(m);
  vitmae::ViTForImageClassification<double>::Cache cache;
  const Index per = 4 * 3 * 32 * 32;
  for (Index s = 0; s < 8; ++s) {
    vitmae::Tensor<double> batch({4, 3, 32, 32});
    std::copy(px.data.begin() + s * per, px.data.begin() + (s + 1) * per, batch.data.begin());
    const auto y = vitmae::Labels<double>::of_classes(
        std::vector<std::int64_t>(labels.data.begin() + s * 4, labels.data.begin() + (s + 1) * 4));
    vitmae::train::zero_parameters(grads);
    const double loss = vitmae::train::forward_backward(m, batch, y, grads, nullptr, 0.1, {}, &cache);
    INFO("step " << s << " loss " << loss << " reference " << losses[static_cast<size_t>(s)]);
    CHECK(std::abs(loss - losses[static_cast<size_t>(s)]) <= 1e-12 * std::abs(losses[static_cast<size_t>(s)]));
    opt.step(m, grads, lr[static_cast<size_t>(s)], scale);
  }
  double worst = 0;
  std::string worst_name;
  size_t compared = 0;
  m.visit_parameters("", [&](const vitmae::Parameter<const double>& p) {
    REQUIRE(ref.contains("final." + p.name));
    ++compared;
    const auto e = ref.get<double>("final." + p.name);
    for (Index i = 0; i < p.size; ++i) {
      const double d = std::abs(p.data[i] - e.data[static_cast<size_t>(i)]);
      if (d > worst) worst = d, worst_name = p.name;
    }
  });
  MESSAGE("largest weight difference after 8 steps: " << worst << " (" << worst_name << ")");
  CHECK(worst <= 1e-12);
  CHECK(compared == 40);
}

TEST_CASE("layer-wise lr decay ids follow MAE's param_groups_lrd") {
  using vitmae::train::vit_layer_id;
  CHECK(vit_layer_id("vit.embeddings.cls_token", 12) == 0);
  CHECK(vit_layer_id("vit.embeddings.patch_embeddings.projection.weight", 12) == 0);
  CHECK(vit_layer_id("vit.encoder.layer.0.attention.attention.query.weight", 12) == 1);
  CHECK(vit_layer_id("vit.encoder.layer.11.output.dense.bias", 12) == 12);
  CHECK(vit_layer_id("vit.layernorm.weight", 12) == 13);
  CHECK(vit_layer_id("classifier.weight", 12) == 13);
  CHECK(vitmae::train::layer_decay_scale("classifier.bias", 2, 0.75) == 1.0);
  CHECK(vitmae::train::layer_decay_scale("vit.embeddings.cls_token", 2, 0.75) == doctest::Approx(0.421875));
}

TEST_CASE(
    "ClassifierTrainer: a step is forward_backward plus layer-decayed AdamW, threads split the batch, not the result") {
  namespace train = vitmae::train;
  vitmae::ViTConfig c = small_config(3);
  vitmae::ViTForImageClassification<double> m0(c);
  std::mt19937_64 rng(11);
  m0.init_weights(rng);
  const Index B = 6;
  std::vector<train::LabelledBatch<double>> batches;
  std::uniform_real_distribution<double> u(-1, 1);
  for (int k = 0; k < 3; ++k) {
    train::LabelledBatch<double> b{vitmae::Tensor<double>({B, 2, 8, 8}), {0, 1, 2, 2, -100, 1}};
    for (auto& v : b.pixels.data) v = u(rng);
    batches.push_back(b);
  }
  train::FineTuneOptions o;
  o.steps = 3, o.batch = static_cast<int>(B), o.base_lr = 0.05, o.warmup_steps = 1, o.layer_decay = 0.6,
  o.label_smoothing = 0.1;
  o.clip_grad = 0.5;
  auto run = [&](int threads) {
    o.threads = threads;
    train::ClassifierTrainer<double> t(m0, o);
    int k = 0;
    std::vector<double> losses;
    while (t.step() < o.steps) losses.push_back(t.train_step([&] { return batches[static_cast<size_t>(k++)]; }).loss);
    return std::make_pair(losses, t.model());
  };
  const auto [l1, m1] = run(1);
  const auto [l2, m2] = run(2);
  // By hand: the same three steps with forward_backward, the mean/clip and AdamW's layer decay.
  auto m = m0;
  train::AdamW<vitmae::ViTForImageClassification<double>> opt(m, train::AdamWOptions{0.9, 0.999, 1e-8, 0.05});
  auto g = train::zero_grads_like(m);
  for (int k = 0; k < 3; ++k) {
    train::zero_parameters(g);
    const double loss = train::forward_backward(
        m, batches[static_cast<size_t>(k)].pixels,
        vitmae::Labels<double>::of_classes(batches[static_cast<size_t>(k)].labels), g, nullptr, 0.1);
    CHECK(loss == l1[static_cast<size_t>(k)]);
    CHECK(std::abs(l2[static_cast<size_t>(k)] - loss) <= 1e-12 * std::abs(loss));
    train::finish_gradients(g, 1, 0.5);
    const double lr = train::mae_learning_rate(k, 1, 3, o.peak_lr(), o.min_lr);
    opt.step(m, g, lr, [&](const vitmae::Parameter<double>& p) { return train::layer_decay_scale(p.name, 1, 0.6); });
  }
  const auto a = vitmae::parameter_list(m);
  const auto b1 = vitmae::parameter_list(m1), b2 = vitmae::parameter_list(m2);
  double diff2 = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].name);
    CHECK(a[i].values() == b1[i].values());  // one thread: bit for bit
    diff2 = std::max(diff2, (a[i].values() - b2[i].values()).cwiseAbs().maxCoeff());
  }
  MESSAGE("two threads against one: largest weight difference " << diff2);
  CHECK(diff2 <= 1e-12);
  CHECK(l1[2] < l1[0]);  // it learns the batches
}

TEST_CASE("fine-tuning: N steps equal N/2 + checkpoint + resume + N/2, bit for bit") {
  namespace train = vitmae::train;
  vitmae::ViTConfig c = small_config(3);
  vitmae::ViTForImageClassification<float> m0(c);
  std::mt19937_64 rng(5);
  m0.init_weights(rng);
  std::vector<train::LabelledBatch<float>> batches;
  std::uniform_real_distribution<float> u(-1, 1);
  for (int k = 0; k < 4; ++k) {
    train::LabelledBatch<float> b{vitmae::Tensor<float>({4, 2, 8, 8}), {0, 1, 2, 1}};
    for (auto& v : b.pixels.data) v = u(rng);
    batches.push_back(b);
  }
  train::FineTuneOptions o;
  o.steps = 4, o.batch = 4, o.base_lr = 0.05, o.warmup_steps = 1, o.threads = 1;
  train::ClassifierTrainer<float> whole(m0, o);
  for (int k = 0; k < 4; ++k) whole.train_step([&] { return batches[static_cast<size_t>(k)]; });
  const std::string dir = test::tmp_dir("finetune_resume");
  vitmae::ImageProcessor proc;
  proc.height = proc.width = 8;
  {
    train::ClassifierTrainer<float> first(m0, o);
    for (int k = 0; k < 2; ++k) first.train_step([&] { return batches[static_cast<size_t>(k)]; });
    train::save_checkpoint(first, dir + "/half", proc, {{"metrics.csv", "step\n1\n2\n"}});
  }
  CHECK(test::slurp(dir + "/half/metrics.csv") == "step\n1\n2\n");
  train::ClassifierTrainer<float> second(m0, o);
  train::resume(second, dir + "/half");
  CHECK(second.step() == 2);
  CHECK(second.history().size() == 2);
  for (int k = 2; k < 4; ++k) second.train_step([&] { return batches[static_cast<size_t>(k)]; });
  const auto a = vitmae::parameter_list(whole.model()), b = vitmae::parameter_list(second.model());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].name);
    CHECK(a[i].values() == b[i].values());
  }
  // Another seed is refused, naming both values.
  o.seed = 9;
  train::ClassifierTrainer<float> other(m0, o);
  CHECK_THROWS_WITH_AS(train::resume(other, dir + "/half"),
                       doctest::Contains("trained with seed 0, this run asks for 9"), vitmae::Error);
}

TEST_CASE(
    "linear probe: features as the forward gives them, training-set normalisation, a folded head equal to the probe") {
  namespace train = vitmae::train;
  const auto model = vitmae::ViTForImageClassification<double>::from_pretrained(test::data("hf_vit/cls_tiny"));
  auto set = train::LabelledDataset::idx(test::data("idx/images-idx3-ubyte.gz"), test::data("idx/labels-idx1-ubyte.gz"),
                                         model.config().id2label);
  const auto proc = vitmae::ImageProcessor::for_checkpoint(test::data("hf_vit/cls_tiny"), model.config().mae_config());
  const Matrix<double> cls = train::extract_features(model.vit, set, proc, train::ProbeFeatures::cls, 2);
  const Matrix<double> mean = train::extract_features(model.vit, set, proc, train::ProbeFeatures::mean, 3);
  const Matrix<double> pixels = train::extract_features(model.vit, set, proc, train::ProbeFeatures::pixels, 4);
  REQUIRE(cls.rows() == 5);
  for (Index i = 0; i < 5; ++i) {
    const auto px = proc.preprocess<double>(std::vector<io::Image8>{set.image(static_cast<size_t>(i), 3)});
    const auto out = model.forward(px);
    const Matrix<double>& h = out.last_hidden_state[0];
    CHECK((cls.row(i) - h.row(0)).cwiseAbs().maxCoeff() <= 1e-12);
    CHECK((mean.row(i) - h.bottomRows(h.rows() - 1).colwise().mean()).cwiseAbs().maxCoeff() <= 1e-12);
    CHECK(pixels.row(i) == Eigen::Map<const Matrix<double>>(px.data.data(), 1, px.numel()));
  }
  // Two Gaussian blobs in 3-D, far apart along one axis and with a large offset and scale on
  // another: the probe normalises (mean, biased variance) and separates them.
  std::mt19937_64 rng(3);
  std::normal_distribution<double> n01(0, 1);
  Matrix<double> X(200, 3);
  std::vector<std::int64_t> y(200);
  for (Index i = 0; i < 200; ++i) {
    y[static_cast<size_t>(i)] = i % 2;
    X(i, 0) = n01(rng) + (i % 2 ? 4 : -4);
    X(i, 1) = 1000 + 50 * n01(rng);
    X(i, 2) = n01(rng);
  }
  train::ProbeOptions o;
  o.epochs = 20, o.batch = 32, o.lr = 0.05;
  long epochs_seen = 0;
  const auto p =
      train::train_linear_probe<double>(X, y, 2, o, [&](long e, const train::LinearProbe<double>&, double loss) {
        CHECK(e == ++epochs_seen);
        CHECK(std::isfinite(loss));
      });
  CHECK(epochs_seen == 20);
  for (Index j = 0; j < 3; ++j) {
    const double mu = X.col(j).mean();
    const double var = (X.col(j).array() - mu).square().mean();
    CHECK(p.mean(j) == doctest::Approx(mu).epsilon(1e-12));
    CHECK(p.inv_std(j) == doctest::Approx(1 / std::sqrt(var + 1e-6)).epsilon(1e-12));
  }
  CHECK(train::Evaluation::of(p.logits(X), y).top1 == 1.0);
  const auto folded = p.folded();
  CHECK((folded.forward(X) - p.logits(X)).cwiseAbs().maxCoeff() <= 1e-9);
  // The same seed gives the same probe; a label out of range is refused.
  const auto p2 = train::train_linear_probe<double>(X, y, 2, o);
  CHECK(p2.classifier.weight == p.classifier.weight);
  y[7] = 2;
  CHECK_THROWS_WITH_AS(train::train_linear_probe<double>(X, y, 2, o),
                       doctest::Contains("label 2 of sample 7 is out of range"), vitmae::Error);
}

TEST_CASE("evaluate: top-1, top-5, loss and the confusion matrix as the forward gives them") {
  const auto model = vitmae::ViTForImageClassification<float>::from_pretrained(test::data("hf_vit/cls_tiny"));
  // 5 IDX images (3x4, grey) as a 10-class set: preprocessing resizes them to 32x32, 3 channels.
  auto set = vitmae::train::LabelledDataset::idx(test::data("idx/images-idx3-ubyte.gz"),
                                                 test::data("idx/labels-idx1-ubyte.gz"), model.config().id2label);
  const auto proc = vitmae::ImageProcessor::for_checkpoint(test::data("hf_vit/cls_tiny"), model.config().mae_config());
  const auto e = vitmae::train::evaluate(model, set, proc, 2);
  CHECK(e.count == 5);
  long top1 = 0;
  double loss = 0;
  for (size_t i = 0; i < set.size(); ++i) {
    const auto px = proc.preprocess<float>(std::vector<vitmae::io::Image8>{set.image(i, 3)});
    const auto y = vitmae::Labels<float>::of_classes({set.label(i)});
    const auto out = model.forward(px, &y);
    Index best = 0;
    out.logits.row(0).maxCoeff(&best);
    top1 += best == set.label(i);
    loss += *out.loss;
    CHECK(e.confusion[static_cast<size_t>(set.label(i))][static_cast<size_t>(best)] >= 1);
  }
  CHECK(e.top1 == doctest::Approx(top1 / 5.0));
  CHECK(e.loss == doctest::Approx(loss / 5.0).epsilon(1e-5));
  long sum = 0;
  for (const auto& row : e.confusion)
    for (long v : row) sum += v;
  CHECK(sum == 5);
  CHECK(e.top5 >= e.top1);
}

TEST_CASE(
    "Evaluation::of: top-1 and top-5 with ties to the lower index, the confusion matrix, the mean cross-entropy") {
  Matrix<double> logits(3, 6);
  logits << 0, 5, 1, 1, 2, 3,  // truth 1: top-1
      4, 4, 0, 0, 0, 0,        // truth 1: tie 0/1 goes to class 0 (top-1 wrong, top-5 right)
      6, 5, 4, 3, 2, 1;        // truth 5: the 6th best, outside the top 5
  const auto e = vitmae::train::Evaluation::of(logits, {1, 1, 5});
  CHECK(e.count == 3);
  CHECK(e.top1 == doctest::Approx(1.0 / 3));
  CHECK(e.top5 == doctest::Approx(2.0 / 3));
  CHECK(e.confusion[1][1] == 1);
  CHECK(e.confusion[1][0] == 1);
  CHECK(e.confusion[5][0] == 1);
  // Cross-entropy by hand: log-sum-exp minus the true logit, averaged.
  double ce = 0;
  const std::vector<Index> truth{1, 1, 5};
  for (Index r = 0; r < 3; ++r)
    ce += std::log(logits.row(r).array().exp().sum()) - logits(r, truth[static_cast<size_t>(r)]);
  CHECK(e.loss == doctest::Approx(ce / 3).epsilon(1e-14));
  const auto pc = e.per_class();
  CHECK(pc[1] == 0.5);
  CHECK(pc[5] == 0.0);
  CHECK(std::isnan(pc[2]));
  CHECK_THROWS_WITH_AS(vitmae::train::Evaluation::of(logits, {1}), doctest::Contains("3 rows of logits for 1 labels"),
                       vitmae::Error);
}

TEST_CASE("the shipped Fashion-MNIST models: the classifier's reported accuracy on the first 1,000 test images") {
  namespace train = vitmae::train;
  const std::string dir = VITMAE_FASHION_MNIST_EXAMPLE;
  const auto model = vitmae::ViTForImageClassification<float>::from_pretrained(dir + "/classifier");
  CHECK(model.config().id2label == train::fashion_mnist_classes());
  const auto set =
      train::LabelledDataset::idx(test::data("fashion-mnist/t1k-images-idx3-ubyte.gz"),
                                  test::data("fashion-mnist/t1k-labels-idx1-ubyte.gz"), train::fashion_mnist_classes());
  REQUIRE(set.size() == 1000);
  const auto proc = vitmae::ImageProcessor::for_checkpoint(dir + "/classifier", model.config().mae_config());
  const auto e = train::evaluate(model, set, proc, 250);
  const long correct = std::lround(e.top1 * 1000);
  MESSAGE("shipped classifier: " << correct << " of the first 1000 test images right");
  // examples/fashion-mnist/README.md ("Shipped"): 1000 first test images, kShippedCorrect right
  // (measured with vitmae-finetune's evaluation when the classifier was trained); a different
  // summation order (threads, ISA) may move an image or two across the decision boundary.
  constexpr long kShippedCorrect = 924;
  CHECK(std::abs(correct - kShippedCorrect) <= 2);
  // The MAE it was fine-tuned from loads and reconstructs: its masked-patch loss on these images is
  // finite and below the loss of predicting the mean (norm_pix targets: 1 per element).
  const auto mae = vitmae::ForPreTraining<float>::from_pretrained(dir + "/mae");
  std::vector<vitmae::io::Image8> imgs;
  for (size_t i = 0; i < 64; ++i) imgs.push_back(set.image(i, 1));
  const auto px = vitmae::ImageProcessor::for_checkpoint(dir + "/mae", mae.config()).preprocess<float>(imgs);
  std::mt19937_64 rng(0);
  const float loss = mae.forward(px, rng).loss;
  MESSAGE("shipped MAE: masked-patch loss " << loss << " on the first 64 test images");
  CHECK(loss < 0.5f);
}
