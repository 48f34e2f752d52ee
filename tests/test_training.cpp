// SPDX-License-Identifier: Apache-2.0
// Pre-training and the one training loop (train/): AdamW against the float64 reference, parameter
// kinds and the schedule, the trainer (the loss falls, resume is bit-exact, accumulation, clipping
// and threads against hand-made steps, checkpoints in HF's layout, stale temporaries), and the run
// around the loop (train/run.hpp, cli/): metrics.csv, the curves, the progress line, the command line.
#include "test_util.hpp"

#include <vitmae/cli/train_flags.hpp>
#include <vitmae/train.hpp>
#include <vitmae/train/run.hpp>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

namespace io = vitmae::io;
namespace train = vitmae::train;
using test::processor;
using test::tiny16_config;
using vitmae::Index;
using vitmae::Matrix;

namespace {

vitmae::ForPreTraining<float> fresh_model(const vitmae::Config& c, std::uint64_t seed = 1) {
  vitmae::ForPreTraining<float> m(c);
  std::mt19937_64 rng(seed);
  m.init_weights(rng);
  return m;
}

/// `batch` images of normal pixels for tiny16 (3 x 16 x 16) and their masking noise (16 patches).
std::pair<vitmae::Tensor<float>, Matrix<float>> random_batch(Index batch) {
  vitmae::Tensor<float> px({batch, 3, 16, 16});
  std::mt19937_64 rng(9);
  std::normal_distribution<float> nd;
  for (auto& v : px.data) v = nd(rng);
  Matrix<float> noise = vitmae::ops::uniform_noise<float>(batch, 16, rng);
  return {std::move(px), std::move(noise)};
}
/// Every parameter of a and b, bit for bit.
template <class S>
bool same_weights(const vitmae::ForPreTraining<S>& a, const vitmae::ForPreTraining<S>& b) {
  bool same = true;
  vitmae::visit_lockstep(
      a,
      [&](const vitmae::Parameter<const S>& x, const vitmae::Parameter<const S>& y) {
        if (std::memcmp(x.data, y.data, sizeof(S) * static_cast<size_t>(x.size)) != 0) {
          MESSAGE("differs: " << x.name);
          same = false;
        }
      },
      b);
  return same;
}

std::vector<std::vector<std::string>> csv_rows(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> cells;
    std::istringstream c(line);
    for (std::string cell; std::getline(c, cell, ',');) cells.push_back(cell);
    if (!line.empty() && line.back() == ',') cells.emplace_back();
    rows.push_back(cells);
  }
  return rows;
}

std::string fixed(double v, int digits) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", digits, v);
  return b;
}

/// Two separable classes of 3-dimensional features.
void features(vitmae::Matrix<double>& X, std::vector<std::int64_t>& y, int n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> noise(0, 0.3);
  X.resize(n, 3);
  y.resize(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    y[static_cast<size_t>(i)] = i % 2;
    for (int d = 0; d < 3; ++d) X(i, d) = (i % 2 ? 1.0 : -1.0) * (d + 1) + noise(rng);
  }
}

}  // namespace

// ---------------------------------------------------------------- optimiser and schedule

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

// ---------------------------------------------------------------- trainer

