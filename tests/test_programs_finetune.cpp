// SPDX-License-Identifier: Apache-2.0
// vitmae-finetune and vitmae-evaluate end to end: a classifier learnt from folders and list files
// (labels by name, by index, with gaps), resuming, --holdout, --relabel, the linear probe, the
// metrics and confusion written, the scores against the library's, and bad input refused.
#include "program_util.hpp"
#include "test_util.hpp"

#include <vitmae/train.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <random>
#include <regex>
#include <sstream>

namespace io = vitmae::io;
namespace train = vitmae::train;
using test::grey_pngs;
using test::Run;
using test::run;
using test::RunResult;
using test::tiny_vit_config;
using test::write_classifier;

#if defined(VITMAE_FINETUNE_EXE) && defined(VITMAE_EVALUATE_EXE) && defined(VITMAE_CLASSIFY_EXE)

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

// ---------------------------------------------------------------- vitmae-finetune

TEST_CASE("vitmae-finetune learns a two-class folder from scratch and writes its classifier, metrics and confusion") {
  const std::string dir = test::tmp_dir("finetune");
  test::write_dark_light_folders(dir, 16, 6);  // told apart by brightness alone
  io::write_file_atomic(dir + "/config.json", R"({"model_type": "vit", "hidden_size": 16, "num_hidden_layers": 1,
    "num_attention_heads": 2, "intermediate_size": 32, "image_size": 8, "patch_size": 4, "num_channels": 3})");
  RunResult r = run("--train " + dir + "/train --val " + dir + "/val --out " + dir + "/run --config " + dir +
                        "/config.json --steps 24 --batch 8 --base-lr 0.05 --eval-every 12 --threads 2",
                    VITMAE_FINETUNE_EXE);
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.err.find("32 training images in 2 classes, 12 validation images") != std::string::npos);
  const std::string metrics = test::slurp(dir + "/run/metrics.csv");
  CHECK(std::count(metrics.begin(), metrics.end(), '\n') == 25);  // header + 24 steps
  // The last row's validation accuracy is the classifier's, recomputed through the API.
  const auto model = vitmae::ViTForImageClassification<float>::from_pretrained(dir + "/run/final");
  CHECK(model.config().id2label == std::vector<std::string>{"dark", "light"});
  const auto val = vitmae::train::LabelledDataset::image_folder(dir + "/val");
  const auto e =
      vitmae::train::evaluate(model, val, vitmae::ImageProcessor::load(dir + "/run/final/preprocessor_config.json"));
  CHECK(e.top1 == 1.0);  // the two classes are told apart by brightness alone
  const std::string last = metrics.substr(metrics.rfind('\n', metrics.size() - 2) + 1);
  CHECK(last.find(",1.000000,,") != std::string::npos);  // val_top1 1, no top-5 with 2 classes
  CHECK(test::slurp(dir + "/run/confusion.csv") == "true\\predicted,\"dark\",\"light\"\n\"dark\",6,0\n\"light\",0,6\n");
  // A validation class the training set lacks is refused, naming it; nothing is written.
  std::filesystem::create_directories(dir + "/val2/cloudy");
  std::filesystem::copy_file(dir + "/val/dark/0.png", dir + "/val2/cloudy/0.png");
  r = run("--train " + dir + "/train --val " + dir + "/val2 --out " + dir + "/run2 --config " + dir +
              "/config.json --steps 2",
          VITMAE_FINETUNE_EXE);
  CHECK_SAYS(r, 1, messages::finetune::kNotATrainingClass);
  CHECK(r.err.find("'cloudy'") != std::string::npos);
  CHECK_FALSE(io::file_exists(dir + "/run2/metrics.csv"));
  CHECK(run("--train a --val b --out c", VITMAE_FINETUNE_EXE).status == 2);
  CHECK(run("--train a --val b --holdout 2 --out c --config x", VITMAE_FINETUNE_EXE).status == 2);

  // --save-every and --resume: the first half, a checkpoint, the second half give the bits of the whole run.
  const std::string common =
      "--train " + dir + "/train --val " + dir + "/val --steps 8 --batch 8 --base-lr 0.05 --threads 2 ";
  REQUIRE(run(common + "--config " + dir + "/config.json --out " + dir + "/whole --save-every 4", VITMAE_FINETUNE_EXE)
              .status == 0);
  CHECK(io::file_exists(dir + "/whole/checkpoint-4/optimizer.safetensors"));
  CHECK(io::file_exists(dir + "/whole/checkpoint-4/metrics.csv"));
  r = run(common + "--resume " + dir + "/whole/checkpoint-4 --out " + dir + "/resumed", VITMAE_FINETUNE_EXE);
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(test::slurp(dir + "/whole/final/model.safetensors") == test::slurp(dir + "/resumed/final/model.safetensors"));
  auto losses = [](const std::string& csv) {  // step and loss columns (images/s differ)
    std::vector<std::string> out;
    std::istringstream in(csv);
    for (std::string line; std::getline(in, line);)
      out.push_back(line.substr(0, line.find(',', line.find(',', line.find(',') + 1) + 1)));
    return out;
  };
  CHECK(losses(test::slurp(dir + "/whole/metrics.csv")) == losses(test::slurp(dir + "/resumed/metrics.csv")));
  // --resume alone: the flags the run was started with, from its trainer_state.json; the same bits.
  r = run("--resume " + dir + "/whole/checkpoint-4 --out " + dir + "/alone", VITMAE_FINETUNE_EXE);
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.err.find(std::string(messages::finetune::kResumingFrom) + "4 of 8") != std::string::npos);
  CHECK(test::slurp(dir + "/whole/final/model.safetensors") == test::slurp(dir + "/alone/final/model.safetensors"));
  // A refused resume is a usage error (exit 2), one line naming both values.
  r = run(common + "--seed 4 --resume " + dir + "/whole/checkpoint-4 --out " + dir + "/resumed2", VITMAE_FINETUNE_EXE);
  CHECK_SAYS(r, 2, messages::finetune::kResumeFlagChanged);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK(r.err.find("--seed 0") != std::string::npos);
  CHECK(r.err.find("--seed 4") != std::string::npos);
  r = run("--steps 9 --resume " + dir + "/whole/checkpoint-4 --out " + dir + "/resumed3", VITMAE_FINETUNE_EXE);
  CHECK_SAYS(r, 2, messages::finetune::kResumeFlagChanged);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK(r.err.find("--steps 8") != std::string::npos);
  CHECK(r.err.find("--steps 9") != std::string::npos);

  // --holdout: N images per class out of the training set validate, the rest train.
  r = run("--train " + dir + "/train --holdout 4 --out " + dir + "/held --config " + dir +
              "/config.json --steps 2 --batch 8 --threads 1",
          VITMAE_FINETUNE_EXE);
  INFO(r.err);
  CHECK(r.status == 0);
  CHECK(r.err.find("24 training images in 2 classes, 8 validation images") != std::string::npos);

  // --linear-probe: CLS features of a frozen random encoder tell brightness apart; the folded head
  // in final/ gives what the program reported.
  r = run("--train " + dir + "/train --val " + dir + "/val --out " + dir + "/probe --config " + dir +
              "/config.json --linear-probe --epochs 30 --batch 8 --base-lr 0.5 --threads 1",
          VITMAE_FINETUNE_EXE);
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.err.find("linear probe on 16 cls features of 32 training images") != std::string::npos);
  const auto probe = vitmae::ViTForImageClassification<float>::from_pretrained(dir + "/probe/final");
  const auto pe =
      vitmae::train::evaluate(probe, val, vitmae::ImageProcessor::load(dir + "/probe/final/preprocessor_config.json"));
  // The last row's val_top1 (column 7) and val_loss (column 9) are the folded classifier's.
  const std::string probe_metrics = test::slurp(dir + "/probe/metrics.csv");
  std::vector<std::string> cols;
  std::istringstream last_row(probe_metrics.substr(probe_metrics.rfind('\n', probe_metrics.size() - 2) + 1));
  for (std::string c; std::getline(last_row, c, ',');) cols.push_back(c);
  REQUIRE(cols.size() == 9);
  CHECK(std::stod(cols[0]) == 30 * 4);  // 30 epochs of 4 steps
  CHECK(std::stod(cols[6]) == doctest::Approx(pe.top1).epsilon(1e-6));
  CHECK(std::stod(cols[8]) == doctest::Approx(pe.loss).epsilon(1e-4));
  CHECK(pe.top1 == 1.0);
  // Fine-tuning-only flags are refused with --linear-probe.
  CHECK(run("--train a --val b --out c --config x --linear-probe --layer-decay 0.5", VITMAE_FINETUNE_EXE).status == 2);
  // Raw pixels: logistic regression, no model folder.
  r = run("--train " + dir + "/train --val " + dir + "/val --out " + dir + "/pixels --config " + dir +
              "/config.json --linear-probe --probe-features pixels --epochs 5 --threads 1",
          VITMAE_FINETUNE_EXE);
  CHECK(r.status == 0);
  CHECK(r.err.find("linear probe on 192 pixels features") != std::string::npos);
  CHECK_FALSE(io::dir_exists(dir + "/pixels/final"));
  CHECK(run("--train a --val b --out c --config x --probe-features mean", VITMAE_FINETUNE_EXE).status == 2);
}

