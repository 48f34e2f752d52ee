// SPDX-License-Identifier: Apache-2.0
// ViTForImageClassification against transformers' (tests/data/hf_vit, see its README): outputs,
// losses, gradients and fine-tuning steps; loading from an MAE checkpoint; the config; errors.
#include "test_util.hpp"

#include <vitmae/train.hpp>

#include <map>
#include <random>

namespace io = vitmae::io;
using vitmae::Index;
using vitmae::Matrix;

namespace {

/// The labels of a fixture: I64 [B] class indices, F32 [B, N] multi-label targets, F32 [B]
/// regression targets.
template <class Scalar>
vitmae::Labels<Scalar> fixture_labels(const io::SafetensorsFile& f, const std::string& name = "labels") {
  if (f.tensors().at(name).dtype == io::DType::I64) {
    const auto t = f.get<std::int64_t>(name);
    return vitmae::Labels<Scalar>::of_classes(t.data);
  }
  const auto t = f.get<Scalar>(name);
  const Index B = t.size(0), N = t.dim() > 1 ? t.size(1) : 1;
  return vitmae::Labels<Scalar>::of_targets(Eigen::Map<const Matrix<Scalar>>(t.ptr(), B, N));
}

/// Runs the case's checkpoint on its io.safetensors and checks every output it holds: float32
/// within 1e-4 of the float32 references; float64 within 1e-12 of the `*_f64` ones (every
/// operation in float64) where the case has them, else 1e-4 of the float32 ones.
template <class Scalar>
void check_case(const std::string& dir) {
  INFO("case " << dir);
  const io::SafetensorsFile f(test::data(dir + "/io.safetensors"));
  const auto model = vitmae::ViTForImageClassification<Scalar>::from_pretrained(test::data(dir));
  vitmae::ForwardOptions opts;
  opts.interpolate_pos_encoding = f.metadata().at("interpolate_pos_encoding") == "true";
  opts.output_hidden_states = opts.output_attentions = true;
  const auto labels = fixture_labels<Scalar>(f);
  const auto out = model.forward(f.get<Scalar>("pixel_values"), &labels, opts);

  const bool f64 = std::is_same_v<Scalar, double>;
  auto expected = [&](const std::string& name) {
    const bool have64 = f64 && f.contains(name + "_f64");
    return std::make_pair(f.get<double>(have64 ? name + "_f64" : name), have64 ? 1e-12 : 1e-4);
  };
  {
    auto [e, t] = expected("logits");
    test::check_close("logits", out.logits.data(), static_cast<long>(out.logits.size()), e, t);
  }
  {
    auto [e, t] = expected("loss");
    REQUIRE(out.loss.has_value());
    test::check_close("loss", &*out.loss, 1, e, t);
  }
  {
    auto [e, t] = expected("last_hidden_state");
    const auto got = test::flatten(out.last_hidden_state);
    test::check_close("last_hidden_state", got.data(), static_cast<long>(got.size()), e, t);
  }
  const Index layers = model.config().num_hidden_layers;
  REQUIRE(static_cast<Index>(out.hidden_states.size()) == layers + 1);
  REQUIRE(static_cast<Index>(out.attentions.size()) == layers);
  for (Index i = 0; i <= layers; ++i) {
    const auto got = test::flatten(out.hidden_states[static_cast<size_t>(i)]);
    test::check_close("hidden_states." + std::to_string(i), got.data(), static_cast<long>(got.size()),
                      f.get<double>("hidden_states." + std::to_string(i)), 1e-4);
  }
  for (Index i = 0; i < layers; ++i) {
    const auto got = test::flatten(out.attentions[static_cast<size_t>(i)]);
    test::check_close("attentions." + std::to_string(i), got.data(), static_cast<long>(got.size()),
                      f.get<double>("attentions." + std::to_string(i)), 1e-4);
  }
  if (f.contains("loss_label_smoothing_0.1")) {  // torch's CrossEntropyLoss(label_smoothing=0.1) of the float32 logits
    const Scalar smoothed = model.loss_of(0.1).forward(out.logits, labels, static_cast<Matrix<Scalar>*>(nullptr));
    test::check_close("loss_label_smoothing_0.1", &smoothed, 1, f.get<double>("loss_label_smoothing_0.1"), 1e-4);
  }
}

const char* const kCases[] = {"hf_vit/cls_tiny", "hf_vit/cls_interp_48", "hf_vit/cls_multilabel",
                              "hf_vit/cls_regression", "hf_vit/cls_from_mae_tiny"};

/// Largest |value| over a file's grad.* tensors.
double largest_gradient(const io::SafetensorsFile& ref) {
  double largest = 0;
  for (const auto& [name, info] : ref.tensors())
    if (name.rfind("grad.", 0) == 0)
      for (double v : ref.get<double>(name).data) largest = std::max(largest, std::abs(v));
  return largest;
}

/// A small random classifier for finite differences.
vitmae::ViTConfig small_config(Index labels, const char* act = "gelu") {
  vitmae::ViTConfig c;
  c.hidden_size = 8, c.num_hidden_layers = 1, c.num_attention_heads = 2, c.intermediate_size = 12;
  c.image_size = 8, c.patch_size = 4, c.num_channels = 2, c.hidden_act = act;
  c.id2label = vitmae::ViTConfig::default_labels(labels);
  return c;
}

}  // namespace

