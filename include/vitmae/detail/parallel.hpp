// SPDX-License-Identifier: Apache-2.0
// Threading. With OpenMP (compile with -fopenmp; the CMake target adds it when found) the
// library splits work across threads itself: Eigen declines to thread the small products of
// batch-1 inference (50 x 768 x 768), so products are split into column blocks, one
// single-threaded GEMM per thread, and attention heads run in parallel. Inside a parallel region
// (the batch slices of training) everything runs on the calling thread. Without OpenMP
// everything runs on the calling thread.
#pragma once

#include <algorithm>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "vitmae/tensor.hpp"

namespace vitmae {

/// Threads available to a parallel region started here (1 inside one already).
inline int available_threads() {
#ifdef _OPENMP
  return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
  return 1;
#endif
}

namespace detail {

/// Calls f(begin, count) on blocks of [0, n) (multiples of 16), one per thread, when the work
/// (`flops`) is worth it; otherwise f(0, n) on the calling thread.
template <class F>
void split_columns(Index n, double flops, F&& f) {
  const int threads = available_threads();
  if (threads <= 1 || flops < 4e6 || n < 32) {
    f(Index(0), n);
    return;
  }
  const Index step = ((n + threads - 1) / threads + 15) / 16 * 16;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static, 1)
#endif
  for (int t = 0; t < threads; ++t) {
    const Index c0 = std::min<Index>(n, t * step), c1 = std::min<Index>(n, c0 + step);
    if (c1 > c0) f(c0, c1 - c0);
  }
}

/// Calls f(i) for i in [0, n), the indices handed out to the available threads one at a time
/// (the per-parameter loops of training: zeroing, summing twins, AdamW, the gradient norm). The
/// result must not depend on which thread runs an index: each f(i) touches only its own data.
template <class F>
void parallel_for(size_t n, F&& f) {
  const int threads = available_threads();
  (void)threads;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(dynamic) if (threads > 1 && n > 1)
#endif
  for (size_t i = 0; i < n; ++i) f(i);
}

inline double product_flops(Index m, Index n, Index k) {
  return 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
}

/// y = x wᵀ + b (x: (T, in), w: (out, in), b: (out) or empty for none; y resized to (T, out)
/// only when its shape differs). Each column block starts from the bias and accumulates the
/// product: one pass fewer than a product (which zeroes its output) and a bias add.
template <class Scalar>
void gemm_nt(const Matrix<Scalar>& x, const Matrix<Scalar>& w, const RowVector<Scalar>& b, Matrix<Scalar>& y) {
  y.resize(x.rows(), w.rows());
  split_columns(w.rows(), product_flops(x.rows(), w.rows(), x.cols()), [&](Index c0, Index n) {
    if (b.size() == 0) {
      y.middleCols(c0, n).noalias() = x * w.middleRows(c0, n).transpose();
      return;
    }
    y.middleCols(c0, n).rowwise() = b.segment(c0, n);
    y.middleCols(c0, n).noalias() += x * w.middleRows(c0, n).transpose();
  });
}

/// y = a b, or y += a b when `accumulate` (a: (T, k), b: (k, n); y (T, n)).
template <class Scalar>
void gemm_nn(const Matrix<Scalar>& a, const Matrix<Scalar>& b, Matrix<Scalar>& y, bool accumulate) {
  if (!accumulate) y.resize(a.rows(), b.cols());
  split_columns(b.cols(), product_flops(a.rows(), b.cols(), a.cols()), [&](Index c0, Index n) {
    if (accumulate) y.middleCols(c0, n).noalias() += a * b.middleCols(c0, n);
    else y.middleCols(c0, n).noalias() = a * b.middleCols(c0, n);
  });
}

/// y += aᵀ b (a: (T, m), b: (T, n), y: (m, n)): the weight gradient dyᵀ x, rows split.
template <class Scalar>
void gemm_tn_add(const Matrix<Scalar>& a, const Matrix<Scalar>& b, Matrix<Scalar>& y) {
  split_columns(a.cols(), product_flops(a.cols(), b.cols(), a.rows()), [&](Index r0, Index n) {
    y.middleRows(r0, n).noalias() += a.middleCols(r0, n).transpose() * b;
  });
}

}  // namespace detail
}  // namespace vitmae
