// SPDX-License-Identifier: Apache-2.0
// Issue 14, what a new user hit: resume refusals as usage errors, damaged images in a dataset,
// error messages, help texts, output formats and the loss curve's size, and config and weights
// that disagree refused before anything large is allocated. Messages are asserted in full.
#include "test_util.hpp"

#include <vitmae/train.hpp>

#include <sys/resource.h>
#include <sys/stat.h>
#include <chrono>
#include <regex>
#include <set>
#include <thread>

// The program tests need the example programs, whose paths tests/CMakeLists.txt defines when
// they are built.
#if defined(VITMAE_RUN_EXE) && defined(VITMAE_CONVERT_EXE) && defined(VITMAE_RECONSTRUCT_EXE) && \
    defined(VITMAE_EMBED_EXE) && defined(VITMAE_PRETRAIN_EXE) && defined(VITMAE_EVALUATE_EXE)
#define VITMAE_HAVE_PROGRAMS 1
#endif

namespace io = vitmae::io;
namespace train = vitmae::train;
using test::Run;

namespace {

void copy(const std::string& from, const std::string& to) {
  REQUIRE(std::system(("cp '" + from + "' '" + to + "'").c_str()) == 0);
}

/// `fixture`'s weights copied into `dir` beside its config.json with the issue's sizes (hidden
/// 2048, 48 layers, MLP 8192: a 9.6 GB model beside a 64-wide checkpoint); returns the message
/// that must refuse it.
std::string oversized_config_beside(const std::string& fixture, const std::string& dir) {
  copy(test::data(fixture + "/model.safetensors"), dir + "/model.safetensors");
  nlohmann::json j = io::read_json_file(test::data(fixture + "/config.json"));
  j["hidden_size"] = 2048;
  j["num_hidden_layers"] = 48;
  j["intermediate_size"] = 8192;
  io::write_file_atomic(dir + "/config.json", j.dump(2));
  return "vitmae: load_state_dict: " + dir +
         "/model.safetensors: 'vit.embeddings.cls_token' has shape [1, 1, 64], "
         "expected [1, 1, 2048] (" +
         dir + "/config.json asks for hidden_size 2048)";
}

/// Since `start`, under a second and nothing near a 9.6 GB model touched.
void check_refused_in_milliseconds(std::chrono::steady_clock::time_point start) {
  CHECK(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < 1.0);
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  CHECK(usage.ru_maxrss < 1'000'000);  // KB
}

const char* const kNotAnImage = ": not a readable image: expected PNG, JPEG, BMP, TGA, GIF, PNM, PSD or HDR";

#ifdef VITMAE_HAVE_PROGRAMS
/// The tiny fixture model at 16x16 pixels (16 patches): seconds of training.
std::string write_tiny16_config(const std::string& dir) {
  vitmae::Config c = vitmae::load_config(test::data("hf/tiny/config.json"));
  c.image_size = 16;
  io::write_file_atomic(dir + "/config.json", c.to_json().dump(2));
  return dir + "/config.json";
}

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

/// A program built with AddressSanitizer cannot start under `ulimit -v` (its shadow memory is
/// reserved up front): the tests that limit the address space then have nothing to check.
bool sanitizer_could_not_start(const Run& r) {
  if (r.err.find("Sanitizer") == std::string::npos) return false;
  MESSAGE("the program is built with a sanitizer, which cannot run under ulimit -v: skipped");
  return true;
}
#endif

}  // namespace

// ---------------------------------------------------------------- 1. resume

