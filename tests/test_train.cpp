// SPDX-License-Identifier: Apache-2.0
// The backward pass: every gradient of the reference (grads.safetensors, float64) and
// finite-difference checks on small random shapes.
#include "test_util.hpp"

#include <vitmae/train.hpp>

#include <limits>
#include <map>

namespace io = vitmae::io;
using vitmae::Index;
using vitmae::Matrix;

namespace {

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

}  // namespace

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

TEST_CASE("12 AdamW steps of the float64 reference: every loss and every weight within 1e-12") {
  auto m = vitmae::ViTMAEForPreTraining<double>::from_pretrained(test::data("hf/tiny"));
  const io::SafetensorsFile ref(test::data("hf/tiny/train_steps.safetensors"));
  const auto px = ref.get<double>("pixel_values");  // [12, 4, 3, 32, 32]
  const auto noise = ref.get<double>("noise");      // [12, 4, 64]
  const auto lr = ref.get<double>("lr").data;
  const auto losses = ref.get<double>("loss").data;
  vitmae::train::AdamW<vitmae::ForPreTraining<double>> opt(m);
  CHECK(opt.options().beta2 == 0.95);
  CHECK(opt.options().weight_decay == 0.05);
  const Index per = 4 * 3 * 32 * 32;
  auto grads = vitmae::train::zero_grads_like(m);
  vitmae::ForPreTraining<double>::Cache cache;  // reused across steps, as a training loop does
  for (Index s = 0; s < 12; ++s) {
    vitmae::Tensor<double> batch({4, 3, 32, 32});
    std::copy(px.data.begin() + s * per, px.data.begin() + (s + 1) * per, batch.data.begin());
    const Matrix<double> n = Eigen::Map<const Matrix<double>>(noise.ptr() + s * 4 * 64, 4, 64);
    vitmae::train::zero_parameters(grads);
    const double loss =
        vitmae::train::forward_backward(m, batch, n, grads, nullptr, 0.0, vitmae::ForwardOptions{}, &cache);
    INFO("step " << s << " loss " << loss << " reference " << losses[static_cast<size_t>(s)]);
    CHECK(std::abs(loss - losses[static_cast<size_t>(s)]) <= 1e-12 * std::abs(losses[static_cast<size_t>(s)]));
    opt.step(m, grads, lr[static_cast<size_t>(s)]);
  }
  // Every weight, the key projections' biases included: their true gradient is exactly zero
  // (a constant added to every score of a row leaves the softmax unchanged), so only rounding
  // noise moves them; with the softmax in float64 in the reference too, that noise is ~1e-16
  // on both sides and Adam's amplification of it stays far below 1e-12.
  size_t compared = 0;
  double worst = 0;
  std::string worst_name;
  m.visit_parameters("", [&](const vitmae::Parameter<const double>& p) {
    REQUIRE(ref.contains("final." + p.name));
    ++compared;
    const auto e = ref.get<double>("final." + p.name);
    REQUIRE(e.numel() == p.size);
    for (Index i = 0; i < p.size; ++i) {
      const double d = std::abs(p.data[i] - e.data[static_cast<size_t>(i)]);
      if (d > worst) worst = d, worst_name = p.name;
    }
  });
  MESSAGE("largest weight difference after 12 steps: " << worst << " (" << worst_name << ")");
  CHECK(worst <= 1e-12);
  CHECK(compared == 78);  // final.* holds every tensor, the unchanged position tables included
}

