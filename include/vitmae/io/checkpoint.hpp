// SPDX-License-Identifier: Apache-2.0
// Finding the weights of an HF checkpoint folder: model.safetensors, or the shards listed by
// model.safetensors.index.json.
#pragma once

#include <nlohmann/json.hpp>

#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <dirent.h>
#include <sys/stat.h>
#include <vector>

#include "vitmae/error.hpp"
#include "vitmae/io/json_file.hpp"
#include "vitmae/io/pytorch.hpp"
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
  const nlohmann::json j = read_json_file(index_path);
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

/// A single weights file: safetensors, a sharded index, or a PyTorch zip checkpoint (by content).
inline std::shared_ptr<TensorSource> open_weights_file(const std::string& path) {
  const std::string index_suffix = ".index.json";
  if (path.size() > index_suffix.size() && path.compare(path.size() - index_suffix.size(), index_suffix.size(), index_suffix) == 0)
    return open_sharded_safetensors(path);
  char magic[2] = {0, 0};
  std::ifstream(path, std::ios::binary).read(magic, 2);
  if (magic[0] == 'P' && magic[1] == 'K') return std::make_shared<PytorchSource>(path);
  return std::make_shared<SafetensorsSource>(path);
}

/// The weights of a checkpoint: a folder in HF's order of preference (model.safetensors,
/// model.safetensors.index.json, pytorch_model.bin), else the folder's single .pth/.pt file
/// (the MAE release); or a weights file itself. timm names (the MAE release) are mapped to HF's.
/// @throws vitmae::Error when none is there.
inline std::shared_ptr<TensorSource> open_checkpoint_weights(const std::string& path) {
  std::shared_ptr<TensorSource> src;
  if (file_exists(path)) {
    src = open_weights_file(path);
  } else {
    detail::require(dir_exists(path), path, ": checkpoint folder does not exist");
    for (const char* name : {"model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"})
      if (!src && file_exists(join_path(path, name))) src = open_weights_file(join_path(path, name));
    if (!src) {
      std::vector<std::string> pth;
      if (DIR* d = ::opendir(path.c_str())) {
        while (const dirent* e = ::readdir(d)) {
          const std::string n = e->d_name;
          if ((n.size() > 4 && n.compare(n.size() - 4, 4, ".pth") == 0) || (n.size() > 3 && n.compare(n.size() - 3, 3, ".pt") == 0))
            pth.push_back(n);
        }
        ::closedir(d);
      }
      detail::require(pth.size() <= 1, path, ": several .pth/.pt files, name the one to load");
      detail::require(pth.size() == 1, path,
                      ": no weights found, expected model.safetensors, model.safetensors.index.json, "
                      "pytorch_model.bin or a .pth file");
      src = open_weights_file(join_path(path, pth[0]));
    }
  }
  if (has_timm_names(*src)) return timm_to_hf(src);
  return src;
}

/// The folder a checkpoint path names: itself, or the file's folder.
inline std::string checkpoint_folder(const std::string& path) {
  if (!file_exists(path)) return path;
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : path.substr(0, slash == 0 ? 1 : slash);
}

}  // namespace vitmae::io
