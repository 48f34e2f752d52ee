// SPDX-License-Identifier: Apache-2.0
// NumPy's .npy format, version 1.0 (numpy.lib.format), for arrays numpy.load reads: the magic
// "\x93NUMPY", version 1 0, the header's length (little-endian uint16), the header (a Python
// dict literal, padded with spaces and ended by '\n' so the data starts at a multiple of 64),
// then the data, little-endian, C order.
#pragma once

#include "vitmae/error.hpp"
#include "vitmae/io/file.hpp"

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

namespace vitmae::io {

/// The bytes of a .npy file holding `data` (float, double or int64, C order) of `shape`
/// (its product elements; {} is a scalar). The header is numpy's own spelling, e.g.
/// {'descr': '<f4', 'fortran_order': False, 'shape': (3, 64), }.
/// @throws vitmae::Error when the header would not fit version 1.0 (65535 bytes).
template <class Scalar>
std::string npy(const Scalar* data, const std::vector<std::int64_t>& shape) {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double> || std::is_same_v<Scalar, std::int64_t>,
                "npy: float, double or int64 elements");
  const char* descr = std::is_same_v<Scalar, float> ? "<f4" : std::is_same_v<Scalar, double> ? "<f8" : "<i8";
  std::string dims;
  std::int64_t n = 1;
  for (std::int64_t d : shape) {
    dims += (dims.empty() ? "" : ", ") + std::to_string(d);
    n *= d;
  }
  if (shape.size() == 1) dims += ",";  // Python's one-element tuple, (3,)
  std::string header = "{'descr': '" + std::string(descr) + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  while ((10 + header.size() + 1) % 64 != 0) header.push_back(' ');  // 10: magic, version and length
  header.push_back('\n');
  detail::require(header.size() <= 65535, "npy: the header of shape ", detail::shape_str(shape),
                  " does not fit format 1.0");
  std::string out("\x93NUMPY\x01\x00", 8);
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>(header.size() >> 8));
  out += header;
  out.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n) * sizeof(Scalar));
  return out;
}

/// Writes npy(data, shape) to `path` (atomically: a complete file or none).
/// @throws vitmae::Error naming the file when it cannot be written.
template <class Scalar>
void save_npy(const std::string& path, const Scalar* data, const std::vector<std::int64_t>& shape) {
  write_file_atomic(path, npy(data, shape));
}

}  // namespace vitmae::io