#ifdef VITMAE_HAVE_PROGRAMS
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
    CHECK(r.status == 2);
    CHECK(r.err == "vitmae: " + state + ": the run was started with " + key + " " + std::to_string(theirs) +
                       ", this run gives " + key + " " + std::to_string(mine) +
                       "; a resumed run must keep it (leave the flag out to keep it)\n");
  }
  // --threads may change with the number of ranks: the checkpoint's state refuses it here.
  const Run r = test::run_program(
      VITMAE_PRETRAIN_EXE, common + "--steps 2 --seed 3 --threads 2 --resume " + dir + "/a/final --out " + dir + "/b");
  CHECK(r.status == 2);
  CHECK(r.err == "vitmae: " + state +
                     ": the checkpoint was trained with threads 1, this run asks for 2; a resumed run must keep it\n");
  // --resume alone: every flag from the checkpoint, --out its run folder (nothing left to train).
  const Run alone = test::run_program(VITMAE_PRETRAIN_EXE, "--resume " + dir + "/a/final");
  INFO(alone.err);
  CHECK(alone.status == 0);
  CHECK(alone.err.find("resuming from step 2 of 2") != std::string::npos);
  CHECK(alone.out.find("trained 0 steps") != std::string::npos);
  CHECK(alone.out.find("final model: " + dir + "/a/final") != std::string::npos);
  // The same flags resume (nothing left to train: the run had 2 of 2 steps).
  const Run same = test::run_program(
      VITMAE_PRETRAIN_EXE, common + "--steps 2 --seed 3 --threads 1 --resume " + dir + "/a/final --out " + dir + "/c");
  INFO(same.err);
  CHECK(same.status == 0);
  CHECK(same.out.find("trained 0 steps") != std::string::npos);
}
#endif

// ---------------------------------------------------------------- 2. damaged images

TEST_CASE("ImageDataset::skip_unreadable leaves out damaged files, names them, keeps the rest in order") {
  const std::string dir = test::tmp_dir("new_user_skip_lib");
  copy(test::data("images/coffee.png"), dir + "/a.png");
  copy(test::data("images/NOTICE"), dir + "/b.png");  // text named like an image
  copy(test::data("images/camera.png"), dir + "/c.png");
  copy(test::data("images/truncated.jpg"), dir + "/d.jpg");
  copy(test::data("images/rocket.jpg"), dir + "/e.jpg");
  auto data = train::ImageDataset::open(dir, 3, 64);
  REQUIRE(data.size() == 5);
  const auto copy_before = data;  // a copy made before keeps its own files and cache
  const std::vector<train::SkippedImage> skipped = data.skip_unreadable(2);
  REQUIRE(skipped.size() == 2);
  CHECK(skipped[0].file == dir + "/b.png");
  CHECK(skipped[0].reason == dir + "/b.png" + kNotAnImage);
  CHECK(skipped[1].file == dir + "/d.jpg");
  CHECK(skipped[1].reason == dir + "/d.jpg: cannot decode image: truncated or corrupt JPEG");
  CHECK(data.files() == std::vector<std::string>{dir + "/a.png", dir + "/c.png", dir + "/e.jpg"});
  // The cache follows the new indices: image 2 is e.jpg (rocket 640x427 shrunk to 96x64).
  CHECK(data.image(2)->width == 96);
  CHECK(data.image(2)->height == 64);
  CHECK(data.image(1)->data == copy_before.image(2)->data);
  CHECK(copy_before.size() == 5);

  const std::string bad = test::tmp_dir("new_user_skip_all");
  copy(test::data("images/NOTICE"), bad + "/x.png");
  auto none = train::ImageDataset::open(bad, 3);
  CHECK_THROWS_WITH_AS(
      none.skip_unreadable(),
      ("vitmae: dataset: none of the 1 images can be read; the first: " + bad + "/x.png" + kNotAnImage).c_str(),
      vitmae::Error);
}

#ifdef VITMAE_HAVE_PROGRAMS
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
  CHECK(stop.status == 1);
  CHECK(test::last_line(stop.err) == "vitmae: " + dir + "/data/b.png" + kNotAnImage +
                                         " (--skip-bad-images leaves out the images that cannot be read)");
  CHECK_FALSE(io::file_exists(dir + "/a/final/model.safetensors"));

  copy(test::data("images/truncated.jpg"), dir + "/data/d.jpg");
  const Run skip = test::run_program(VITMAE_PRETRAIN_EXE, common + "--out " + dir + "/b --skip-bad-images");
  INFO(skip.err);
  REQUIRE(skip.status == 0);
  CHECK(skip.err.rfind("vitmae-pretrain: --skip-bad-images: left out 2 of 4 images, which cannot be read:\n"
                       "  " +
                           dir + "/data/b.png" + kNotAnImage +
                           "\n"
                           "  " +
                           dir +
                           "/data/d.jpg: cannot decode image: truncated or corrupt JPEG\n"
                           "vitmae-pretrain: 2 images, ",
                       0) == 0);
  CHECK(io::file_exists(dir + "/b/final/model.safetensors"));
}
#endif

