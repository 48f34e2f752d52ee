// SPDX-License-Identifier: Apache-2.0
// Pre-training: the data pipeline (crop parameters, flip, determinism across worker counts,
// folders and list files), the trainer (loss falls, resume is bit-exact, accumulation and
// clipping against hand-made steps, checkpoints in HF's layout) and vitmae-pretrain end to end.
#include "test_util.hpp"

#include <vitmae/train.hpp>

#include <sys/resource.h>
#include <sys/wait.h>
#include <algorithm>
#include <csignal>
#include <fstream>
#include <regex>
#include <set>

namespace io = vitmae::io;
namespace train = vitmae::train;
using vitmae::Index;
using vitmae::Matrix;

namespace {

vitmae::Config tiny16_config() {
  vitmae::Config c = vitmae::load_config(test::data("hf/tiny/config.json"));
  c.image_size = 16;
  return c;
}

vitmae::ForPreTraining<float> fresh_model(const vitmae::Config& c, std::uint64_t seed = 1) {
  vitmae::ForPreTraining<float> m(c);
  std::mt19937_64 rng(seed);
  m.init_weights(rng);
  return m;
}

vitmae::ImageProcessor processor(int size) {
  vitmae::ImageProcessor p;
  p.height = p.width = size;
  p.resample = 3;
  return p;
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

using test::Run;

#ifdef VITMAE_PRETRAIN_EXE
Run run_pretrain(const std::string& args) { return test::run_program(VITMAE_PRETRAIN_EXE, args); }
#endif

}  // namespace

// ---------------------------------------------------------------- data

TEST_CASE("random resized crop: boxes inside the image, areas and ratios in range, torchvision's fallback") {
  train::AugmentOptions o;
  std::mt19937_64 rng(3);
  int in_range = 0;
  double smallest = 1, largest = 0;
  for (int i = 0; i < 2000; ++i) {
    const int H = 50 + i % 300, W = H / 2 + (i * 7) % (3 * H / 2);  // aspect 1/2 to 2: a fitting crop exists
    const train::CropBox b = train::random_resized_crop_box(H, W, o, rng);
    REQUIRE(b.top >= 0);
    REQUIRE(b.left >= 0);
    REQUIRE(b.top + b.height <= H);
    REQUIRE(b.left + b.width <= W);
    // Width and height are rounded to whole pixels, so allow half a pixel each way.
    const double h = b.height, w = b.width, area = static_cast<double>(H) * W;
    const bool ok =
        (w + 0.5) * (h + 0.5) >= 0.2 * area && (w + 0.5) / (h - 0.5) >= 0.75 && (w - 0.5) / (h + 0.5) <= 4.0 / 3.0;
    in_range += ok;
    smallest = std::min(smallest, w * h / area);
    largest = std::max(largest, w * h / area);
  }
  CHECK(in_range == 2000);
  MESSAGE("crop areas from " << smallest << " to " << largest << " of the image");
  CHECK(smallest < 0.25);  // the whole range is used
  CHECK(largest > 0.9);
  // A 10x1000 strip: no crop of area >= 20% fits the ratio range, so ten tries fail and the
  // fallback takes the full height with width round(10 * 4/3) = 13, centred: left (1000-13)/2.
  const train::CropBox f = train::random_resized_crop_box(10, 1000, o, rng);
  CHECK(f.top == 0);
  CHECK(f.height == 10);
  CHECK(f.width == 13);
  CHECK(f.left == 493);
  // And a 1000x10 column: width 10, height round(10 / (3/4)) = 13.
  const train::CropBox g = train::random_resized_crop_box(1000, 10, o, rng);
  CHECK(g.width == 10);
  CHECK(g.height == 13);
  CHECK(g.top == 493);
}

TEST_CASE("crop, flip and augment: pixels where they belong") {
  io::Image8 img{5, 3, 3, {}};
  for (int i = 0; i < 5 * 3 * 3; ++i) img.data.push_back(static_cast<std::uint8_t>(i * 3));
  const io::Image8 c = train::crop(img, {1, 2, 2, 3});
  REQUIRE(c.width == 3);
  REQUIRE(c.height == 2);
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 3; ++x)
      for (int ch = 0; ch < 3; ++ch) CHECK(c.at(y, x, ch) == img.at(y + 1, x + 2, ch));
  const io::Image8 f = train::hflip(img);
  for (int y = 0; y < 3; ++y)
    for (int x = 0; x < 5; ++x) CHECK(f.at(y, x, 1) == img.at(y, 4 - x, 1));
  CHECK_THROWS_WITH_AS(train::crop(img, {2, 0, 2, 5}), doctest::Contains("outside the 5x3 image"), vitmae::Error);
  const io::Image8 u = train::vflip(img), t = train::transpose(img);
  REQUIRE(t.width == 3);
  REQUIRE(t.height == 5);
  for (int y = 0; y < 3; ++y)
    for (int x = 0; x < 5; ++x)
      for (int ch = 0; ch < 3; ++ch) {
        CHECK(u.at(y, x, ch) == img.at(2 - y, x, ch));
        CHECK(t.at(x, y, ch) == img.at(y, x, ch));
      }

