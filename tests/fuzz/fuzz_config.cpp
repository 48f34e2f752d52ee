// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the JSON readers (config.json, preprocessor_config.json,
// model.safetensors.index.json). The first byte picks the reader.
#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int which = data[0] % 3;
  const std::string path = fuzz::write_input(data + 1, size - 1, which == 2 ? ".index.json" : ".json");
  try {
    if (which == 0) {
      const vitmae::Config c = vitmae::load_config(path);
      (void)c.to_json();
    } else if (which == 1) {
      const vitmae::ImageProcessor p = vitmae::ImageProcessor::load(path);
      (void)p.to_json();
    } else {
      (void)vitmae::io::open_sharded_safetensors(path);
    }
  } catch (const vitmae::Error&) {
  }
  return 0;
}
