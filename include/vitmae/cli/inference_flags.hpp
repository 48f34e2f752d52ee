// SPDX-License-Identifier: Apache-2.0
// The inference programs' shared flags (vitmae-run, vitmae-embed, vitmae-reconstruct,
// vitmae-classify, vitmae-bench): --model, --dtype, --batch and --threads declared once, with the
// same names, checks and help text everywhere, as add_shared_flags (train_flags.hpp) does for
// training; each program says what its --model is and adds its own flags.
#pragma once

#include "vitmae/cli/command_line.hpp"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

namespace vitmae::cli {

/// "a, b or c".
inline std::string one_of(const std::vector<std::string>& values) {
  std::string s;
  for (size_t i = 0; i < values.size(); ++i) s += (i == 0 ? "" : i + 1 == values.size() ? " or " : ", ") + values[i];
  return s;
}

/// A flag whose value must be one of `allowed`, else a usage error naming them all: "--dtype
/// expects float32 or int8, got 'float16'".
inline void choice(CommandLine& cl, const std::string& name, const std::string& metavar, std::string& target,
                   const std::vector<std::string>& allowed, std::string help) {
  cl.add({name,
          metavar,
          std::move(help),
          [&target, name, allowed](const std::string& v) {
            if (std::find(allowed.begin(), allowed.end(), v) == allowed.end())
              throw UsageError(name + " expects " + one_of(allowed) + ", got '" + v + "'");
            target = v;
          },
          [&target] { return target; },
          CommandLine::OnResume::never,
          {},
          {}});
}

/// What the shared flags set.
struct InferenceArgs {
  std::string model;              // --model, "" unless given (the program says what that means)
  std::string dtype = "float32";  // --dtype
  long batch = 8;                 // --batch, images per forward
  int threads = 0;                // --threads, 0: every core
};

/// Which of the shared flags a program takes.
struct InferenceFlags {
  std::string model_help;  // --model's help: what folder, required or its default
  std::vector<std::string> dtypes{"float32", "bfloat16", "int8"};  // --dtype's values (none: no --dtype)
  bool batch = false;                                              // --batch
};

/// Declares the shared flags `f` names on `cl`, in a section of their own, writing into `a`
/// (whose values at the call are the defaults the help shows): --model DIR, --dtype T, --batch N,
/// --threads N.
inline void add_inference_flags(CommandLine& cl, InferenceArgs& a, const InferenceFlags& f) {
  cl.section("The model and how it runs");
  cl.text("--model", "DIR", a.model, f.model_help);
  if (!f.dtypes.empty()) {
    const bool f64 = std::find(f.dtypes.begin(), f.dtypes.end(), "float64") != f.dtypes.end();
    const std::string values = one_of(f.dtypes) + " (default " + a.dtype + "): the precision of the products";
    choice(cl, "--dtype", "T", a.dtype, f.dtypes,
           values +
               (f64 ? "\nand of the output; bfloat16 and int8: the Linear layers and the patch\n"
                      "projection in bfloat16 (float32 sums) or int8 (weights per channel,\n"
                      "activations per token), each about half the time, the output float32"
                    : ";\nbfloat16 and int8: the Linear layers and the patch projection in bfloat16\n"
                      "(float32 sums) or int8 (weights per channel, activations per token), each\n"
                      "about half the time") +
               (std::find(f.dtypes.begin(), f.dtypes.end(), "bfloat16") != f.dtypes.end()
                    ? "; bfloat16 needs AVX512_BF16 or AMX (elsewhere: float32,\nsaying so)"
                    : ""));
  }
  if (f.batch)
    cl.integer("--batch", "N", a.batch, 1, 4096, "images per forward pass (default " + std::to_string(a.batch) + ")");
  cl.integer("--threads", "N", a.threads, 1, 1024, "threads for the matrix products (default: all cores)");
}

}  // namespace vitmae::cli
