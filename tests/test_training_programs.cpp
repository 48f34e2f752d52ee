// SPDX-License-Identifier: Apache-2.0
// The training programs as a user meets them: vitmae-pretrain and vitmae-finetune share one
// command line and one data layer (the same checks, messages and exit codes), and the smaller
// programs take what users asked for. Each case asserts the exit code and the line printed.
#include "test_util.hpp"

#include <vitmae/train.hpp>

#include <regex>
#include <sstream>

namespace io = vitmae::io;
using test::Run;

namespace {

/// A tiny ViT classifier config (8x8 RGB images, 2 patches a side).
std::string tiny_vit_config(const std::string& dir) {
  io::write_file_atomic(dir + "/vit.json", R"({"model_type": "vit", "hidden_size": 16, "num_hidden_layers": 1,
    "num_attention_heads": 2, "intermediate_size": 32, "image_size": 8, "patch_size": 4, "num_channels": 3})");
  return dir + "/vit.json";
}

/// A tiny ViTMAE config at dir/mae.json (8x8 RGB images, 2 patches a side); returns its path.
std::string tiny_mae_config(const std::string& dir) {
  io::write_file_atomic(dir + "/mae.json", R"({"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
    "intermediate_size": 32, "decoder_hidden_size": 16, "decoder_num_hidden_layers": 1, "decoder_num_attention_heads": 2,
    "decoder_intermediate_size": 32, "image_size": 8, "patch_size": 4, "num_channels": 3})");
  return dir + "/mae.json";
}

/// A tiny ViT classifier with rows named `labels` (in that order), drawn from a fixed seed and
/// saved at dir/cls; returned for its weights.
vitmae::ViTForImageClassification<float> write_classifier(const std::string& dir,
                                                          const std::vector<std::string>& labels) {
  nlohmann::json j = io::read_json_file(tiny_vit_config(dir));
  for (size_t k = 0; k < labels.size(); ++k) j["id2label"][std::to_string(k)] = labels[k];
  vitmae::ViTForImageClassification<float> m(vitmae::ViTConfig::from_json(j));
  auto rng = vitmae::seeded_rng(1, 2);
  m.init_weights(rng);
  m.save_pretrained(dir + "/cls");
  return m;
}

/// `n` 8x8 PNGs of one grey level at dir/name-k.png; returns their paths.
std::vector<std::string> grey_pngs(const std::string& dir, const std::string& name, int n, int level) {
  std::vector<std::string> out;
  for (int k = 0; k < n; ++k) {
    vitmae::io::Image8 im{8, 8, 3, std::vector<std::uint8_t>(192, static_cast<std::uint8_t>(level + 7 * k))};
    out.push_back(dir + "/" + name + "-" + std::to_string(k) + ".png");
    std::filesystem::create_directories(std::filesystem::path(out.back()).parent_path());
    io::save_png(out.back(), im);
  }
  return out;
}

}  // namespace

#if defined(VITMAE_FINETUNE_EXE) && defined(VITMAE_PRETRAIN_EXE) && defined(VITMAE_CLASSIFY_EXE) && \
    defined(VITMAE_RUN_EXE)

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
  CHECK(bad.status == 1);
  CHECK(bad.err ==
        "vitmae: dataset " + dir + "/bad.txt:2: expected 'path<TAB>label' or 'path label', got '" + boots[1] + "'\n");
}

