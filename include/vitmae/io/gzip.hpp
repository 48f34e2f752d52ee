// SPDX-License-Identifier: Apache-2.0
// gzip files (RFC 1952), inflated by stb_image's zlib decoder (the libstb vitmae already links),
// with the trailer's CRC-32 and length checked.
#pragma once

#include <stb/stb_image.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "vitmae/error.hpp"
#include "vitmae/io/file.hpp"

namespace vitmae::io {

/// CRC-32 (IEEE 802.3, as gzip's trailer holds it).
inline std::uint32_t crc32(const std::uint8_t* p, size_t n) {
  static const std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  std::uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

/// True when the bytes start with gzip's magic (1f 8b).
inline bool is_gzip(const std::vector<std::uint8_t>& b) { return b.size() >= 2 && b[0] == 0x1f && b[1] == 0x8b; }

/// The inflated content of a gzip stream (one member). `where` names it in errors.
/// @throws vitmae::Error on a bad header, corrupt deflate data, or a CRC/length mismatch.
inline std::vector<std::uint8_t> gunzip(const std::vector<std::uint8_t>& b, const std::string& where) {
  detail::require(b.size() >= 18 && is_gzip(b), where, ": not a gzip file (", b.size(), " bytes, no 1f 8b header)");
  detail::require(b[2] == 8, where, ": gzip compression method ", static_cast<int>(b[2]), ", expected 8 (deflate)");
  const std::uint8_t flags = b[3];
  size_t pos = 10;
  auto need = [&](size_t n) { detail::require(pos + n <= b.size() - 8, where, ": truncated gzip header"); };
  if (flags & 4) {  // FEXTRA
    need(2);
    const size_t xlen = b[pos] | (static_cast<size_t>(b[pos + 1]) << 8);
    pos += 2;
    need(xlen);
    pos += xlen;
  }
  for (int bit : {8, 16})  // FNAME, FCOMMENT: zero-terminated
    if (flags & bit) {
      while (pos < b.size() - 8 && b[pos] != 0) ++pos;
      need(1);
      ++pos;
    }
  if (flags & 2) {  // FHCRC
    need(2);
    pos += 2;
  }
  const size_t body = b.size() - 8 - pos;
  auto le32 = [&](size_t at) {
    return static_cast<std::uint32_t>(b[at]) | (static_cast<std::uint32_t>(b[at + 1]) << 8) |
           (static_cast<std::uint32_t>(b[at + 2]) << 16) | (static_cast<std::uint32_t>(b[at + 3]) << 24);
  };
  // The trailer's length (ISIZE, the size modulo 2^32) sizes the output exactly, so a hostile
  // stream cannot make the decoder grow without bound; members of 2 GiB or more are refused.
  const std::uint32_t size = le32(b.size() - 4);
  detail::require(body <= 0x7FFFFFF0u && size < 0x7FFFFFFFu, where,
                  ": truncated or corrupt gzip file, or a member of 2 GiB or more ",
                  "(not supported): its last 4 bytes, which give the uncompressed size, say ", size);
  std::vector<std::uint8_t> result(size);
  // The 8 trailer bytes are handed over too: stb's decoder reads ahead of the last deflate block
  // (in PNGs the Adler-32 follows) and refuses a stream that ends exactly at the buffer's end.
  const int got =
      stbi_zlib_decode_noheader_buffer(reinterpret_cast<char*>(result.data()), static_cast<int>(size),
                                       reinterpret_cast<const char*>(b.data() + pos), static_cast<int>(body + 8));
  detail::require(
      got >= 0, where,
      ": truncated or corrupt gzip file (its deflate data does not decode to the size its last 4 bytes give)");
  detail::require(static_cast<std::uint32_t>(got) == size, where, ": gzip length check failed (", got,
                  " bytes inflated, trailer says ", size, "): the file is truncated or corrupt");
  detail::require(le32(b.size() - 8) == crc32(result.data(), result.size()), where,
                  ": gzip CRC-32 check failed: the file is corrupt");
  return result;
}

/// A file's content, inflated when it is gzip (by its magic, whatever its name).
inline std::vector<std::uint8_t> read_maybe_gzip(const std::string& path, const std::string& what) {
  std::vector<std::uint8_t> bytes = read_file_bytes(path, what);
  return is_gzip(bytes) ? gunzip(bytes, path) : bytes;
}

}  // namespace vitmae::io
