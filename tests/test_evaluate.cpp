// SPDX-License-Identifier: Apache-2.0
// vitmae-evaluate as a user meets it: a classifier folder scored on a labelled set, the line
// (or JSON) it prints and the files it writes agree with the library's train::evaluate.
#include "test_util.hpp"

#include <vitmae/train.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <numeric>
#include <random>

namespace io = vitmae::io;
namespace train = vitmae::train;
using test::Run;

#ifdef VITMAE_EVALUATE_EXE

namespace {

/// fashion-mnist:DIR:t10k over the bundled first 1,000 test images (symlinks named as the spec wants).
std::string first_1000_fashion_mnist() {
  const std::string dir = test::tmp_dir("evaluate_fm");
  for (const char* k : {"images-idx3-ubyte", "labels-idx1-ubyte"})
    std::filesystem::create_symlink(test::data(std::string("fashion-mnist/t1k-") + k + ".gz"),
                                    dir + "/t10k-" + k + ".gz");
  return "fashion-mnist:" + dir + ":t10k";
}

/// The CSV's lines.
std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

/// A 3-label classifier (8x8 RGB, random weights, labels a, b, c) at dir/model, and an
/// ImageFolder dir/set with two noisy 8x8 PNGs of each class; returns dir.
std::string three_class_model_and_set(const std::string& name) {
  const std::string dir = test::tmp_dir(name);
  vitmae::ViTConfig c = vitmae::ViTConfig::from_json(nlohmann::json::parse(R"({"model_type": "vit", "hidden_size": 16,
    "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32, "image_size": 8, "patch_size": 4,
    "num_channels": 3})"));
  c.id2label = {"a", "b", "c"};
  vitmae::ViTForImageClassification<float> m(c);
  std::mt19937_64 rng(3);
  m.init_weights(rng);
  m.save_pretrained(dir + "/model");
  std::mt19937 noise(7);
  for (const char* cls : {"a", "b", "c"})
    for (int i = 0; i < 2; ++i) {
      io::Image8 im{8, 8, 3, std::vector<std::uint8_t>(192)};
      for (auto& v : im.data) v = static_cast<std::uint8_t>(noise() % 256);
      test::write_pngs(dir + "/set/" + cls, {(std::to_string(i) + ".png").c_str()}, im);
    }
  return dir;
}

}  // namespace

TEST_CASE("vitmae-evaluate scores the shipped Fashion-MNIST classifier: 924 of the first 1,000 test images") {
  const std::string spec = first_1000_fashion_mnist();
  const std::string model_dir = std::string(VITMAE_FASHION_MNIST_EXAMPLE) + "/classifier";
  const std::string out = test::tmp_dir("evaluate_fm_out") + "/scores";
  const Run r =
      test::run_program(VITMAE_EVALUATE_EXE, "--model " + model_dir + " --data " + spec + " --threads 1 --out " + out);
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.out == "top-1 92.40%  top-5 99.90%  loss 0.2886  (1000 images, 10 classes)\n");

  // The library on the same set says the same, and --json reports it (one thread, as the
  // programs above: quick on a loaded machine).
  test::RestoreBackendAndThreads restore;
#ifdef _OPENMP
  omp_set_num_threads(1);
#endif
  const auto model = vitmae::ViTForImageClassification<float>::from_pretrained(model_dir);
  auto set = train::LabelledDataset::open(spec);
  set.use_classes_of(model.config().id2label, spec, "the model's");
  const train::Evaluation e =
      train::evaluate(model, set, vitmae::ImageProcessor::for_checkpoint(model_dir, model.config().mae_config()));
  CHECK(std::lround(e.top1 * 1000) == 924);
  CHECK(r.out == e.summary() + "  (1000 images, 10 classes)\n");
  const Run j =
      test::run_program(VITMAE_EVALUATE_EXE, "--model " + model_dir + " --data " + spec + " --json --threads 1");
  INFO(j.err);
  REQUIRE(j.status == 0);
  const nlohmann::json got = nlohmann::json::parse(j.out);
  CHECK(got["top1"].get<double>() == doctest::Approx(e.top1).epsilon(1e-12));
  CHECK(got["top1"].get<double>() == doctest::Approx(0.924).epsilon(1e-12));
  CHECK(got["top5"].get<double>() == doctest::Approx(e.top5).epsilon(1e-12));
  CHECK(got["loss"].get<double>() == doctest::Approx(e.loss).epsilon(1e-6));
  CHECK(got["count"] == 1000);
  CHECK(got["labels"] == model.config().id2label);
  CHECK(got["confusion"] == e.confusion);
  const std::vector<double> acc = e.per_class();
  REQUIRE(got["per_class"].size() == 10);
  for (size_t c = 0; c < 10; ++c)
    CHECK(got["per_class"][model.config().id2label[c]].get<double>() == doctest::Approx(acc[c]));
  CHECK(got["per_class"]["Trouser"].get<double>() > 0.95);

  // --out: the per-class table, the confusion matrix (summing to the 1,000 images) and its picture.
  const std::vector<std::string> per_class = lines_of(test::slurp(out + "/per_class.csv"));
  REQUIRE(per_class.size() == 11);
  CHECK(per_class[0] == "class,label,count,accuracy");
  CHECK(per_class[1].rfind("0,\"T-shirt/top\",107,", 0) == 0);
  CHECK(test::slurp(out + "/per_class.csv") == e.per_class_csv(model.config().id2label));
  const std::vector<std::string> confusion = lines_of(test::slurp(out + "/confusion.csv"));
  REQUIRE(confusion.size() == 11);
  CHECK(
      confusion[0] ==
      R"(true\predicted,"T-shirt/top","Trouser","Pullover","Dress","Coat","Sandal","Shirt","Sneaker","Bag","Ankle boot")");
  long sum = 0, diagonal = 0;
  for (size_t row = 1; row < confusion.size(); ++row) {
    std::istringstream cells(confusion[row]);
    std::string cell;
    std::getline(cells, cell, ',');  // the true class's name (no comma in these)
    for (size_t col = 0; std::getline(cells, cell, ','); ++col) {
      sum += std::stol(cell);
      if (col + 1 == row) diagonal += std::stol(cell);
    }
  }
  CHECK(sum == 1000);
  CHECK(diagonal == 924);
  const std::string svg = test::slurp(out + "/confusion.svg");
  CHECK(svg.rfind("<svg", 0) == 0);
  CHECK(svg.find("Ankle boot") != std::string::npos);
}

