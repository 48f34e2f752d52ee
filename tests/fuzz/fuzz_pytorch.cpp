// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the PyTorch checkpoint reader (zip container, pickle, storages).
#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input(data, size, ".bin");
  try {
    vitmae::io::PytorchSource src(path);
    for (const auto& name : src.names()) {
      std::int64_t n = 1;
      for (auto d : src.shape(name)) n *= d;
      if (n > (1 << 20)) continue;
      std::vector<float> out(static_cast<size_t>(n));
      src.read(name, out.data());
    }
  } catch (const vitmae::Error&) {
  }
  return 0;
}
