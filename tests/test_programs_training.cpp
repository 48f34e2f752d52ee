// SPDX-License-Identifier: Apache-2.0
// vitmae-pretrain end to end, and what both training programs share (one command line, one data
// layer, one loop): resuming and its refusals, damaged images and --skip-bad-images, files of the
// wrong kind, int8 checkpoints refused, models too large or out of memory, the progress line.
#include "program_util.hpp"
#include "test_util.hpp"

#include <vitmae/train.hpp>

#include <sys/stat.h>
#include <algorithm>
#include <fstream>
#include <regex>
#include <sstream>

namespace io = vitmae::io;
namespace train = vitmae::train;
using test::copy;
using test::grey_pngs;
using test::Run;
using test::sanitizer_could_not_start;
using test::tiny16_config;
using test::tiny_mae_config;
using test::tiny_vit_config;

#if defined(VITMAE_PRETRAIN_EXE) && defined(VITMAE_FINETUNE_EXE) && defined(VITMAE_CLASSIFY_EXE) && \
    defined(VITMAE_CONVERT_EXE)

namespace {

Run run_pretrain(const std::string& args) { return test::run_program(VITMAE_PRETRAIN_EXE, args); }

/// The tiny fixture model at 16x16 pixels (16 patches): seconds of training.
std::string write_tiny16_config(const std::string& dir) {
  vitmae::Config c = vitmae::load_config(test::data("hf/tiny/config.json"));
  c.image_size = 16;
  io::write_file_atomic(dir + "/config.json", c.to_json().dump(2));
  return dir + "/config.json";
}

}  // namespace

// ---------------------------------------------------------------- vitmae-pretrain

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
  CHECK_SAYS(bad, 2, messages::pretrain::kRequired);
  const Run empty = run_pretrain("--data " + test::tmp_dir("pretrain_empty") + " --out " + dir + "/c --config " + dir +
                                 "/config.json");
  CHECK_SAYS(empty, 1, messages::pretrain::kNoImageFiles);
  const Run mismatch =
      run_pretrain(common + "--out " + dir + "/d --steps 6 --batch 5 --resume " + dir + "/a/checkpoint-3");
  CHECK_SAYS(mismatch, 2,
             messages::pretrain::kResumeFlagChanged);  // a usage error: the run must keep the checkpoint's batch
}

TEST_CASE("vitmae-pretrain --resume with another --steps, --seed or --threads is a usage error (exit 2, one line)") {
  const std::string dir = test::tmp_dir("new_user_resume");
  const std::string config = write_tiny16_config(dir);
  io::write_file_atomic(dir + "/list.txt",
                        test::data("images/coffee.png") + "\n" + test::data("images/camera.png") + "\n");
  const std::string common = "--data " + dir + "/list.txt --batch 2 --lr 1e-3 --save-every 0 ";
  const Run a = test::run_program(
      VITMAE_PRETRAIN_EXE, common + "--config " + config + " --steps 2 --seed 3 --threads 1 --out " + dir + "/a");
  INFO(a.err);
  REQUIRE(a.status == 0);
  const std::string state = dir + "/a/final/trainer_state.json";
  // A flag the run was started with, given again with another value: refused by the command line.
  for (const auto& [flags, key, theirs, mine] :
       {std::tuple<std::string, std::string, int, int>{"--steps 3 --seed 3 --threads 1", "--steps", 2, 3},
        {"--steps 2 --seed 4 --threads 1", "--seed", 3, 4}}) {
    const Run r =
        test::run_program(VITMAE_PRETRAIN_EXE, common + flags + " --resume " + dir + "/a/final --out " + dir + "/b");
    CHECK_SAYS(r, 2, messages::pretrain::kResumeFlagChanged);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(r.err.find(key + " " + std::to_string(theirs)) != std::string::npos);
    CHECK(r.err.find(key + " " + std::to_string(mine)) != std::string::npos);
  }
  // --threads may change with the number of ranks: the checkpoint's state refuses it here.
  const Run r = test::run_program(
      VITMAE_PRETRAIN_EXE, common + "--steps 2 --seed 3 --threads 2 --resume " + dir + "/a/final --out " + dir + "/b");
  CHECK_SAYS(r, 2, messages::pretrain::kResumeCheckpointDiffers);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  // --resume alone: every flag from the checkpoint, --out its run folder (nothing left to train).
  const Run alone = test::run_program(VITMAE_PRETRAIN_EXE, "--resume " + dir + "/a/final");
  INFO(alone.err);
  CHECK(alone.status == 0);
  CHECK(alone.err.find(std::string(messages::pretrain::kResumingFrom) + "2 of 2") != std::string::npos);
  CHECK(alone.out.find("trained 0 steps") != std::string::npos);
  CHECK(alone.out.find("final model: " + dir + "/a/final") != std::string::npos);
  // The same flags resume (nothing left to train: the run had 2 of 2 steps).
  const Run same = test::run_program(
      VITMAE_PRETRAIN_EXE, common + "--steps 2 --seed 3 --threads 1 --resume " + dir + "/a/final --out " + dir + "/c");
  INFO(same.err);
  CHECK(same.status == 0);
  CHECK(same.out.find("trained 0 steps") != std::string::npos);
}

