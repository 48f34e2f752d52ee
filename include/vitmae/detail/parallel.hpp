// SPDX-License-Identifier: Apache-2.0
// Threading. With OpenMP (compile with -fopenmp; the CMake target adds it when found) the
// library splits work across threads itself: Eigen declines to thread the small products of
// batch-1 inference (50 x 768 x 768), so products are split into column blocks, one
// single-threaded GEMM per thread (detail/gemm.hpp), and attention heads run in parallel. Inside
// a parallel region (the batch slices of training) everything runs on the calling thread. Without
// OpenMP everything runs on the calling thread.
#pragma once

#include <algorithm>
#include <cstddef>
#include <type_traits>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "vitmae/error.hpp"
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

/// The calling thread's number in its team (0 outside OpenMP).
inline int thread_number() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

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

/// Calls f(first, count) on contiguous blocks of the rows [0, rows), one per thread, when the
/// work (`elements` touched) is worth a parallel region; otherwise f(0, rows) on the calling
/// thread. For row-wise work (LayerNorm, activations, residual adds): the same bits either way.
template <class F>
void split_rows(Index rows, double elements, F&& f) {
  const int threads = static_cast<int>(std::min<Index>(available_threads(), rows));
  if (threads <= 1 || elements < 65536) {
    f(Index(0), rows);
    return;
  }
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static, 1)
#endif
  for (int t = 0; t < threads; ++t) {
    const Index r0 = rows * t / threads, r1 = rows * (t + 1) / threads;
    if (r1 > r0) f(r0, r1 - r0);
  }
}

/// y += x (same shapes), rows split over threads as split_rows.
template <class Scalar>
void add_rows(Matrix<Scalar>& y, const Matrix<Scalar>& x) {
  split_rows(y.rows(), static_cast<double>(y.size()),
             [&](Index first, Index count) { y.middleRows(first, count) += x.middleRows(first, count); });
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

/// While alive, OpenMP regions started on this thread get one thread: oneDNN threads a product by
/// itself outside a parallel region, and our callers split the work instead.
struct OneOpenMPThread {
#ifdef _OPENMP
  int saved = omp_get_max_threads();
  OneOpenMPThread() { omp_set_num_threads(1); }
  ~OneOpenMPThread() { omp_set_num_threads(saved); }
#else
  OneOpenMPThread() {}
#endif
  OneOpenMPThread(const OneOpenMPThread&) = delete;
  OneOpenMPThread& operator=(const OneOpenMPThread&) = delete;
};

}  // namespace detail
}  // namespace vitmae