TEST_CASE("vitmae-finetune and vitmae-classify on bad input: one line naming the file, exit 1, nothing written") {
  const std::string dir = test::tmp_dir("finetune_bad");
  vitmae::io::Image8 im{8, 8, 3, std::vector<std::uint8_t>(192, 90)};
  test::write_pngs(dir, {"train/a/1.png", "train/b/1.png", "val/a/1.png"}, im);
  io::write_file_atomic(dir + "/config.json", R"({"model_type": "vit", "hidden_size": 16, "num_hidden_layers": 1,
    "num_attention_heads": 2, "intermediate_size": 32, "image_size": 8, "patch_size": 4, "num_channels": 3})");
  const std::string model = " --out " + dir + "/out --config " + dir + "/config.json --steps 1 --batch 2";
  struct Case {
    std::string train, val, file;
    const char* phrase;
  };
  std::filesystem::create_directories(dir + "/empty/a");
  std::filesystem::create_directories(dir + "/empty/b");
  vitmae::io::save_png(dir + "/empty/a/1.png", im);
  io::write_file_atomic(dir + "/train.txt", "train/a/1.png 0\ntrain/b/1.png 1\n");
  io::write_file_atomic(dir + "/val.txt", "val/a/1.png 7\n");
  const std::vector<Case> cases{
      {dir + "/empty", dir + "/val", dir + "/empty/b", messages::finetune::kClassWithoutImages},
      {dir + "/train.txt", dir + "/val.txt", dir + "/val.txt:1", messages::finetune::kNotATrainingClass},
  };
  for (const Case& c : cases) {
    INFO(c.train);
    const RunResult r = run("--train " + c.train + " --val " + c.val + model, VITMAE_FINETUNE_EXE);
    CHECK_SAYS(r, 1, c.phrase);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(r.err.find(c.file) != std::string::npos);
    CHECK_FALSE(io::dir_exists(dir + "/out"));
  }
  // IDX files with a wrong magic number or a truncated body (via the library's IDX reader the
  // program uses: fashion-mnist:DIR:SPLIT names the Debian file names, so copy them there).
  for (const char* bad : {"bad-magic-idx3-ubyte.gz", "truncated-idx3-ubyte.gz"}) {
    const std::string fm = dir + "/fm_" + bad;
    std::filesystem::create_directories(fm);
    std::filesystem::copy_file(test::data(std::string("idx/") + bad), fm + "/train-images-idx3-ubyte.gz");
    std::filesystem::copy_file(test::data("idx/labels-idx1-ubyte.gz"), fm + "/train-labels-idx1-ubyte.gz");
    const RunResult r =
        run("--train fashion-mnist:" + fm + ":train --val " + dir + "/val" + model, VITMAE_FINETUNE_EXE);
    INFO(r.err);
    CHECK_SAYS(
        r, 1,
        std::string(bad).rfind("bad", 0) == 0 ? messages::finetune::kIdxBadMagic : messages::finetune::kIdxTruncated);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(r.err.find(fm + "/train-images-idx3-ubyte.gz: ") != std::string::npos);
    CHECK_FALSE(io::dir_exists(dir + "/out"));
  }
  // A classifier whose id2label and classifier.weight disagree.
  {
    vitmae::ViTConfig c;
    c.hidden_size = 16, c.num_hidden_layers = 1, c.num_attention_heads = 2, c.intermediate_size = 32;
    c.image_size = 8, c.patch_size = 4, c.num_channels = 3;
    c.id2label = vitmae::ViTConfig::default_labels(3);
    vitmae::ViTForImageClassification<float> m(c);
    m.save_pretrained(dir + "/cls3");
    auto j = io::read_json_file(dir + "/cls3/config.json", "config");
    j["id2label"] = {{"0", "x"}, {"1", "y"}};
    j["label2id"] = {{"x", 0}, {"y", 1}};
    io::write_file_atomic(dir + "/cls3/config.json", j.dump());
    const RunResult r = run("--model " + dir + "/cls3 --image " + dir + "/val/a/1.png", VITMAE_CLASSIFY_EXE);
    INFO(r.err);
    CHECK_SAYS(r, 1, messages::classify::kLabelsDisagree);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  }
}

