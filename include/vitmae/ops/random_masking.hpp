// SPDX-License-Identifier: Apache-2.0
// ViTMAEEmbeddings.random_masking: per-sample shuffle by argsort of noise.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "vitmae/error.hpp"
#include "vitmae/random.hpp"
#include "vitmae/tensor.hpp"

namespace vitmae::ops {

/// HF: `len_keep = int(seq_length * (1 - mask_ratio))`, in double precision, truncated.
inline Index num_kept(Index seq_length, double mask_ratio) {
  return static_cast<Index>(static_cast<double>(seq_length) * (1.0 - mask_ratio));
}

/// One sample's masking. ids_shuffle = argsort(noise) (ascending, stable so ties keep index
/// order), ids_restore = argsort(ids_shuffle); the first len_keep of ids_shuffle are kept;
/// mask is 1 for removed patches, in original patch order.
struct Masking {
  std::vector<Index> ids_keep;     // (len_keep) patch indices kept, in shuffled order
  std::vector<Index> ids_restore;  // (L)
  std::vector<Index> mask;         // (L) 0 kept, 1 removed
};

template <class Derived>
Masking random_masking(const Eigen::MatrixBase<Derived>& noise_row, double mask_ratio) {
  const Index L = noise_row.size();
  const Index keep = num_kept(L, mask_ratio);
  std::vector<Index> ids_shuffle(static_cast<size_t>(L));
  std::iota(ids_shuffle.begin(), ids_shuffle.end(), Index(0));
  // NaN noise sorts last, as in torch.argsort.
  std::stable_sort(ids_shuffle.begin(), ids_shuffle.end(), [&](Index a, Index b) {
    const auto x = noise_row(a), y = noise_row(b);
    if (std::isnan(x)) return false;
    if (std::isnan(y)) return true;
    return x < y;
  });
  Masking m;
  m.ids_restore.resize(static_cast<size_t>(L));
  m.mask.resize(static_cast<size_t>(L));
  for (Index r = 0; r < L; ++r) {
    const Index p = ids_shuffle[static_cast<size_t>(r)];
    m.ids_restore[static_cast<size_t>(p)] = r;
    m.mask[static_cast<size_t>(p)] = r < keep ? 0 : 1;
  }
  m.ids_keep.assign(ids_shuffle.begin(), ids_shuffle.begin() + keep);
  return m;
}

/// The noise vitmae draws when the caller gives none: uniform53 draws (53 random bits in
/// [0, 1), see random.hpp) from any standard engine, row by row. The same seed gives the same
/// masks on every platform (unlike std::uniform_real_distribution, whose algorithm is the
/// standard library's choice).
template <class Scalar, class Engine>
Matrix<Scalar> uniform_noise(Index batch, Index length, Engine& rng) {
  Matrix<Scalar> noise(batch, length);
  for (Index b = 0; b < batch; ++b)
    for (Index l = 0; l < length; ++l) noise(b, l) = static_cast<Scalar>(uniform53(rng));
  return noise;
}

}  // namespace vitmae::ops
