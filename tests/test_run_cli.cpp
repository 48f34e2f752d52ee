// SPDX-License-Identifier: Apache-2.0
// examples/vitmae-run end to end: the fixtures reproduced through the program, and its errors.
#include "test_util.hpp"

#include <vitmae/train.hpp>

#include <sys/wait.h>
#include <algorithm>
#include <fstream>
#include <random>
#include <sstream>

namespace io = vitmae::io;

namespace {

struct RunResult {
  int status = -1;
  std::string err;
};

RunResult run(const std::string& args, const std::string& exe = VITMAE_RUN_EXE) {
  const std::string err_path = test::tmp_dir("cli_stderr") + "/stderr.txt";
  const int rc = std::system((exe + " " + args + " > /dev/null 2> " + err_path).c_str());
  RunResult r;
  r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  std::ifstream in(err_path);
  r.err.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return r;
}

/// Runs vitmae-run on a fixture case and compares every tensor of the output that the
/// fixture also has. float64 compares against the `*_f64` references where they exist.
void check_cli_case(const std::string& dir, const std::string& dtype, const std::string& model = "") {
  INFO("case " << dir << " dtype " << dtype << " model " << model);
  const std::string in = test::data(dir + "/io.safetensors");
  const io::SafetensorsFile ref(in);
  const bool interp =
      ref.metadata().count("interpolate_pos_encoding") && ref.metadata().at("interpolate_pos_encoding") == "true";
  const std::string out = test::tmp_dir("cli_out") + "/out.safetensors";
  const RunResult r =
      run("--model " + (model.empty() ? test::data(dir) : model) + " --input " + in + " --output " + out + " --dtype " +
          dtype + " --hidden-states --attentions" + (interp ? " --interpolate-pos-encoding" : ""));
  INFO(r.err);
  REQUIRE(r.status == 0);
  const io::SafetensorsFile got(out);
  if (ref.contains("ids_restore")) CHECK(got.info("ids_restore").dtype == io::DType::I64);
  CHECK(got.info("last_hidden_state").dtype == (dtype == "float64" ? io::DType::F64 : io::DType::F32));
  for (const char* name : {"last_hidden_state", "mask", "ids_restore", "logits", "loss"}) {
    if (!ref.contains(name)) {
      CHECK_FALSE(got.contains(name));
      continue;
    }
    REQUIRE(got.contains(name));
    CHECK(got.info(name).shape == ref.info(name).shape);
    const std::string n64 = std::string(name) + "_f64";
    const bool use64 = dtype == "float64" && ref.contains(n64);
    const double exact = std::string(name) == "mask" || std::string(name) == "ids_restore";
    const double tol = exact ? 0.0 : (use64 ? 1e-12 : 1e-4);
    const auto g = got.get<double>(name);
    test::check_close(name, g.ptr(), static_cast<long>(g.numel()), ref.get<double>(use64 ? n64 : name), tol);
  }
  for (size_t i = 0; ref.contains("hidden_states." + std::to_string(i)); ++i)
    for (const std::string kind : {"hidden_states.", "attentions."}) {
      const std::string name = kind + std::to_string(i);
      if (!ref.contains(name)) continue;
      REQUIRE(got.contains(name));
      CHECK(got.info(name).shape == ref.info(name).shape);
      const auto g = got.get<double>(name);
      test::check_close(name, g.ptr(), static_cast<long>(g.numel()), ref.get<double>(name), 1e-4);
    }
}

}  // namespace

TEST_CASE("vitmae-run reproduces every hf fixture (float32 and float64)") {
  for (const char* c :
       {"hf/tiny", "hf/tiny_normpix_gelu_new", "hf/tiny_gray_p8", "hf/tiny_no_mask", "hf/tiny_interp_48"})
    for (const char* dt : {"float32", "float64"}) check_cli_case(c, dt);
}