TEST_CASE("trainer: the loss falls on a fixed batch and on augmented photos") {
  const vitmae::Config c = tiny16_config();
  train::TrainOptions o;
  o.steps = 100;
  o.batch = 4;
  o.lr = 3e-3;
  o.warmup_steps = 2;
  o.threads = 2;
  train::Trainer<float> t(fresh_model(c), o);
  const std::string dir = test::tmp_dir("trainer_fall");
  io::write_file_atomic(dir + "/list.txt", test::data("images/coffee.png") + "\n" + test::data("images/astronaut.png") +
                                               "\n" + test::data("images/rocket.jpg") + "\n" +
                                               test::data("images/camera.png") + "\n");
  train::DataLoader<float> fixed_src(train::ImageDataset::open(dir + "/list.txt", 3), processor(16), {}, 4, 0, 1);
  const vitmae::Tensor<float> fixed = fixed_src.next();
  std::vector<double> losses;
  for (int s = 0; s < 100; ++s) losses.push_back(t.train_step([&] { return fixed; }).loss);
  auto mean10 = [](const std::vector<double>& l, size_t from) {
    double sum = 0;
    for (size_t i = from; i < from + 10; ++i) sum += l[i];
    return sum / 10;
  };
  MESSAGE("fixed batch: first ten " << mean10(losses, 0) << ", last ten " << mean10(losses, 90));
  CHECK(mean10(losses, 90) < 0.5 * mean10(losses, 0));
  CHECK(t.step() == 100);
  CHECK(t.history().size() == 100);

  train::Trainer<float> t2(fresh_model(c), o);
  train::DataLoader<float> loader(train::ImageDataset::open(dir + "/list.txt", 3), processor(16), {}, 4, 0, 2);
  std::vector<double> l2;
  for (int s = 0; s < 100; ++s) l2.push_back(t2.train_step([&] { return loader.next(); }).loss);
  MESSAGE("augmented photos: first ten " << mean10(l2, 0) << ", last ten " << mean10(l2, 90));
  CHECK(mean10(l2, 90) < 0.9 * mean10(l2, 0));  // measured 0.82: fresh crops every step keep a floor
}

TEST_CASE("trainer: N steps equal N/2 + checkpoint + resume + N/2, bit for bit") {
  const vitmae::Config c = tiny16_config();
  train::TrainOptions o;
  o.steps = 8;
  o.batch = 3;
  o.lr = 2e-3;
  o.warmup_steps = 2;
  o.clip_grad = 5.0;
  o.seed = 11;
  o.threads = 2;
  const std::string dir = test::tmp_dir("resume");
  io::write_file_atomic(dir + "/list.txt",
                        test::data("images/coffee.png") + "\n" + test::data("images/astronaut.png") + "\n");
  const auto data = train::ImageDataset::open(dir + "/list.txt", 3);
  const vitmae::ImageProcessor p = processor(16);

  train::Trainer<float> straight(fresh_model(c), o);
  {
    train::DataLoader<float> loader(data, p, {}, o.batch, o.seed, 2);
    while (straight.step() < o.steps) straight.train_step([&] { return loader.next(); });
  }
  {
    train::Trainer<float> first(fresh_model(c), o);
    train::DataLoader<float> loader(data, p, {}, o.batch, o.seed, 1);
    while (first.step() < o.steps / 2) first.train_step([&] { return loader.next(); });
    train::save_checkpoint(first, dir + "/half", p);
  }
  train::Trainer<float> resumed(fresh_model(c, 99), o);  // different start: resume must replace it
  train::resume(resumed, dir + "/half");
  CHECK(resumed.step() == 4);
  CHECK(resumed.history().size() == 4);
  train::DataLoader<float> loader(data, p, {}, o.batch, o.seed, 3, 2, resumed.step());
  while (resumed.step() < o.steps) resumed.train_step([&] { return loader.next(); });
  CHECK(same_weights(straight.model(), resumed.model()));
  CHECK(same_weights(straight.optimizer().exp_avg_sq(), resumed.optimizer().exp_avg_sq()));
  CHECK(same_weights(straight.optimizer().exp_avg(), resumed.optimizer().exp_avg()));
  for (size_t i = 0; i < 8; ++i) CHECK(straight.history()[i].loss == resumed.history()[i].loss);

  // Dropout is not implemented in training: refused, not ignored.
  vitmae::Config dropout = c;
  dropout.hidden_dropout_prob = 0.1;
  CHECK_THROWS_WITH_AS(train::Trainer<float>(fresh_model(dropout), o), doctest::Contains("dropout is not implemented"),
                       vitmae::Error);

  // A checkpoint from another batch size is refused with the reason.
  train::TrainOptions other = o;
  other.batch = 5;
  train::Trainer<float> wrong(fresh_model(c), other);
  CHECK_THROWS_WITH_AS(
      train::resume(wrong, dir + "/half"),
      doctest::Contains("the checkpoint was trained with batch 3, this run asks for 5; a resumed run must keep it"),
      vitmae::Error);
  // So are another schedule length, seed or thread count (the schedule, the data, the bits).
  for (auto [field, change] : {std::pair<const char*, int>{"steps", 0}, {"seed", 1}, {"threads", 2}}) {
    train::TrainOptions changed = o;
    if (change == 0) changed.steps = 9;
    if (change == 1) changed.seed = 77;
    if (change == 2) changed.threads = 1;
    train::Trainer<float> t(fresh_model(c), changed);
    const std::string expected = std::string("the checkpoint was trained with ") + field + " " +
                                 (change == 0   ? "8"
                                  : change == 1 ? std::to_string(o.seed)
                                                : std::to_string(o.threads)) +
                                 ", this run asks for " +
                                 (change == 0   ? "9"
                                  : change == 1 ? "77"
                                                : "1");
    CHECK_THROWS_WITH_AS(train::resume(t, dir + "/half"), doctest::Contains(expected.c_str()), vitmae::Error);
  }
}

