// SPDX-License-Identifier: Apache-2.0
// Images in and out through stb_image / stb_image_write: decoding (PNG, JPEG, BMP, TGA, GIF first
// frame, PNM, PSD, HDR as 8-bit), channel conversion like PIL, PNG, JPEG and BMP writing (atomic).
//
// stb's implementation is not compiled here: programs link it once. Debian's libstb-dev ships it
// compiled (libstb), which the vitmae::vitmae CMake target links; without it, include
// "vitmae/stb_implementation.hpp" in exactly one .cpp file of the program.
#pragma once

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
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
      detail::require(n <= 256, path, ": corrupt JPEG: a Huffman table declares ", n,
                      " codes, at most 256 are allowed");
      p += 17 + n;
    }
  }
}

/// The format a file's first bytes announce: "PNG", "JPEG", "GIF", "BMP", "PSD", "PNM", "HDR"
/// or "PIC"; "" when none does (TGA has no signature, and neither has a file that is no image).
inline std::string image_signature(const std::vector<unsigned char>& b) {
  auto starts = [&](const char* magic, size_t n) { return b.size() >= n && std::memcmp(b.data(), magic, n) == 0; };
  if (starts("\x89PNG\r\n\x1a\n", 8)) return "PNG";
  if (starts("\xff\xd8", 2)) return "JPEG";  // SOI, as stb_image tests it
  if (starts("GIF87a", 6) || starts("GIF89a", 6)) return "GIF";
  if (starts("BM", 2)) return "BMP";
  if (starts("8BPS", 4)) return "PSD";
  if (b.size() >= 2 && b[0] == 'P' && (b[1] == '5' || b[1] == '6')) return "PNM";
  if (starts("#?RADIANCE\n", 11) || starts("#?RGBE\n", 7)) return "HDR";
  if (starts("\x53\x80\xf6\x34", 4)) return "PIC";
  return "";
}

/// The width and height a PNG, JPEG, GIF or BMP header declares, read without decoding: {0, 0}
/// for another format or a header too short to tell. A decompression bomb is caught here, at its
/// header, even where stb_image refuses the header itself (it stops at 2^30 bytes of pixels).
struct DeclaredSize {
  std::int64_t width = 0, height = 0;
};
inline DeclaredSize declared_image_size(const std::vector<unsigned char>& b) {
  const auto be16 = [&](size_t i) { return std::int64_t(b[i]) << 8 | b[i + 1]; };
  const auto be32 = [&](size_t i) { return be16(i) << 16 | be16(i + 2); };
  const auto le16 = [&](size_t i) { return std::int64_t(b[i + 1]) << 8 | b[i]; };
  const auto le32 = [&](size_t i) {
    return static_cast<std::int64_t>(
        static_cast<std::int32_t>(static_cast<std::uint32_t>(le16(i + 2) << 16 | le16(i))));
  };
  const std::string format = image_signature(b);
  if (format == "PNG" && b.size() >= 24 && std::memcmp(b.data() + 12, "IHDR", 4) == 0) return {be32(16), be32(20)};
  if (format == "GIF" && b.size() >= 10) return {le16(6), le16(8)};
  if (format == "BMP" && b.size() >= 26) {
    const std::int64_t h = le32(22);
    return {le32(18), h < 0 ? -h : h};  // a negative height is a top-down bitmap
  }
  if (format == "JPEG") {  // the first start-of-frame marker: SOF0-SOF15 but DHT, JPG and DAC
    for (size_t i = 2; i + 9 < b.size();) {
      if (b[i] != 0xFF) return {};
      const unsigned m = b[i + 1];
      if (m == 0xFF) {
        ++i;
        continue;
      }
      if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) return {be16(i + 7), be16(i + 5)};
      if (m == 0xD8 || (m >= 0xD0 && m <= 0xD7) || m == 0x01) {
        i += 2;
        continue;
      }
      i += 2 + static_cast<size_t>(be16(i + 2));
    }
  }
  return {};
}

}  // namespace vitmae::io