TEST_CASE("vitmae-pretrain stops at a damaged image naming it, and --skip-bad-images trains on the rest") {
  const std::string dir = test::tmp_dir("new_user_skip_cli");
  const std::string config = write_tiny16_config(dir);
  ::mkdir((dir + "/data").c_str(), 0755);
  copy(test::data("images/coffee.png"), dir + "/data/a.png");
  copy(test::data("images/NOTICE"), dir + "/data/b.png");
  copy(test::data("images/camera.png"), dir + "/data/c.png");
  const std::string common =
      "--data " + dir + "/data --config " + config + " --batch 4 --lr 1e-3 --steps 2 --threads 1 --save-every 0 ";
  const Run stop = test::run_program(VITMAE_PRETRAIN_EXE, common + "--out " + dir + "/a");
  CHECK_SAYS(stop, 1, messages::pretrain::kSkipBadImagesHint);
  CHECK(test::last_line(stop.err).find(dir + "/data/b.png") != std::string::npos);
  CHECK_FALSE(io::file_exists(dir + "/a/final/model.safetensors"));

  copy(test::data("images/truncated.jpg"), dir + "/data/d.jpg");
  const Run skip = test::run_program(VITMAE_PRETRAIN_EXE, common + "--out " + dir + "/b --skip-bad-images");
  INFO(skip.err);
  REQUIRE(skip.status == 0);
  CHECK_SAYS(skip, 0, messages::pretrain::kLeftOut);
  CHECK(skip.err.find("2 of 4 images") != std::string::npos);
  CHECK(skip.err.find(dir + "/data/b.png") != std::string::npos);
  CHECK(skip.err.find(dir + "/data/d.jpg") != std::string::npos);
  CHECK(io::file_exists(dir + "/b/final/model.safetensors"));
}

TEST_CASE("vitmae-pretrain refuses a config whose model is too large: exit 1, one line, before allocating") {
  vitmae::Config c;  // the issue's: image_size 65536, patch 1
  c.image_size = 65536;
  c.patch_size = 1;
  // Through a program: exit 1, one line, before anything is allocated.
  const std::string dir = test::tmp_dir("new_user_too_large");
  io::write_file_atomic(dir + "/config.json", c.to_json().dump(2));
  const Run r =
      test::run_program(VITMAE_PRETRAIN_EXE, "--data " + dir + " --out " + dir + "/o --config " + dir + "/config.json");
  CHECK_SAYS(r, 1, messages::pretrain::kModelTooLarge);
  CHECK(r.err.find('\n') == r.err.size() - 1);
}

TEST_CASE("running out of memory is one vitmae: line saying what was being allocated") {
  const std::string dir = test::tmp_dir("new_user_oom");
  vitmae::Config c;  // 1.2e9 parameters, under the limit, but not under a 1 GB address space
  c.hidden_size = 2048, c.num_hidden_layers = 24, c.num_attention_heads = 16, c.intermediate_size = 8192;
  io::write_file_atomic(dir + "/config.json", c.to_json().dump(2));
  const Run r = test::run_program("ulimit -v 1000000; " VITMAE_PRETRAIN_EXE,
                                  "--data " + dir + " --out " + dir + "/o --config " + dir + "/config.json");
  if (sanitizer_could_not_start(r)) return;
  CHECK_SAYS(r, 1, messages::pretrain::kOutOfMemory);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
}