TEST_CASE("list files: integer labels are class indices (0, 1, ..., 10 in numeric order), not names sorted as text") {
  const std::string dir = test::tmp_dir("int_labels");
  std::string list;
  for (int c = 0; c <= 10; ++c)
    list += grey_pngs(dir + "/img", "c" + std::to_string(c), 1, 20 * c)[0] + " " + std::to_string(c) + "\n";
  io::write_file_atomic(dir + "/list.txt", list);
  const Run r = test::run_program(VITMAE_FINETUNE_EXE, "--data " + dir + "/list.txt --val " + dir +
                                                           "/list.txt --config " + tiny_vit_config(dir) +
                                                           " --steps 1 --batch 4 --threads 1 --out " + dir + "/run");
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.err.find("11 training images in 11 classes") != std::string::npos);
  const auto cfg = vitmae::load_vit_config(dir + "/run/final/config.json");
  REQUIRE(cfg.id2label.size() == 11);
  for (int c = 0; c <= 10; ++c) CHECK(cfg.id2label[static_cast<size_t>(c)] == std::to_string(c));  // row c is class c
  // And the library says so directly: the label's number is its index.
  const auto set = vitmae::train::LabelledDataset::list_file(dir + "/list.txt");
  for (size_t i = 0; i < set.size(); ++i) CHECK(set.label(i) == static_cast<std::int64_t>(i));
}

