// SPDX-License-Identifier: Apache-2.0
// What every example program shares through the one flag parser (cli/): --help states each flag's
// default, and a usage error (an unknown --preset) exits 2 with the synopsis.
#include "program_util.hpp"
#include "test_util.hpp"

#include <vitmae/train.hpp>

#include <regex>
#include <set>

namespace train = vitmae::train;
using test::Run;

#if defined(VITMAE_RUN_EXE) && defined(VITMAE_CONVERT_EXE) && defined(VITMAE_RECONSTRUCT_EXE) && \
    defined(VITMAE_EMBED_EXE) && defined(VITMAE_PRETRAIN_EXE) && defined(VITMAE_EVALUATE_EXE) && \
    defined(VITMAE_CLASSIFY_EXE) && defined(VITMAE_FINETUNE_EXE)

TEST_CASE("every program's --help explains every flag it names, with its default") {
  std::vector<std::string> programs{VITMAE_RUN_EXE,      VITMAE_CONVERT_EXE,  VITMAE_RECONSTRUCT_EXE,
                                    VITMAE_EMBED_EXE,    VITMAE_PRETRAIN_EXE, VITMAE_EVALUATE_EXE,
                                    VITMAE_CLASSIFY_EXE, VITMAE_FINETUNE_EXE};
#ifdef VITMAE_SERVER_EXE
  programs.push_back(VITMAE_SERVER_EXE);
#endif
  for (const std::string& exe : programs) {
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
      CHECK(r.err.find(messages::cli::kUnknownArgument) == std::string::npos);
    }
  }
  const Run pretrain = test::run_program(VITMAE_PRETRAIN_EXE, "--help");
  CHECK(pretrain.out.find(messages::pretrain::kPeakLrExample) != std::string::npos);
  train::TrainOptions o;
  o.batch = 8;
  CHECK(o.peak_lr() == doctest::Approx(4.7e-6).epsilon(0.01));
}

TEST_CASE("an unknown --preset is a usage error (exit 2, the synopsis) in every program that takes one") {
  Run r = test::run_program(VITMAE_RUN_EXE, "--model m --input i --output o --preset nosuch");
  CHECK_SAYS(r, 2, messages::run::kPresetExpects);
  CHECK(r.err.find(messages::cli::kSynopsis) != std::string::npos);
  r = test::run_program(VITMAE_CONVERT_EXE, "--input i --out o --preset nosuch");
  CHECK_SAYS(r, 2, messages::convert::kPresetExpects);
  CHECK(r.err.find(messages::cli::kSynopsis) != std::string::npos);
  r = test::run_program(VITMAE_PRETRAIN_EXE, "--data d --out o --preset nosuch");
  CHECK_SAYS(r, 2, messages::pretrain::kPresetExpects);
  CHECK(r.err.find(messages::cli::kSynopsis) != std::string::npos);
}

#endif