TEST_CASE("vitmae-run --dtype int8: float32 output near the fixture's, mask and ids_restore exact") {
  // hf/tiny: the int8 model's outputs against PyTorch's float32 ones (cosine of the flattened
  // last_hidden_state and logits, relative loss change) and the same masks.
  const std::string in = test::data("hf/tiny/io.safetensors");
  const io::SafetensorsFile ref(in);
  const std::string out = test::tmp_dir("cli_int8") + "/out.safetensors";
  const RunResult r = run("--model " + test::data("hf/tiny") + " --input " + in + " --output " + out + " --dtype int8");
  INFO(r.err);
  REQUIRE(r.status == 0);
  const io::SafetensorsFile got(out);
  CHECK(got.info("last_hidden_state").dtype == io::DType::F32);
  for (const char* name : {"last_hidden_state", "logits"}) {
    const auto g = got.get<double>(name), w = ref.get<double>(name);
    REQUIRE(g.numel() == w.numel());
    const Eigen::Map<const Eigen::VectorXd> a(g.ptr(), g.numel()), b(w.ptr(), w.numel());
    CAPTURE(name);
    CHECK(a.dot(b) / (a.norm() * b.norm()) >= 0.999);
  }
  CHECK(std::abs(got.get<double>("loss").data[0] / ref.get<double>("loss").data[0] - 1) <= 0.02);
  for (const char* name : {"mask", "ids_restore"}) {
    const auto g = got.get<double>(name);
    test::check_close(name, g.ptr(), static_cast<long>(g.numel()), ref.get<double>(name), 0.0);
  }
  // The same model saved as an int8 checkpoint (its integers and scales are those quantize_int8
  // gives) and loaded straight into int8 layers: the same output, bit for bit, whatever --dtype says.
  const std::string ckpt = test::tmp_dir("cli_int8_ckpt");
  vitmae::ViTMAEForPreTraining<float>::from_pretrained(test::data("hf/tiny")).save_pretrained(ckpt, io::DType::I8);
  for (const char* dtype : {"int8", "float32"}) {
    CAPTURE(dtype);
    const std::string out2 = test::tmp_dir("cli_int8_ckpt_out") + "/out.safetensors";
    const RunResult r2 = run("--model " + ckpt + " --input " + in + " --output " + out2 + " --dtype " + dtype);
    INFO(r2.err);
    REQUIRE(r2.status == 0);
    const io::SafetensorsFile again(out2);
    for (const char* name : {"last_hidden_state", "logits", "loss", "mask"}) {
      CAPTURE(name);
      CHECK(again.get<float>(name).data == got.get<float>(name).data);
    }
  }
}

TEST_CASE("vitmae-run runs ViT classifiers: every hf_vit case (float32 and float64)") {
  for (const char* c : {"hf_vit/cls_tiny", "hf_vit/cls_interp_48", "hf_vit/cls_multilabel", "hf_vit/cls_regression",
                        "hf_vit/cls_from_mae_tiny"})
    for (const char* dt : {"float32", "float64"}) check_cli_case(c, dt);
}

TEST_CASE("vitmae-convert --num-labels makes a ViT classifier of an MAE checkpoint, --labels names its classes") {
  const std::string out = test::tmp_dir("convert_cls") + "/cls";
  RunResult r = run("--input " + test::data("hf/tiny") + " --out " + out + " --num-labels 3", VITMAE_CONVERT_EXE);
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.err.find("the MAE decoder's tensors in") != std::string::npos);
  const auto config = vitmae::load_vit_config(out + "/config.json");
  CHECK(config.id2label == vitmae::ViTConfig::default_labels(3));
  CHECK(io::file_exists(out + "/preprocessor_config.json"));
  const io::SafetensorsFile a(out + "/model.safetensors"), b(test::data("hf_vit/cls_from_mae_tiny/model.safetensors"));
  CHECK(a.tensors().size() == b.tensors().size());
  for (const auto& [n, info] : b.tensors()) {
    INFO(n);
    REQUIRE(a.contains(n));
    CHECK(a.info(n).shape == info.shape);
    if (n.rfind("vit.", 0) == 0) CHECK(a.get<float>(n).data == b.get<float>(n).data);
  }
  const std::string dir2 = test::tmp_dir("convert_cls_labels"), names = dir2 + "/labels.txt", out2 = dir2 + "/cls";
  io::write_file_atomic(names, "cat\ndog\r\n\nbird\n");
  r = run("--input " + test::data("hf/tiny") + " --out " + out2 + " --labels " + names + " --dtype float16",
          VITMAE_CONVERT_EXE);
  REQUIRE(r.status == 0);
  CHECK(vitmae::load_vit_config(out2 + "/config.json").id2label == std::vector<std::string>{"cat", "dog", "bird"});
  r = run("--input " + test::data("hf/tiny") + " --out " + out2 + " --labels /nonexistent.txt", VITMAE_CONVERT_EXE);
  CHECK(r.status == 1);
  CHECK(r.err == "vitmae: /nonexistent.txt: cannot open the labels file\n");
  CHECK(run("--input x --out y --num-labels 2 --labels z", VITMAE_CONVERT_EXE).status == 2);
}

TEST_CASE("vitmae-run reproduces the sharded, fp16, bf16 and encoder-only checkpoints") {
  for (const char* c : {"formats/sharded", "formats/fp16", "formats/bf16", "formats/encoder_only"})
    check_cli_case(c, "float32");
}