// ---------------------------------------------------------------- both training programs

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
  CHECK_SAYS(probe, 2, messages::finetune::kShorterSideNotForProbe);

  // An image gone from the training set: the resumed run is refused, naming both counts.
  std::filesystem::remove(dir + "/img/b/y-2.png");
  Run r = test::run_program(VITMAE_PRETRAIN_EXE, "--resume " + dir + "/pt/checkpoint-1 --out " + dir + "/pt2");
  CHECK_SAYS(r, 2, messages::pretrain::kResumeOtherImages);
  CHECK_FALSE(std::filesystem::exists(dir + "/pt2"));
  // A checkpoint whose trainer_state.json has no command line (an older vitmae's) says what to give.
  nlohmann::json st = io::read_json_file(dir + "/pt/checkpoint-1/trainer_state.json");
  st.erase("args");
  io::write_file_atomic(dir + "/pt/checkpoint-1/trainer_state.json", st.dump());
  r = test::run_program(VITMAE_PRETRAIN_EXE, "--resume " + dir + "/pt/checkpoint-1");
  CHECK_SAYS(r, 2, messages::pretrain::kResumeNoCommandLine);
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
  CHECK_SAYS(r, 2, messages::pretrain::kResumeFlagChanged);
  CHECK(r.err.find("--scale-min 0.2") != std::string::npos);
  CHECK(r.err.find("--scale-min 0.5") != std::string::npos);
  r = test::run_program(VITMAE_PRETRAIN_EXE, "--resume " + ckpt + " --vflip");
  CHECK_SAYS(r, 2, messages::pretrain::kResumeFlagAdded);
  r = test::run_program(VITMAE_FINETUNE_EXE, "--resume " + ckpt);
  CHECK_SAYS(r, 2, messages::finetune::kCheckpointOfPretrain);
  r = test::run_program(VITMAE_PRETRAIN_EXE,
                        "--resume " + ckpt + " --lr 0.001 --save-every 1");  // the same value; a free flag
  INFO(r.err);
  CHECK(r.status == 0);
  CHECK(test::slurp(dir + "/run/final/model.safetensors").size() > 0);
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
  CHECK_SAYS(f, 1, messages::finetune::kSkipBadImagesHint);
  CHECK(test::last_line(f.err).find(dir + "/train/b/broken.png") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir + "/ft"));
  const Run fs =
      test::run_program(VITMAE_FINETUNE_EXE, "--data " + dir + "/train --holdout 1 --config " + dir + "/vit.json" +
                                                 common + " --skip-bad-images --out " + dir + "/ft");
  INFO(fs.err);
  CHECK_SAYS(fs, 0, messages::finetune::kLeftOut);
  CHECK(fs.err.find("1 of 7 images") != std::string::npos);
  CHECK(fs.err.find(dir + "/train/b/broken.png") != std::string::npos);
  // vitmae-pretrain on a list file with a missing image
  io::write_file_atomic(dir + "/list.txt", good[0] + "\n" + dir + "/missing.png\n" + good[1] + "\n");
  tiny_mae_config(dir);
  const Run p = test::run_program(VITMAE_PRETRAIN_EXE, "--data " + dir + "/list.txt --config " + dir +
                                                           "/mae.json --lr 1e-3" + common + " --out " + dir + "/pt");
  CHECK_SAYS(p, 1, messages::pretrain::kSkipBadImagesHint);
  CHECK(test::last_line(p.err).find(dir + "/missing.png") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir + "/pt"));
}

TEST_CASE("a file of the wrong kind gets a message that says so") {
  const std::string dir = test::tmp_dir("wrong_kinds");
  const auto img = grey_pngs(dir, "x", 1, 90)[0];
  // A folder as --config.
  grey_pngs(dir + "/data/a", "a", 2, 30);
  grey_pngs(dir + "/data/b", "b", 2, 200);
  Run r = test::run_program(VITMAE_FINETUNE_EXE,
                            "--data " + dir + "/data --holdout 1 --config " + dir + " --out " + dir + "/o");
  CHECK_SAYS(r, 1, messages::finetune::kConfigIsAFolder);
  // A config.json as a model.
  r = test::run_program(VITMAE_CLASSIFY_EXE, "--model " + test::data("hf_vit/cls_tiny") + "/config.json " + img);
  CHECK_SAYS(r, 1, messages::classify::kJsonNotWeights);
  // An image as a dataset, in both programs.
  r = test::run_program(VITMAE_FINETUNE_EXE,
                        "--data " + img + " --holdout 1 --config " + tiny_vit_config(dir) + " --out " + dir + "/o");
  CHECK_SAYS(r, 1, messages::finetune::kImageNotADataset);
  r = test::run_program(VITMAE_PRETRAIN_EXE,
                        "--data " + img + " --config " + test::data("hf/tiny/config.json") + " --out " + dir + "/o");
  CHECK_SAYS(r, 1, messages::pretrain::kImageNotADataset);
  CHECK_FALSE(std::filesystem::exists(dir + "/o"));
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
    CHECK_SAYS(r, 1, messages::training::kInt8Checkpoint);
    CHECK(r.err.find(dir + "/int8/model.safetensors") != std::string::npos);            // the file
    CHECK(r.err.find("vitmae-convert --input " + dir + "/int8") != std::string::npos);  // the way back
    CHECK_FALSE(std::filesystem::exists(dir + "/run"));
  }
}

#endif
