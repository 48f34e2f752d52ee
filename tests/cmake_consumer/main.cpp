// SPDX-License-Identifier: Apache-2.0
// Loads a checkpoint through the installed headers and runs one forward pass.
#include <vitmae/vitmae.hpp>

#include <cmath>
#include <iostream>
#include <random>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  try {
    auto model = vitmae::ViTMAEForPreTraining<float>::from_pretrained(argv[1]);
    const auto& c = model.config();
    vitmae::Tensor<float> pixels({1, c.num_channels, c.image_size, c.image_size}, 0.25f);
    std::mt19937_64 rng(0);
    const auto out = model.forward(pixels, rng);
    std::cout << "loss " << out.loss << "\n";
    return std::isfinite(out.loss) ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}