// ---------------------------------------------------------------- 3. messages

TEST_CASE("image errors are whole lines that name the file and the right format") {
  const std::string notice = test::data("images/NOTICE");
  CHECK_THROWS_WITH_AS(io::load_image_raw(notice), ("vitmae: " + notice + kNotAnImage).c_str(), vitmae::Error);
  // stb_image's failure reason is per thread and null in a new one: it must not cut the message.
  std::string in_thread;
  std::thread([&] {
    try {
      io::load_image_raw(notice);
    } catch (const vitmae::Error& e) {
      in_thread = e.what();
    }
  }).join();
  CHECK(in_thread == "vitmae: " + notice + kNotAnImage);

  const std::string folder = test::data("images");
  CHECK_THROWS_WITH_AS(io::load_image_raw(folder),
                       ("vitmae: " + folder + ": is a directory, expected an image file").c_str(), vitmae::Error);
  // A JPEG cut inside its header tables: stb's loader fails without a reason of its own and its
  // last reason is the PNG test's "bad png sig", which must not be shown.
  const std::string truncated = test::data("images/truncated.jpg");
  CHECK_THROWS_WITH_AS(io::load_image_raw(truncated),
                       ("vitmae: " + truncated + ": cannot decode image: truncated or corrupt JPEG").c_str(),
                       vitmae::Error);
  const std::string dir = test::tmp_dir("new_user_messages");
  const std::string rocket = test::slurp(test::data("images/rocket.jpg"));
  io::write_file_atomic(dir + "/half.jpg", rocket.substr(0, rocket.size() / 2));
  CHECK_THROWS_WITH_AS(
      io::load_image_raw(dir + "/half.jpg"),
      ("vitmae: " + dir + "/half.jpg: cannot decode image: truncated or corrupt JPEG (stb_image: expected marker)")
          .c_str(),
      vitmae::Error);
  io::write_file_atomic(dir + "/head.jpg", rocket.substr(0, 300));
  CHECK_THROWS_WITH_AS(io::load_image_raw(dir + "/head.jpg"),
                       ("vitmae: " + dir + "/head.jpg: cannot read the JPEG header: truncated or corrupt JPEG").c_str(),
                       vitmae::Error);
  const std::string chelsea = test::slurp(test::data("images/chelsea.png"));
  io::write_file_atomic(dir + "/half.png", chelsea.substr(0, chelsea.size() / 2));
  CHECK_THROWS_WITH_AS(
      io::load_image_raw(dir + "/half.png"),
      ("vitmae: " + dir + "/half.png: cannot decode image: truncated or corrupt PNG (stb_image: outofdata)").c_str(),
      vitmae::Error);

#ifdef VITMAE_HAVE_PROGRAMS
  // Through the programs: one line, exit 1.
  Run r = test::run_program(VITMAE_RECONSTRUCT_EXE,
                            "--model " + test::data("hf/tiny") + " --image " + folder + " --out " + dir + "/p.png");
  CHECK(r.status == 1);
  CHECK(r.err == "vitmae: " + folder + ": is a directory, expected an image file\n");
  r = test::run_program(VITMAE_EMBED_EXE,
                        "--model " + test::data("hf/tiny") + " --image " + notice + " --out " + dir + "/f.safetensors");
  CHECK(r.status == 1);
  CHECK(r.err == "vitmae: " + notice + kNotAnImage + "\n");
#endif
}

#ifdef VITMAE_HAVE_PROGRAMS

