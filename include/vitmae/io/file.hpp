// SPDX-License-Identifier: Apache-2.0
// Files: paths (std::filesystem) and writing so
// that a reader never sees half of a file (a temporary file in the same folder, flushed to disk
// with POSIX fsync, then renamed over the target).
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include <unistd.h>

#include "vitmae/error.hpp"
#include "vitmae/io/json_file.hpp"

namespace vitmae::io {

inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
inline bool file_exists(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_regular_file(path, ec);
}
inline bool dir_exists(const std::string& path) {
  std::error_code ec;
  return std::filesystem::is_directory(path, ec);
}
inline std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}
/// Creates `dir` and its parents. @throws vitmae::Error naming the folder.
inline void make_dirs(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  detail::require(!ec || dir_exists(dir), dir, ": cannot create folder: ", ec.message());
}


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

/// A whole file's bytes (at most 2 GiB: what follows is not read). `what` names the kind of
/// file in errors ("image": "cannot open image: ..."). @throws vitmae::Error naming the file (a
/// folder, an open or read error).
inline std::vector<unsigned char> read_file_bytes(const std::string& path, const std::string& what) {
  std::error_code ec;
  detail::require(!std::filesystem::is_directory(path, ec), path, ": is a directory, expected an ", what, " file");
  std::FILE* f = std::fopen(path.c_str(), "rb");
  detail::require(f != nullptr, path, ": cannot open ", what, ": ", std::strerror(errno));
  std::vector<unsigned char> bytes;
  unsigned char buf[1 << 16];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
    bytes.insert(bytes.end(), buf, buf + n);
    if (bytes.size() >= (1u << 31)) break;
  }
  const int err = std::ferror(f) ? (errno != 0 ? errno : EIO) : 0;
  std::fclose(f);
  detail::require(err == 0, path, ": cannot read ", what, ": ", std::strerror(err));
  return bytes;
}

/// Writes the folder `dir` as a whole: fill(tmp) writes its files into a temporary sibling
/// folder, which then replaces `dir` (an existing one is moved aside first and removed after), so
/// a reader never sees half of it. On an error the temporary folder is removed and `dir` is left
/// as it was. @throws vitmae::Error naming `dir`.
inline void write_folder_atomic(const std::string& dir, const std::function<void(const std::string&)>& fill) {
  namespace fs = std::filesystem;
  const fs::path final_dir(dir);
  const fs::path parent = final_dir.has_parent_path() ? final_dir.parent_path() : fs::path(".");
  make_dirs(parent.string());
  const std::string pid = std::to_string(static_cast<long>(::getpid()));
  const fs::path tmp = parent / ("." + final_dir.filename().string() + ".tmp-" + pid);
  std::error_code ec;
  fs::remove_all(tmp, ec);
  try {
    make_dirs(tmp.string());
    fill(tmp.string());
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  const fs::path old = parent / ("." + final_dir.filename().string() + ".old-" + pid);
  if (fs::exists(final_dir)) {
    fs::rename(final_dir, old, ec);
    detail::require(!ec, dir, ": cannot move the previous folder aside: ", ec.message());
  }
  fs::rename(tmp, final_dir, ec);
  detail::require(!ec, dir, ": cannot rename the new folder into place: ", ec.message());
  fs::remove_all(old, ec);
}

}  // namespace vitmae::io
