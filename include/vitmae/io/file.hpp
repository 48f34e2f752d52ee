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
#include <vector>

#include <signal.h>
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

/// Checks, without creating anything, that make_dirs(dir) could succeed and files be written
/// there: `dir`, or its nearest existing ancestor, is a folder this process may write to.
/// @throws vitmae::Error naming the folder (as make_dirs would).
inline void require_can_create(const std::string& dir) {
  namespace fs = std::filesystem;
  fs::path p = fs::absolute(fs::path(dir.empty() ? "." : dir));
  std::error_code ec;
  while (!fs::exists(p, ec) && p.has_parent_path() && p.parent_path() != p) p = p.parent_path();
  detail::require(fs::is_directory(p, ec), dir, ": cannot create folder: ", p.string(), " is not a folder");
  detail::require(::access(p.c_str(), W_OK | X_OK) == 0, dir, ": cannot create folder: ", p.string(), ": ",
                  std::strerror(errno));
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

/// Removes from `dir` what the atomic writes above leave when their process is killed
/// mid-write: temporary files `NAME.tmp.PID`, temporary folders `.NAME.tmp-PID`, and folders
/// `.NAME.old-PID` moved aside when `NAME` is in place again; only where process PID no longer
/// runs on this machine. Hidden (or not NAME), they are never taken for the file or folder they
/// were to become. Returns how many it removed; an error (`dir` missing) removes nothing.
inline int remove_stale_temporaries(const std::string& dir) {
  namespace fs = std::filesystem;
  auto stale_pid = [](const std::string& digits) {
    if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos)
      return false;
    return ::kill(static_cast<pid_t>(std::stol(digits)), 0) != 0 && errno == ESRCH;
  };
  std::vector<fs::path> stale;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string n = it->path().filename().string();
    if (const size_t t = n.rfind(".tmp."); t != std::string::npos && t > 0 && stale_pid(n.substr(t + 5))) {
      stale.push_back(it->path());
    } else if (n.size() > 1 && n[0] == '.') {
      const size_t tmp = n.rfind(".tmp-"), old = n.rfind(".old-");
      if (tmp != std::string::npos && tmp > 1 && stale_pid(n.substr(tmp + 5))) stale.push_back(it->path());
      if (old != std::string::npos && old > 1 && stale_pid(n.substr(old + 5)) &&
          fs::exists(fs::path(dir) / n.substr(1, old - 1)))
        stale.push_back(it->path());
    }
  }
  int removed = 0;
  for (const fs::path& p : stale) removed += fs::remove_all(p, ec) > 0 ? 1 : 0;
  return removed;
}

}  // namespace vitmae::io