TEST_CASE("vitmae-run reproduces pytorch_model.bin and the MAE release checkpoint") {
  check_cli_case("formats/pytorch_bin", "float32");
  check_cli_case("formats/mae_original", "float32");
  check_cli_case("formats/mae_original", "float64", test::data("formats/mae_original/checkpoint.pth"));
}

TEST_CASE("vitmae-convert of pytorch_model.bin and the MAE release gives HF folders that reproduce them") {
  for (const char* c : {"formats/pytorch_bin", "formats/mae_original"}) {
    const std::string out = test::tmp_dir("convert") + "/" + std::string(c).substr(8);
    const RunResult r = run("--input " + test::data(c) + " --out " + out, VITMAE_CONVERT_EXE);
    INFO(r.err);
    REQUIRE(r.status == 0);
    CHECK(io::file_exists(out + "/config.json"));
    CHECK(io::file_exists(out + "/preprocessor_config.json"));
    // Same names and shapes as an HF ViTMAEForPreTraining checkpoint.
    const io::SafetensorsFile a(out + "/model.safetensors"), b(test::data("hf/tiny/model.safetensors"));
    CHECK(a.tensors().size() == b.tensors().size());
    for (const auto& [n, info] : b.tensors()) CHECK(a.info(n).shape == info.shape);
    check_cli_case(c, "float32", out);
  }
  // Missing parents are created (HF's os.makedirs); a regular file in the way is an error.
  const std::string blocked = test::tmp_dir("convert_blocked") + "/file";
  vitmae::io::write_file_atomic(blocked, "not a folder");
  const RunResult r =
      run("--input " + test::data("formats/mae_original") + " --out " + blocked + "/x", VITMAE_CONVERT_EXE);
  CHECK(r.status == 1);
  CHECK(r.err.find(blocked + "/x: cannot create folder") != std::string::npos);
  CHECK(run("--input x", VITMAE_CONVERT_EXE).status == 2);
}

TEST_CASE("vitmae-run errors: one line on stderr, exit 1, usage errors exit 2") {
  const std::string out = test::tmp_dir("cli_err") + "/out.safetensors";
  RunResult r = run("--model /nonexistent --input " + test::data("hf/tiny/io.safetensors") + " --output " + out);
  CHECK(r.status == 1);
  CHECK(r.err == "vitmae: /nonexistent/config.json: cannot open config file\n");
  CHECK_FALSE(io::file_exists(out));

  r = run("--model " + test::data("hf/tiny") + " --input " + test::data("hf/tiny/config.json") + " --output " + out);
  CHECK(r.status == 1);
  CHECK(r.err.find("config.json: safetensors header length") != std::string::npos);
  CHECK_FALSE(io::file_exists(out));

  r = run("--model " + test::data("hf/tiny") + " --input " + test::data("hf/tiny_gray_p8/io.safetensors") +
          " --output " + out);
  CHECK(r.status == 1);
  CHECK(r.err.find("pixel_values have 1 channels, expected num_channels = 3") != std::string::npos);
  CHECK_FALSE(io::file_exists(out));

  r = run("--model " + test::data("hf/tiny"));
  CHECK(r.status == 2);
  CHECK(r.err.find("--model, --input and --output are required") != std::string::npos);
  r = run("--bogus");
  CHECK(r.status == 2);
  CHECK(r.err.find("unknown argument '--bogus'") != std::string::npos);
  r = run("--model a --input b --output c --dtype float16");
  CHECK(r.status == 2);
  CHECK(r.err.find("--dtype expects float32, float64 or int8") != std::string::npos);
}