TEST_CASE("list files: 'path<TAB>label' lines take labels with spaces") {
  const std::string dir = test::tmp_dir("tab_labels");
  const auto boots = grey_pngs(dir, "boot", 3, 30), bags = grey_pngs(dir, "bag", 3, 200);
  std::string list;
  for (const auto& f : boots) list += f + "\tAnkle boot\n";
  for (const auto& f : bags) list += f + "\tBag\n";
  io::write_file_atomic(dir + "/list.txt", list);
  const Run r = test::run_program(VITMAE_FINETUNE_EXE, "--data " + dir + "/list.txt --val " + dir +
                                                           "/list.txt --config " + tiny_vit_config(dir) +
                                                           " --steps 1 --batch 4 --threads 1 --out " + dir + "/run");
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(vitmae::load_vit_config(dir + "/run/final/config.json").id2label ==
        std::vector<std::string>{"Ankle boot", "Bag"});
  // A line with neither a tab nor a space names its file and line.
  io::write_file_atomic(dir + "/bad.txt", boots[0] + "\tBag\n" + boots[1] + "\n");
  const Run bad =
      test::run_program(VITMAE_FINETUNE_EXE, "--data " + dir + "/bad.txt --val " + dir + "/list.txt --config " + dir +
                                                 "/vit.json --steps 1 --out " + dir + "/bad");
  CHECK_SAYS(bad, 1, messages::finetune::kBadListLine);
  CHECK(bad.err.find(dir + "/bad.txt:2") != std::string::npos);
}