  // Without crop and flip, augment is exactly the processor's resize (HF's preprocessing).
  const io::Image8 photo = io::load_image(test::data("images/coffee.png"), 3);
  const vitmae::ImageProcessor p = processor(24);
  train::AugmentOptions none;
  none.random_crop = false;
  none.hflip = false;
  std::mt19937_64 rng(0);
  CHECK(train::augment(photo, p, none, rng).data == p.resize(photo).data);
  // The default options crop: the view is 24x24 and differs from the plain resize.
  const io::Image8 v = train::augment(photo, p, train::AugmentOptions{}, rng);
  CHECK(v.width == 24);
  CHECK(v.height == 24);
  CHECK(v.data != p.resize(photo).data);

  // The extras: every view is one of the 8 orientations of the plain resize, channels permuted.
  const io::Image8 base = p.resize(photo);
  train::AugmentOptions extras = none;
  extras.hflip = extras.vflip = extras.transpose = extras.channel_shuffle = true;
  std::set<std::vector<std::uint8_t>> seen;
  for (int i = 0; i < 400; ++i) {
    const io::Image8 w = train::augment(photo, p, extras, rng);
    bool found = false;
    for (int k = 0; k < 8 && !found; ++k) {
      io::Image8 o = base;
      if (k & 1) o = train::hflip(o);
      if (k & 2) o = train::vflip(o);
      if (k & 4) o = train::transpose(o);
      int perm[3] = {0, 1, 2};
      do {
        bool same = true;
        for (size_t j = 0; j < o.data.size() && same; ++j)
          same = w.data[j] == o.data[j - j % 3 + static_cast<size_t>(perm[j % 3])];
        found = same;
      } while (!found && std::next_permutation(perm, perm + 3));
    }
    CHECK(found);
    seen.insert(w.data);
  }
  CHECK(seen.size() == 48);  // 8 orientations x 6 channel orders, all drawn
}