TEST_CASE("an unknown --preset is a usage error (exit 2, the synopsis) in every program that takes one") {
  const std::string expected = "--preset expects mae-vit-base, mae-vit-large or mae-vit-huge, got 'nosuch'";
  Run r = test::run_program(VITMAE_RUN_EXE, "--model m --input i --output o --preset nosuch");
  CHECK(r.status == 2);
  CHECK(first_line(r.err) == "vitmae-run: " + expected);
  r = test::run_program(VITMAE_CONVERT_EXE, "--input i --out o --preset nosuch");
  CHECK(r.status == 2);
  CHECK(r.err ==
        "vitmae-convert: " + expected +
            "\n"
            "usage: vitmae-convert --input PATH --out DIR [--preset NAME] [--dtype float32|float16|bfloat16|int8]\n"
            "                      [--num-labels N | --labels FILE] [--seed N]\n"
            "run 'vitmae-convert --help' for every flag and its default\n");
  r = test::run_program(VITMAE_PRETRAIN_EXE, "--data d --out o --preset nosuch");
  CHECK(r.status == 2);
  CHECK(first_line(r.err) == "vitmae-pretrain: " + expected);
}

// ---------------------------------------------------------------- 4. help and preprocessing

TEST_CASE("every program's --help explains every flag it names, with its default") {
  for (const std::string exe : {VITMAE_RUN_EXE, VITMAE_CONVERT_EXE, VITMAE_RECONSTRUCT_EXE, VITMAE_EMBED_EXE,
                                VITMAE_PRETRAIN_EXE, VITMAE_EVALUATE_EXE, VITMAE_CLASSIFY_EXE, VITMAE_FINETUNE_EXE}) {
    INFO(exe);
    const Run help = test::run_program(exe, "--help");
    REQUIRE(help.status == 0);
    std::vector<std::string> lines;
    std::istringstream in(help.out);
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    std::set<std::string> flags;
    const std::regex flag_re("--[a-z][a-z0-9-]*");
    for (std::sregex_iterator it(help.out.begin(), help.out.end(), flag_re), end; it != end; ++it)
      flags.insert(it->str());
    CHECK(flags.size() >= 4);
    for (const std::string& f : flags) {
      INFO(f);
      if (f == "--help") continue;
      // The flag's own entry: a line starting with it, and its continuation lines.
      size_t at = lines.size();
      for (size_t i = 0; i < lines.size() && at == lines.size(); ++i)
        if (std::regex_search(lines[i], std::regex("^  (-h, )?" + f + "( |,|$)"))) at = i;
      REQUIRE(at < lines.size());
      std::string entry = lines[at];
      for (size_t i = at + 1; i < lines.size() && std::regex_search(lines[i], std::regex("^ {6,}[^ -]")); ++i)
        entry += " " + lines[i];
      // It says its default, or that it is required, in the table's forms: "(default ...)",
      // "(default: ...)", "(...; default: ...)" or "(required ...)".
      CHECK(std::regex_search(entry, std::regex("\\((default|required)\\b|; default[ :]")));
      // And the program knows it.
      const Run r = test::run_program(exe, f);
      CHECK(r.err.find("unknown argument") == std::string::npos);
    }
  }
  const Run pretrain = test::run_program(VITMAE_PRETRAIN_EXE, "--help");
  CHECK(pretrain.out.find(
            "  --base-lr X         MAE's base learning rate (default 1.5e-4); the peak rate is\n"
            "                      base-lr * batch * accum / 256, so a small batch trains slowly: --batch 8 gives\n"
            "                      1.5e-4 * 8 / 256 = 4.7e-6, and a short run learns nothing visible.") !=
        std::string::npos);
  train::TrainOptions o;
  o.batch = 8;
  CHECK(o.peak_lr() == doctest::Approx(4.7e-6).epsilon(0.01));
}

