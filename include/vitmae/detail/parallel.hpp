// SPDX-License-Identifier: Apache-2.0
// Threading. With OpenMP (compile with -fopenmp; the CMake target adds it when found) the
// library splits work across threads itself: Eigen declines to thread the small products of
// batch-1 inference (50 x 768 x 768), so products are split into column blocks, one
// single-threaded GEMM per thread, and attention heads run in parallel. Inside a parallel region
// (the batch slices of training) everything runs on the calling thread. Without OpenMP
// everything runs on the calling thread.
//
// Products. With oneDNN (VITMAE_WITH_ONEDNN, defined by the CMake target when Debian's
// libdnnl-dev is found) every float product of the Linear layers and the patch projection goes
// through dnnl_sgemm, oneDNN's own kernels dispatched at run time (AVX2, AVX-512, AMX); double
// stays on Eigen. Each column block is one single-threaded product; with oneDNN its elements
// have the bits of the whole product, so the result does not depend on the number of threads
// (Eigen's blocking depends on the block's width: its last bits may).
#pragma once

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef VITMAE_WITH_ONEDNN
#include <oneapi/dnnl/dnnl.h>
#endif

#include "vitmae/error.hpp"
#include "vitmae/tensor.hpp"

namespace vitmae {

/// Where the float products of Linear layers and the patch projection run.
enum class Backend { eigen, onednn };

/// True when the library was built with oneDNN (VITMAE_WITH_ONEDNN).
constexpr bool onednn_available() {
#ifdef VITMAE_WITH_ONEDNN
  return true;
#else
  return false;
#endif
}

namespace detail {
inline Backend& backend_setting() {
  // oneDNN when available, unless the environment says VITMAE_BACKEND=eigen.
  static Backend b = [] {
    const char* env = std::getenv("VITMAE_BACKEND");
    return onednn_available() && !(env && std::strcmp(env, "eigen") == 0) ? Backend::onednn : Backend::eigen;
  }();
  return b;
}
}  // namespace detail

/// The backend of the float products (double always runs on Eigen).
inline Backend product_backend() { return detail::backend_setting(); }

/// Chooses the backend of the float products; not thread-safe against products running.
/// @throws vitmae::Error for Backend::onednn in a build without oneDNN.
inline void set_product_backend(Backend b) {
  if (b == Backend::onednn && !onednn_available())
    throw Error("set_product_backend: this build of vitmae has no oneDNN (install libdnnl-dev and reconfigure)");
  detail::backend_setting() = b;
}

inline const char* backend_name(Backend b) { return b == Backend::onednn ? "onednn" : "eigen"; }

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
  split_rows(y.rows(), static_cast<double>(y.size()), [&](Index first, Index count) {
    y.middleRows(first, count) += x.middleRows(first, count);
  });
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

/// C = op(A) op(B) + beta C, row-major, through oneDNN's sgemm on the calling thread alone.
/// Returns false (nothing done) when the product is not for oneDNN: double, the Eigen backend,
/// an empty dimension, or oneDNN failing (then Eigen computes it: callers run inside OpenMP
/// regions, which an exception must not leave).
template <class Scalar>
bool onednn_gemm(char ta, char tb, Index m, Index n, Index k, const Scalar* a, Index lda, const Scalar* b, Index ldb,
                 float beta, Scalar* c, Index ldc) {
#ifdef VITMAE_WITH_ONEDNN
  if constexpr (std::is_same_v<Scalar, float>) {
    if (m <= 0 || n <= 0 || k <= 0 || product_backend() != Backend::onednn) return false;
    const OneOpenMPThread one;
    return dnnl_sgemm(ta, tb, m, n, k, 1.f, a, lda, b, ldb, beta, c, ldc) == dnnl_success;
  }
#endif
  (void)ta, (void)tb, (void)m, (void)n, (void)k, (void)a, (void)lda, (void)b, (void)ldb, (void)beta, (void)c, (void)ldc;
  return false;
}

/// y = x wᵀ + b (x: (T, in), w: (out, in), b: (out) or empty for none; y resized to (T, out)
/// only when its shape differs). Each column block starts from the bias and accumulates the
/// product: one pass fewer than a product (which zeroes its output) and a bias add.
template <class Scalar>
void gemm_nt(const Matrix<Scalar>& x, const Matrix<Scalar>& w, const RowVector<Scalar>& b, Matrix<Scalar>& y) {
  y.resize(x.rows(), w.rows());
  split_columns(w.rows(), product_flops(x.rows(), w.rows(), x.cols()), [&](Index c0, Index n) {
    if (b.size() != 0) y.middleCols(c0, n).rowwise() = b.segment(c0, n);
    if (onednn_gemm('N', 'T', x.rows(), n, x.cols(), x.data(), x.cols(), w.data() + c0 * w.cols(), w.cols(),
                    b.size() != 0 ? 1.f : 0.f, y.data() + c0, y.cols()))
      return;
    if (b.size() == 0) {
      y.middleCols(c0, n).noalias() = x * w.middleRows(c0, n).transpose();
      return;
    }
    y.middleCols(c0, n).noalias() += x * w.middleRows(c0, n).transpose();
  });
}

/// y = a b, or y += a b when `accumulate` (a: (T, k), b: (k, n); y (T, n)).
template <class Scalar>
void gemm_nn(const Matrix<Scalar>& a, const Matrix<Scalar>& b, Matrix<Scalar>& y, bool accumulate) {
  if (!accumulate) y.resize(a.rows(), b.cols());
  split_columns(b.cols(), product_flops(a.rows(), b.cols(), a.cols()), [&](Index c0, Index n) {
    if (onednn_gemm('N', 'N', a.rows(), n, a.cols(), a.data(), a.cols(), b.data() + c0, b.cols(), accumulate ? 1.f : 0.f,
                    y.data() + c0, y.cols()))
      return;
    if (accumulate) y.middleCols(c0, n).noalias() += a * b.middleCols(c0, n);
    else y.middleCols(c0, n).noalias() = a * b.middleCols(c0, n);
  });
}

/// y += aᵀ b (a: (T, m), b: (T, n), y: (m, n)): the weight gradient dyᵀ x, rows split.
template <class Scalar>
void gemm_tn_add(const Matrix<Scalar>& a, const Matrix<Scalar>& b, Matrix<Scalar>& y) {
  split_columns(a.cols(), product_flops(a.cols(), b.cols(), a.rows()), [&](Index r0, Index n) {
    if (onednn_gemm('T', 'N', n, b.cols(), a.rows(), a.data() + r0, a.cols(), b.data(), b.cols(), 1.f,
                    y.data() + r0 * y.cols(), y.cols()))
      return;
    y.middleRows(r0, n).noalias() += a.middleCols(r0, n).transpose() * b;
  });
}

}  // namespace detail
}  // namespace vitmae
