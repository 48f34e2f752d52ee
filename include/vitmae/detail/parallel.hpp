// SPDX-License-Identifier: Apache-2.0
// Threading. With OpenMP (compile with -fopenmp; the CMake target adds it when found) the
// library splits work across threads itself: Eigen declines to thread the small products of
// batch-1 inference (50 x 768 x 768), so products are split into column blocks, one
// single-threaded GEMM per thread, and attention heads run in parallel. Without OpenMP
// everything runs on the calling thread.
#pragma once

#include <algorithm>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "vitmae/tensor.hpp"

namespace vitmae::detail {

/// Threads available to a parallel region started here (1 inside one already).
inline int available_threads() {
#ifdef _OPENMP
  return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
  return 1;
#endif
}

/// y = x * Wᵀ (x: (T, in), W: (out, in), y resized to (T, out)), the out columns split into
/// one block per thread (multiples of 16 columns). Small products run on the calling thread.
template <class Scalar>
void gemm_nt(const Matrix<Scalar>& x, const Matrix<Scalar>& w, Matrix<Scalar>& y) {
  const Index T = x.rows(), N = w.rows();
  y.resize(T, N);
  const int threads = available_threads();
  const double flops = 2.0 * static_cast<double>(T) * static_cast<double>(N) * static_cast<double>(x.cols());
  if (threads <= 1 || flops < 4e6 || N < 32) {
    y.noalias() = x * w.transpose();
    return;
  }
  const Index step = ((N + threads - 1) / threads + 15) / 16 * 16;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static, 1)
#endif
  for (int t = 0; t < threads; ++t) {
    const Index c0 = std::min<Index>(N, t * step), c1 = std::min<Index>(N, c0 + step);
    if (c1 > c0) y.middleCols(c0, c1 - c0).noalias() = x * w.middleRows(c0, c1 - c0).transpose();
  }
}

}  // namespace vitmae::detail