TEST_CASE(
    "integer labels with gaps: 1-based labels leave class 0 empty, and --holdout and --labels-per-class still work") {
  const std::string dir = test::tmp_dir("label_gaps");
  std::string list;
  for (int c = 1; c <= 3; ++c)
    for (const auto& f : grey_pngs(dir + "/img", "c" + std::to_string(c), 3, 60 * c))
      list += f + " " + std::to_string(c) + "\n";
  io::write_file_atomic(dir + "/list.txt", list);
  const Run r = test::run_program(VITMAE_FINETUNE_EXE,
                                  "--data " + dir + "/list.txt --holdout 1 --labels-per-class 2 --config " +
                                      tiny_vit_config(dir) + " --steps 1 --batch 6 --threads 1 --out " + dir + "/run");
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.err.find("6 training images in 4 classes, 3 validation images") != std::string::npos);
  CHECK(vitmae::load_vit_config(dir + "/run/final/config.json").id2label ==
        std::vector<std::string>{"0", "1", "2", "3"});
  // Numbers too sparse to be indices are names, in numeric order.
  io::write_file_atomic(dir + "/sparse.txt", dir + "/img/c1-0.png 20230101\n" + dir + "/img/c2-0.png 900\n");
  const auto sparse = vitmae::train::LabelledDataset::list_file(dir + "/sparse.txt");
  CHECK(sparse.classes == std::vector<std::string>{"900", "20230101"});
  CHECK(sparse.labels() == std::vector<std::int64_t>{1, 0});
}

TEST_CASE(
    "fine-tuning from a classifier keeps its rows' names: the data's classes map to them (--relabel draws afresh)") {
  const std::string dir = test::tmp_dir("id2label");
  // A classifier whose rows are top, shoe, other (not sorted), and folders other/ shoe/ top/.
  const auto m = write_classifier(dir, {"top", "shoe", "other"});
  grey_pngs(dir + "/data/other", "o", 2, 20);
  grey_pngs(dir + "/data/shoe", "s", 2, 120);
  grey_pngs(dir + "/data/top", "t", 2, 220);
  const Run r = test::run_program(VITMAE_FINETUNE_EXE, "--data " + dir + "/data --val " + dir + "/data --init " + dir +
                                                           "/cls --steps 1 --batch 6 --lr 1e-9 --threads 1 --out " +
                                                           dir + "/run");
  INFO(r.err);
  REQUIRE(r.status == 0);
  const auto after = vitmae::ViTForImageClassification<float>::from_pretrained(dir + "/run/final");
  CHECK(after.config().id2label == std::vector<std::string>{"top", "shoe", "other"});
  for (vitmae::Index k = 0; k < 3;
       ++k) {  // row k trained as class k is still row k (a step of lr 1e-9 moves nothing visible)
    CHECK((after.classifier.weight.row(k) - m.classifier.weight.row(k)).cwiseAbs().maxCoeff() < 1e-6f);
    CHECK((after.classifier.weight.row(k) - m.classifier.weight.row((k + 2) % 3)).cwiseAbs().maxCoeff() > 1e-3f);
  }
  // A class the classifier does not have: refused (exit 2), or a fresh head with --relabel.
  grey_pngs(dir + "/data/bag", "b", 2, 70);
  const std::string args =
      "--data " + dir + "/data --val " + dir + "/data --init " + dir + "/cls --steps 1 --batch 8 --threads 1 --out ";
  const Run unknown = test::run_program(VITMAE_FINETUNE_EXE, args + dir + "/run2");
  CHECK_SAYS(unknown, 2, messages::finetune::kUnknownClass);
  CHECK(unknown.err.find("'bag'") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir + "/run2"));
  const Run relabel = test::run_program(VITMAE_FINETUNE_EXE, args + dir + "/run3 --relabel");
  INFO(relabel.err);
  CHECK(relabel.status == 0);
  CHECK(relabel.err.find(messages::finetune::kRelabelled) != std::string::npos);
  CHECK(relabel.err.find("classifier.weight") == std::string::npos);  // one line about the head, not two
  CHECK(vitmae::load_vit_config(dir + "/run3/final/config.json").id2label ==
        std::vector<std::string>{"bag", "other", "shoe", "top"});
}

