// SPDX-License-Identifier: Apache-2.0
// int8 products for inference: y = x Wᵀ + b with W quantised per output channel (symmetric, int8,
// scale max|w|/127) and x quantised per row (token) at run time (asymmetric, uint8, the row's
// range including 0 over 255 steps). The integer product accumulates exactly in int32 (oneDNN's
// dnnl_gemm_u8s8s32, VNNI where the CPU has it; Eigen's integer product otherwise), so its
// result does not depend on the number of threads; then
//   y[r][c] = sx[r] sw[c] (acc[r][c] - zx[r] Σk qw[c][k]) + b[c].
// CPUs with AVX2 or AVX-512 but without VNNI may saturate oneDNN's 16-bit intermediate sums
// (oneDNN's documented u8s8 caveat); the accuracy checks of the tests and vitmae-bench show it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "vitmae/detail/parallel.hpp"
#include "vitmae/error.hpp"
#include "vitmae/tensor.hpp"

namespace vitmae {
namespace detail {

/// A weight (out, in) quantised per output channel.
struct Int8Weight {
  Eigen::Matrix<std::int8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> q;  // (out, in)
  RowVector<float> scale;                                                         // (out)
  Eigen::Matrix<std::int32_t, 1, Eigen::Dynamic> row_sum;                         // (out): Σk q[c][k]

  bool empty() const { return q.size() == 0; }
  Index out_features() const { return q.rows(); }
  Index in_features() const { return q.cols(); }

  /// Quantises w: scale = max|w[c]| / 127 (1 for an all-zero row), q = round(w / scale).
  static Int8Weight of(const Matrix<float>& w) {
    Int8Weight r;
    r.q.resize(w.rows(), w.cols());
    r.scale.resize(w.rows());
    r.row_sum.resize(w.rows());
    for (Index c = 0; c < w.rows(); ++c) {
      const float m = w.row(c).cwiseAbs().maxCoeff();
      const float s = m > 0 ? m / 127.f : 1.f;
      r.scale(c) = s;
      std::int32_t sum = 0;
      for (Index k = 0; k < w.cols(); ++k) {
        const float v = std::round(w(c, k) / s);
        const auto q = static_cast<std::int8_t>(std::clamp(v, -127.f, 127.f));
        r.q(c, k) = q;
        sum += q;
      }
      r.row_sum(c) = sum;
    }
    return r;
  }

  /// The weight as it multiplies: scale[c] * q[c][k].
  Matrix<float> dequantized() const { return (q.cast<float>().array().colwise() * scale.transpose().array()).matrix(); }
};

/// Rows of x quantised to uint8: x ≈ scale[r] * (q[r][k] - zero[r]).
struct Int8Rows {
  Eigen::Matrix<std::uint8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> q;
  ColVector<float> scale;
  Eigen::Matrix<std::int32_t, Eigen::Dynamic, 1> zero;

  /// q[k] = clamp(x[k] * inv + off, 0, 255) truncated: a loop of locals the compiler vectorises
  /// (a uint8_t store may alias anything, so nothing it reads may live behind a pointer).
  static void quantize_row(const float* __restrict x, Index n, float inv, float off, std::uint8_t* __restrict q) {
    for (Index k = 0; k < n; ++k) {
      const float v = std::min(std::max(x[k] * inv + off, 0.f), 255.f);
      q[k] = static_cast<std::uint8_t>(static_cast<std::int32_t>(v));
    }
  }

