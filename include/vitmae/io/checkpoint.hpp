// SPDX-License-Identifier: Apache-2.0
// Finding the weights of an HF checkpoint folder: model.safetensors, the shards listed by
// model.safetensors.index.json, pytorch_model.bin, or a single .pth/.pt file. Model-agnostic:
// names are passed through as the file has them.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "vitmae/error.hpp"
#include "vitmae/io/file.hpp"
#include "vitmae/io/pytorch.hpp"
#include "vitmae/io/safetensors.hpp"
#include "vitmae/io/tensor_source.hpp"

namespace vitmae::io {

/// Opens a sharded checkpoint through its index ({"weight_map": {tensor: shard file}}).
/// Every tensor named in the index must be in its shard.
inline std::unique_ptr<TensorSource> open_sharded_safetensors(const std::string& index_path) {
  const nlohmann::json j = read_json_file(index_path);
  detail::require(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), index_path,
                  ": expected an object with a 'weight_map' object");
  const std::string dir = std::filesystem::path(index_path).parent_path().string();
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
    detail::require(files[f->second]->contains(it.key()), index_path, ": tensor '", it.key(), "' is listed in shard '",
                    shard, "' but that file does not hold it");
    owner[it.key()] = f->second;
  }
  return std::make_unique<SafetensorsSource>(index_path, std::move(files), std::move(owner));
}

/// A single weights file: safetensors, a sharded index, or a PyTorch zip checkpoint (by content).
inline std::shared_ptr<TensorSource> open_weights_file(const std::string& path) {
  if (ends_with(path, ".index.json") && path.size() > 11) return open_sharded_safetensors(path);
  unsigned char head[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::ifstream(path, std::ios::binary).read(reinterpret_cast<char*>(head), 8);
  const char magic[2] = {static_cast<char>(head[0]), static_cast<char>(head[1])};
  // A JSON file (config.json) given where a checkpoint is expected: it starts with '{', and read
  // as safetensors its "header length" would be beyond the file's end.
  std::uint64_t length = 0;
  for (int k = 7; k >= 0; --k) length = length << 8 | head[k];
  std::error_code ec;
  const std::uint64_t size = std::filesystem::file_size(path, ec);
  const std::string folder = std::filesystem::path(path).parent_path().string();
  detail::require(!(head[0] == '{' && !ec && length > size), path,
                  ": a JSON file, not weights (expected a checkpoint folder, such as ",
                  folder.empty() ? std::string(".") : folder, ", or a weights file: .safetensors, .bin, .pth)");
  if (magic[0] == 'P' && magic[1] == 'K') return std::make_shared<PytorchSource>(path);
  return std::make_shared<SafetensorsSource>(path);
}

/// The weights of a checkpoint: a folder in HF's order of preference (model.safetensors,
/// model.safetensors.index.json, pytorch_model.bin), else the folder's single .pth/.pt file
/// (the MAE release); or a weights file itself. @throws vitmae::Error when none is there.
inline std::shared_ptr<TensorSource> open_checkpoint_weights(const std::string& path) {
  if (file_exists(path)) return open_weights_file(path);
  detail::require(dir_exists(path), path, ": checkpoint folder does not exist");
  for (const char* name : {"model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"})
    if (file_exists(join_path(path, name))) return open_weights_file(join_path(path, name));
  std::vector<std::string> pth;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(path, ec)) {
    const std::string n = e.path().filename().string();
    if (e.is_regular_file(ec) && (ends_with(n, ".pth") || ends_with(n, ".pt"))) pth.push_back(n);
  }
  detail::require(pth.size() <= 1, path, ": several .pth/.pt files, name the one to load");
  detail::require(pth.size() == 1, path,
                  ": no weights found, expected model.safetensors, model.safetensors.index.json, "
                  "pytorch_model.bin or a .pth file");
  return open_weights_file(join_path(path, pth[0]));
}

/// The folder a checkpoint path names: itself, or the file's folder.
inline std::string checkpoint_folder(const std::string& path) {
  if (!file_exists(path)) return path;
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? "." : parent.string();
}

}  // namespace vitmae::io