namespace vitmae::detail {

/// stb_image's failure reason when it belongs to decoding a `format` file, else "". The reason
/// is a global that stb never clears, and its loader tries the formats in turn: a JPEG that
/// fails to decode without a reason of its own still reports the PNG test's "bad png sig",
/// and a null reason streamed into a message would end the message there.
inline std::string stb_reason(const std::string& format) {
  const char* r = stbi_failure_reason();
  if (r == nullptr) return "";
  const std::string s(r);
  if (s == "unknown image type" || (s == "bad png sig" && format != "PNG") || (s == "no SOI" && format != "JPEG"))
    return "";
  return " (stb_image: " + s + ")";
}

/// An image file's bytes (io::read_file_bytes). @throws vitmae::Error naming the file.
inline std::vector<unsigned char> read_image_bytes(const std::string& path) {
  return io::read_file_bytes(path, "image");
}

}  // namespace vitmae::detail

namespace vitmae::io {

/// Decodes an image held in memory (a file's bytes, an upload) with stb_image, keeping its own
/// channel count (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA; palettes are expanded). The size its
/// header declares is checked against max_pixels before any pixel is decoded (a decompression
/// bomb is refused at its header). @throws vitmae::Error naming `path` (the file or upload) when
/// the bytes are empty, not an image, truncated or corrupt (naming the format their signature
/// announces), of zero size, or larger than max_pixels.
inline Image8 decode_image(const std::vector<unsigned char>& bytes, const std::string& path,
                           std::int64_t max_pixels = kDefaultMaxPixels) {
  detail::require(!bytes.empty(), path, ": image file is empty");
  detail::require(bytes.size() < (1u << 31), path, ": image file is larger than 2 GiB");
  check_jpeg_huffman_tables(bytes, path);
  const std::string format = image_signature(bytes);
  const DeclaredSize declared = declared_image_size(bytes);
  detail::require(declared.width * declared.height <= max_pixels, path, ": image is ", declared.width, "x",
                  declared.height, " = ", declared.width * declared.height, " pixels, more than the limit of ",
                  max_pixels, " (raise max_pixels to read it)");
  int w = 0, h = 0, c = 0;
  const int len = static_cast<int>(bytes.size());
  if (stbi_info_from_memory(bytes.data(), len, &w, &h, &c) == 0) {
    detail::require(!format.empty(), path,
                    ": not a readable image: expected PNG, JPEG, BMP, TGA, GIF, PNM, PSD or HDR");
    detail::fail(path, ": cannot read the ", format, " header: truncated or corrupt ", format,
                 detail::stb_reason(format));
  }
  detail::require(w > 0 && h > 0, path, ": image has zero size (", w, "x", h, ")");
  detail::require(static_cast<std::int64_t>(w) * h <= max_pixels, path, ": image is ", w, "x", h, " = ",
                  static_cast<std::int64_t>(w) * h, " pixels, more than the limit of ", max_pixels,
                  " (raise max_pixels to read it)");
  unsigned char* px = stbi_load_from_memory(bytes.data(), len, &w, &h, &c, 0);
  detail::require(px != nullptr, path, ": cannot decode image: truncated or corrupt ", format.empty() ? "file" : format,
                  detail::stb_reason(format));
  Image8 img;
  img.width = w;
  img.height = h;
  img.channels = c;
  img.data.assign(px, px + static_cast<size_t>(w) * h * c);
  stbi_image_free(px);
  // stb fills a truncated JPEG's missing blocks silently: the stream must reach an end-of-image
  // marker (FF D9) after its last start-of-scan (FF DA). Entropy-coded data never holds FF D9.
  if (format == "JPEG") {
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

/// Decodes an image file (see decode_image). @throws vitmae::Error naming the file when it is
/// missing, a folder, or cannot be decoded.
inline Image8 load_image_raw(const std::string& path, std::int64_t max_pixels = kDefaultMaxPixels) {
  return decode_image(detail::read_image_bytes(path), path, max_pixels);
}

/// Decodes an image and converts it to `channels` (see to_channels).
inline Image8 load_image(const std::string& path, int channels, std::int64_t max_pixels = kDefaultMaxPixels) {
  return to_channels(load_image_raw(path, max_pixels), channels);
}

}  // namespace vitmae::io

namespace vitmae::detail {

inline void require_writable(const std::string& path, const io::Image8& img) {
  detail::require(img.width > 0 && img.height > 0 && (img.channels >= 1 && img.channels <= 4) &&
                      img.data.size() == static_cast<size_t>(img.width) * img.height * img.channels,
                  path, ": cannot write an empty or malformed image");
}

/// stb_image_write's sink: appends to a std::string.
inline void append_to_string(void* ctx, void* data, int size) {
  static_cast<std::string*>(ctx)->append(static_cast<const char*>(data), static_cast<size_t>(size));
}

}  // namespace vitmae::detail

namespace vitmae::io {

/// `img` encoded as a PNG file's bytes (stb_image_write). `what` names it in errors.
/// @throws vitmae::Error when the image is empty or malformed.
inline std::string encode_png(const Image8& img, const std::string& what = "PNG") {
  detail::require_writable(what, img);
  std::string png;
  detail::require(stbi_write_png_to_func(detail::append_to_string, &png, img.width, img.height, img.channels,
                                         img.data.data(), img.width * img.channels) != 0,
                  what, ": PNG encoding failed");
  return png;
}

/// Writes a PNG atomically. @throws vitmae::Error naming the file when it cannot be written.
inline void save_png(const std::string& path, const Image8& img) { write_file_atomic(path, encode_png(img, path)); }

/// Writes a baseline JPEG (stb_image_write, 4:2:0 below quality 90, none from 90 up; alpha is
/// dropped) atomically. @throws vitmae::Error naming the file when it cannot be written.
inline void save_jpeg(const std::string& path, const Image8& img, int quality = 95) {
  detail::require_writable(path, img);
  detail::require(quality >= 1 && quality <= 100, path, ": JPEG quality must be in [1, 100], got ", quality);
  std::string jpg;
  detail::require(stbi_write_jpg_to_func(detail::append_to_string, &jpg, img.width, img.height, img.channels,
                                         img.data.data(), quality) != 0,
                  path, ": JPEG encoding failed");
  write_file_atomic(path, jpg);
}

/// Writes an uncompressed BMP (24-bit, or 32-bit with alpha) atomically. @throws vitmae::Error.
inline void save_bmp(const std::string& path, const Image8& img) {
  detail::require_writable(path, img);
  std::string bmp;
  detail::require(
      stbi_write_bmp_to_func(detail::append_to_string, &bmp, img.width, img.height, img.channels, img.data.data()) != 0,
      path, ": BMP encoding failed");
  write_file_atomic(path, bmp);
}

/// The format save_image writes for `path`, by its extension (any case): "PNG" (.png), "JPEG"
/// (.jpg, .jpeg) or "BMP" (.bmp); "" for any other.
inline std::string image_format_for_path(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  for (char& ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (ext == ".png") return "PNG";
  if (ext == ".jpg" || ext == ".jpeg") return "JPEG";
  if (ext == ".bmp") return "BMP";
  return "";
}

/// Writes `img` atomically in the format its extension names (see image_format_for_path; JPEG
/// at quality 95). @throws vitmae::Error for another extension, or when it cannot be written.
inline void save_image(const std::string& path, const Image8& img) {
  const std::string format = image_format_for_path(path);
  detail::require(!format.empty(), path,
                  ": cannot tell the image format from the extension, expected .png, .jpg, .jpeg or .bmp");
  if (format == "PNG") save_png(path, img);
  else if (format == "JPEG") save_jpeg(path, img);
  else save_bmp(path, img);
}

}  // namespace vitmae::io