TEST_CASE("trainer: gradient accumulation and clipping equal hand-made steps") {
  const vitmae::Config c = tiny16_config();
  std::mt19937_64 rng(5);
  vitmae::Tensor<float> a({3, 3, 16, 16}), b({3, 3, 16, 16});
  std::normal_distribution<float> nd;
  for (auto& v : a.data) v = nd(rng);
  for (auto& v : b.data) v = nd(rng);

  train::TrainOptions o;
  o.steps = 3;
  o.batch = 3;
  o.accum = 2;
  o.lr = 1e-3;
  o.warmup_steps = 0;
  o.clip_grad = 0.05;  // far below the gradient norm: the clip acts
  o.threads = 1;
  train::Trainer<float> t(fresh_model(c), o);
  int calls = 0;
  const train::StepRecord r = t.train_step([&] { return calls++ % 2 ? b : a; });
  CHECK(calls == 2);

  // By hand: mean of the two micro-batch gradients, clipped to norm 0.05, one AdamW step.
  auto m = fresh_model(c);
  auto g = train::zero_grads_like(m);
  const float la = train::forward_backward(m, a, train::mae_noise<float>(o.seed, 0, o.batch, c.num_patches()), g);
  const float lb = train::forward_backward(m, b, train::mae_noise<float>(o.seed, 1, o.batch, c.num_patches()), g);
  double sq = 0;
  g.visit_parameters("", [&](const vitmae::Parameter<float>& p) {
    if (!p.trainable()) return;
    p.values() *= 0.5f;
    sq += static_cast<double>(p.values().squaredNorm());
  });
  const double norm = std::sqrt(sq);
  CHECK(r.grad_norm == doctest::Approx(norm).epsilon(1e-5));
  CHECK(r.loss == doctest::Approx((la + lb) / 2.0).epsilon(1e-6));
  REQUIRE(norm > 0.05);
  g.visit_parameters(
      "", [&](const vitmae::Parameter<float>& p) { p.values() *= static_cast<float>(0.05 / (norm + 1e-6)); });
  train::AdamW<vitmae::ForPreTraining<float>> adam(m, train::AdamWOptions{0.9, 0.95, 1e-8, 0.05});
  adam.step(m, g, t.learning_rate(0));
  double worst = 0;
  vitmae::visit_lockstep(
      t.model(),
      [&](const vitmae::Parameter<float>& x, const vitmae::Parameter<float>& mine) {
        worst = std::max(worst, static_cast<double>((x.values() - mine.values()).cwiseAbs().maxCoeff()));
      },
      m);
  MESSAGE("largest weight difference from the hand-made step " << worst);
  CHECK(worst < 1e-6);
}