TEST_CASE("vitmae-convert of a folder without preprocessor_config.json keeps the library's preprocessing") {
  const std::string out = test::tmp_dir("new_user_convert") + "/converted";
  const std::string in = test::data("formats/mae_original");
  REQUIRE_FALSE(io::file_exists(in + "/preprocessor_config.json"));
  const Run r = test::run_program(VITMAE_CONVERT_EXE, "--input " + in + " --out " + out);
  INFO(r.err);
  REQUIRE(r.status == 0);
  const vitmae::Config config = vitmae::load_config(in + "/config.json");
  const vitmae::ImageProcessor before = vitmae::ImageProcessor::for_checkpoint(in, config);
  const vitmae::ImageProcessor after = vitmae::ImageProcessor::for_checkpoint(out, config);
  CHECK(io::read_json_file(out + "/preprocessor_config.json") == before.to_json());
  CHECK(after.to_json() == before.to_json());
  CHECK(after.resample == 2);
  CHECK(after.image_mean == std::vector<double>{0.5, 0.5, 0.5});
  CHECK(after.height == 32);
  const io::Image8 img = io::load_image(test::data("images/chelsea.png"), 3);
  CHECK(after.preprocess<float>({img}).data == before.preprocess<float>({img}).data);
}
#endif

TEST_CASE(
    "without preprocessor_config.json, ViTImageProcessor's defaults at the model's size, one statistic a channel") {
  const std::string in = test::data("hf/tiny_gray_p8");  // a grey model without preprocessor_config.json
  REQUIRE_FALSE(io::file_exists(in + "/preprocessor_config.json"));
  const vitmae::Config grey = vitmae::load_config(in + "/config.json");
  const vitmae::ImageProcessor g = vitmae::ImageProcessor::for_checkpoint(in, grey);
  nlohmann::json expected = nlohmann::json::parse(R"({"do_normalize": true, "do_rescale": true, "do_resize": true,
      "image_mean": [0.5], "image_processor_type": "ViTImageProcessor", "image_std": [0.5], "resample": 2,
      "size": {"height": 48, "width": 48}})");
  expected["rescale_factor"] = 1.0 / 255.0;
  CHECK(g.to_json() == expected);
  CHECK(g.preprocess<float>({io::load_image(test::data("images/camera.png"), 1)}).size(1) == 1);
}

// ---------------------------------------------------------------- 5. outputs

#ifdef VITMAE_HAVE_PROGRAMS
TEST_CASE("vitmae-reconstruct writes the format --out names, atomically, and refuses others") {
  const std::string dir = test::tmp_dir("new_user_formats");
  const std::string common =
      "--model " + test::data("hf/tiny") + " --image " + test::data("images/chelsea.png") + " --seed 1 --out " + dir;
  const std::vector<std::pair<std::string, std::string>> kinds = {
      {"/p.png", "\x89PNG\r\n\x1a\n"}, {"/p.jpg", "\xff\xd8\xff"}, {"/p.JPEG", "\xff\xd8\xff"}, {"/p.bmp", "BM"}};
  for (const auto& [name, magic] : kinds) {
    INFO(name);
    const Run r = test::run_program(VITMAE_RECONSTRUCT_EXE, common + name);
    INFO(r.err);
    REQUIRE(r.status == 0);
    CHECK(test::slurp(dir + name).substr(0, magic.size()) == magic);
  }
  const io::Image8 png = io::load_image_raw(dir + "/p.png"), jpg = io::load_image_raw(dir + "/p.jpg"),
                   bmp = io::load_image_raw(dir + "/p.bmp");
  CHECK(bmp.data == png.data);
  REQUIRE(jpg.data.size() == png.data.size());
  double diff = 0;
  for (size_t i = 0; i < png.data.size(); ++i)
    diff += std::abs(static_cast<int>(jpg.data[i]) - static_cast<int>(png.data[i]));
  CHECK(diff / static_cast<double>(png.data.size()) < 3.0);  // quality 95
  CHECK(std::system(("ls " + dir + " | grep -q tmp").c_str()) != 0);

  const Run bad = test::run_program(VITMAE_RECONSTRUCT_EXE, common + "/p.gif");
  CHECK(bad.status == 2);
  CHECK(first_line(bad.err) ==
        "vitmae-reconstruct: --out must end in .png, .jpg, .jpeg or .bmp (the panel's format), got '" + dir +
            "/p.gif'");
  CHECK_FALSE(io::file_exists(dir + "/p.gif"));
}
#endif

