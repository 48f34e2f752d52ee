// SPDX-License-Identifier: Apache-2.0
// Helpers of the tests that run the example programs (built with them: tests/CMakeLists.txt
// defines the programs' paths). A file takes the ones it calls with a using-declaration.
#pragma once

#include "program_messages.hpp"
#include "test_util.hpp"

#include <filesystem>
#include <string>
#include <vector>

/// `r_` (a test::Run) exited with `status` and its stderr holds `phrase`, one of
/// program_messages.hpp's: a message is matched by its exit code and one stable phrase.
#define CHECK_SAYS(r_, status_, phrase)                \
  do {                                                 \
    INFO("stderr: " << (r_).err);                      \
    CHECK((r_).status == (status_));                   \
    CHECK((r_).err.find(phrase) != std::string::npos); \
  } while (false)

namespace test {

/// A program's exit status and what it printed (the name the vitmae-run tests use).
using RunResult = Run;

/// Runs `exe args` (vitmae-run unless told), capturing its exit status and output.
inline Run run(const std::string& args, const std::string& exe = VITMAE_RUN_EXE) { return run_program(exe, args); }

/// The first line of a program's output, without its newline.
inline std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

/// A program built with AddressSanitizer cannot start under `ulimit -v` (its shadow memory is
/// reserved up front): the tests that limit the address space then have nothing to check.
inline bool sanitizer_could_not_start(const Run& r) {
  if (r.err.find("Sanitizer") == std::string::npos) return false;
  MESSAGE("the program is built with a sanitizer, which cannot run under ulimit -v: skipped");
  return true;
}

/// A tiny ViT classifier config (8x8 RGB images, 2 patches a side) at dir/vit.json; returns its path.
inline std::string tiny_vit_config(const std::string& dir) {
  vitmae::io::write_file_atomic(dir + "/vit.json", R"({"model_type": "vit", "hidden_size": 16, "num_hidden_layers": 1,
    "num_attention_heads": 2, "intermediate_size": 32, "image_size": 8, "patch_size": 4, "num_channels": 3})");
  return dir + "/vit.json";
}

/// A tiny ViTMAE config at dir/mae.json (8x8 RGB images, 2 patches a side); returns its path.
inline std::string tiny_mae_config(const std::string& dir) {
  vitmae::io::write_file_atomic(dir + "/mae.json",
                                R"({"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
    "intermediate_size": 32, "decoder_hidden_size": 16, "decoder_num_hidden_layers": 1, "decoder_num_attention_heads": 2,
    "decoder_intermediate_size": 32, "image_size": 8, "patch_size": 4, "num_channels": 3})");
  return dir + "/mae.json";
}

/// A tiny ViT classifier with rows named `labels` (in that order), drawn from a fixed seed and
/// saved at dir/cls; returned for its weights.
inline vitmae::ViTForImageClassification<float> write_classifier(const std::string& dir,
                                                                 const std::vector<std::string>& labels) {
  nlohmann::json j = vitmae::io::read_json_file(tiny_vit_config(dir));
  for (size_t k = 0; k < labels.size(); ++k) j["id2label"][std::to_string(k)] = labels[k];
  vitmae::ViTForImageClassification<float> m(vitmae::ViTConfig::from_json(j));
  auto rng = vitmae::seeded_rng(1, 2);
  m.init_weights(rng);
  m.save_pretrained(dir + "/cls");
  return m;
}

/// `n` 8x8 PNGs of one grey level at dir/name-k.png; returns their paths.
inline std::vector<std::string> grey_pngs(const std::string& dir, const std::string& name, int n, int level) {
  std::vector<std::string> out;
  for (int k = 0; k < n; ++k) {
    vitmae::io::Image8 im{8, 8, 3, std::vector<std::uint8_t>(192, static_cast<std::uint8_t>(level + 7 * k))};
    out.push_back(dir + "/" + name + "-" + std::to_string(k) + ".png");
    std::filesystem::create_directories(std::filesystem::path(out.back()).parent_path());
    vitmae::io::save_png(out.back(), im);
  }
  return out;
}

}  // namespace test