TEST_CASE(
    "a damaged or missing image is refused before anything is written, in both programs, --skip-bad-images trains on "
    "the rest") {
  const std::string dir = test::tmp_dir("bad_images");
  const auto good = grey_pngs(dir + "/train/a", "x", 3, 40);
  grey_pngs(dir + "/train/b", "y", 3, 180);
  io::write_file_atomic(dir + "/train/b/broken.png", "not a png");
  const std::string common = " --steps 1 --batch 4 --threads 1 --save-every 0";
  // vitmae-finetune on an ImageFolder
  const Run f = test::run_program(VITMAE_FINETUNE_EXE, "--data " + dir + "/train --holdout 1 --config " +
                                                           tiny_vit_config(dir) + common + " --out " + dir + "/ft");
  CHECK(f.status == 1);
  CHECK(test::last_line(f.err) ==
        "vitmae: " + dir +
            "/train/b/broken.png: not a readable image: expected PNG, JPEG, BMP, TGA, GIF, PNM, PSD or "
            "HDR (--skip-bad-images leaves out the images that cannot be read)");
  CHECK_FALSE(std::filesystem::exists(dir + "/ft"));
  const Run fs =
      test::run_program(VITMAE_FINETUNE_EXE, "--data " + dir + "/train --holdout 1 --config " + dir + "/vit.json" +
                                                 common + " --skip-bad-images --out " + dir + "/ft");
  INFO(fs.err);
  CHECK(fs.status == 0);
  CHECK(fs.err.find("vitmae-finetune: --skip-bad-images: left out 1 of 7 images, which cannot be read:\n  " + dir +
                    "/train/b/broken.png: not a readable image") != std::string::npos);
  // vitmae-pretrain on a list file with a missing image
  io::write_file_atomic(dir + "/list.txt", good[0] + "\n" + dir + "/missing.png\n" + good[1] + "\n");
  tiny_mae_config(dir);
  const Run p = test::run_program(VITMAE_PRETRAIN_EXE, "--data " + dir + "/list.txt --config " + dir +
                                                           "/mae.json --lr 1e-3" + common + " --out " + dir + "/pt");
  CHECK(p.status == 1);
  CHECK(test::last_line(p.err) ==
        "vitmae: " + dir +
            "/missing.png: cannot open image: No such file or directory (--skip-bad-images leaves "
            "out the images that cannot be read)");
  CHECK_FALSE(std::filesystem::exists(dir + "/pt"));
}

