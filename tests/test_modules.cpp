// SPDX-License-Identifier: Apache-2.0
// The modules as the models compose them (modules/, weights/): the parameter list each visits (HF's
// keys and shapes, also without storage), init_weights, and backward: every gradient of the float64
// references (grads.safetensors) and finite differences on small random shapes, both heads.
#include "test_util.hpp"

#include <vitmae/train.hpp>

#include <limits>
#include <map>

namespace io = vitmae::io;
using test::file_names;
using test::fixture_labels;
using test::small_config;
using vitmae::Index;
using vitmae::Matrix;

namespace {

vitmae::Config tiny_config() { return vitmae::load_config(test::data("hf/tiny/config.json")); }

/// name -> shape of every parameter the module visits, with HF's shapes.
template <class Module>
std::map<std::string, std::vector<std::int64_t>> visited(Module& m) {
  std::map<std::string, std::vector<std::int64_t>> names;
  m.visit_parameters("",
                     [&](const auto& p) { names[p.name] = std::vector<std::int64_t>(p.shape.begin(), p.shape.end()); });
  return names;
}

/// Compares every grad.* tensor of the case with the library's, relative to the largest
/// reference gradient (grad.* only: loss_f64 is not a gradient). Returns the worst relative
/// error seen.
double check_grads(const std::string& dir, double rel_tol) {
  INFO(dir);
  const auto m = vitmae::ViTMAEForPreTraining<double>::from_pretrained(test::data(dir));
  const io::SafetensorsFile io_ref(test::data(dir + "/io.safetensors")), ref(test::data(dir + "/grads.safetensors"));
  const auto px = io_ref.get<double>("pixel_values");
  const auto nt = io_ref.get<double>("noise");
  auto grads = vitmae::train::zero_grads_like(m);
  Matrix<double> dpix;
  const Matrix<double> noise = Eigen::Map<const Matrix<double>>(nt.ptr(), nt.size(0), nt.size(1));
  const double loss = vitmae::train::forward_backward(m, px, noise, grads, &dpix);
  const double ref_loss = ref.get<double>("loss_f64").data[0];
  INFO("loss " << loss << " reference " << ref_loss);
  CHECK(std::abs(loss - ref_loss) <= 1e-12 * std::abs(ref_loss));
  double largest = 0;
  for (const auto& [name, info] : ref.tensors()) {
    if (name.rfind("grad.", 0) != 0) continue;
    const auto g = ref.get<double>(name);
    for (double v : g.data) largest = std::max(largest, std::abs(v));
  }
  double worst = 0;
  size_t seen = 0;
  grads.visit_parameters("", [&](const vitmae::Parameter<const double>& p) {
    CHECK(ref.contains("grad." + p.name) == p.trainable());  // position tables are frozen: no gradient
    if (!p.trainable()) return;
    ++seen;
    const auto e = ref.get<double>("grad." + p.name);
    REQUIRE(e.numel() == p.size);
    double d = 0;
    for (Index i = 0; i < p.size; ++i) d = std::max(d, std::abs(p.data[i] - e.data[static_cast<size_t>(i)]));
    worst = std::max(worst, d / largest);
    INFO(p.name << ": max abs diff " << d << ", relative to the largest gradient " << d / largest);
    CHECK(d <= rel_tol * largest);
  });
  CHECK(seen + 1 == ref.tensors().size() - 1);  // every grad.* but pixel_values (and loss_f64)
  const auto e = ref.get<double>("grad.pixel_values");
  double d = 0;
  for (Index i = 0; i < dpix.size(); ++i) d = std::max(d, std::abs(dpix.data()[i] - e.data[static_cast<size_t>(i)]));
  INFO("grad.pixel_values: max abs diff " << d);
  CHECK(d <= rel_tol * largest);
  return std::max(worst, d / largest);
}

/// Largest |value| over a file's grad.* tensors.
double largest_gradient(const io::SafetensorsFile& ref) {
  double largest = 0;
  for (const auto& [name, info] : ref.tensors())
    if (name.rfind("grad.", 0) == 0)
      for (double v : ref.get<double>(name).data) largest = std::max(largest, std::abs(v));
  return largest;
}

}  // namespace

TEST_CASE("visit_parameters yields exactly the HF state-dict keys and shapes") {
  vitmae::ForPreTraining<float> m(tiny_config());
  CHECK(visited(m) == file_names(test::data("hf/tiny/model.safetensors")));
  vitmae::Model<float> enc(tiny_config());
  CHECK(visited(enc) == file_names(test::data("formats/encoder_only/model.safetensors")));
  // qkv_bias false: no query/key/value biases.
  vitmae::ForPreTraining<float> nb(vitmae::load_config(test::data("hf/tiny_normpix_gelu_new/config.json")));
  CHECK(visited(nb) == file_names(test::data("hf/tiny_normpix_gelu_new/model.safetensors")));
}