TEST_CASE("vitmae-evaluate: with 5 classes or fewer no top-5, and the line is the library's") {
  const std::string dir = three_class_model_and_set("evaluate_three");
  const Run r = test::run_program(VITMAE_EVALUATE_EXE, "--model " + dir + "/model --data " + dir + "/set");
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.out.find("top-5") == std::string::npos);
  const auto model = vitmae::ViTForImageClassification<float>::from_pretrained(dir + "/model");
  auto set = train::LabelledDataset::open(dir + "/set");
  set.use_classes_of(model.config().id2label, dir + "/set", "the model's");
  const train::Evaluation e =
      train::evaluate(model, set, vitmae::ImageProcessor::for_checkpoint(dir + "/model", model.config().mae_config()));
  CHECK(r.out == e.summary() + "  (6 images, 3 classes)\n");
  const Run j = test::run_program(VITMAE_EVALUATE_EXE, "--model " + dir + "/model --data " + dir + "/set --json");
  REQUIRE(j.status == 0);
  const nlohmann::json got = nlohmann::json::parse(j.out);
  CHECK_FALSE(got.contains("top5"));
  CHECK(got["count"] == 6);
}

TEST_CASE("vitmae-evaluate refuses a class the model lacks, a damaged image and a missing --model, before writing") {
  const std::string dir = three_class_model_and_set("evaluate_refused");
  const std::string model = " --model " + dir + "/model";
  io::write_file_atomic(dir + "/list.txt", dir + "/set/a/0.png a\n" + dir + "/set/b/0.png Zebra\n");
  Run r = test::run_program(VITMAE_EVALUATE_EXE, model + " --data " + dir + "/list.txt --out " + dir + "/out");
  CHECK(r.status == 1);
  CHECK(r.err == "vitmae: dataset " + dir + "/list.txt:2: class 'Zebra' is not one of the model's 3 classes\n");
  CHECK(r.out.empty());
  CHECK_FALSE(std::filesystem::exists(dir + "/out"));

  io::write_file_atomic(dir + "/set/c/broken.png", "not a PNG");
  r = test::run_program(VITMAE_EVALUATE_EXE, model + " --data " + dir + "/set --out " + dir + "/out");
  CHECK(r.status == 1);
  CHECK(r.err.find(dir + "/set/c/broken.png") != std::string::npos);
  CHECK(r.err.find("--skip-bad-images") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir + "/out"));
  r = test::run_program(VITMAE_EVALUATE_EXE, model + " --data " + dir + "/set --skip-bad-images --out " + dir + "/out");
  CHECK(r.status == 0);
  CHECK(r.err.find("vitmae-evaluate: --skip-bad-images: left out 1 of 7 images, which cannot be read:") !=
        std::string::npos);
  CHECK(r.out.find("(6 images, 3 classes)") != std::string::npos);
  CHECK(lines_of(test::slurp(dir + "/out/per_class.csv")).size() == 4);

  r = test::run_program(VITMAE_EVALUATE_EXE, "--data " + dir + "/set");
  CHECK(r.status == 2);
  CHECK(r.err.rfind("vitmae-evaluate: --model and --data are required\nusage: vitmae-evaluate --model DIR --data SRC",
                    0) == 0);
  CHECK(r.out.empty());
}

#endif
