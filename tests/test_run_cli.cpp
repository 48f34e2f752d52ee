// SPDX-License-Identifier: Apache-2.0
// examples/vitmae-run end to end: the fixtures reproduced through the program, and its errors.
#include "test_util.hpp"

#include <fstream>
#include <sys/wait.h>

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
  const bool interp = ref.metadata().count("interpolate_pos_encoding") && ref.metadata().at("interpolate_pos_encoding") == "true";
  const std::string out = test::tmp_dir("cli_out") + "/out.safetensors";
  const RunResult r = run("--model " + (model.empty() ? test::data(dir) : model) + " --input " + in + " --output " + out + " --dtype " + dtype +
                          " --hidden-states --attentions" + (interp ? " --interpolate-pos-encoding" : ""));
  INFO(r.err);
  REQUIRE(r.status == 0);
  const io::SafetensorsFile got(out);
  CHECK(got.info("ids_restore").dtype == io::DType::I64);
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
    // See test_parity.cpp for why float64 is held to 1e-6 against the *_f64 references.
    const double tol = exact ? 0.0 : (use64 ? 1e-6 : 1e-4);
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
  for (const char* c : {"hf/tiny", "hf/tiny_normpix_gelu_new", "hf/tiny_gray_p8", "hf/tiny_no_mask", "hf/tiny_interp_48"})
    for (const char* dt : {"float32", "float64"}) check_cli_case(c, dt);
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
  const RunResult r = run("--input " + test::data("formats/mae_original") + " --out " + blocked + "/x", VITMAE_CONVERT_EXE);
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

  r = run("--model " + test::data("hf/tiny") + " --input " + test::data("hf/tiny_gray_p8/io.safetensors") + " --output " + out);
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
  CHECK(r.err.find("--dtype expects float32 or float64") != std::string::npos);
}
