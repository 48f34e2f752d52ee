// SPDX-License-Identifier: Apache-2.0
// Writing files so that a reader never sees half of one: write a temporary file in the same
// folder, flush it to disk, then rename it over the target.
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>

#include <fcntl.h>
#include <unistd.h>

#include "vitmae/error.hpp"

namespace vitmae::io {

/// Calls `write(FILE*)` on a temporary file next to `path`, then renames it into place.
/// On any failure the temporary file is removed, `path` is left as it was and vitmae::Error
/// says why (strerror: disk full, permission denied, ...).
inline void write_file_atomic(const std::string& path, const std::function<void(std::FILE*)>& write) {
  const std::string tmp = path + ".tmp." + std::to_string(static_cast<long>(::getpid()));
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  detail::require(f != nullptr, path, ": cannot create '", tmp, "': ", std::strerror(errno));
  auto fail = [&](const char* what, int err) {
    if (f) std::fclose(f);
    std::remove(tmp.c_str());
    detail::fail(path, ": ", what, ": ", std::strerror(err));
  };
  try {
    write(f);
  } catch (...) {
    std::fclose(f);
    std::remove(tmp.c_str());
    throw;
  }
  if (std::ferror(f)) fail("write failed", errno ? errno : EIO);
  if (std::fflush(f) != 0) fail("write failed", errno);
  if (::fsync(::fileno(f)) != 0 && errno != EINVAL) fail("fsync failed", errno);
  const int rc = std::fclose(f);
  f = nullptr;
  if (rc != 0) fail("close failed", errno);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail("rename failed", errno);
}

/// Writes `bytes` to `path` atomically.
inline void write_file_atomic(const std::string& path, const std::string& bytes) {
  write_file_atomic(path, [&](std::FILE* f) {
    if (!bytes.empty()) std::fwrite(bytes.data(), 1, bytes.size(), f);
  });
}

}  // namespace vitmae::io
