// SPDX-License-Identifier: Apache-2.0
// Shared by the example programs: argument parsing helpers and the error convention
// (one line on stderr, exit 1; usage errors exit 2).
#pragma once

#include <vitmae/vitmae.hpp>

#include <cstdlib>
#include <iostream>
#include <stdexcept>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace examples {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

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
    throw UsageError(flag + " expects an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got '" + v + "'");
  return x;
}

inline double to_double(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end) throw UsageError(flag + " expects a number, got '" + v + "'");
  return x;
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

/// Keeps freed memory in the process instead of returning it to the kernel after every large
/// matrix (glibc): training frees and re-allocates the same buffers each step, and returning them
/// cost a third of the time in system calls and page faults (measured with vitmae-pretrain).
inline void tune_allocator() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 64 << 20);
#endif
}

/// Runs `body`, mapping usage errors to exit 2 (with the usage text) and others to exit 1.
template <class F>
int run_main(const char* program, const char* usage, F&& body) {
  try {
    body();
    return 0;
  } catch (const UsageError& e) {
    std::cerr << program << ": " << e.what() << "\n" << usage;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}

}  // namespace examples
