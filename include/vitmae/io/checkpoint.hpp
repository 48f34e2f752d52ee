// SPDX-License-Identifier: Apache-2.0
// Finding the weights of an HF checkpoint folder: model.safetensors, or the shards listed by
// model.safetensors.index.json.
#pragma once

#include <nlohmann/json.hpp>

#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <sys/stat.h>
#include <vector>

#include "vitmae/error.hpp"
#include "vitmae/io/state_dict.hpp"

namespace vitmae::io {

inline bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}
inline bool dir_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
inline std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

/// Opens a sharded checkpoint through its index ({"weight_map": {tensor: shard file}}).
/// Every tensor named in the index must be in its shard.
inline std::unique_ptr<TensorSource> open_sharded_safetensors(const std::string& index_path) {
  std::ifstream in(index_path, std::ios::binary);
  detail::require(static_cast<bool>(in), index_path, ": cannot open");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    detail::fail(index_path, ": not valid JSON (", e.what(), ")");
  }
  detail::require(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), index_path,
                  ": expected an object with a 'weight_map' object");
  const std::string dir = index_path.substr(0, index_path.find_last_of('/') == std::string::npos ? 0 : index_path.find_last_of('/'));
  std::vector<std::shared_ptr<SafetensorsFile>> files;
  std::map<std::string, size_t> file_index, owner;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    detail::require(it.value().is_string(), index_path, ": weight_map['", it.key(), "'] must be a file name");
    const std::string shard = it.value().get<std::string>();
    detail::require(shard.find('/') == std::string::npos && shard != ".." && !shard.empty(), index_path,
                    ": shard name '", shard, "' must be a plain file name in the same folder");
    auto f = file_index.find(shard);
    if (f == file_index.end()) {
      files.push_back(std::make_shared<SafetensorsFile>(join_path(dir, shard)));
      f = file_index.emplace(shard, files.size() - 1).first;
    }
    detail::require(files[f->second]->contains(it.key()), index_path, ": tensor '", it.key(),
                    "' is listed in shard '", shard, "' but that file does not hold it");
    owner[it.key()] = f->second;
  }
  return std::make_unique<SafetensorsSource>(index_path, std::move(files), std::move(owner));
}

/// The weights of a checkpoint folder, in HF's order of preference: model.safetensors, then
/// model.safetensors.index.json. @throws vitmae::Error when none is there.
inline std::unique_ptr<TensorSource> open_checkpoint_weights(const std::string& dir) {
  detail::require(dir_exists(dir), dir, ": checkpoint folder does not exist");
  const std::string single = join_path(dir, "model.safetensors");
  if (file_exists(single)) return std::make_unique<SafetensorsSource>(single);
  const std::string index = join_path(dir, "model.safetensors.index.json");
  if (file_exists(index)) return open_sharded_safetensors(index);
  detail::fail(dir, ": no weights found, expected model.safetensors or model.safetensors.index.json");
}

}  // namespace vitmae::io