  /// Quantises every row of x (rows split across threads).
  /// @throws vitmae::Error naming the first row that holds a NaN or an infinity.
  static void quantize(const Matrix<float>& x, Int8Rows& r) {
    r.q.resize(x.rows(), x.cols());
    r.scale.resize(x.rows());
    r.zero.resize(x.rows());
    split_columns(x.rows(), 8.0 * static_cast<double>(x.size()), [&](Index r0, Index n) {
      for (Index i = r0; i < r0 + n; ++i) {
        // NaN or infinity: no scale represents them; marked here, refused below (Eigen's
        // allFinite() does not vectorise; a sum of x * 0 is NaN exactly when one is not finite).
        if (std::isnan((x.row(i).array() * 0.f).sum())) {
          r.scale(i) = std::numeric_limits<float>::quiet_NaN();
          continue;
        }
        const float lo = std::min(0.f, x.row(i).minCoeff()), hi = std::max(0.f, x.row(i).maxCoeff());
        const float s = hi > lo ? (hi - lo) / 255.f : 1.f;
        const float z = std::clamp(std::round(-lo / s), 0.f, 255.f);
        r.scale(i) = s;
        r.zero(i) = static_cast<std::int32_t>(z);
        // x / s + z >= 0 up to rounding: adding 0.5 and truncating rounds half up (a loop the
        // compiler vectorises).
        quantize_row(x.row(i).data(), x.cols(), 1.f / s, z + 0.5f, r.q.row(i).data());
      }
    });
    for (Index i = 0; i < x.rows(); ++i)
      if (std::isnan(r.scale(i)))
        throw Error("int8 product: row " + std::to_string(i) +
                    " of the input is not finite (NaN or infinity: int8 inference cannot represent it)");
  }
};

/// y = x Wᵀ + b through the int8 product, x already quantised (b empty for none); y resized to
/// (T, out). The integer product runs on column blocks, one per thread.
inline void gemm_nt_int8(const Int8Rows& xr, const Int8Weight& w, const RowVector<float>& b, Matrix<float>& y) {
  require(xr.q.cols() == w.in_features(), "int8 Linear: input has ", xr.q.cols(), " features, expected ", w.in_features());
  thread_local Eigen::Matrix<std::int32_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> acc;
  const Index T = xr.q.rows(), out = w.out_features(), in = w.in_features();
  acc.resize(T, out);
  y.resize(T, out);
  auto& a = acc;  // the calling thread's buffer, shared with the workers below
  split_columns(out, product_flops(T, out, in) / 4, [&](Index c0, Index n) {
    bool done = false;
#ifdef VITMAE_WITH_ONEDNN
    if (product_backend() == Backend::onednn && T > 0 && in > 0) {
#ifdef _OPENMP
      const int saved = omp_get_max_threads();
      omp_set_num_threads(1);
#endif
      const std::int32_t co = 0;
      const dnnl_status_t st = dnnl_gemm_u8s8s32('N', 'T', 'F', T, n, in, 1.f, xr.q.data(), in, 0, w.q.data() + c0 * in,
                                                 in, 0, 0.f, a.data() + c0, out, &co);
#ifdef _OPENMP
      omp_set_num_threads(saved);
#endif
      done = st == dnnl_success;  // (a failure falls back to Eigen's integer product: no throw in a parallel region)
    }
#endif
    if (!done)
      a.middleCols(c0, n).noalias() = xr.q.cast<std::int32_t>() * w.q.middleRows(c0, n).cast<std::int32_t>().transpose();
    const auto ws = w.scale.segment(c0, n).array();
    const auto rs = w.row_sum.segment(c0, n).array();
    for (Index i = 0; i < T; ++i) {
      auto yi = y.row(i).segment(c0, n).array();
      yi = (a.row(i).segment(c0, n).array() - xr.zero(i) * rs).template cast<float>() * (xr.scale(i) * ws);
      if (b.size()) yi += b.segment(c0, n).array();
    }
  });
}

/// y = x Wᵀ + b through the int8 product (x quantised here).
inline void gemm_nt_int8(const Matrix<float>& x, const Int8Weight& w, const RowVector<float>& b, Matrix<float>& y) {
  require(x.cols() == w.in_features(), "int8 Linear: input has ", x.cols(), " features, expected ", w.in_features());
  thread_local Int8Rows xq;
  Int8Rows::quantize(x, xq);
  gemm_nt_int8(xq, w, b, y);
}

}  // namespace detail
}  // namespace vitmae