TEST_CASE("datasets: a folder recursively, a list file, clear errors") {
  const std::string dir = test::tmp_dir("dataset");
  ::mkdir((dir + "/sub").c_str(), 0755);
  std::system(("cp '" + test::data("images/coffee.png") + "' '" + dir + "/b.png'").c_str());
  std::system(("cp '" + test::data("images/rocket.jpg") + "' '" + dir + "/sub/a.JPG'").c_str());
  io::write_file_atomic(dir + "/notes.txt", std::string("not an image"));
  const auto d = train::ImageDataset::open(dir, 3);
  REQUIRE(d.size() == 2);
  CHECK(d.files()[0] == dir + "/b.png");
  CHECK(d.files()[1] == dir + "/sub/a.JPG");
  CHECK(d.image(1)->width == 640);

  io::write_file_atomic(dir + "/list.txt", std::string("# training images\n\nsub/a.JPG\n  b.png  \n" +
                                                       test::data("images/camera.png") + "\n"));
  const auto l = train::ImageDataset::open(dir + "/list.txt", 3, 100);
  REQUIRE(l.size() == 3);
  CHECK(l.files()[0] == dir + "/sub/a.JPG");
  CHECK(l.files()[1] == dir + "/b.png");
  // shorter_side 100: the 640x427 rocket becomes round(640*100/427) x 100 = 150x100.
  CHECK(l.image(0)->width == 150);
  CHECK(l.image(0)->height == 100);
  CHECK(l.image(2)->channels == 3);  // grey camera converted for an RGB model

  const std::string empty = test::tmp_dir("dataset_empty");
  CHECK_THROWS_WITH_AS(train::ImageDataset::open(empty, 3), doctest::Contains("no image files found"), vitmae::Error);
  CHECK_THROWS_WITH_AS(train::ImageDataset::open(empty + "/nope.txt", 3),
                       doctest::Contains("not a folder or a readable list file"), vitmae::Error);
  io::write_file_atomic(dir + "/bad.txt", std::string("missing.png\n"));
  const auto bad = train::ImageDataset::open(dir + "/bad.txt", 3);
  train::DataLoader<float> loader(bad, processor(16), {}, 2, 0, 1);
  CHECK_THROWS_WITH_AS(loader.next(), doctest::Contains("missing.png"), vitmae::Error);
}