TEST_CASE("vitmae-classify: top-k with the probabilities the API gives, JSON lines in input order, errors") {
  const std::string dir = test::tmp_dir("classify");
  const std::string names = dir + "/labels.txt";
  io::write_file_atomic(names, "cat\ndog\nbird\n");
  RunResult r = run("--input " + test::data("hf/tiny") + " --out " + dir + "/cls --labels " + names + " --seed 4",
                    VITMAE_CONVERT_EXE);
  REQUIRE(r.status == 0);
  const std::vector<std::string> photos{test::data("images/chelsea.png"), test::data("images/rocket.jpg"),
                                        test::data("images/camera.png")};
  const test::Run out =
      test::run_program(VITMAE_CLASSIFY_EXE, "--model " + dir + "/cls --json --top 2 --batch 2 --image " + photos[0] +
                                                 " --image " + photos[1] + " --image " + photos[2]);
  INFO(out.err);
  REQUIRE(out.status == 0);
  // The same numbers through the API: the folder's preprocessing, softmax of the logits.
  const auto model = vitmae::ViTForImageClassification<float>::from_pretrained(dir + "/cls");
  const auto proc = vitmae::ImageProcessor::for_checkpoint(dir + "/cls", model.config().mae_config());
  std::istringstream lines(out.out);
  std::string line;
  for (const std::string& photo : photos) {
    REQUIRE(std::getline(lines, line));
    const auto j = nlohmann::json::parse(line);
    CHECK(j["image"] == photo);
    const auto px = proc.preprocess<float>(std::vector<vitmae::io::Image8>{vitmae::io::load_image(photo, 3)});
    const auto logits = model.forward(px).logits.row(0).cast<double>().eval();
    const Eigen::RowVectorXd p = (logits.array() - logits.maxCoeff()).exp().matrix();
    const Eigen::RowVectorXd prob = p / p.sum();
    Eigen::Index best = 0;
    prob.maxCoeff(&best);
    REQUIRE(j["top"].size() == 2);
    CHECK(j["top"][0]["index"] == best);
    CHECK(j["top"][0]["label"] == std::vector<std::string>{"cat", "dog", "bird"}[static_cast<size_t>(best)]);
    CHECK(j["top"][0]["prob"].get<double>() == doctest::Approx(prob(best)).epsilon(1e-6));
    CHECK(j["top"][0]["prob"].get<double>() >= j["top"][1]["prob"].get<double>());
  }
  CHECK_FALSE(std::getline(lines, line));
  // An MAE checkpoint is not a classifier; a missing image is named.
  r = run("--model " + test::data("hf/tiny") + " --image " + photos[0], VITMAE_CLASSIFY_EXE);
  CHECK(r.status == 1);
  CHECK(r.err.find("model_type is 'vit_mae', not a ViT classifier") != std::string::npos);
  r = run("--model " + dir + "/cls --image /nonexistent.png", VITMAE_CLASSIFY_EXE);
  CHECK(r.status == 1);
  CHECK(r.err.find("/nonexistent.png") != std::string::npos);
  CHECK(run("--model " + dir + "/cls", VITMAE_CLASSIFY_EXE).status == 2);
}

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
  CHECK(r.status == 1);
  CHECK(r.err == "vitmae: dataset " + dir + "/val2: class 'cloudy' is not one of the training set's 2 classes\n");
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
  CHECK(r.err.find("vitmae-finetune: resuming from step 4 of 8 (" + dir + "/whole/checkpoint-4)") != std::string::npos);
  CHECK(test::slurp(dir + "/whole/final/model.safetensors") == test::slurp(dir + "/alone/final/model.safetensors"));
  // A refused resume is a usage error (exit 2), one line naming both values.
  r = run(common + "--seed 4 --resume " + dir + "/whole/checkpoint-4 --out " + dir + "/resumed2", VITMAE_FINETUNE_EXE);
  CHECK(r.status == 2);
  CHECK(r.err ==
        "vitmae: " + dir +
            "/whole/checkpoint-4/trainer_state.json: the run was started with --seed 0, this run gives --seed 4; "
            "a resumed run must keep it (leave the flag out to keep it)\n");
  r = run("--steps 9 --resume " + dir + "/whole/checkpoint-4 --out " + dir + "/resumed3", VITMAE_FINETUNE_EXE);
  CHECK(r.status == 2);
  CHECK(r.err == "vitmae: " + dir +
                     "/whole/checkpoint-4/trainer_state.json: the run was started with --steps 8, this run gives "
                     "--steps 9; a resumed run must keep it (leave the flag out to keep it)\n");

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
    std::string train, val, message;
  };
  std::filesystem::create_directories(dir + "/empty/a");
  std::filesystem::create_directories(dir + "/empty/b");
  vitmae::io::save_png(dir + "/empty/a/1.png", im);
  io::write_file_atomic(dir + "/train.txt", "train/a/1.png 0\ntrain/b/1.png 1\n");
  io::write_file_atomic(dir + "/val.txt", "val/a/1.png 7\n");
  const std::vector<Case> cases{
      {dir + "/empty", dir + "/val", "vitmae: dataset " + dir + "/empty/b: class 'b' has no image files\n"},
      {dir + "/train.txt", dir + "/val.txt",
       "vitmae: dataset " + dir + "/val.txt:1: class '7' is not one of the training set's 2 classes\n"},
  };
  for (const Case& c : cases) {
    INFO(c.train);
    const RunResult r = run("--train " + c.train + " --val " + c.val + model, VITMAE_FINETUNE_EXE);
    CHECK(r.status == 1);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(r.err.find(c.message) != std::string::npos);
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
    CHECK(r.status == 1);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(r.err.find(fm + "/train-images-idx3-ubyte.gz: ") != std::string::npos);
    CHECK(r.err.find(std::string(bad).rfind("bad", 0) == 0 ? "magic number" : "truncated") != std::string::npos);
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
    CHECK(r.status == 1);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(r.err.find("classifier.weight") != std::string::npos);
  }
}