TEST_CASE("threads over the batch: the same loss and gradients as one thread") {
  const vitmae::Config c = tiny16_config();
  const auto m = fresh_model(c);
  const auto batch = random_batch(5);
  const auto& px = batch.first;
  const auto& noise = batch.second;
  auto g1 = train::zero_grads_like(m), g3 = train::zero_grads_like(m);
  const float l1 = train::forward_backward(m, px, noise, g1);
  train::ParallelBackward<float> pb;
  const float l3 = pb.run(m, px, noise, g3, 3);
  CHECK(l3 == doctest::Approx(l1).epsilon(1e-6));
  vitmae::visit_lockstep(
      g3,
      [&](const vitmae::Parameter<float>& x, const vitmae::Parameter<float>& a) {
        const auto r = test::allclose(x.data, a.data, x.size, 1e-4, 1e-6);
        INFO(x.name << ": " << r.message);
        CHECK(r.ok);
      },
      g1);
  // Run twice: the same bits (the twins are re-zeroed).
  auto g3b = train::zero_grads_like(m);
  CHECK(pb.run(m, px, noise, g3b, 3) == l3);
  CHECK(same_weights(g3, g3b));
}

TEST_CASE("gradients marked zero: the first product overwrites them, settling zeroes the rest") {
  auto products = [](auto zero) {
    using S = decltype(zero);
    std::mt19937_64 rng(4);
    std::normal_distribution<S> nd;
    Matrix<S> a(300, 130), b(300, 140);  // (11 MFLOP: split over the threads, when there are several)
    for (Index i = 0; i < a.size(); ++i) a.data()[i] = nd(rng);
    for (Index i = 0; i < b.size(); ++i) b.data()[i] = nd(rng);
    Matrix<S> plain = Matrix<S>::Zero(130, 140);
    vitmae::detail::gemm_tn_add(a, b, plain);  // (on zeros in memory)
    // Marked: its NaNs are never read; the second product adds.
    Matrix<S> marked = Matrix<S>::Constant(130, 140, std::numeric_limits<S>::quiet_NaN());
    vitmae::detail::PendingZeros::instance().add(marked.data(), sizeof(S) * static_cast<size_t>(marked.size()));
    vitmae::detail::gemm_tn_add(a, b, marked);
    CHECK(marked == plain);
    vitmae::detail::gemm_tn_add(a, b, marked);
    CHECK(marked == (plain * S(2)).eval());
    // Settled without a product: zeros; settled twice or never marked: untouched.
    Matrix<S> unwritten = Matrix<S>::Constant(5, 3, S(7));
    vitmae::detail::PendingZeros::instance().add(unwritten.data(), sizeof(S) * 15);
    vitmae::detail::PendingZeros::instance().settle(unwritten.data(), sizeof(S) * 15);
    CHECK(unwritten.isZero(0));
    unwritten.setConstant(S(7));
    vitmae::detail::PendingZeros::instance().settle(unwritten.data(), sizeof(S) * 15);
    CHECK(unwritten(4, 2) == S(7));
    // An entry of another size at the address (not this buffer's) is neither taken nor settled.
    vitmae::detail::PendingZeros::instance().add(unwritten.data(), sizeof(S) * 99);
    vitmae::detail::PendingZeros::instance().settle(unwritten.data(), sizeof(S) * 15);
    CHECK(unwritten(4, 2) == S(7));
    CHECK(vitmae::detail::PendingZeros::instance().size() == 0);
  };
  products(0.f);
  products(0.0);

  // A model's gradients holding a backward's values, marked zero, then a backward into them: the
  // bits of a backward into zeros. Marked and never written: zero once settled.
  const vitmae::Config c = tiny16_config();
  const auto m = fresh_model(c);
  const auto batch = random_batch(2);  // (not a structured binding: lambdas capture px)
  const auto& px = batch.first;
  const auto& noise = batch.second;
  for (const bool bf16 : {false, true}) {  // (bf16: oneDNN's bf16 matmul without and with its sum)
    if (bf16 && !vitmae::bfloat16_supported()) continue;
    const vitmae::BFloat16Products scope(bf16);
    auto zeros = train::zero_grads_like(m);
    train::forward_backward(m, px, noise, zeros);
    auto reused = train::zero_grads_like(m);
    train::forward_backward(m, px, noise, reused);  // (stale gradients, about to be marked zero)
    {
      const train::DeferredZeros<vitmae::ForPreTraining<float>> marked(reused);
      train::forward_backward(m, px, noise, reused);
    }
    INFO("bf16 " << bf16);
    CHECK(same_weights(zeros, reused));
  }
  // A trainer's steps (2 threads: the twins too, and 2 micro-batches) leave nothing marked.
  train::TrainOptions o;
  o.steps = 2, o.batch = 2, o.accum = 2, o.threads = 2, o.warmup_steps = 0;
  train::Trainer<float> t(fresh_model(c), o);
  t.train_step([&] { return px; });
  t.train_step([&] { return px; });
  CHECK(vitmae::detail::PendingZeros::instance().size() == 0);
  auto untouched = m;  // marked, no backward: every parameter zero once settled
  { const train::DeferredZeros<vitmae::ForPreTraining<float>> marked(untouched); }
  untouched.visit_parameters("", [&](const vitmae::Parameter<float>& p) {
    INFO(p.name);
    CHECK(p.values().isZero(0));
  });
}