TEST_CASE("data loader: batch k depends on (seed, k) only, epochs are permutations") {
  const std::string dir = test::tmp_dir("loader");
  std::string list;
  for (const char* f : {"astronaut.png", "camera.png", "chelsea.png", "coffee.png", "rocket.jpg"})
    list += test::data(std::string("images/") + f) + "\n";
  io::write_file_atomic(dir + "/list.txt", list);
  const auto data = train::ImageDataset::open(dir + "/list.txt", 3);
  const long n = static_cast<long>(data.size());
  REQUIRE(n >= 5);

  train::DataLoader<float> one(data, processor(16), {}, 3, 7, 1), three(data, processor(16), {}, 3, 7, 3, 4);
  train::DataLoader<float> late(data, processor(16), {}, 3, 7, 2, 2, /*first_batch=*/4);
  std::vector<vitmae::Tensor<float>> batches;
  for (int k = 0; k < 6; ++k) {
    batches.push_back(one.next());
    CHECK(three.next().data == batches.back().data);
    CHECK(batches.back().shape == std::vector<Index>{3, 3, 16, 16});
  }
  CHECK(late.next().data == batches[4].data);
  CHECK(late.next().data == batches[5].data);
  CHECK(batches[0].data != batches[1].data);
  train::DataLoader<float> other_seed(data, processor(16), {}, 3, 8, 1);
  CHECK(other_seed.next().data != batches[0].data);
  for (long e = 0; e < 3; ++e) {
    std::set<size_t> seen;
    for (long i = 0; i < n; ++i) seen.insert(one.file_at(e * n + i));
    CHECK(static_cast<long>(seen.size()) == n);
  }
  // Normalisation: every value is (q/255 - 0.5)/0.5 for an 8-bit level q (an all-zero batch
  // would be level 127.5 everywhere), and the batch is not flat.
  double sum = 0, sq = 0;
  for (float v : batches[0].data) {
    const double q = (static_cast<double>(v) * 0.5 + 0.5) * 255.0;
    REQUIRE(std::abs(q - std::round(q)) < 1e-3);
    REQUIRE((q > -0.5 && q < 255.5));
    sum += v, sq += static_cast<double>(v) * v;
  }
  const double count = static_cast<double>(batches[0].data.size());
  CHECK(sq / count - (sum / count) * (sum / count) > 0.01);
  // Without crop and flip, a sample is the processor's own preprocessing of its file.
  train::AugmentOptions plain;
  plain.random_crop = false;
  plain.hflip = false;
  train::DataLoader<float> exact(data, processor(16), plain, 3, 7, 1);
  const vitmae::Tensor<float> b0 = exact.next();
  for (long i = 0; i < 3; ++i) {
    const vitmae::Tensor<float> ref =
        processor(16).preprocess<float>({io::load_image(data.files()[exact.file_at(i)], 3)});
    CHECK(std::equal(ref.data.begin(), ref.data.end(), b0.data.begin() + i * ref.numel()));
  }
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
  vitmae::Tensor<float> px({5, 3, 16, 16});
  std::mt19937_64 rng(9);
  std::normal_distribution<float> nd;
  for (auto& v : px.data) v = nd(rng);
  const Matrix<float> noise = vitmae::ops::uniform_noise<float>(5, 16, rng);
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

// ---------------------------------------------------------------- vitmae-pretrain

#ifdef VITMAE_PRETRAIN_EXE  // built with the example programs
TEST_CASE("vitmae-pretrain: trains, writes checkpoints and curves, resumes to the same weights") {
  const std::string dir = test::tmp_dir("pretrain_cli");
  io::write_file_atomic(dir + "/list.txt", test::data("images/coffee.png") + "\n" + test::data("images/rocket.jpg") +
                                               "\n" + test::data("images/camera.png") + "\n");
  vitmae::Config c = tiny16_config();
  io::write_file_atomic(dir + "/config.json", c.to_json().dump(2));
  const std::string common =
      "--data " + dir + "/list.txt --config " + dir + "/config.json --batch 4 --lr 2e-3 --seed 3 --threads 2 ";
  const Run a = run_pretrain(common + "--out " + dir + "/a --steps 6 --save-every 3");
  INFO(a.err);
  REQUIRE(a.status == 0);
  CHECK(a.err.find("step 6/6") != std::string::npos);
  CHECK(
      std::regex_search(a.err, std::regex("loss [0-9.]+  lr [0-9.e+-]+  [0-9.]+ img/s  elapsed [0-9:]+  ETA [0-9:]+")));
  CHECK(a.out.find("trained 6 steps (24 images)") != std::string::npos);
  for (const char* f : {"config.json", "model.safetensors", "preprocessor_config.json", "optimizer.safetensors",
                        "trainer_state.json", "loss.csv"}) {
    INFO(f);
    CHECK(io::file_exists(dir + "/a/final/" + f));
    CHECK(io::file_exists(dir + "/a/checkpoint-3/" + f));
  }
  CHECK(io::file_exists(dir + "/a/loss.svg"));
  const std::string csv = test::slurp(dir + "/a/loss.csv");
  CHECK(std::count(csv.begin(), csv.end(), '\n') == 7);

  const Run b = run_pretrain(common + "--out " + dir + "/b --steps 6 --resume " + dir + "/a/checkpoint-3");
  INFO(b.err);
  REQUIRE(b.status == 0);
  CHECK(b.out.find("trained 3 steps") != std::string::npos);
  CHECK(test::slurp(dir + "/b/final/model.safetensors") == test::slurp(dir + "/a/final/model.safetensors"));
  CHECK(test::slurp(dir + "/b/final/optimizer.safetensors") == test::slurp(dir + "/a/final/optimizer.safetensors"));

  const Run help = run_pretrain("--help");
  CHECK(help.status == 0);
  CHECK(help.out.find("usage: vitmae-pretrain") != std::string::npos);

  const Run bad = run_pretrain("--out " + dir + "/c --config " + dir + "/config.json");
  CHECK(bad.status == 2);
  CHECK(bad.err.find("--data and --out are required") != std::string::npos);
  const Run empty = run_pretrain("--data " + test::tmp_dir("pretrain_empty") + " --out " + dir + "/c --config " + dir +
                                 "/config.json");
  CHECK(empty.status == 1);
  CHECK(empty.err.find("no image files found") != std::string::npos);
  const Run mismatch =
      run_pretrain(common + "--out " + dir + "/d --steps 6 --batch 5 --resume " + dir + "/a/checkpoint-3");
  CHECK(mismatch.status == 2);  // a usage error: the run must keep the checkpoint's batch
  CHECK(mismatch.err == "vitmae: " + dir +
                            "/a/checkpoint-3/trainer_state.json: the run was started with --batch 4, this run gives "
                            "--batch 5; a resumed run must keep it (leave the flag out to keep it)\n");
}
#endif