TEST_CASE("an int8 checkpoint given to a training program is refused at start, naming the file and the way back") {
  const std::string dir = test::tmp_dir("int8_init");
  const Run c = test::run_program(VITMAE_CONVERT_EXE,
                                  "--input " + test::data("hf/tiny") + " --out " + dir + "/int8 --dtype int8");
  REQUIRE(c.status == 0);
  grey_pngs(dir + "/img/a", "x", 2, 50);
  grey_pngs(dir + "/img/b", "y", 2, 150);
  for (const char* exe : {VITMAE_PRETRAIN_EXE, VITMAE_FINETUNE_EXE}) {
    INFO(exe);
    const Run r =
        test::run_program(exe, "--data " + dir + "/img --init " + dir + "/int8 --steps 1 --lr 1e-3 --out " + dir +
                                   "/run" + (std::string(exe) == VITMAE_FINETUNE_EXE ? " --holdout 1" : ""));
    CHECK(r.status == 1);
    CHECK(std::regex_search(
        r.err, std::regex("^vitmae: " + dir +
                          "/int8/model.safetensors: tensor '[a-z_.0-9]+' is int8: an int8 "
                          "checkpoint is for inference only; training starts from float weights \\(vitmae-convert "
                          "--input " +
                          dir + "/int8 --out DIR --dtype float32 gives them back, at int8's precision\\)\n$")));
    CHECK_FALSE(std::filesystem::exists(dir + "/run"));
  }
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
  CHECK(unknown.status == 2);
  CHECK(unknown.err ==
        "vitmae: " + dir + "/cls/config.json: class 'bag' of " + dir +
            "/data is not one of the checkpoint's 3 labels (top, shoe, other); --relabel draws a fresh classifier for "
            "the data's classes\n");
  CHECK_FALSE(std::filesystem::exists(dir + "/run2"));
  const Run relabel = test::run_program(VITMAE_FINETUNE_EXE, args + dir + "/run3 --relabel");
  INFO(relabel.err);
  CHECK(relabel.status == 0);
  CHECK(relabel.err.find("vitmae-finetune: --relabel: " + dir +
                         "/cls's classifier is for other classes: drawn afresh for the 4 classes of " + dir +
                         "/data\n") != std::string::npos);
  CHECK(relabel.err.find("classifier.weight") == std::string::npos);  // one line about the head, not two
  CHECK(vitmae::load_vit_config(dir + "/run3/final/config.json").id2label ==
        std::vector<std::string>{"bag", "other", "shoe", "top"});
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

TEST_CASE("a file of the wrong kind gets a message that says so") {
  const std::string dir = test::tmp_dir("wrong_kinds");
  const auto img = grey_pngs(dir, "x", 1, 90)[0];
  // A folder as --config.
  grey_pngs(dir + "/data/a", "a", 2, 30);
  grey_pngs(dir + "/data/b", "b", 2, 200);
  Run r = test::run_program(VITMAE_FINETUNE_EXE,
                            "--data " + dir + "/data --holdout 1 --config " + dir + " --out " + dir + "/o");
  CHECK(r.status == 1);
  CHECK(r.err == "vitmae: " + dir + ": a folder, expected a config file (a JSON file)\n");
  // A config.json as a model.
  r = test::run_program(VITMAE_CLASSIFY_EXE, "--model " + test::data("hf_vit/cls_tiny") + "/config.json " + img);
  CHECK(r.status == 1);
  CHECK(r.err == "vitmae: " + test::data("hf_vit/cls_tiny") +
                     "/config.json: a JSON file, not weights (expected a checkpoint folder, such as " +
                     test::data("hf_vit/cls_tiny") + ", or a weights file: .safetensors, .bin, .pth)\n");
  // An image as a dataset, in both programs.
  r = test::run_program(VITMAE_FINETUNE_EXE,
                        "--data " + img + " --holdout 1 --config " + tiny_vit_config(dir) + " --out " + dir + "/o");
  CHECK(r.status == 1);
  CHECK(r.err == "vitmae: dataset " + img +
                     ": an image, not a dataset (expected a folder root/<class>/<images>, a list file of "
                     "'path<TAB>label' lines or fashion-mnist:DIR:SPLIT)\n");
  r = test::run_program(VITMAE_PRETRAIN_EXE,
                        "--data " + img + " --config " + test::data("hf/tiny/config.json") + " --out " + dir + "/o");
  CHECK(r.status == 1);
  CHECK(r.err == "vitmae: dataset " + img +
                     ": an image, not a dataset (expected a folder of images or a text file listing image paths, "
                     "one a line)\n");
  CHECK_FALSE(std::filesystem::exists(dir + "/o"));
}

TEST_CASE(
    "smaller messages: a mistyped split is a usage error, a subset too large names the flag, an unknown label its "
    "line") {
  const std::string dir = test::tmp_dir("messages");
  const std::string vit = tiny_vit_config(dir);
  Run r = test::run_program(VITMAE_FINETUNE_EXE, "--data fashion-mnist:" + test::data("fashion-mnist") +
                                                     ":tain --holdout 1 --config " + vit + " --out " + dir + "/o");
  CHECK(r.status == 2);
  CHECK(r.err == "vitmae: dataset fashion-mnist:" + test::data("fashion-mnist") +
                     ":tain: SPLIT must be train or t10k, got 'tain'\n");
  grey_pngs(dir + "/data/a", "a", 3, 30);
  grey_pngs(dir + "/data/b", "b", 5, 200);
  r = test::run_program(VITMAE_FINETUNE_EXE, "--data " + dir + "/data --val " + dir +
                                                 "/data --labels-per-class 4 --config " + vit + " --out " + dir + "/o");
  CHECK(r.status == 1);
  CHECK(r.err == "vitmae: dataset " + dir + "/data: class 'a' has 3 images, fewer than --labels-per-class 4\n");
  io::write_file_atomic(dir + "/val.txt", dir + "/data/a/a-0.png\ta\n\n# comment\n" + dir + "/data/a/a-1.png\tc\n");
  r = test::run_program(VITMAE_FINETUNE_EXE,
                        "--data " + dir + "/data --val " + dir + "/val.txt --config " + vit + " --out " + dir + "/o");
  CHECK(r.status == 1);
  CHECK(r.err == "vitmae: dataset " + dir + "/val.txt:4: class 'c' is not one of the training set's 2 classes\n");
  // A truncated .gz says it is truncated, not what its last bytes happen to say.
  const std::string gz = test::slurp(test::data("fashion-mnist/t1k-images-idx3-ubyte.gz"));
  io::write_file_atomic(dir + "/t10k-images-idx3-ubyte.gz", gz.substr(0, gz.size() / 2));
  std::filesystem::copy_file(test::data("fashion-mnist/t1k-labels-idx1-ubyte.gz"), dir + "/t10k-labels-idx1-ubyte.gz");
  r = test::run_program(VITMAE_FINETUNE_EXE,
                        "--data fashion-mnist:" + dir + ":t10k --holdout 1 --config " + vit + " --out " + dir + "/o");
  CHECK(r.status == 1);
  CHECK(r.err.rfind("vitmae: " + dir + "/t10k-images-idx3-ubyte.gz: truncated or corrupt gzip file", 0) == 0);
  CHECK_FALSE(std::filesystem::exists(dir + "/o"));
}

TEST_CASE(
    "--resume takes every flag the run was started with: one added now that changes the run is refused, naming both "
    "values") {
  const std::string dir = test::tmp_dir("resume_flags");
  grey_pngs(dir + "/img", "x", 3, 40);
  tiny_mae_config(dir);
  const Run a =
      test::run_program(VITMAE_PRETRAIN_EXE,
                        "--data " + dir + "/img --config " + dir +
                            "/mae.json --steps 4 --batch 2 --lr 1e-3 --save-every 2 --threads 1 --out " + dir + "/run");
  INFO(a.err);
  REQUIRE(a.status == 0);
  const std::string ckpt = dir + "/run/checkpoint-2", state = ckpt + "/trainer_state.json";
  Run r = test::run_program(VITMAE_PRETRAIN_EXE,
                            "--resume " + ckpt + " --scale-min 0.5");  // not given at the start: the default 0.2
  CHECK(r.status == 2);
  CHECK(r.err == "vitmae: " + state +
                     ": the run was started with --scale-min 0.2, this run gives --scale-min 0.5; a resumed run must "
                     "keep it (leave the flag out to keep it)\n");
  r = test::run_program(VITMAE_PRETRAIN_EXE, "--resume " + ckpt + " --vflip");
  CHECK(r.status == 2);
  CHECK(r.err == "vitmae: " + state +
                     ": the run was started without --vflip; a resumed run must keep that (leave the flag out)\n");
  r = test::run_program(VITMAE_FINETUNE_EXE, "--resume " + ckpt);
  CHECK(r.status == 2);
  CHECK(r.err == "vitmae: " + state + ": a checkpoint of vitmae-pretrain, not of vitmae-finetune\n");
  r = test::run_program(VITMAE_PRETRAIN_EXE,
                        "--resume " + ckpt + " --lr 0.001 --save-every 1");  // the same value; a free flag
  INFO(r.err);
  CHECK(r.status == 0);
  CHECK(test::slurp(dir + "/run/final/model.safetensors").size() > 0);
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
  CHECK(m.err.find("vitmae-finetune: --probe-features mean: no " + dir +
                   "/mean/final (a ViTForImageClassification classifies the CLS "
                   "token); the head and its normalisation are in " +
                   dir + "/mean/probe.safetensors\n") != std::string::npos);
  const io::SafetensorsFile probe(dir + "/mean/probe.safetensors");
  CHECK(probe.info("classifier.weight").shape == std::vector<std::int64_t>{10, 96});
  CHECK(probe.info("mean").shape == std::vector<std::int64_t>{96});
  CHECK_FALSE(std::filesystem::exists(dir + "/mean/final"));
}

TEST_CASE(
    "vitmae-classify takes image paths as arguments (shell globs), vitmae-run takes --threads and says what it wrote") {
  const std::string dir = test::tmp_dir("small_programs");
  Run r = test::run_program(VITMAE_CLASSIFY_EXE, "--model " + test::data("hf_vit/cls_tiny") + " --top 1 --json " +
                                                     test::data("images/coffee.png") + " " +
                                                     test::data("images/camera.png"));
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 2);
  CHECK(r.out.find("\"image\":\"" + test::data("images/coffee.png") + "\"") != std::string::npos);
  r = test::run_program(VITMAE_CLASSIFY_EXE, "--model " + test::data("hf_vit/cls_tiny"));
  CHECK(r.status == 2);
  CHECK(r.err.rfind("vitmae-classify: --model and at least one image are required\n", 0) == 0);
  r = test::run_program(VITMAE_RUN_EXE, "--model " + test::data("hf/tiny") + " --input " +
                                            test::data("hf/tiny/io.safetensors") + " --output " + dir +
                                            "/out.safetensors --threads 1");
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(std::regex_match(
      r.out, std::regex("vitmae-run: ViTMAEForPreTraining on pixel_values \\[2, 3, 32, 32\\] \\(float32, 1 threads\\): "
                        "wrote " +
                        dir +
                        "/out\\.safetensors \\(last_hidden_state, mask, ids_restore, logits, "
                        "loss\\), loss [0-9.]+\n")));
}

