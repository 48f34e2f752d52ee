// SPDX-License-Identifier: Apache-2.0
// A reader for the zip container torch.save writes (stored entries, zip64 for large files).
// Only what PyTorch checkpoints use: the central directory and stored (uncompressed) entries.
#pragma once

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>

#include "vitmae/error.hpp"
#include "vitmae/io/mapped_file.hpp"

namespace vitmae::io {

class ZipArchive {
 public:
  struct Entry {
    std::uint64_t offset = 0;  // of the data, from the start of the file
    std::uint64_t size = 0;
  };

  explicit ZipArchive(const std::string& path) : file_(std::make_shared<MappedFile>(path)) { parse(); }

  const std::string& path() const { return file_->path(); }
  const std::map<std::string, Entry>& entries() const { return entries_; }
  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  const Entry& entry(const std::string& name) const {
    auto it = entries_.find(name);
    detail::require(it != entries_.end(), path(), ": zip archive has no entry '", name, "'");
    return it->second;
  }
  const unsigned char* data(const Entry& e) const { return file_->data() + e.offset; }

 private:
  template <class T>
  T le(std::uint64_t at) const {
    detail::require(at + sizeof(T) <= file_->size(), path(),
                    ": zip structure runs past the end of the file (truncated?)");
    T v;
    std::memcpy(&v, file_->data() + at, sizeof(T));
    return v;
  }

  void parse() {
    const std::uint64_t size = file_->size();
    const std::string& p = path();
    detail::require(size >= 22, p, ": not a zip archive (", size, " bytes): expected a PyTorch checkpoint");
    detail::require(std::memcmp(file_->data(), "PK", 2) == 0, p,
                    ": not a zip archive: expected a PyTorch checkpoint (torch.save since 1.6); "
                    "legacy pre-1.6 pickle files are not supported");
    // End of central directory: the last 0x06054b50 within 22 + 65535 bytes of the end.
    std::uint64_t eocd = UINT64_MAX;
    const std::uint64_t lowest = size > 22 + 65535 ? size - 22 - 65535 : 0;
    for (std::uint64_t at = size - 22 + 1; at-- > lowest;)
      if (le<std::uint32_t>(at) == 0x06054b50u) {
        eocd = at;
        break;
      }
    detail::require(eocd != UINT64_MAX, p, ": zip end-of-central-directory record not found (truncated archive?)");
    std::uint64_t count = le<std::uint16_t>(eocd + 10);
    std::uint64_t cd_size = le<std::uint32_t>(eocd + 12);
    std::uint64_t cd_offset = le<std::uint32_t>(eocd + 16);
    if ((count == 0xffff || cd_offset == 0xffffffffu || cd_size == 0xffffffffu) && eocd >= 20 &&
        le<std::uint32_t>(eocd - 20) == 0x07064b50u) {  // zip64 locator
      const std::uint64_t z64 = le<std::uint64_t>(eocd - 20 + 8);
      detail::require(le<std::uint32_t>(z64) == 0x06064b50u, p, ": bad zip64 end-of-central-directory record");
      count = le<std::uint64_t>(z64 + 32);
      cd_size = le<std::uint64_t>(z64 + 40);
      cd_offset = le<std::uint64_t>(z64 + 48);
    }
    detail::require(cd_offset <= size && cd_size <= size - cd_offset, p,
                    ": zip central directory lies outside the file (truncated archive?)");
    std::uint64_t at = cd_offset;
    for (std::uint64_t i = 0; i < count; ++i) {
      detail::require(le<std::uint32_t>(at) == 0x02014b50u, p, ": corrupt zip central directory entry ", i);
      const std::uint16_t flags = le<std::uint16_t>(at + 8);
      const std::uint16_t method = le<std::uint16_t>(at + 10);
      std::uint64_t csize = le<std::uint32_t>(at + 20);
      std::uint64_t usize = le<std::uint32_t>(at + 24);
      const std::uint16_t name_len = le<std::uint16_t>(at + 28);
      const std::uint16_t extra_len = le<std::uint16_t>(at + 30);
      const std::uint16_t comment_len = le<std::uint16_t>(at + 32);
      std::uint64_t local = le<std::uint32_t>(at + 42);
      detail::require(at + 46 + name_len <= size, p, ": corrupt zip central directory entry ", i);
      const std::string name(reinterpret_cast<const char*>(file_->data() + at + 46), name_len);
      // zip64 extra field: the 64-bit values for those set to 0xffffffff, in this order.
      for (std::uint64_t e = at + 46 + name_len; e + 4 <= at + 46 + name_len + extra_len;) {
        const std::uint16_t id = le<std::uint16_t>(e), len = le<std::uint16_t>(e + 2);
        if (id == 0x0001) {
          std::uint64_t f = e + 4;
          if (usize == 0xffffffffu) {
            usize = le<std::uint64_t>(f);
            f += 8;
          }
          if (csize == 0xffffffffu) {
            csize = le<std::uint64_t>(f);
            f += 8;
          }
          if (local == 0xffffffffu) {
            local = le<std::uint64_t>(f);
            f += 8;
          }
        }
        e += 4 + len;
      }
      detail::require(!(flags & 1), p, ": zip entry '", name, "' is encrypted: not supported");
      detail::require(method == 0, p, ": zip entry '", name, "' is compressed (method ", method,
                      "): PyTorch writes stored entries; re-save it with torch.save");
      detail::require(csize == usize, p, ": zip entry '", name, "' has inconsistent sizes");
      detail::require(le<std::uint32_t>(local) == 0x04034b50u, p, ": zip entry '", name, "' has no local header");
      const std::uint64_t data = local + 30 + le<std::uint16_t>(local + 26) + le<std::uint16_t>(local + 28);
      detail::require(data <= size && usize <= size - data, p, ": zip entry '", name,
                      "' runs past the end of the file (truncated archive?)");
      entries_[name] = Entry{data, usize};
      at += 46 + name_len + extra_len + comment_len;
    }
  }

  std::shared_ptr<MappedFile> file_;
  std::map<std::string, Entry> entries_;
};

}  // namespace vitmae::io
