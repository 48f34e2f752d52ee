// SPDX-License-Identifier: Apache-2.0
// libFuzzer helpers: the readers take paths, so each input goes to a file in /dev/shm.
#pragma once

#include <unistd.h>
#include <cstdint>
#include <cstdio>
#include <string>

#include <vitmae/vitmae.hpp>

namespace fuzz {

inline std::string write_input(const std::uint8_t* data, size_t size, const char* suffix) {
  static const std::string dir = [] {
    const std::string d = "/dev/shm/vitmae-fuzz-" + std::to_string(static_cast<long>(::getpid()));
    std::system(("mkdir -p " + d).c_str());
    return d;
  }();
  const std::string path = dir + "/input" + suffix;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size) std::fwrite(data, 1, size, f);
  std::fclose(f);
  return path;
}

}  // namespace fuzz