TEST_CASE("both programs run one loop: one progress line and one metrics.csv, a resumed run must see the same images") {
  const std::string dir = test::tmp_dir("one_run");
  grey_pngs(dir + "/img/a", "x", 3, 40);
  grey_pngs(dir + "/img/b", "y", 3, 180);
  const std::regex line("step 2/2  loss [0-9.]+  lr [0-9.e+-]+  [0-9.]+ img/s  elapsed [0-9:]+  ETA [0-9:]+\n");
  const std::string header = "step,epoch,loss,lr,grad_norm,images_per_s,val_top1,val_top5,val_loss\n";
  const std::string common = " --steps 2 --batch 2 --save-every 1 --threads 1";
  const Run p = test::run_program(VITMAE_PRETRAIN_EXE, "--data " + dir + "/img --config " + tiny_mae_config(dir) +
                                                           " --lr 1e-3" + common + " --out " + dir + "/pt");
  INFO(p.err);
  REQUIRE(p.status == 0);
  CHECK(std::regex_search(p.err, line));
  const std::string pm = test::slurp(dir + "/pt/metrics.csv");
  CHECK(pm.rfind(header, 0) == 0);
  CHECK(std::count(pm.begin(), pm.end(), '\n') == 3);
  CHECK(test::slurp(dir + "/pt/checkpoint-1/metrics.csv") == pm.substr(0, pm.find("\n2,") + 1));  // the rows so far
  // Fine-tuning takes --shorter-side too (its training images; the probe refuses it, as every augmentation flag).
  const Run f =
      test::run_program(VITMAE_FINETUNE_EXE, "--data " + dir + "/img --holdout 1 --config " + tiny_vit_config(dir) +
                                                 common + " --shorter-side 4 --out " + dir + "/ft");
  INFO(f.err);
  REQUIRE(f.status == 0);
  CHECK(std::regex_search(f.err, line));
  CHECK(f.err.find("epoch 1.00 (step 2): validation top-1 ") != std::string::npos);
  CHECK(test::slurp(dir + "/ft/metrics.csv").rfind(header, 0) == 0);
  const Run probe =
      test::run_program(VITMAE_FINETUNE_EXE, "--data " + dir + "/img --holdout 1 --config " + dir +
                                                 "/vit.json --linear-probe --shorter-side 4 --out " + dir + "/lp");
  CHECK(probe.status == 2);
  CHECK(probe.err.rfind("vitmae-finetune: --shorter-side is for fine-tuning; a linear probe trains on fixed features",
                        0) == 0);

  // An image gone from the training set: the resumed run is refused, naming both counts.
  std::filesystem::remove(dir + "/img/b/y-2.png");
  Run r = test::run_program(VITMAE_PRETRAIN_EXE, "--resume " + dir + "/pt/checkpoint-1 --out " + dir + "/pt2");
  CHECK(r.status == 2);
  CHECK(test::last_line(r.err) == "vitmae: " + dir + "/pt/checkpoint-1/data.json: the run was trained on 6 images of " +
                                      dir + "/img, this run has 5; a resumed run must train on the same images");
  CHECK_FALSE(std::filesystem::exists(dir + "/pt2"));
  // A checkpoint whose trainer_state.json has no command line (an older vitmae's) says what to give.
  nlohmann::json st = io::read_json_file(dir + "/pt/checkpoint-1/trainer_state.json");
  st.erase("args");
  io::write_file_atomic(dir + "/pt/checkpoint-1/trainer_state.json", st.dump());
  r = test::run_program(VITMAE_PRETRAIN_EXE, "--resume " + dir + "/pt/checkpoint-1");
  CHECK(r.status == 2);
  CHECK(r.err.rfind("vitmae-pretrain: --resume " + dir +
                        "/pt/checkpoint-1: its trainer_state.json records no command line (a " +
                        "checkpoint of an older vitmae): give --data and the flags the run was started with\n",
                    0) == 0);
}

#endif
