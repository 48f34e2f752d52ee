// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the safetensors parser and the state-dict loader on its tensors.
#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input(data, size, ".safetensors");
  try {
    vitmae::io::SafetensorsFile f(path);
    for (const auto& [name, info] : f.tensors()) {
      if (info.numel() > (1 << 20)) continue;  // the reader itself bounds offsets by the file size
      (void)f.get<float>(name);
    }
    // Load it as a model's weights: shapes are checked before anything is read.
    vitmae::Config c;
    c.hidden_size = 8, c.num_hidden_layers = 1, c.num_attention_heads = 2, c.intermediate_size = 16;
    c.image_size = 8, c.patch_size = 4, c.decoder_hidden_size = 8, c.decoder_num_hidden_layers = 1;
    c.decoder_num_attention_heads = 2, c.decoder_intermediate_size = 16;
    vitmae::ForPreTraining<float> m(c);
    m.load_weights(vitmae::io::SafetensorsSource(path));
  } catch (const vitmae::Error&) {
  }
  return 0;
}