TEST_CASE_TEMPLATE("ViTForImageClassification matches transformers on every hf_vit case", Scalar, float, double) {
  for (const char* c : kCases) check_case<Scalar>(c);
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

TEST_CASE("classifier gradients match the float64 reference within 1e-12 of the largest gradient") {
  const auto m = vitmae::ViTForImageClassification<double>::from_pretrained(test::data("hf_vit/cls_tiny"));
  const io::SafetensorsFile f(test::data("hf_vit/cls_tiny/io.safetensors")),
      ref(test::data("hf_vit/cls_tiny/grads.safetensors"));
  auto grads = vitmae::train::zero_grads_like(m);
  Matrix<double> dpix = Matrix<double>::Zero(3, 3 * 32 * 32);
  const double loss =
      vitmae::train::forward_backward(m, f.get<double>("pixel_values"), fixture_labels<double>(f), grads, &dpix);
  const double ref_loss = ref.get<double>("loss_f64").data[0];
  CHECK(std::abs(loss - ref_loss) <= 1e-12 * std::abs(ref_loss));
  const double largest = largest_gradient(ref);
  double worst = 0;
  size_t seen = 0;
  grads.visit_parameters("", [&](const vitmae::Parameter<const double>& p) {
    REQUIRE(ref.contains("grad." + p.name));  // the position table is learned in ViT: it has a gradient
    ++seen;
    const auto e = ref.get<double>("grad." + p.name);
    REQUIRE(e.numel() == p.size);
    double d = 0;
    for (Index i = 0; i < p.size; ++i) d = std::max(d, std::abs(p.data[i] - e.data[static_cast<size_t>(i)]));
    INFO(p.name << ": max abs diff " << d << ", relative to the largest gradient " << d / largest);
    CHECK(d <= 1e-12 * largest);
    worst = std::max(worst, d / largest);
  });
  CHECK(seen == ref.tensors().size() - 2);  // every grad.* but pixel_values; loss_f64
  const auto e = ref.get<double>("grad.pixel_values");
  double d = 0;
  for (Index i = 0; i < dpix.size(); ++i) d = std::max(d, std::abs(dpix.data()[i] - e.data[static_cast<size_t>(i)]));
  CHECK(d <= 1e-12 * largest);
  MESSAGE("worst relative gradient error " << std::max(worst, d / largest));
}

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

TEST_CASE("finite differences: every loss type, interpolated positions, num_labels 0") {
  struct Case {
    Index labels;
    const char* problem;
    Index size;  // input side (8: the configured size; 12: interpolate_pos_encoding)
    double smoothing;
  };
  for (const Case& k : {Case{3, "", 8, 0.0}, Case{3, "", 12, 0.1}, Case{4, "multi_label_classification", 8, 0.0},
                        Case{1, "", 12, 0.0}, Case{0, "", 8, 0.0}}) {
    INFO("labels " << k.labels << " problem '" << k.problem << "' size " << k.size);
    vitmae::ViTConfig c = small_config(k.labels, "gelu_new");
    c.problem_type = k.problem;
    vitmae::ViTForImageClassification<double> m(c);
    std::mt19937_64 rng(7);
    m.init_weights(rng);
    m.vit.embeddings.cls_token.setRandom();
    m.vit.embeddings.position_embeddings.setRandom();
    const Index B = 3;
    vitmae::Tensor<double> px({B, 2, k.size, k.size});
    std::uniform_real_distribution<double> u(-1, 1);
    for (auto& v : px.data) v = u(rng);
    const bool integer = k.labels > 1 && std::string(k.problem).empty();
    const Index outputs = k.labels > 0 ? k.labels : c.hidden_size;  // num_labels 0: the CLS features, BCE on them
    const vitmae::Labels<double> y =
        integer ? vitmae::Labels<double>::of_classes({0, 2, -100})
                : vitmae::Labels<double>::of_targets(Matrix<double>::NullaryExpr(
                      B, outputs, [&] { return k.labels == 1 ? u(rng) : static_cast<double>(u(rng) > 0); }));
    vitmae::ForwardOptions opts;
    opts.interpolate_pos_encoding = k.size != 8;
    auto grads = vitmae::train::zero_grads_like(m);
    Matrix<double> dpix = Matrix<double>::Zero(B, 2 * k.size * k.size);
    vitmae::train::forward_backward(m, px, y, grads, &dpix, k.smoothing, opts);
    vitmae::ViTForImageClassification<double>::Cache cache;
    auto loss_at = [&] { return m.forward(px, opts, cache, &y, k.smoothing); };
    const double h = 1e-6;
    auto g = vitmae::parameter_list(grads);
    size_t i = 0;
    m.visit_parameters("", [&](const vitmae::Parameter<double>& p) {
      const auto& gp = g[i++];
      for (Index e : {Index(0), p.size / 2, p.size - 1}) {
        const double keep = p.data[e];
        p.data[e] = keep + h;
        const double up = loss_at();
        p.data[e] = keep - h;
        const double down = loss_at();
        p.data[e] = keep;
        INFO(p.name << "[" << e << "]");
        CHECK(gp.data[e] == doctest::Approx((up - down) / (2 * h)).epsilon(1e-5).scale(1e-3));
      }
    });
    for (Index e : {Index(0), dpix.size() / 3, dpix.size() - 1}) {
      const double keep = px.data[static_cast<size_t>(e)];
      px.data[static_cast<size_t>(e)] = keep + h;
      const double up = loss_at();
      px.data[static_cast<size_t>(e)] = keep - h;
      const double down = loss_at();
      px.data[static_cast<size_t>(e)] = keep;
      CHECK(dpix.data()[e] == doctest::Approx((up - down) / (2 * h)).epsilon(1e-5).scale(1e-3));
    }
  }
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

TEST_CASE("ViTConfig: HF's fields and defaults, id2label rules, errors naming the key") {
  const vitmae::ViTConfig d;
  CHECK(d.hidden_size == 768);
  CHECK(d.encoder_stride == 16);
  CHECK(d.num_labels() == 2);
  CHECK(d.id2label[1] == "LABEL_1");
  const auto c = vitmae::load_vit_config(test::data("hf_vit/cls_tiny/config.json"));
  CHECK(c.num_labels() == 10);
  CHECK(c.id2label[9] == "Ankle boot");
  CHECK(c.label_id("Sneaker") == 7);
  const auto j = c.to_json();
  CHECK(j["model_type"] == "vit");
  CHECK(j["architectures"][0] == "ViTForImageClassification");
  CHECK(j["label2id"]["Dress"] == 3);
  CHECK(j["id2label"]["3"] == "Dress");
  const auto back = vitmae::ViTConfig::from_json(j);
  CHECK(back.id2label == c.id2label);
  CHECK(back.hidden_size == c.hidden_size);
  CHECK(vitmae::ViTConfig::from_json(nlohmann::json{{"num_labels", 5}}).num_labels() == 5);
  CHECK_THROWS_WITH_AS(vitmae::ViTConfig::from_json(nlohmann::json{{"id2label", {{"0", "a"}, {"2", "b"}}}}, "x.json"),
                       doctest::Contains("x.json: 'id2label' key '2' is not a class index in 0 ... 1"), vitmae::Error);
  CHECK_THROWS_WITH_AS(vitmae::ViTConfig::from_json(nlohmann::json{{"problem_type", "ranking"}}, "x.json"),
                       doctest::Contains("x.json: 'problem_type' must be null"), vitmae::Error);
  CHECK_THROWS_WITH_AS(
      vitmae::ViTConfig::from_json(nlohmann::json{{"hidden_size", 10}, {"num_attention_heads", 3}}, "x.json"),
      doctest::Contains("'hidden_size' 10 is not a multiple of 'num_attention_heads' 3"), vitmae::Error);
  CHECK_THROWS_WITH_AS(c.label_id("Hat"), doctest::Contains("label 'Hat' is not one of the model's 10 labels"),
                       vitmae::Error);
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

TEST_CASE("Fashion-MNIST as Debian ships it (when dataset-fashion-mnist is installed)") {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!vitmae::io::file_exists(dir + "/t10k-labels-idx1-ubyte.gz")) {
    MESSAGE("dataset-fashion-mnist is not installed: the committed IDX fixtures above cover the reader");
    return;
  }
  // Expected values from Python's gzip module on the same files.
  const auto test_set = vitmae::train::LabelledDataset::fashion_mnist(dir, "t10k");
  CHECK(test_set.size() == 10000);
  CHECK(std::vector<std::int64_t>(test_set.labels().begin(), test_set.labels().begin() + 8) ==
        std::vector<std::int64_t>{9, 2, 1, 1, 6, 1, 4, 6});
  CHECK(test_set.classes[9] == "Ankle boot");
}

TEST_CASE("ImageFolder and list files: classes sorted, labels by folder or name, clear errors") {
  using vitmae::train::LabelledDataset;
  const std::string root = test::tmp_dir("image_folder");
  vitmae::io::Image8 px{2, 2, 3, std::vector<std::uint8_t>(12, 100)};
  test::write_pngs(root, {"dog/b.png", "dog/a.png", "cat/x/deep.png", "cat/c.png"}, px);
  const auto d = LabelledDataset::image_folder(root);
  CHECK(d.classes == std::vector<std::string>{"cat", "dog"});
  REQUIRE(d.size() == 4);
  CHECK(d.labels() == std::vector<std::int64_t>{0, 0, 1, 1});
  CHECK(d.source(0) == root + "/cat/c.png");
  CHECK(d.source(1) == root + "/cat/x/deep.png");
  CHECK(d.source(2) == root + "/dog/a.png");
  CHECK(d.image(3, 3).width == 2);
  vitmae::io::write_file_atomic(root + "/list.txt", "# comment\ndog/a.png dog\n\ncat/c.png cat\r\n");
  const auto l = LabelledDataset::list_file(root + "/list.txt");
  CHECK(l.classes == std::vector<std::string>{"cat", "dog"});
  CHECK(l.labels() == std::vector<std::int64_t>{1, 0});
  CHECK(l.source(0) == root + "/dog/a.png");
  vitmae::io::write_file_atomic(root + "/numbers.txt", "dog/a.png 1\ncat/c.png 0\n");
  CHECK(LabelledDataset::list_file(root + "/numbers.txt", {"cat", "dog"}).labels() == std::vector<std::int64_t>{1, 0});
  vitmae::io::write_file_atomic(root + "/bad.txt", "dog/a.png 7\n");
  CHECK_THROWS_WITH_AS(LabelledDataset::list_file(root + "/bad.txt", {"cat", "dog"}),
                       doctest::Contains("label 7 is out of range: 2 classes"), vitmae::Error);
  std::filesystem::create_directories(root + "/empty_root/bird");
  CHECK_THROWS_WITH_AS(LabelledDataset::image_folder(root + "/empty_root"),
                       doctest::Contains("class 'bird' has no image files"), vitmae::Error);
  // Validation classes are mapped onto the training set's; an unknown one is refused.
  auto v = LabelledDataset::list_file(root + "/list.txt");
  v.use_classes_of({"dog", "cat"});
  CHECK(v.labels() == std::vector<std::int64_t>{0, 1});
  CHECK_THROWS_WITH_AS(v.use_classes_of({"dog", "horse"}),
                       doctest::Contains("class 'cat' is not one of the training set's 2 classes"), vitmae::Error);
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

TEST_CASE(
    "LabelledDataset::open: folders, list files and fashion-mnist:DIR:SPLIT by their form, errors naming the spec") {
  using vitmae::train::LabelledDataset;
  CHECK_THROWS_WITH_AS(LabelledDataset::open("fashion-mnist:/nowhere"),
                       doctest::Contains("expected fashion-mnist:DIR:SPLIT"), vitmae::Error);
  CHECK_THROWS_WITH_AS(LabelledDataset::open("fashion-mnist:/nowhere:valid"),
                       doctest::Contains("SPLIT must be train or t10k, got 'valid'"), vitmae::Error);
  CHECK_THROWS_WITH_AS(LabelledDataset::open("fashion-mnist:/nowhere:t10k"),
                       doctest::Contains("/nowhere/t10k-images-idx3-ubyte.gz"), vitmae::Error);
  const std::string root = test::tmp_dir("open_spec");
  vitmae::io::Image8 px{2, 2, 3, std::vector<std::uint8_t>(12, 100)};
  test::write_pngs(root, {"b/1.png", "a/2.png"}, px);
  CHECK(LabelledDataset::open(root).classes == std::vector<std::string>{"a", "b"});
  io::write_file_atomic(root + "/list.txt", "b/1.png b\na/2.png a\n");
  CHECK(LabelledDataset::open(root + "/list.txt").size() == 2);
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

TEST_CASE("ImageFolder: a dangling link is skipped, the files after it are still found") {
  const std::string root = test::tmp_dir("image_folder_links");
  vitmae::io::Image8 px{2, 2, 3, std::vector<std::uint8_t>(12, 100)};
  test::write_pngs(root, {"a/1.png", "a/3.png", "b/1.png"}, px);
  std::filesystem::create_symlink(root + "/nowhere.png", root + "/a/2.png");
  std::filesystem::create_symlink(root + "/nowhere", root + "/c");  // not a class: no folder behind it
  const auto d = vitmae::train::LabelledDataset::image_folder(root);
  CHECK(d.classes == std::vector<std::string>{"a", "b"});
  CHECK(d.size() == 3);
  CHECK(vitmae::train::ImageDataset::open(root, 3).size() == 3);
}