TEST_CASE("a --relabel run resumes from its checkpoint with --resume alone") {
  const std::string dir = test::tmp_dir("relabel_resume");
  write_classifier(dir, {"top", "shoe"});
  grey_pngs(dir + "/data/bag", "b", 2, 20);
  grey_pngs(dir + "/data/top", "t", 2, 220);
  const Run a = test::run_program(
      VITMAE_FINETUNE_EXE, "--data " + dir + "/data --val " + dir + "/data --init " + dir +
                               "/cls --relabel --steps 2 --batch 4 --save-every 1 --threads 1 --out " + dir + "/run");
  INFO(a.err);
  REQUIRE(a.status == 0);
  const Run b = test::run_program(VITMAE_FINETUNE_EXE, "--resume " + dir + "/run/checkpoint-1 --out " + dir + "/again");
  INFO(b.err);
  REQUIRE(b.status == 0);
  CHECK(test::slurp(dir + "/run/final/model.safetensors") == test::slurp(dir + "/again/final/model.safetensors"));
}

TEST_CASE("top-5 is reported only with more than 5 classes") {
  const std::string dir = test::tmp_dir("top5");
  for (const char* c : {"a", "b", "c"}) grey_pngs(dir + "/data/" + c, c, 2, 60);
  const Run r = test::run_program(VITMAE_FINETUNE_EXE, "--data " + dir + "/data --val " + dir + "/data --config " +
                                                           tiny_vit_config(dir) +
                                                           " --steps 1 --batch 6 --threads 1 --out " + dir + "/run");
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(std::regex_search(r.out, std::regex("(^|\n)validation top-1 [0-9.]+%  loss [0-9.]+  \\(6 images\\); wrote ")));
  CHECK(r.err.find("top-5") == std::string::npos);
  const std::string metrics = test::slurp(dir + "/run/metrics.csv");
  CHECK(std::regex_search(
      metrics, std::regex("\n1,[0-9.]+,[0-9.]+,[0-9.e-]+,[0-9.]+,[0-9.]+,[0-9.]+,,[0-9.]+\n")));  // val_top5 empty
  vitmae::Matrix<double> logits(2, 6);
  logits << 0, 1, 2, 3, 4, 5, 5, 4, 3, 2, 1, 0;
  const auto six = vitmae::train::Evaluation::of(logits, {0, 0});
  CHECK(six.has_top5());
  CHECK(six.summary().find("top-1 50.00%  top-5 50.00%") == 0);
}

TEST_CASE(
    "smaller messages: a mistyped split is a usage error, a subset too large names the flag, an unknown label its "
    "line") {
  const std::string dir = test::tmp_dir("messages");
  const std::string vit = tiny_vit_config(dir);
  Run r = test::run_program(VITMAE_FINETUNE_EXE, "--data fashion-mnist:" + test::data("fashion-mnist") +
                                                     ":tain --holdout 1 --config " + vit + " --out " + dir + "/o");
  CHECK_SAYS(r, 2, messages::finetune::kSplitMustBe);
  grey_pngs(dir + "/data/a", "a", 3, 30);
  grey_pngs(dir + "/data/b", "b", 5, 200);
  r = test::run_program(VITMAE_FINETUNE_EXE, "--data " + dir + "/data --val " + dir +
                                                 "/data --labels-per-class 4 --config " + vit + " --out " + dir + "/o");
  CHECK_SAYS(r, 1, messages::finetune::kFewerThanLabelsPerClass);
  io::write_file_atomic(dir + "/val.txt", dir + "/data/a/a-0.png\ta\n\n# comment\n" + dir + "/data/a/a-1.png\tc\n");
  r = test::run_program(VITMAE_FINETUNE_EXE,
                        "--data " + dir + "/data --val " + dir + "/val.txt --config " + vit + " --out " + dir + "/o");
  CHECK_SAYS(r, 1, messages::finetune::kNotATrainingClass);
  CHECK(r.err.find(dir + "/val.txt:4") != std::string::npos);
  // A truncated .gz says it is truncated, not what its last bytes happen to say.
  const std::string gz = test::slurp(test::data("fashion-mnist/t1k-images-idx3-ubyte.gz"));
  io::write_file_atomic(dir + "/t10k-images-idx3-ubyte.gz", gz.substr(0, gz.size() / 2));
  std::filesystem::copy_file(test::data("fashion-mnist/t1k-labels-idx1-ubyte.gz"), dir + "/t10k-labels-idx1-ubyte.gz");
  r = test::run_program(VITMAE_FINETUNE_EXE,
                        "--data fashion-mnist:" + dir + ":t10k --holdout 1 --config " + vit + " --out " + dir + "/o");
  CHECK_SAYS(r, 1, messages::finetune::kTruncatedGzip);
  CHECK_FALSE(std::filesystem::exists(dir + "/o"));
}

