// SPDX-License-Identifier: Apache-2.0
// Images in and out through stb_image / stb_image_write: decoding (PNG, JPEG, BMP, TGA, GIF first
// frame, PNM, PSD, HDR as 8-bit), channel conversion like PIL, PNG writing (atomic).
//
// stb's implementation is not compiled here: programs link it once. Debian's libstb-dev ships it
// compiled (libstb), which the vitmae::vitmae CMake target links; without it, include
// "vitmae/stb_implementation.hpp" in exactly one .cpp file of the program.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include "vitmae/error.hpp"
#include "vitmae/io/file.hpp"
#include "vitmae/io/image8.hpp"

namespace vitmae::io {

/// The default limit on decoded pixels (width * height), like PIL's decompression-bomb guard.
inline constexpr std::int64_t kDefaultMaxPixels = 178'956'970;  // PIL's MAX_IMAGE_PIXELS * 2

/// PIL's convert("L"): ITU-R 601-2 luma in 16.16 fixed point, rounded.
inline std::uint8_t pil_luma(std::uint8_t r, std::uint8_t g, std::uint8_t b) {
  return static_cast<std::uint8_t>((r * 19595u + g * 38470u + b * 7471u + 0x8000u) >> 16);
}

/// Converts to `channels` (1 or 3) the way PIL would for a model: alpha dropped, grey
/// replicated to RGB, RGB to grey by pil_luma.
inline Image8 to_channels(const Image8& in, int channels) {
  detail::require(channels == 1 || channels == 3, "image: models take 1 or 3 channels, got ", channels);
  Image8 out;
  out.width = in.width;
  out.height = in.height;
  out.channels = channels;
  out.data.resize(static_cast<size_t>(in.width) * in.height * channels);
  const bool grey_in = in.channels <= 2;
  for (size_t p = 0; p < static_cast<size_t>(in.width) * in.height; ++p) {
    const std::uint8_t* s = &in.data[p * in.channels];
    std::uint8_t* d = &out.data[p * channels];
    if (channels == 3) {
      for (int c = 0; c < 3; ++c) d[c] = grey_in ? s[0] : s[c];
    } else {
      d[0] = grey_in ? s[0] : pil_luma(s[0], s[1], s[2]);
    }
  }
  return out;
}

/// Rejects JPEG Huffman tables (DHT segments) that declare more than 256 codes: Debian's
/// stb_image 2.27 writes past its table for them (found by tests/fuzz/fuzz_image). Entropy-coded
/// data never holds FF C4, so every FF C4 in the file is a DHT marker.
inline void check_jpeg_huffman_tables(const std::vector<unsigned char>& b, const std::string& path) {
  if (b.size() < 2 || b[0] != 0xFF || b[1] != 0xD8) return;
  for (size_t i = 2; i + 3 < b.size(); ++i) {
    if (b[i] != 0xFF || b[i + 1] != 0xC4) continue;
    const size_t end = std::min(b.size(), i + 2 + ((static_cast<size_t>(b[i + 2]) << 8) | b[i + 3]));
    for (size_t p = i + 4; p < end;) {
      size_t n = 0;
      for (size_t k = 0; k < 16 && p + 1 + k < end; ++k) n += b[p + 1 + k];
      detail::require(n <= 256, path, ": corrupt JPEG: a Huffman table declares ", n, " codes, at most 256 are allowed");
      p += 17 + n;
    }
  }
}

/// Decodes an image file with stb_image, keeping its own channel count (1 grey, 2 grey+alpha,
/// 3 RGB, 4 RGBA; palettes are expanded). @throws vitmae::Error naming the file when it is
/// missing, empty, not an image, truncated or corrupt, or larger than max_pixels.
inline Image8 load_image_raw(const std::string& path, std::int64_t max_pixels = kDefaultMaxPixels) {
  std::ifstream in(path, std::ios::binary);
  detail::require(static_cast<bool>(in), path, ": cannot open image: ", std::strerror(errno));
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  detail::require(!bytes.empty(), path, ": image file is empty");
  detail::require(bytes.size() < (1u << 31), path, ": image file is larger than 2 GiB");
  check_jpeg_huffman_tables(bytes, path);
  int w = 0, h = 0, c = 0;
  const int len = static_cast<int>(bytes.size());
  detail::require(stbi_info_from_memory(bytes.data(), len, &w, &h, &c) != 0, path,
                  ": not a readable image (", stbi_failure_reason(), "): expected PNG, JPEG, BMP, TGA, GIF, PNM, PSD or HDR");
  detail::require(w > 0 && h > 0, path, ": image has zero size (", w, "x", h, ")");
  detail::require(static_cast<std::int64_t>(w) * h <= max_pixels, path, ": image is ", w, "x", h, " = ",
                  static_cast<std::int64_t>(w) * h, " pixels, more than the limit of ", max_pixels,
                  " (raise max_pixels to read it)");
  unsigned char* px = stbi_load_from_memory(bytes.data(), len, &w, &h, &c, 0);
  detail::require(px != nullptr, path, ": cannot decode image (", stbi_failure_reason(), "): truncated or corrupt file");
  Image8 img;
  img.width = w;
  img.height = h;
  img.channels = c;
  img.data.assign(px, px + static_cast<size_t>(w) * h * c);
  stbi_image_free(px);
  // stb fills a truncated JPEG's missing blocks silently: the stream must reach an end-of-image
  // marker (FF D9) after its last start-of-scan (FF DA). Entropy-coded data never holds FF D9.
  if (bytes.size() >= 2 && bytes[0] == 0xFF && bytes[1] == 0xD8) {
    size_t sos = 0, eoi = 0;
    for (size_t i = 0; i + 1 < bytes.size(); ++i)
      if (bytes[i] == 0xFF) {
        if (bytes[i + 1] == 0xDA) sos = i;
        if (bytes[i + 1] == 0xD9) eoi = i;
      }
    detail::require(eoi > sos, path, ": truncated JPEG: the data ends before its end-of-image marker");
  }
  return img;
}

/// Decodes an image and converts it to `channels` (see to_channels).
inline Image8 load_image(const std::string& path, int channels, std::int64_t max_pixels = kDefaultMaxPixels) {
  return to_channels(load_image_raw(path, max_pixels), channels);
}

/// Writes a PNG atomically. @throws vitmae::Error naming the file when it cannot be written.
inline void save_png(const std::string& path, const Image8& img) {
  detail::require(img.width > 0 && img.height > 0 && (img.channels >= 1 && img.channels <= 4) &&
                      img.data.size() == static_cast<size_t>(img.width) * img.height * img.channels,
                  path, ": cannot write an empty or malformed image");
  std::string png;
  auto sink = [](void* ctx, void* data, int size) {
    static_cast<std::string*>(ctx)->append(static_cast<const char*>(data), static_cast<size_t>(size));
  };
  detail::require(stbi_write_png_to_func(sink, &png, img.width, img.height, img.channels, img.data.data(),
                                         img.width * img.channels) != 0,
                  path, ": PNG encoding failed");
  write_file_atomic(path, png);
}

}  // namespace vitmae::io
