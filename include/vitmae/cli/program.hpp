// SPDX-License-Identifier: Apache-2.0
// What vitmae's programs share (examples/): the error convention (one line on stderr, exit 1;
// usage errors and refused requests exit 2; running out of memory says while doing what), the
// parsing of a flag's value, and the settings every program takes (--threads, --dtype).
#pragma once

#include "vitmae/vitmae.hpp"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace vitmae::cli {

/// A usage error (exit 2): a missing or bad flag, printed with the synopsis; or, with
/// `with_usage` false, a flag that contradicts something on disk (a checkpoint being resumed),
/// printed as the one line it is.
struct UsageError : vitmae::RequestError {
  explicit UsageError(const std::string& what, bool with_usage = true)
      : vitmae::RequestError(what), with_usage(with_usage) {}
  bool with_usage = true;
};

/// What the program is doing, for the message of an allocation that fails ("allocating the
/// model ..."); set it before each large step with doing().
inline std::string& activity() {
  static std::string what;
  return what;
}
inline void doing(std::string what) { activity() = std::move(what); }

/// "1.2e+09 parameters, 4.8 GB as float32" for a config, for activity().
inline std::string model_size(const vitmae::Config& c, bool for_pre_training) {
  double n = 0;
  const std::vector<vitmae::TensorSpec> specs = for_pre_training
                                                    ? vitmae::tensor_specs<vitmae::ForPreTraining<float>>(c)
                                                    : vitmae::tensor_specs<vitmae::Model<float>>(c);
  for (const auto& t : specs) {
    double k = 1;
    for (std::int64_t d : t.shape) k *= static_cast<double>(d);
    n += k;
  }
  char buf[96];
  std::snprintf(buf, sizeof buf, "%.3g parameters, %.3g GB as float32", n, n * 4 / 1e9);
  return buf;
}

/// The value after argv[i] (advancing i), or a usage error naming the flag.
inline std::string value(int argc, char** argv, int& i) {
  if (i + 1 >= argc) throw UsageError(std::string(argv[i]) + " needs a value");
  return argv[++i];
}

inline long long to_int(const std::string& flag, const std::string& v, long long lo, long long hi) {
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end || errno || x < lo || x > hi)
    throw UsageError(flag + " expects an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got '" +
                     v + "'");
  return x;
}

inline double to_double(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end) throw UsageError(flag + " expects a number, got '" + v + "'");
  return x;
}

/// A usage error unless `name` is one of Config::preset's.
inline void check_preset(const std::string& name) {
  try {
    vitmae::Config::preset(name);
  } catch (const vitmae::Error&) {
    throw UsageError("--preset expects mae-vit-base, mae-vit-large or mae-vit-huge, got '" + name + "'");
  }
}

/// Class names from a file, one per line in class order (trailing spaces and CR dropped).
/// @throws vitmae::Error naming the file when it cannot be read, is empty or repeats a name.
inline std::vector<std::string> read_label_names(const std::string& path) {
  std::ifstream in(path);
  vitmae::detail::require(in.good(), path, ": cannot open the labels file");
  std::vector<std::string> names;
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
    if (line.empty()) continue;
    for (const std::string& n : names) vitmae::detail::require(n != line, path, ": label '", line, "' appears twice");
    names.push_back(line);
  }
  vitmae::detail::require(!names.empty(), path, ": no label names (expected one per line)");
  return names;
}

/// The products --dtype names: "int8", "bfloat16", else float32 (float64 models are double).
inline vitmae::Precision precision_of(const std::string& dtype) {
  return dtype == "int8"       ? vitmae::Precision::int8
         : dtype == "bfloat16" ? vitmae::Precision::bfloat16
                               : vitmae::Precision::float32;
}

/// --dtype bfloat16 where there are no bfloat16 products (a CPU without AVX512_BF16 or AMX, a
/// build without oneDNN, VITMAE_BACKEND=eigen): says so on one line of stderr and gives
/// "float32"; any other dtype as given.
inline std::string usable_dtype(const std::string& program, const std::string& dtype) {
  if (dtype != "bfloat16") return dtype;
  const char* why = vitmae::bfloat16_unavailable();
  if (!why) return dtype;
  std::fprintf(stderr, "%s: --dtype bfloat16: %s; running float32\n", program.c_str(), why);
  return "float32";
}

/// Makes a loaded model ready for inference in `dtype` (--dtype, inference_flags.hpp, after
/// usable_dtype): int8 quantises its Linear layers and patch projection; bfloat16 packs their
/// weights as bfloat16 (vitmae::to_bfloat16); otherwise its weights are packed for oneDNN (float)
/// or its float weights released (int8) (vitmae::pack_for_inference).
template <class M>
void apply_dtype(M& model, const std::string& dtype) {
  if constexpr (std::is_same_v<typename M::scalar_type, float>) {
    if (dtype == "bfloat16") {
      vitmae::to_bfloat16(model);
      return;
    }
    if (dtype == "int8") vitmae::quantize_int8(model);
    vitmae::pack_for_inference(model);
  }
}

/// Threads for Eigen's products (OpenMP builds); 0 keeps the default (all cores).
inline void set_threads(int n) {
#ifdef _OPENMP
  if (n > 0) {
    omp_set_num_threads(n);
    Eigen::setNbThreads(n);
  }
#else
  (void)n;
#endif
}

/// The "usage:" lines at the top of a program's help text (up to its first unindented line).
inline std::string synopsis(const std::string& usage) {
  size_t end = 0;
  do {
    const size_t nl = usage.find('\n', end);
    end = nl == std::string::npos ? usage.size() : nl + 1;
  } while (end < usage.size() && usage[end] == ' ');
  return usage.substr(0, end);
}

/// Runs `body`, mapping usage errors to exit 2 (with the synopsis) and others to exit 1, each
/// on one line; a failed allocation becomes "vitmae: out of memory while <activity()>".
template <class F>
int run_main(const char* program, const char* usage, F&& body) {
  try {
    body();
    return 0;
  } catch (const UsageError& e) {
    if (!e.with_usage) {
      std::cerr << e.what() << "\n";
    } else {
      std::cerr << program << ": " << e.what() << "\n"
                << synopsis(usage) << "run '" << program << " --help' for every flag and its default\n";
    }
    return 2;
  } catch (const vitmae::RequestError& e) {  // what was asked contradicts a file: a usage error, one line
    std::cerr << e.what() << "\n";
    return 2;
  } catch (const std::bad_alloc&) {
    std::cerr << "vitmae: out of memory" << (activity().empty() ? "" : " while " + activity()) << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}

}  // namespace vitmae::cli
