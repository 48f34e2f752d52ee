// SPDX-License-Identifier: Apache-2.0
// An 8-bit image in memory (HWC), the type image decoding, resizing and panels share.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace vitmae::io {

/// An 8-bit image, rows top to bottom, channels interleaved (HWC), like PIL's "L" or "RGB".
struct Image8 {
  int width = 0, height = 0, channels = 0;
  std::vector<std::uint8_t> data;  // height * width * channels
  std::uint8_t& at(int y, int x, int c) { return data[(static_cast<std::size_t>(y) * width + x) * channels + c]; }
  std::uint8_t at(int y, int x, int c) const { return data[(static_cast<std::size_t>(y) * width + x) * channels + c]; }
};

}  // namespace vitmae::io
