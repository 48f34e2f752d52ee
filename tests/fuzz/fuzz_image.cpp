// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the image loader (stb_image behind vitmae's checks) and the PIL resize.
#include "fuzz_util.hpp"

// stb compiled into this target with the sanitizers, so the fuzzer sees inside the decoder.
#include <vitmae/stb_implementation.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, size_t size) {
  const std::string path = fuzz::write_input(data, size, ".img");
  try {
    const vitmae::io::Image8 img = vitmae::io::load_image(path, 3, 1 << 20);
    vitmae::ImageProcessor p;
    p.height = 8, p.width = 12, p.resample = static_cast<int>(size % 6);
    (void)p.preprocess<float>({img});
  } catch (const vitmae::Error&) {
  }
  return 0;
}
