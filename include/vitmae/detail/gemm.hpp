// SPDX-License-Identifier: Apache-2.0
// Products. With oneDNN (VITMAE_WITH_ONEDNN, defined by the CMake target when Debian's
// libdnnl-dev is found) every float product of the Linear layers and the patch projection goes
// through dnnl_sgemm, oneDNN's own kernels dispatched at run time (AVX2, AVX-512, AMX); double
// stays on Eigen. Each column block (detail/parallel.hpp's split_columns) is one single-threaded
// product; with oneDNN its elements have the bits of the whole product, so the result does not
// depend on the number of threads (Eigen's blocking depends on the block's width: its last bits
// may). The backend switch (Backend, set_product_backend) is public API, reached through vitmae.hpp.
#pragma once

#include <cstdlib>
#include <cstring>

#ifdef VITMAE_WITH_ONEDNN
#include <oneapi/dnnl/dnnl.h>
#endif

#include "vitmae/detail/parallel.hpp"
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

namespace detail {

inline double product_flops(Index m, Index n, Index k) {
  return 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
}

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
    if (onednn_gemm('N', 'N', a.rows(), n, a.cols(), a.data(), a.cols(), b.data() + c0, b.cols(),
                    accumulate ? 1.f : 0.f, y.data() + c0, y.cols()))
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
