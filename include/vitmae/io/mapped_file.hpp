// SPDX-License-Identifier: Apache-2.0
// Read-only access to a whole file, for the weight formats (safetensors, zip, pickle): a memory
// map (MappedFile) or positioned reads that copy straight into their destination
// (RandomAccessFile). Errors name the file.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vitmae/error.hpp"

namespace vitmae::io {

/// A read-only memory map of a whole file (empty files map to nothing).
class MappedFile {
 public:
  explicit MappedFile(const std::string& path) : path_(path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    detail::require(fd >= 0, path, ": cannot open: ", std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      detail::fail(path, ": not a regular file");
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) {
        const int err = errno;
        ::close(fd);
        detail::fail(path, ": cannot map: ", std::strerror(err));
      }
      data_ = static_cast<const unsigned char*>(p);
    }
    ::close(fd);
  }
  ~MappedFile() {
    if (data_) ::munmap(const_cast<unsigned char*>(data_), size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const unsigned char* data() const { return data_; }
  std::size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
};

/// A read-only file read with pread: tensors are converted straight into their destination,
/// so loading a checkpoint costs no second copy of it in memory (and the page cache does not
/// count towards the process's resident size, as a memory map would).
class RandomAccessFile {
 public:
  explicit RandomAccessFile(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    detail::require(fd_ >= 0, path, ": cannot open: ", std::strerror(errno));
    struct stat st {};
    if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd_);
      detail::fail(path, ": not a regular file");
    }
    size_ = static_cast<std::uint64_t>(st.st_size);
  }
  ~RandomAccessFile() { ::close(fd_); }
  RandomAccessFile(const RandomAccessFile&) = delete;
  RandomAccessFile& operator=(const RandomAccessFile&) = delete;

  std::uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

  /// Reads exactly n bytes at offset. @throws vitmae::Error if the file is shorter or unreadable.
  void read(std::uint64_t offset, void* dst, std::uint64_t n) const {
    auto* out = static_cast<char*>(dst);
    while (n > 0) {
      const ssize_t got =
          ::pread(fd_, out, static_cast<size_t>(std::min<std::uint64_t>(n, 1u << 30)), static_cast<off_t>(offset));
      if (got < 0 && errno == EINTR) continue;
      detail::require(got > 0, path_, ": read failed at byte ", offset,
                      got == 0 ? ": file shorter than expected" : ": ", got == 0 ? "" : std::strerror(errno));
      out += got;
      offset += static_cast<std::uint64_t>(got);
      n -= static_cast<std::uint64_t>(got);
    }
  }

 private:
  std::string path_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
};

}  // namespace vitmae::io