TEST_CASE("tensor_specs: a model built without storage visits what an allocated one visits, and allocates nothing") {
  std::vector<vitmae::Config> configs;
  const vitmae::Config tiny = vitmae::load_config(test::data("hf/tiny/config.json"));
  configs.push_back(tiny);
  configs.push_back(vitmae::load_config(test::data("hf/tiny_gray_p8/config.json")));
  configs.push_back(vitmae::load_config(test::data("hf/tiny_normpix_gelu_new/config.json")));  // qkv_bias false
  vitmae::Config c = tiny;
  c.num_hidden_layers = 0, c.decoder_num_hidden_layers = 3, c.image_size = 48, c.patch_size = 16, c.num_channels = 4;
  configs.push_back(c);
  c = tiny;
  c.decoder_num_hidden_layers = 0, c.hidden_size = 24, c.num_attention_heads = 3, c.intermediate_size = 40,
  c.qkv_bias = false;
  configs.push_back(c);
  for (const vitmae::Config& cfg : configs) {
    INFO(cfg.to_json().dump());
    auto compare = [&](const auto& model, const std::vector<vitmae::TensorSpec>& specs) {
      using M = std::decay_t<decltype(model)>;
      std::vector<vitmae::TensorSpec> visited;
      model.visit_parameters("", [&](const auto& p) {
        visited.push_back({p.name, std::vector<std::int64_t>(p.shape.begin(), p.shape.end()), p.kind, {}});
      });
      const M shapes(model.config(), vitmae::Storage::none);
      size_t stored = 0;
      shapes.visit_parameters("", [&](const auto& p) { stored += p.data != nullptr || p.size != 0; });
      CHECK(stored == 0);
      REQUIRE(specs.size() == visited.size());
      for (size_t i = 0; i < specs.size(); ++i) {
        INFO(visited[i].name);
        CHECK(specs[i].name == visited[i].name);
        CHECK(specs[i].shape == visited[i].shape);
        CHECK(specs[i].kind == visited[i].kind);
        CHECK(specs[i].from.size() == specs[i].shape.size());
      }
    };
    compare(vitmae::ForPreTraining<float>(cfg), vitmae::tensor_specs<vitmae::ForPreTraining<float>>(cfg));
    const vitmae::ViTConfig vit = vitmae::ViTConfig::from_mae(cfg, {"a", "b", "c"});
    compare(vitmae::ViTForImageClassification<float>(vit),
            vitmae::tensor_specs<vitmae::ViTForImageClassification<float>>(vit));
    // Model and ViTModel hold their config as a member, not a function: compared here.
    std::vector<vitmae::TensorSpec> encoder = vitmae::tensor_specs<vitmae::Model<double>>(cfg);
    std::vector<std::string> names;
    vitmae::Model<double>(cfg).visit_parameters("", [&](const auto& p) { names.push_back(p.name); });
    REQUIRE(encoder.size() == names.size());
    for (size_t i = 0; i < names.size(); ++i) CHECK(encoder[i].name == names[i]);
    CHECK(vitmae::tensor_specs<vitmae::ViTModel<float>>(vit).size() == names.size());
  }
}

TEST_CASE("init_weights: seeded, HF's scheme") {
  vitmae::ForPreTraining<double> a(tiny_config()), b(tiny_config());
  std::mt19937_64 r1(123), r2(123);
  a.init_weights(r1);
  b.init_weights(r2);
  CHECK(a.decoder.decoder_pred.weight == b.decoder.decoder_pred.weight);
  CHECK(a.vit.embeddings.patch_embeddings.projection.weight == b.vit.embeddings.patch_embeddings.projection.weight);
  // Linear weights ~ N(0, 0.02): 64*128 samples.
  const auto& w = a.vit.encoder.layer[0].intermediate.dense.weight;
  const double mean = w.mean();
  const double sd = std::sqrt((w.array() - mean).square().mean());
  CHECK(std::abs(mean) < 0.002);
  CHECK(sd == doctest::Approx(0.02).epsilon(0.05));
  CHECK(a.vit.encoder.layer[0].intermediate.dense.bias.isZero());
  CHECK(a.vit.layernorm.weight.isOnes());
  // xavier_uniform on (hidden, C*p*p): bound sqrt(6 / (48 + 64)).
  const auto& pw = a.vit.embeddings.patch_embeddings.projection.weight;
  CHECK(pw.cwiseAbs().maxCoeff() <= std::sqrt(6.0 / 112.0));
  CHECK(pw.cwiseAbs().maxCoeff() > 0.9 * std::sqrt(6.0 / 112.0));
  CHECK(a.vit.embeddings.position_embeddings == vitmae::ops::get_2d_sincos_pos_embed<double>(64, 8, 8, true));
  CHECK(a.decoder.decoder_pos_embed == vitmae::ops::get_2d_sincos_pos_embed<double>(32, 8, 8, true));
  CHECK_FALSE(a.vit.embeddings.cls_token.isZero());
  CHECK_FALSE(a.decoder.mask_token.isZero());
}