TEST_CASE(
    "the linear probe trains on the one loop: --steps exact, a metrics row a step with its gradient norm, mean "
    "features kept") {
  const std::string dir = test::tmp_dir("probe_loop");
  std::filesystem::create_directories(dir + "/fm");
  for (const char* k : {"images-idx3-ubyte.gz", "labels-idx1-ubyte.gz"})
    std::filesystem::create_symlink(test::data(std::string("fashion-mnist/t1k-") + k), dir + "/fm/t10k-" + k);
  const std::string common = "--data fashion-mnist:" + dir + "/fm:t10k --holdout 10 --init " +
                             std::string(VITMAE_FASHION_MNIST_EXAMPLE) + "/mae --linear-probe --steps 5 --threads 1 ";
  const Run r = test::run_program(VITMAE_FINETUNE_EXE, common + "--out " + dir + "/cls");
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.err.find("vitmae-finetune: linear probe on 96 cls features of 900 training images in 10 classes") !=
        std::string::npos);
  CHECK(r.err.find("; 5 steps of 256 (4 an epoch), peak lr 0.001\n") != std::string::npos);
  std::istringstream metrics(test::slurp(dir + "/cls/metrics.csv"));
  std::string row;
  std::getline(metrics, row);
  CHECK(row == "step,epoch,loss,lr,grad_norm,images_per_s,val_top1,val_top5,val_loss");
  long rows = 0;
  while (std::getline(metrics, row)) {
    ++rows;
    std::vector<std::string> f;
    std::istringstream cells(row);
    for (std::string c; std::getline(cells, c, ',');) f.push_back(c);
    REQUIRE(f.size() >= 6);
    CHECK(std::stol(f[0]) == rows);
    CHECK(std::stod(f[4]) > 0);  // the step's gradient norm, before clipping
  }
  CHECK(rows == 5);
  CHECK(io::file_exists(dir + "/cls/final/model.safetensors"));
  const Run m = test::run_program(VITMAE_FINETUNE_EXE, common + "--probe-features mean --out " + dir + "/mean");
  INFO(m.err);
  REQUIRE(m.status == 0);
  CHECK(m.err.find(messages::finetune::kProbeMeanNoFinal) != std::string::npos);
  const io::SafetensorsFile probe(dir + "/mean/probe.safetensors");
  CHECK(probe.info("classifier.weight").shape == std::vector<std::int64_t>{10, 96});
  CHECK(probe.info("mean").shape == std::vector<std::int64_t>{96});
  CHECK_FALSE(std::filesystem::exists(dir + "/mean/final"));
}

// ---------------------------------------------------------------- vitmae-evaluate

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
  CHECK_SAYS(r, 1, messages::evaluate::kNotAModelClass);
  CHECK(r.err.find(dir + "/list.txt:2") != std::string::npos);
  CHECK(r.out.empty());
  CHECK_FALSE(std::filesystem::exists(dir + "/out"));

  io::write_file_atomic(dir + "/set/c/broken.png", "not a PNG");
  r = test::run_program(VITMAE_EVALUATE_EXE, model + " --data " + dir + "/set --out " + dir + "/out");
  CHECK_SAYS(r, 1, messages::evaluate::kSkipBadImagesHint);
  CHECK(r.err.find(dir + "/set/c/broken.png") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir + "/out"));
  r = test::run_program(VITMAE_EVALUATE_EXE, model + " --data " + dir + "/set --skip-bad-images --out " + dir + "/out");
  CHECK_SAYS(r, 0, messages::evaluate::kLeftOut);
  CHECK(r.err.find("1 of 7 images") != std::string::npos);
  CHECK(r.out.find("(6 images, 3 classes)") != std::string::npos);
  CHECK(lines_of(test::slurp(dir + "/out/per_class.csv")).size() == 4);

  r = test::run_program(VITMAE_EVALUATE_EXE, "--data " + dir + "/set");
  CHECK_SAYS(r, 2, messages::evaluate::kRequired);
  CHECK(r.err.find(messages::cli::kSynopsis) != std::string::npos);
  CHECK(r.out.empty());
}

#endif