TEST_CASE("io::save_image writes PNG, JPEG or BMP as the extension says, and refuses others") {
  const std::string dir = test::tmp_dir("new_user_save_image");
  const io::Image8 img = io::load_image(test::data("images/chelsea.png"), 3);
  for (const auto& [name, magic] : std::vector<std::pair<std::string, std::string>>{{"/a.png", "\x89PNG\r\n\x1a\n"},
                                                                                    {"/a.jpeg", "\xff\xd8\xff"},
                                                                                    {"/a.Jpg", "\xff\xd8\xff"},
                                                                                    {"/a.bmp", "BM"}}) {
    INFO(name);
    io::save_image(dir + name, img);
    CHECK(test::slurp(dir + name).substr(0, magic.size()) == magic);
    const io::Image8 back = io::load_image_raw(dir + name);
    CHECK(back.width == img.width);
    CHECK(back.height == img.height);
  }
  CHECK(io::load_image_raw(dir + "/a.bmp").data == img.data);
  CHECK_THROWS_WITH_AS(io::save_image(dir + "/x.tiff", img),
                       ("vitmae: " + dir +
                        "/x.tiff: cannot tell the image format from the extension, expected .png, .jpg, .jpeg or .bmp")
                           .c_str(),
                       vitmae::Error);
  CHECK_FALSE(io::file_exists(dir + "/x.tiff"));
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

// ---------------------------------------------------------------- 6. config and weights that disagree

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

TEST_CASE("a config.json that does not fit the checkpoint is refused in milliseconds, before allocating") {
  const std::string dir = test::tmp_dir("new_user_mismatch");
  const std::string expected = oversized_config_beside("hf/tiny", dir);  // the issue's config
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH_AS(vitmae::ForPreTraining<float>::from_pretrained(dir), expected.c_str(), vitmae::Error);
  CHECK_THROWS_WITH_AS(vitmae::Model<float>::from_pretrained(dir), expected.c_str(), vitmae::Error);
  check_refused_in_milliseconds(start);

#ifdef VITMAE_HAVE_PROGRAMS
  // Through vitmae-run, under a 2 GB address-space limit it would exceed by allocating.
  const Run r = test::run_program(
      "ulimit -v 2000000; " VITMAE_RUN_EXE,
      "--model " + dir + " --input " + test::data("hf/tiny/io.safetensors") + " --output " + dir + "/out.safetensors");
  if (!sanitizer_could_not_start(r)) {
    CHECK(r.status == 1);
    CHECK(r.err == expected + "\n");
  }
#endif

  // Another patch size names patch_size; a missing layer is named before allocating too.
  nlohmann::json j = io::read_json_file(test::data("hf/tiny/config.json"));
  j["patch_size"] = 8;
  io::write_file_atomic(dir + "/config.json", j.dump(2));
  CHECK_THROWS_WITH_AS(vitmae::ForPreTraining<float>::from_pretrained(dir),
                       ("vitmae: load_state_dict: " + dir +
                        "/model.safetensors: 'vit.embeddings.position_embeddings' has shape [1, 65, 64], "
                        "expected [1, 17, 64] (" +
                        dir + "/config.json asks for 1 + (image_size 32 / patch_size 8)^2 = 17 positions)")
                           .c_str(),
                       vitmae::Error);
  j["patch_size"] = 4;
  j["num_hidden_layers"] = 3;
  io::write_file_atomic(dir + "/config.json", j.dump(2));
  std::vector<std::string> layer2;
  for (const auto& t : vitmae::tensor_specs<vitmae::ForPreTraining<float>>(vitmae::load_config(dir + "/config.json")))
    if (t.name.rfind("vit.encoder.layer.2.", 0) == 0) layer2.push_back(t.name);
  REQUIRE(layer2.size() == 16);
  CHECK_THROWS_WITH_AS(
      vitmae::ForPreTraining<float>::from_pretrained(dir),
      ("vitmae: load_state_dict: " + dir + "/model.safetensors: missing tensors: " + vitmae::join_names(layer2))
          .c_str(),
      vitmae::Error);
}

TEST_CASE(
    "a classifier config.json that does not fit its checkpoint is refused before allocating, naming the file and the "
    "tensor") {
  const std::string dir = test::tmp_dir("new_user_classifier_mismatch");
  const std::string expected = oversized_config_beside("hf_vit/cls_tiny", dir);
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH_AS(vitmae::ViTForImageClassification<float>::from_pretrained(dir), expected.c_str(), vitmae::Error);
  check_refused_in_milliseconds(start);
  // Another patch size names the position table and patch_size.
  nlohmann::json j = io::read_json_file(test::data("hf_vit/cls_tiny/config.json"));
  j["patch_size"] = 8;
  io::write_file_atomic(dir + "/config.json", j.dump(2));
  CHECK_THROWS_WITH_AS(vitmae::ViTForImageClassification<float>::from_pretrained(dir),
                       doctest::Contains("/model.safetensors: 'vit.embeddings.position_embeddings' has shape"),
                       vitmae::Error);
  CHECK_THROWS_WITH_AS(vitmae::ViTForImageClassification<float>::from_pretrained(dir),
                       doctest::Contains("/config.json asks for 1 + (image_size 32 / patch_size 8)^2 = 17 positions)"),
                       vitmae::Error);
}

TEST_CASE("a config whose model is too large is refused by validate(), naming the sizes") {
  vitmae::Config c;  // the issue's: image_size 65536, patch 1
  c.image_size = 65536;
  c.patch_size = 1;
  double count = 0;
  for (const auto& t : vitmae::tensor_specs<vitmae::ForPreTraining<float>>(c)) {  // allocates nothing
    double n = 1;
    for (auto d : t.shape) n *= static_cast<double>(d);
    count += n;
  }
  char expected_count[64];
  std::snprintf(expected_count, sizeof expected_count, "%.0f", count);
  CHECK(std::string(expected_count) == "5497668815875");
  CHECK_THROWS_WITH_AS(
      c.validate("config.json"),
      "vitmae: config.json: the model would have 5497668815875 parameters (21990.7 GB as float32), more than the "
      "limit of 4000000000: check image_size 65536 / patch_size 1 (4294967296 patches), hidden_size 768 x "
      "num_hidden_layers 12, decoder_hidden_size 512 x decoder_num_hidden_layers 8",
      vitmae::Error);
  // Just below the limit passes; MAE's largest is far below.
  vitmae::Config huge = vitmae::Config::preset("mae-vit-huge");
  CHECK_NOTHROW(huge.validate());
  huge.num_hidden_layers = 5000;
  CHECK_THROWS_WITH_AS(huge.validate(), doctest::Contains("more than the limit of 4000000000"), vitmae::Error);
#ifdef VITMAE_HAVE_PROGRAMS
  // Through a program: exit 1, one line, before anything is allocated.
  const std::string dir = test::tmp_dir("new_user_too_large");
  io::write_file_atomic(dir + "/config.json", c.to_json().dump(2));
  const Run r =
      test::run_program(VITMAE_PRETRAIN_EXE, "--data " + dir + " --out " + dir + "/o --config " + dir + "/config.json");
  CHECK(r.status == 1);
  CHECK(r.err.find('\n') == r.err.size() - 1);
  CHECK(r.err.rfind("vitmae: " + dir + "/config.json: the model would have 5497668815875 parameters", 0) == 0);
#endif
}

#ifdef VITMAE_HAVE_PROGRAMS
TEST_CASE("running out of memory is one vitmae: line saying what was being allocated") {
  const std::string dir = test::tmp_dir("new_user_oom");
  vitmae::Config c;  // 1.2e9 parameters, under the limit, but not under a 1 GB address space
  c.hidden_size = 2048, c.num_hidden_layers = 24, c.num_attention_heads = 16, c.intermediate_size = 8192;
  io::write_file_atomic(dir + "/config.json", c.to_json().dump(2));
  const Run r = test::run_program("ulimit -v 1000000; " VITMAE_PRETRAIN_EXE,
                                  "--data " + dir + " --out " + dir + "/o --config " + dir + "/config.json");
  if (sanitizer_could_not_start(r)) return;
  CHECK(r.status == 1);
  CHECK(r.err == "vitmae: out of memory while allocating the model of " + dir +
                     "/config.json (1.24e+09 parameters, 4.95 GB as float32)\n");
}
#endif