TEST_CASE("parameter kinds decide the optimiser's groups and the frozen tables") {
  vitmae::Config c;
  c.hidden_size = 16, c.num_hidden_layers = 1, c.num_attention_heads = 2, c.intermediate_size = 24;
  c.decoder_hidden_size = 8, c.decoder_num_hidden_layers = 1, c.decoder_num_attention_heads = 2,
  c.decoder_intermediate_size = 12;
  c.image_size = 8, c.patch_size = 2;
  const vitmae::ForPreTraining<double> m(c);
  std::map<std::string, vitmae::ParamKind> kind;
  m.visit_parameters("", [&](const vitmae::Parameter<const double>& p) { kind[p.name] = p.kind; });
  using K = vitmae::ParamKind;
  CHECK(kind.at("vit.embeddings.cls_token") == K::token);
  CHECK(kind.at("decoder.mask_token") == K::token);
  CHECK(kind.at("vit.embeddings.position_embeddings") == K::fixed_table);
  CHECK(kind.at("decoder.decoder_pos_embed") == K::fixed_table);
  CHECK(kind.at("vit.embeddings.patch_embeddings.projection.weight") == K::weight);
  CHECK(kind.at("vit.embeddings.patch_embeddings.projection.bias") == K::bias);
  CHECK(kind.at("vit.encoder.layer.0.attention.attention.key.weight") == K::weight);
  CHECK(kind.at("vit.encoder.layer.0.layernorm_before.weight") == K::norm);
  CHECK(kind.at("vit.encoder.layer.0.layernorm_before.bias") == K::bias);
  CHECK(kind.at("decoder.decoder_pred.bias") == K::bias);
  // One step with a gradient of one everywhere and zero moments: every trainable entry moves by
  // lr (Adam's first step is lr * sign(g)), weights also shrink by lr * wd * w; tables stay.
  auto model = m;
  std::mt19937_64 rng(1);
  model.init_weights(rng);
  const auto before = model;
  auto grads = vitmae::train::zero_grads_like(model);
  grads.visit_parameters("", [](const vitmae::Parameter<double>& p) { p.values().setOnes(); });
  vitmae::train::AdamW<vitmae::ForPreTraining<double>> opt(model, {0.9, 0.999, 1e-8, 0.1});
  opt.step(model, grads, 0.01);
  vitmae::visit_lockstep(
      model,
      [&](const vitmae::Parameter<double>& p, const vitmae::Parameter<const double>& b) {
        INFO(p.name);
        for (Index i = 0; i < p.size; ++i) {
          double expected = b.data[i];
          if (p.kind == K::weight) expected *= 1 - 0.01 * 0.1;
          if (p.kind != K::fixed_table) expected -= 0.01 / (1 + 1e-8);  // lr * m̂ / (sqrt(v̂) + eps), m̂ = v̂ = 1
          CHECK(p.data[i] == doctest::Approx(expected).epsilon(1e-12));
        }
      },
      before);
}

TEST_CASE("learning-rate schedule: linear warm-up then cosine") {
  using vitmae::train::mae_learning_rate;
  CHECK(mae_learning_rate(0, 10, 110, 1e-3) == 0.0);
  CHECK(mae_learning_rate(5, 10, 110, 1e-3) == doctest::Approx(5e-4));
  CHECK(mae_learning_rate(10, 10, 110, 1e-3) == doctest::Approx(1e-3));
  CHECK(mae_learning_rate(60, 10, 110, 1e-3) == doctest::Approx(5e-4));
  CHECK(mae_learning_rate(110, 10, 110, 1e-3) == doctest::Approx(0.0));
}