TEST_CASE("trainer checkpoints: HF's names and shapes, bit-exact reload, loss curve files") {
  const vitmae::Config c = vitmae::load_config(test::data("hf/tiny/config.json"));
  train::TrainOptions o;
  o.steps = 2;
  o.batch = 2;
  o.threads = 1;
  train::Trainer<float> t(fresh_model(c), o);
  vitmae::Tensor<float> px({2, 3, 32, 32}, 0.25f);
  t.train_step([&] { return px; });
  t.train_step([&] { return px; });
  const std::string dir = test::tmp_dir("trainer_ckpt");
  const vitmae::ImageProcessor p = processor(32);
  train::save_checkpoint(t, dir + "/ck", p);
  const io::SafetensorsFile mine(dir + "/ck/model.safetensors"), ref(test::data("hf/tiny/model.safetensors"));
  REQUIRE(mine.tensors().size() == ref.tensors().size());
  for (const auto& [name, info] : ref.tensors()) {
    INFO(name);
    REQUIRE(mine.contains(name));
    CHECK(mine.info(name).shape == info.shape);
    CHECK(mine.info(name).dtype == io::DType::F32);
  }
  auto back = vitmae::ForPreTraining<float>::from_pretrained(dir + "/ck");
  CHECK(same_weights(back, t.model()));
  CHECK(vitmae::ImageProcessor::load(dir + "/ck/preprocessor_config.json").to_json() == p.to_json());
  const auto st = io::read_json_file(dir + "/ck/trainer_state.json");
  CHECK(st["step"] == 2);
  CHECK(st["history"].size() == 2);
  const std::string csv = test::slurp(dir + "/ck/loss.csv");
  CHECK(std::count(csv.begin(), csv.end(), '\n') == 3);
  CHECK(csv.rfind("step,loss,lr,grad_norm,seconds\n1,", 0) == 0);
  const std::string svg = train::loss_curve_svg(t.history());
  CHECK(svg.find("<polyline") != std::string::npos);
  CHECK(svg.find("</svg>") != std::string::npos);

  // Saving again replaces the folder whole; a failed save leaves the previous one intact.
  train::save_checkpoint(t, dir + "/ck", p);
  CHECK(std::system(("ls -a " + dir + " | grep -q tmp").c_str()) != 0);
  const std::string before = test::slurp(dir + "/ck/model.safetensors");
  t.train_step([&] { return px; });
  rlimit old{};
  getrlimit(RLIMIT_FSIZE, &old);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit small = old;
  small.rlim_cur = 10000;  // below model.safetensors: its write fails with EFBIG, as on a full disk
  REQUIRE(setrlimit(RLIMIT_FSIZE, &small) == 0);
  CHECK_THROWS_WITH_AS(train::save_checkpoint(t, dir + "/ck", p), doctest::Contains("File too large"), vitmae::Error);
  setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
  CHECK(test::slurp(dir + "/ck/model.safetensors") == before);
  CHECK(io::read_json_file(dir + "/ck/trainer_state.json")["step"] == 2);
  CHECK(std::system(("ls -a " + dir + " | grep -q tmp").c_str()) != 0);
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

// ---------------------------------------------------------------- the run around the loop

TEST_CASE(
    "TrainingRun: metrics.csv a row a step from the loop's own numbers, evaluations in it, the curves and per-class "
    "files") {
  const std::string dir = test::tmp_dir("training_run");
  vitmae::Matrix<double> X, V;
  std::vector<std::int64_t> y, yv;
  features(X, y, 40, 1);
  features(V, yv, 10, 2);
  train::ProbeOptions o;
  o.batch = 8, o.steps = 6, o.lr = 0.05, o.warmup_steps = 1;
  train::ProbeTraining<double> probe(X, y, 2, o);
  train::RunSettings s;
  s.program = "test", s.out = dir + "/out", s.save_every = 0, s.epoch_steps = 5, s.eval_every = 4;
  s.classes = {"minus", "plus"}, s.final = train::RunSettings::Final::none, s.eval_name = "V";
  std::vector<long> evaluated_at;
  train::TrainingRun<train::TrainingLoop<train::LinearProbing<double>>> run(
      probe.loop, s, vitmae::ImageProcessor(), [&](const train::LinearProbe<double>& p) {
        evaluated_at.push_back(probe.loop.step());
        return train::Evaluation::of(p.logits(V), yv);
      });
  const train::Evaluation& last = run.run([&] { return probe.next(); });
  CHECK(evaluated_at == std::vector<long>{4, 6});  // every 4 steps, and the last
  CHECK(run.finish().empty());                     // Final::none: no OUT/final
  CHECK_FALSE(io::file_exists(dir + "/out/final"));

  const std::string text = test::slurp(dir + "/out/metrics.csv");
  CHECK(text == run.metrics().text());
  const auto rows = csv_rows(text);
  REQUIRE(rows.size() == 7);
  CHECK(rows[0] == std::vector<std::string>{"step", "epoch", "loss", "lr", "grad_norm", "images_per_s", "val_top1",
                                            "val_top5", "val_loss"});
  const auto& history = probe.loop.history();
  REQUIRE(history.size() == 6);
  for (size_t k = 0; k < 6; ++k) {
    INFO(k);
    REQUIRE(rows[k + 1].size() == 9);
    CHECK(rows[k + 1][0] == std::to_string(k + 1));
    CHECK(rows[k + 1][1] == fixed(static_cast<double>(k + 1) / 5, 3));
    CHECK(rows[k + 1][2] == fixed(history[k].loss, 6));
    CHECK(rows[k + 1][3] == fixed(probe.loop.learning_rate(static_cast<long>(k)), 9));  // the schedule's rate of step k
    CHECK(rows[k + 1][4] == fixed(history[k].grad_norm, 6));
    CHECK(history[k].grad_norm > 0);
    CHECK(rows[k + 1][6].empty() == (k + 1 != 4 && k + 1 != 6));  // validation columns only where it ran
    CHECK(rows[k + 1][7].empty());                                // two classes: no top-5
  }
  // The last evaluation, computed again here on the trained head, is the last row's.
  const train::Evaluation again = train::Evaluation::of(probe.loop.model().logits(V), yv);
  CHECK(last.top1 == again.top1);
  CHECK(rows[6][6] == fixed(again.top1, 6));
  CHECK(rows[6][8] == fixed(again.loss, 6));
  CHECK(test::slurp(dir + "/out/per_class.csv") == again.per_class_csv(s.classes));
  CHECK(test::slurp(dir + "/out/confusion.csv") == again.confusion_csv(s.classes));
  CHECK(test::slurp(dir + "/out/loss.csv") == train::loss_csv(history));
  CHECK(test::slurp(dir + "/out/accuracy.svg").find("<svg") != std::string::npos);
  CHECK(run.metrics().accuracy().points.size() == 2);
  CHECK(run.metrics().accuracy().points[1].first == doctest::Approx(6.0 / 5));
  CHECK(run.metrics().accuracy().points[1].second == doctest::Approx(100 * again.top1));
}

TEST_CASE(
    "MetricsLog resumes a checkpoint's rows (or, without metrics.csv, its history) and refuses a file that is not "
    "one") {
  const std::string dir = test::tmp_dir("metrics_log");
  const std::string rows = std::string(train::MetricsLog::header) + "1,0.500,0.700000,0.001000000,1.500000,10.00,,,\n" +
                           "2,1.000,0.600000,0.002000000,1.200000,11.00,0.750000,,0.550000\n";
  for (const char* d : {"/ck", "/bad", "/cut"}) std::filesystem::create_directories(dir + d);
  io::write_file_atomic(dir + "/ck/metrics.csv", rows);
  train::MetricsLog log(dir + "/out/metrics.csv");
  log.resume(dir + "/ck", {}, 2, 8);
  CHECK(log.text() == rows);
  CHECK_FALSE(io::file_exists(dir + "/out/metrics.csv"));  // nothing written before a new row
  REQUIRE(log.accuracy().points.size() == 1);
  CHECK(log.accuracy().points[0] == std::make_pair(1.0, 75.0));
  const train::Evaluation* none = nullptr;
  log.add({3, 0.5, 0.003, 1.0, 0.5}, 1.5, 16, none);
  CHECK(test::slurp(dir + "/out/metrics.csv") == rows + "3,1.500,0.500000,0.003000000,1.000000,16.00,,,\n");

  // A checkpoint written before metrics.csv: its history, each step's images/s its own.
  train::MetricsLog old(dir + "/old.csv");
  old.resume(dir + "/nothing-here", {{1, 0.25, 0.5, 2.0, 0.5}}, 4, 8);
  CHECK(old.text() == std::string(train::MetricsLog::header) + "1,0.250,0.250000,0.500000000,2.000000,16.00,,,\n");

  io::write_file_atomic(dir + "/bad/metrics.csv", "step,loss\n1,2\n");
  train::MetricsLog bad(dir + "/x.csv");
  CHECK_THROWS_WITH_AS(bad.resume(dir + "/bad", {}, 1, 1),
                       doctest::Contains((dir + "/bad/metrics.csv: expected the header step,epoch").c_str()),
                       vitmae::Error);
  io::write_file_atomic(dir + "/cut/metrics.csv", std::string(train::MetricsLog::header) + "1,0.5\n");
  CHECK_THROWS_WITH_AS(bad.resume(dir + "/cut", {}, 1, 1),
                       doctest::Contains("metrics.csv: line 2 is not a row of numbers"), vitmae::Error);
}

TEST_CASE("the loss curve of a 4500-step run stays small and draws the moving average") {
  std::vector<train::StepRecord> h;
  std::mt19937_64 rng(0);
  std::uniform_real_distribution<double> noise(-0.05, 0.05);
  for (long s = 1; s <= 4500; ++s)
    h.push_back({s, 1.0 / std::sqrt(static_cast<double>(s)) + noise(rng), 1e-3, 1.0, 0.1 * static_cast<double>(s)});
  const std::string svg = train::loss_curve_svg(h);
  MESSAGE("loss.svg of 4500 steps: " << svg.size() << " bytes");
  CHECK(svg.size() < 40 * 1024);
  size_t polylines = 0;
  for (size_t at = svg.find("<polyline"); at != std::string::npos; at = svg.find("<polyline", at + 1)) ++polylines;
  CHECK(polylines == 2);
  CHECK(svg.find("moving average of 90") != std::string::npos);
}

TEST_CASE("the progress line: images/s counts training only, the ETA adds the evaluations to come") {
  const std::string dir = test::tmp_dir("progress_eta");
  vitmae::Matrix<double> X;
  std::vector<std::int64_t> y;
  features(X, y, 16, 3);
  train::ProbeOptions o;
  o.batch = 4, o.steps = 4, o.lr = 0.01;
  train::ProbeTraining<double> probe(X, y, 2, o);
  train::RunSettings s;
  s.program = "test", s.out = dir + "/out", s.save_every = 0, s.log_every = 1, s.eval_every = 2, s.epoch_steps = 4;
  s.classes = {"a", "b"}, s.final = train::RunSettings::Final::none;
  train::TrainingRun<train::TrainingLoop<train::LinearProbing<double>>> run(
      probe.loop, s, vitmae::ImageProcessor(), [&](const train::LinearProbe<double>& p) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1300));
        return train::Evaluation::of(p.logits(X), y);
      });
  // The lines go to stderr: to a file for the test.
  std::fflush(stderr);
  const int saved = ::dup(2);
  FILE* out = std::fopen((dir + "/err.txt").c_str(), "w");
  REQUIRE(out);
  ::dup2(::fileno(out), 2);
  const auto t0 = std::chrono::steady_clock::now();
  run.run([&] { return probe.next(); });
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  std::fclose(out);
  const std::string err = test::slurp(dir + "/err.txt");
  INFO(err);
  std::smatch m;
  // Step 3: one evaluation (1.3 s) measured and one to come, at step 4: the ETA holds it.
  REQUIRE(std::regex_search(
      err, m,
      std::regex("step 3/4  loss [0-9.]+  lr [0-9.e+-]+  ([0-9.]+) img/s  elapsed [0-9:]+  ETA 0:00:0([0-9])")));
  CHECK(m[2] == "1");
  // Training alone is far quicker than 12 images over the 1.3 s the first evaluation took.
  CHECK(std::stod(m[1]) > 3 * 12 / wall);
  REQUIRE(std::regex_search(err, m, std::regex("step 1/4 .* ETA 0:00:00\n")));  // no evaluation measured yet
}

