// SPDX-License-Identifier: Apache-2.0
// The library's random numbers, one definition each: 53-bit uniforms from any standard engine
// and standard normals by Box-Muller. Written out (not std::uniform_real_distribution, whose
// algorithm is the standard library's choice) so a seed gives the same masks, weights and
// crops on every platform.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <type_traits>
#include <utility>
#include <vector>

namespace vitmae {

/// Uniform in [0, 1) with 53 random bits. A 64-bit engine (std::mt19937_64): (rng() >> 11) * 2^-53.
/// A 32-bit engine (std::mt19937, minstd's are refused): two draws a and b give
/// ((a >> 5) * 2^26 + (b >> 6)) * 2^-53, numpy's random_sample formula for MT19937.
template <class Engine>
double uniform53(Engine& rng) {
  using R = typename Engine::result_type;
  static_assert(Engine::min() == 0, "uniform53: the engine must produce values from 0");
  constexpr std::uint64_t range = static_cast<std::uint64_t>(Engine::max() - Engine::min());
  static_assert(range == 0xFFFFFFFFFFFFFFFFull || range == 0xFFFFFFFFull,
                "uniform53: the engine must produce full 32- or 64-bit words (std::mt19937, std::mt19937_64, ...)");
  if constexpr (range == 0xFFFFFFFFFFFFFFFFull) {
    return static_cast<double>(static_cast<std::uint64_t>(rng()) >> 11) * 0x1.0p-53;
  } else {
    const std::uint64_t a = static_cast<std::uint64_t>(static_cast<R>(rng())) >> 5;
    const std::uint64_t b = static_cast<std::uint64_t>(static_cast<R>(rng())) >> 6;
    return static_cast<double>(a * 67108864ull + b) * 0x1.0p-53;
  }
}

/// A uniform integer in [0, n) from one uniform53 draw.
template <class Engine>
int uniform_int(Engine& rng, int n) {
  return std::min(n - 1, static_cast<int>(uniform53(rng) * n));
}

/// Fisher-Yates from the back, one uniform_int draw a position: v[i-1] swaps with v[j], j in [0, i).
template <class T, class Engine>
void shuffle(std::vector<T>& v, Engine& rng) {
  for (size_t i = v.size(); i > 1; --i)
    std::swap(v[i - 1], v[static_cast<size_t>(uniform_int(rng, static_cast<int>(i)))]);
}

/// Standard normal numbers by Box-Muller on uniform53 draws (pairs: cos, then the spare sin).
template <class Engine>
class NormalGenerator {
 public:
  explicit NormalGenerator(Engine& rng) : rng_(rng) {}
  double uniform() { return uniform53(rng_); }
  double operator()() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1 = uniform();
    while (u1 <= 0.0) u1 = uniform();
    const double u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = r * std::sin(2.0 * M_PI * u2);
    has_spare_ = true;
    return r * std::cos(2.0 * M_PI * u2);
  }

 private:
  Engine& rng_;
  double spare_ = 0.0;
  bool has_spare_ = false;
};

/// A 64-bit generator for one purpose: SplitMix64-mixed (seed, stream) into mt19937_64.
inline std::mt19937_64 seeded_rng(std::uint64_t seed, std::uint64_t stream) {
  auto mix = [](std::uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  return std::mt19937_64(mix(mix(seed) ^ stream));
}

/// The streams of seeded_rng, one per purpose, so that one --seed drives every draw of a run and
/// no two purposes share numbers. Each is its name in ASCII; the per-index streams add the index
/// (micro-step, epoch). Two inits differ for history's sake: changing either would change the
/// weights every earlier run drew from the same seed.
namespace seed_streams {
inline constexpr std::uint64_t noise = 0x4E4F495345000000ull;        // "NOISE" + micro-step: MAE's masking noise
inline constexpr std::uint64_t permutation = 0x5045524D00000000ull;  // "PERM" + epoch: the data order
inline constexpr std::uint64_t subset = 0x5355425345540000ull;       // "SUBSET": --labels-per-class
inline constexpr std::uint64_t holdout = 0x484F4C444F5554ull;  // "HOLDOUT", xored into the seed: --holdout's subset
inline constexpr std::uint64_t probe =
    0x50524F4245000000ull;                                // "PROBE" (+ 1 + epoch: its order): a linear probe's head
inline constexpr std::uint64_t init_mae = 0x494E4954ull;  // "INIT" (low bytes): a ViTMAE drawn from a config
inline constexpr std::uint64_t init_vit = 0x494E495400000000ull;  // "INIT": a ViT classifier drawn from a config
}  // namespace seed_streams

}  // namespace vitmae