TEST_CASE("AdamW's vectorised sqrt is correctly rounded (Eigen's packet sqrt is an estimate under EIGEN_FAST_MATH)") {
  auto check = [](auto zero) {
    using S = decltype(zero);
    using Array = Eigen::Array<S, Eigen::Dynamic, 1>;
    std::mt19937_64 rng(5);
    std::uniform_real_distribution<double> u(-40, 40);
    Array x(1037);  // packets and a scalar tail
    for (Index i = 0; i < x.size(); ++i) x(i) = static_cast<S>(std::pow(10.0, u(rng) / 4));
    x(0) = 0, x(1) = std::numeric_limits<S>::infinity(), x(2) = std::numeric_limits<S>::denorm_min();
    x(17) = std::numeric_limits<S>::min() / 3, x(18) = std::numeric_limits<S>::max();
    const Array a = x.unaryExpr(vitmae::detail::ExactSqrt<S>());
    for (Index i = 0; i < x.size(); ++i) {
      INFO(i, " ", x(i));
      CHECK(a(i) == std::sqrt(x(i)));
    }
  };
  check(0.f);
  check(0.0);
  // So a gradient whose square overflows leaves a weight where torch leaves it (m / inf = 0),
  // where Eigen's estimate gave NaN.
  vitmae::ForPreTraining<float> m(vitmae::load_config(test::data("hf/tiny/config.json")));
  std::mt19937_64 rng(2);
  m.init_weights(rng);
  const auto before = m;
  auto g = vitmae::train::zero_grads_like(m);
  g.visit_parameters("", [](const vitmae::Parameter<float>& p) { p.values().setConstant(1e30f); });
  vitmae::train::AdamW<vitmae::ForPreTraining<float>> opt(m, {0.9, 0.95, 1e-8, 0.0});
  opt.step(m, g, 1e-3);
  const auto& w = m.vit.encoder.layer[0].intermediate.dense.weight;
  CHECK(w.allFinite());
  CHECK(w == before.vit.encoder.layer[0].intermediate.dense.weight);
}

TEST_CASE(
    "what a killed checkpoint write leaves is hidden, ignored by CheckpointRotation and removed by "
    "remove_stale_temporaries") {
  namespace fs = std::filesystem;
  const std::string dir = test::tmp_dir("stale_temporaries");
  const std::string dead = "999999999";  // beyond Linux's largest pid_max (2^22): no such process
  const std::string alive = std::to_string(static_cast<long>(::getpid()));
  for (const std::string& d :
       std::vector<std::string>{"checkpoint-2", "checkpoint-4", ".checkpoint-6.tmp-" + dead,
                                ".checkpoint-8.tmp-" + alive, ".checkpoint-4.old-" + dead, ".checkpoint-9.old-" + dead})
    fs::create_directories(dir + "/" + d);
  vitmae::io::write_file_atomic(dir + "/loss.csv.tmp." + dead, "half");
  vitmae::io::write_file_atomic(dir + "/loss.csv", "whole");
  // --resume's rotation adopts the two whole checkpoints only: keeping 2, a third removes checkpoint-2.
  vitmae::train::CheckpointRotation rotation(dir, 2, true);
  fs::create_directories(rotation.dir(10));
  rotation.added(10);
  CHECK_FALSE(fs::exists(dir + "/checkpoint-2"));
  CHECK(fs::exists(dir + "/checkpoint-4"));
  // Removed: the dead process's temporaries, and a folder moved aside whose successor is in place.
  CHECK(vitmae::io::remove_stale_temporaries(dir) == 3);
  CHECK_FALSE(fs::exists(dir + "/.checkpoint-6.tmp-" + dead));
  CHECK_FALSE(fs::exists(dir + "/loss.csv.tmp." + dead));
  CHECK_FALSE(fs::exists(dir + "/.checkpoint-4.old-" + dead));
  CHECK(fs::exists(dir + "/.checkpoint-9.old-" + dead));   // the only copy of checkpoint-9: kept
  CHECK(fs::exists(dir + "/.checkpoint-8.tmp-" + alive));  // a running writer's
  CHECK(test::slurp(dir + "/loss.csv") == "whole");
  CHECK(vitmae::io::remove_stale_temporaries(dir + "/missing") == 0);
  // An OUT that cannot be created is refused before anything is written.
  CHECK_NOTHROW(vitmae::io::require_can_create(dir + "/new/deeper"));
  CHECK_FALSE(fs::exists(dir + "/new"));
  CHECK_THROWS_WITH_AS(vitmae::io::require_can_create(dir + "/loss.csv/x"), doctest::Contains("cannot create folder"),
                       vitmae::Error);
}