TEST_CASE("the training command line records paths absolutely, so that --resume works from any folder") {
  const std::string dir = test::tmp_dir("cli_paths");
  io::write_file_atomic(dir + "/list.txt", "a.png\n");
  const auto before = std::filesystem::current_path();
  std::filesystem::current_path(dir);
  vitmae::cli::TrainArgs a;
  vitmae::train::TrainOptions o;
  vitmae::cli::CommandLine cl("vitmae-test", "usage\n");
  vitmae::cli::add_shared_flags(cl, a, o, "data", "10");
  const char* argv[] = {"vitmae-test", "--data", "list.txt", "--out", "o", "--steps", "3"};
  cl.parse(7, const_cast<char**>(argv));
  const nlohmann::json rec = cl.recorded();
  CHECK(rec["--data"] == (std::filesystem::path(dir) / "list.txt").lexically_normal().string());
  CHECK(rec["--steps"] == "3");
  // The same file given relatively from its folder agrees with the record; another is refused.
  vitmae::cli::TrainArgs b;
  vitmae::cli::CommandLine again("vitmae-test", "usage\n");
  vitmae::cli::add_shared_flags(again, b, o, "data", "10");
  const char* argv2[] = {"vitmae-test", "--data", "./list.txt"};
  again.parse(3, const_cast<char**>(argv2));
  CHECK_NOTHROW(again.resume_from(rec, "state.json"));
  CHECK(b.steps == 3);  // taken from the record
  io::write_file_atomic(dir + "/other.txt", "b.png\n");
  vitmae::cli::TrainArgs c;
  vitmae::cli::CommandLine third("vitmae-test", "usage\n");
  vitmae::cli::add_shared_flags(third, c, o, "data", "10");
  const char* argv3[] = {"vitmae-test", "--data", "other.txt"};
  third.parse(3, const_cast<char**>(argv3));
  CHECK_THROWS_WITH_AS(third.resume_from(rec, "state.json"),
                       doctest::Contains(("the run was started with --data " + dir + "/list.txt").c_str()),
                       vitmae::cli::UsageError);
  std::filesystem::current_path(before);
}