TEST_CASE("gradients of hf/tiny match the float64 reference within 1e-12 of the largest gradient") {
  MESSAGE("worst relative error " << check_grads("hf/tiny", 1e-12));
}

TEST_CASE("gradients of hf/tiny_normpix_gelu_new match the float64 reference within 1e-12 of the largest gradient") {
  MESSAGE("worst relative error " << check_grads("hf/tiny_normpix_gelu_new", 1e-12));
}

TEST_CASE("finite differences: every activation, qkv bias on and off, norm_pix_loss, 1 and 3 channels") {
  // Central differences of the loss in double against the analytic gradient, for a sample of
  // entries of every parameter, on small random models.
  struct Case {
    const char* act;
    bool qkv_bias, norm_pix;
    int channels;
  };
  const Case cases[] = {{"gelu", true, false, 3},       {"gelu_new", false, true, 3}, {"gelu_fast", true, true, 1},
                        {"quick_gelu", true, false, 3}, {"relu", false, false, 1},    {"silu", true, true, 3},
                        {"tanh", true, false, 3},       {"sigmoid", false, true, 3},  {"mish", true, false, 3}};
  for (const Case& cs : cases) {
    INFO("activation " << cs.act << " qkv_bias " << cs.qkv_bias << " norm_pix " << cs.norm_pix << " channels "
                       << cs.channels);
    vitmae::Config c;
    c.hidden_size = 16, c.num_hidden_layers = 2, c.num_attention_heads = 2, c.intermediate_size = 24;
    c.decoder_hidden_size = 8, c.decoder_num_hidden_layers = 1, c.decoder_num_attention_heads = 2,
    c.decoder_intermediate_size = 12;
    c.image_size = 8, c.patch_size = 2, c.num_channels = cs.channels, c.mask_ratio = 0.5;
    c.hidden_act = cs.act, c.qkv_bias = cs.qkv_bias, c.norm_pix_loss = cs.norm_pix, c.layer_norm_eps = 1e-6;
    c.initializer_range = 0.3;  // large weights exercise the non-linearities
    vitmae::ForPreTraining<double> m(c);
    std::mt19937_64 rng(7);
    m.init_weights(rng);
    vitmae::NormalGenerator<std::mt19937_64> g(rng);
    m.visit_parameters("", [&](const vitmae::Parameter<double>& p) {
      if (p.trainable())
        for (Index i = 0; i < p.size; ++i) p.data[i] += 0.1 * g();  // non-trivial norms and biases
    });
    vitmae::Tensor<double> px({2, c.num_channels, 8, 8});
    for (auto& v : px.data) v = g();
    const Matrix<double> noise = vitmae::ops::uniform_noise<double>(2, 16, rng);
    auto grads = vitmae::train::zero_grads_like(m);
    Matrix<double> dpix;
    const double loss = vitmae::train::forward_backward(m, px, noise, grads, &dpix);
    CHECK(loss == doctest::Approx(m.forward(px, noise).loss).epsilon(1e-12));
    auto probe = [&](double& value, double analytic, const std::string& what) {
      const double h = 1e-5, saved = value;
      value = saved + h;
      const double up = m.forward(px, noise).loss;
      value = saved - h;
      const double down = m.forward(px, noise).loss;
      value = saved;
      const double numeric = (up - down) / (2 * h);
      INFO(what << ": analytic " << analytic << " numeric " << numeric);
      CHECK(std::abs(analytic - numeric) <= 1e-6 * (1 + std::abs(numeric)));
    };
    vitmae::visit_lockstep(
        m,
        [&](const vitmae::Parameter<double>& p, const vitmae::Parameter<double>& g) {
          if (!p.trainable()) return;
          for (Index i : {Index(0), p.size / 2, p.size - 1})
            probe(p.data[i], g.data[i], p.name + "[" + std::to_string(i) + "]");
        },
        grads);
    for (Index i : {Index(0), Index(37), px.numel() - 1})
      probe(px.data[static_cast<size_t>(i)], dpix.data()[i], "pixel " + std::to_string(i));
  }
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
