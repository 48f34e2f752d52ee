// SPDX-License-Identifier: Apache-2.0
// The library side of a training run (train/run.hpp, cli/): what both training programs are
// made of, tested below the programs. TrainingRun writes metrics.csv, the curves and the
// evaluation's files from the loop's own numbers; MetricsLog resumes from a checkpoint; the data
// layer's hold-out split and shrinking on decoding; the command line records paths absolutely.
#include "test_util.hpp"

#include <vitmae/cli/train_flags.hpp>
#include <vitmae/train.hpp>
#include <vitmae/train/run.hpp>

#include <chrono>
#include <cstdio>
#include <regex>
#include <thread>

#include <unistd.h>
#include <set>
#include <sstream>

namespace io = vitmae::io;
namespace train = vitmae::train;

namespace {

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

/// A list file of `per_class` lines for each of `classes` (the files need not exist to be listed).
std::string list_file(const std::string& dir, int classes, int per_class) {
  std::string text;
  for (int c = 0; c < classes; ++c)
    for (int k = 0; k < per_class; ++k)
      text += "img-" + std::to_string(c) + "-" + std::to_string(k) + ".png\tclass " + std::to_string(c) + "\n";
  io::write_file_atomic(dir + "/list.txt", text);
  return dir + "/list.txt";
}

}  // namespace

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

TEST_CASE(
    "LabelledDataset::hold_out: N of every class, seeded, disjoint from what is left, refused when a class would be "
    "emptied") {
  const std::string dir = test::tmp_dir("hold_out");
  auto data = train::LabelledDataset::open(list_file(dir, 3, 4));
  REQUIRE(data.size() == 12);
  auto copy = data;
  const auto held = data.hold_out(1, 7, "--holdout 1");
  CHECK(held.size() == 3);
  CHECK(data.size() == 9);
  std::set<std::int64_t> held_classes(held.labels().begin(), held.labels().end());
  CHECK(held_classes.size() == 3);  // one of each
  std::set<std::string> all;
  for (size_t i = 0; i < held.size(); ++i) all.insert(held.source(i));
  for (size_t i = 0; i < data.size(); ++i) CHECK(all.insert(data.source(i)).second);  // disjoint
  CHECK(all.size() == 12);
  const auto same = copy.hold_out(1, 7, "--holdout 1");  // the same seed, the same split
  for (size_t i = 0; i < 3; ++i) CHECK(same.source(i) == held.source(i));
  CHECK_THROWS_WITH_AS(copy.hold_out(4, 7, "--holdout 4"),
                       doctest::Contains("class 'class 0' has 3 images: --holdout 4 would leave none"), vitmae::Error);
}

TEST_CASE(
    "datasets shrink an image to its shorter side on decoding (PIL bicubic), labelled ones too, 0 keeps full size") {
  const std::string dir = test::tmp_dir("shorter_side");
  vitmae::io::Image8 im{64, 32, 3, std::vector<std::uint8_t>(64 * 32 * 3, 90)};
  const auto small = train::shrink_to_shorter_side(im, 16);
  CHECK(small.width == 32);
  CHECK(small.height == 16);
  CHECK(small.data == std::vector<std::uint8_t>(32 * 16 * 3, 90));  // a flat image stays flat
  CHECK(train::shrink_to_shorter_side(im, 0).width == 64);
  CHECK(train::shrink_to_shorter_side(im, 40).width == 64);  // already shorter
  test::write_pngs(dir + "/data/a", {"x.png"}, im);
  test::write_pngs(dir + "/data/b", {"y.png"}, im);
  auto set = train::LabelledDataset::open(dir + "/data");
  set.set_shorter_side(8);
  CHECK(set.image(0, 3).width == 16);
  CHECK(set.image(0, 3).height == 8);
  CHECK(set.select({1}).image(0, 3).height == 8);  // a subset keeps it
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
