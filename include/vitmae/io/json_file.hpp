// SPDX-License-Identifier: Apache-2.0
// Reading a JSON file with errors that name it.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include "vitmae/error.hpp"

namespace vitmae::io {

/// Parses a JSON file. @throws vitmae::Error "<path>: cannot open" / "<path>: not valid JSON (...)".
inline nlohmann::json read_json_file(const std::string& path, const char* what = "file") {
  std::error_code ec;
  detail::require(!std::filesystem::is_directory(path, ec), path, ": a folder, expected a ", what, " (a JSON file)");
  std::ifstream in(path, std::ios::binary);
  detail::require(static_cast<bool>(in), path, ": cannot open ", what);
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    detail::fail(path, ": not valid JSON (", e.what(), ")");
  }
}

}  // namespace vitmae::io
