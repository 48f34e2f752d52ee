// SPDX-License-Identifier: Apache-2.0
// int8 products for inference: y = x Wᵀ + b with W quantised per output channel (symmetric, int8,
// scale max|w|/127) and x quantised per row (token) at run time (asymmetric, uint8, the row's
// range including 0 over 255 steps). The integer product accumulates exactly in int32 (oneDNN's
// dnnl_gemm_u8s8s32 where the CPU has VNNI; a plain integer loop otherwise), so its
// result does not depend on the number of threads; then
//   y[r][c] = sx[r] sw[c] (acc[r][c] - zx[r] Σk qw[c][k]) + b[c].
// oneDNN's u8s8 product is used only where the CPU has VNNI (AVX-512 VNNI, AVX-VNNI, AMX): without
// it oneDNN sums pairs in 16 bits, which saturate for uint8 x int8 (its documented caveat), so
// other CPUs take a plain exact (slower) integer loop.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "vitmae/detail/gemm.hpp"
#include "vitmae/error.hpp"
#include "vitmae/tensor.hpp"

namespace vitmae {
namespace detail {

/// True when oneDNN runs u8s8 products with VNNI (exact 32-bit sums) on this CPU.
inline bool onednn_int8_exact() {
#ifdef VITMAE_WITH_ONEDNN
  static const bool exact = [] {
    const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    return isa == dnnl_cpu_isa_avx512_core_vnni || isa == dnnl_cpu_isa_avx512_core_bf16 ||
           isa == dnnl_cpu_isa_avx512_core_amx || isa == dnnl_cpu_isa_avx2_vnni;
  }();
  return exact;
#else
  return false;
#endif
}

#ifdef VITMAE_WITH_ONEDNN
/// oneDNN's u8 x s8 -> s32 matmul primitives (m, k) x (k, n), weights in the layout each asks
/// for, one per shape, created on first use and kept; each runs on the calling thread with that
/// thread's scratchpad, so threads may run the same primitive at once.
struct Int8Matmul {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul primitive;
};
inline std::shared_ptr<const Int8Matmul> int8_matmul(Index m, Index n, Index k) {
  static PrimitiveCache<std::tuple<Index, Index, Index>, Int8Matmul> entries;
  return entries.get({m, n, k}, [&] {
    using dims = dnnl::memory::dims;
    using dt = dnnl::memory::data_type;
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const OneOpenMPThread one;  // the primitive plans for the one thread that runs it
    const dnnl::matmul::primitive_desc pd(
        dnnl::matmul::desc(dnnl::memory::desc({m, k}, dt::u8, dims{k, 1}),
                           dnnl::memory::desc({k, n}, dt::s8, dnnl::memory::format_tag::any),
                           dnnl::memory::desc({m, n}, dt::s32, dims{n, 1})),
        attr, cpu_engine());
    return std::make_shared<const Int8Matmul>(Int8Matmul{pd, dnnl::matmul(pd)});
  });
}
#endif

/// A weight (out, in) quantised per output channel, and (where oneDNN runs exact u8 x s8
/// products, see pack()) its integers packed once in the layout oneDNN's matmul asks for:
/// dnnl_gemm_u8s8s32 packs them again on every call, at 0.5-0.9 of the packed matmul's speed
/// (measured on vit-mae-base's shapes).
struct Int8Weight {
  using Integers = Eigen::Matrix<std::int8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Integers q;                                              // (out, in); released by pack() (integers() gives them back)
  RowVector<float> scale;                                  // (out)
  Eigen::Matrix<std::int32_t, 1, Eigen::Dynamic> row_sum;  // (out): Σk q[c][k]
  Index out = 0, in = 0;                                   // the shape (q's, also once released)
#ifdef VITMAE_WITH_ONEDNN
  std::shared_ptr<const dnnl::memory> packed;  // q as the (in, out) matmul weight; shared by copies
#endif

  /// Packs q for oneDNN's matmul and releases it (the packed integers are the only copy: an int8
  /// model is no larger packed) when this build has oneDNN and the CPU VNNI; otherwise, or when
  /// oneDNN cannot, does nothing (the products then run through dnnl_gemm_u8s8s32 or a plain
  /// loop, with the same results).
  void pack() {
#ifdef VITMAE_WITH_ONEDNN
    if (empty() || packed || !onednn_int8_exact()) return;
    try {
      auto memory = std::make_shared<dnnl::memory>(int8_matmul(64, out, in)->pd.weights_desc(), cpu_engine());
      reorder_on_this_thread(plain(const_cast<std::int8_t*>(q.data())), *memory);
      packed = std::move(memory);
      q = Integers();
    } catch (const dnnl::error&) {
      packed.reset();
    }
#endif
  }

  /// The integers (out, in): q, or unpacked from the packed weight (a copy either way).
  /// @throws vitmae::Error when oneDNN cannot unpack them.
  Integers integers() const {
#ifdef VITMAE_WITH_ONEDNN
    if (q.size() == 0 && packed) {
      Integers r(out, in);
      try {
        reorder_on_this_thread(*packed, plain(r.data()));
      } catch (const dnnl::error& e) {
        throw Error(std::string("int8 weight: oneDNN cannot unpack its integers: ") + e.what());
      }
      return r;
    }
#endif
    return q;
  }

#ifdef VITMAE_WITH_ONEDNN
  /// Integers (out, in) at `data`, row-major, as oneDNN's (in, out) matmul weight.
  dnnl::memory plain(std::int8_t* data) const {
    return dnnl::memory(dnnl::memory::desc({in, out}, dnnl::memory::data_type::s8, dnnl::memory::dims{1, in}),
                        cpu_engine(), data);
  }
#endif

  bool empty() const { return out == 0; }
  Index out_features() const { return out; }
  Index in_features() const { return in; }

  /// Quantises w: scale = max|w[c]| / 127 (1 for an all-zero row), q = round(w / scale).
  static Int8Weight of(const Matrix<float>& w) {
    Int8Weight r;
    r.out = w.rows(), r.in = w.cols();
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

  /// An int8 checkpoint's weight as stored: `integers` (out x in, row-major; whole numbers in
  /// [-128, 127], as an I8 tensor reads) and its per-channel `scale`.
  static Int8Weight of_stored(const float* integers, Index out, Index in, const float* scale) {
    Int8Weight r;
    r.out = out, r.in = in;
    r.q = Eigen::Map<const Matrix<float>>(integers, out, in).cast<std::int8_t>();
    r.scale = Eigen::Map<const RowVector<float>>(scale, out);
    r.row_sum = r.q.cast<std::int32_t>().rowwise().sum().transpose();
    return r;
  }

  /// The weight as it multiplies: scale[c] * q[c][k].
  Matrix<float> dequantized() const {
    return (integers().cast<float>().array().colwise() * scale.transpose().array()).matrix();
  }
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

  /// lo = min(0, x), hi = max(0, x) over a row, in one pass of 16 lanes (Eigen's packets); false
  /// when x holds a NaN or an infinity (a sum of x * 0 is NaN exactly then). Two sets of
  /// accumulators, each chain half as long (the x * 0 sums' latency bounded the loop: 1.4% of an
  /// int8 features_b1 in perf); min, max and a NaN do not depend on the order.
  static bool range_row(const float* x, Index n, float& lo, float& hi) {
    using Lanes = Eigen::Array<float, 16, 1>;
    Lanes l = Lanes::Zero(), h = Lanes::Zero(), z = Lanes::Zero();
    Lanes l2 = Lanes::Zero(), h2 = Lanes::Zero(), z2 = Lanes::Zero();
    Index k = 0;
    for (; k + 32 <= n; k += 32) {
      const Eigen::Map<const Lanes> v(x + k), w(x + k + 16);
      l = l.min(v), l2 = l2.min(w);
      h = h.max(v), h2 = h2.max(w);
      z += v * 0.f, z2 += w * 0.f;
    }
    for (; k + 16 <= n; k += 16) {
      const Eigen::Map<const Lanes> v(x + k);
      l = l.min(v);
      h = h.max(v);
      z += v * 0.f;
    }
    lo = std::min(l.minCoeff(), l2.minCoeff()), hi = std::max(h.maxCoeff(), h2.maxCoeff());
    float zs = z.sum() + z2.sum();
    for (; k < n; ++k) lo = std::min(lo, x[k]), hi = std::max(hi, x[k]), zs += x[k] * 0.f;
    return !std::isnan(zs);
  }

  /// Sized for `rows` rows of `cols` values, to be quantised one at a time (quantize_row_of).
  void resize(Index rows, Index cols) {
    q.resize(rows, cols);
    scale.resize(rows);
    zero.resize(rows);
  }

  /// Quantises x (q's width) into row i. A NaN or an infinity in x marks the row (no scale
  /// represents them; refused by check_finite).
  void quantize_row_of(const float* x, Index i) {
    const Index n = q.cols();
    float lo, hi;
    if (!range_row(x, n, lo, hi)) {
      scale(i) = std::numeric_limits<float>::quiet_NaN();
      return;
    }
    float s = hi > lo ? (hi - lo) / 255.f : 1.f;
    if (!(1.f / s <= std::numeric_limits<float>::max())) s = 1.f;  // a subnormal range: all ~0
    const float z = std::clamp(std::round(-lo / s), 0.f, 255.f);
    scale(i) = s;
    zero(i) = static_cast<std::int32_t>(z);
    // x / s + z >= 0 up to rounding: adding 0.5 and truncating rounds half up (a loop the
    // compiler vectorises).
    quantize_row(x, n, 1.f / s, z + 0.5f, q.row(i).data());
  }

  /// @throws vitmae::Error naming the first row that held a NaN or an infinity.
  void check_finite() const {
    for (Index i = 0; i < scale.size(); ++i)
      if (std::isnan(scale(i)))
        throw Error("int8 product: row " + std::to_string(i) +
                    " of the input is not finite (NaN or infinity: int8 inference cannot represent it)");
  }

  /// Quantises every row of x (rows split across threads).
  /// @throws vitmae::Error naming the first row that holds a NaN or an infinity.
  static void quantize(const Matrix<float>& x, Int8Rows& r) {
    r.resize(x.rows(), x.cols());
    split_columns(x.rows(), 8.0 * static_cast<double>(x.size()), [&](Index r0, Index n) {
      for (Index i = r0; i < r0 + n; ++i) r.quantize_row_of(x.row(i).data(), i);
    });
    r.check_finite();
  }
};

/// Σk a[k] b[k] in 32 bits (uint8 x int8: each term fits 16 bits, the sum 32 for k < 66,000).
inline std::int32_t dot_u8s8(const std::uint8_t* __restrict a, const std::int8_t* __restrict b, Index n) {
  std::int32_t s = 0;
  for (Index k = 0; k < n; ++k) s += static_cast<std::int32_t>(a[k]) * static_cast<std::int32_t>(b[k]);
  return s;
}

/// Row i, columns [c0, c0 + n) of y from the integer sums `acc` (that row's, from column c0):
/// y = sx sw (acc - zx Σk qw) + b (b empty for none). One function for every path, so that the
/// results have the same bits whichever computed the sums.
inline void int8_epilogue(const std::int32_t* __restrict acc, const Int8Rows& xr, Index i, const Int8Weight& w,
                          const RowVector<float>& b, Index c0, Index n, float* __restrict y) {
  const std::int32_t z = xr.zero(i);
  const float sx = xr.scale(i);
  const float* __restrict ws = w.scale.data() + c0;
  const std::int32_t* __restrict rs = w.row_sum.data() + c0;
  if (b.size() == 0) {
    for (Index c = 0; c < n; ++c) y[c] = static_cast<float>(acc[c] - z * rs[c]) * (sx * ws[c]);
    return;
  }
  const float* __restrict bc = b.data() + c0;
  for (Index c = 0; c < n; ++c) y[c] = static_cast<float>(acc[c] - z * rs[c]) * (sx * ws[c]) + bc[c];
}

/// The rows of y = x Wᵀ + b through the int8 product, x already quantised (b empty for none), one
/// at a time: row i is written to row_at(i) (out floats), then after_row(i, that row) runs, when
/// given, while it is in cache. With a packed weight (Int8Weight::pack) the rows (tokens) are
/// split across the threads, each range one single-threaded matmul on the whole weight, and a row
/// is finished on the thread that computed it; otherwise column blocks, one per thread, then the
/// rows split across the threads. Integer sums are exact, so the result does not depend on the way.
inline void gemm_nt_int8_rows(const Int8Rows& xr, const Int8Weight& w, const RowVector<float>& b,
                              const std::function<float*(Index)>& row_at,
                              const std::function<void(Index, float*)>& after_row) {
  require(xr.q.cols() == w.in_features(), "int8 Linear: input has ", xr.q.cols(), " features, expected ",
          w.in_features());
  thread_local Eigen::Matrix<std::int32_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> acc;
  const Index T = xr.q.rows(), out = w.out_features(), in = w.in_features();
  if (T == 0) return;
  acc.resize(T, out);
  auto& a = acc;  // the calling thread's buffer, shared with the workers below
  auto finish = [&](Index i) {
    float* y = row_at(i);
    int8_epilogue(a.row(i).data(), xr, i, w, b, 0, out, y);
    if (after_row) after_row(i, y);
  };
#ifdef VITMAE_WITH_ONEDNN
  if (w.packed && product_backend() == Backend::onednn && in > 0) {
    // Ranges of at least 16 rows (packed: 0.9 of the speed at 25 rows as at 200, measured).
    const Index threads =
        std::min<Index>(std::max<Index>(1, T / 16), product_flops(T, out, in) / 4 >= 4e6 ? available_threads() : 1);
    bool failed = false;
#ifdef _OPENMP
#pragma omp parallel for num_threads(static_cast <int>(threads)) schedule(static, 1) if (threads > 1)
#endif
    for (Index t = 0; t < threads; ++t) {
      const Index r0 = T * t / threads, rows = T * (t + 1) / threads - r0;
      try {
        const auto mm = int8_matmul(rows, out, in);
        if (mm->pd.weights_desc() != w.packed->get_desc()) throw dnnl::error(dnnl_unimplemented, "another layout");
        run_on_this_thread(mm->primitive, mm->pd,
                           {{DNNL_ARG_SRC, dnnl::memory(mm->pd.src_desc(), cpu_engine(),
                                                        const_cast<std::uint8_t*>(xr.q.row(r0).data()))},
                            {DNNL_ARG_WEIGHTS, *w.packed},
                            {DNNL_ARG_DST, dnnl::memory(mm->pd.dst_desc(), cpu_engine(), a.row(r0).data())}});
      } catch (...) {  // (another layout, or oneDNN failing: the column blocks below; no throw in a parallel region)
#ifdef _OPENMP
#pragma omp atomic write
#endif
        failed = true;
        continue;
      }
      for (Index i = r0; i < r0 + rows; ++i) finish(i);
    }
    if (!failed) return;
  }
#endif
  // The integers as rows: q, or (a packed weight under the Eigen backend, or whose matmul could
  // not run) unpacked here, on every call: slow, for a model packed and then switched to Eigen.
  const Int8Weight::Integers unpacked = w.q.size() == 0 ? w.integers() : Int8Weight::Integers();
  const Int8Weight::Integers& qi = w.q.size() == 0 ? unpacked : w.q;
  split_columns(out, product_flops(T, out, in) / 4, [&](Index c0, Index n) {
    bool done = false;
#ifdef VITMAE_WITH_ONEDNN
    if (product_backend() == Backend::onednn && onednn_int8_exact() && T > 0 && in > 0) {
      const OneOpenMPThread one;
      const std::int32_t co = 0;
      done = dnnl_gemm_u8s8s32('N', 'T', 'F', T, n, in, 1.f, xr.q.data(), in, 0, qi.data() + c0 * in, in, 0, 0.f,
                               a.data() + c0, out, &co) ==
             dnnl_success;  // (a failure falls back to the loop: no throw in a parallel region)
    }
#endif
    if (!done)  // exact 32-bit dot products of contiguous rows (no Eigen integer GEMM to compile)
      for (Index i = 0; i < T; ++i)
        for (Index c = c0; c < c0 + n; ++c) a(i, c) = dot_u8s8(xr.q.row(i).data(), qi.row(c).data(), in);
  });
  // (rows split over threads as the activation after_row runs would be)
  split_rows(T, static_cast<double>(T * out) * 8, [&](Index r0, Index n) {
    for (Index i = r0; i < r0 + n; ++i) finish(i);
  });
}

/// y = x Wᵀ + b through the int8 product, x already quantised (b empty for none); y resized to
/// (T, out). `after_row(i)`, when given, runs once row i of y is complete (gemm_nt_int8_rows).
inline void gemm_nt_int8(const Int8Rows& xr, const Int8Weight& w, const RowVector<float>& b, Matrix<float>& y,
                         const std::function<void(Index)>& after_row = {}) {
  y.resize(xr.q.rows(), w.out_features());
  gemm_nt_int8_rows(
      xr, w, b, [&](Index i) { return y.row(i).data(); },
      after_row ? std::function<void(Index, float*)>([&](Index i, float*) { after_row(i); }) : nullptr);
}

/// y = x Wᵀ + b through the int8 product (x quantised here); after_row as above.
inline void gemm_nt_int8(const Matrix<float>& x, const Int8Weight& w, const RowVector<float>& b, Matrix<float>& y,
                         const std::function<void(Index)>& after_row = {}) {
  require(x.cols() == w.in_features(), "int8 Linear: input has ", x.cols(), " features, expected ", w.in_features());
  thread_local Int8Rows xq;
  Int8Rows::quantize(x, xq);
  gemm_nt_int8(xq, w, b, y, after_row);
}

/// act(x Wᵀ + b) quantised per row into yq, through the int8 product: each row activated and
/// quantised while it is in cache, never stored in float (inference: an MLP's hidden layer, for
/// its second product). `activate(row, n)` applies the activation in place.
/// @throws vitmae::Error when a row of the activation is not finite.
inline void gemm_nt_int8_quantized(const Int8Rows& xr, const Int8Weight& w, const RowVector<float>& b,
                                   const std::function<void(float*, Index)>& activate, Int8Rows& yq) {
  const Index out = w.out_features();
  yq.resize(xr.q.rows(), out);
  // One scratch row a thread, allocated here (not in the threads, where an exception may not
  // leave them), each a whole number of 64-byte lines after the first, so that every thread's row
  // has the same alignment and activate() gives the same bits on any thread. (Called inside
  // another parallel region, the product runs on this thread alone, whose number there may be
  // any: hence the clamp.)
  const Index stride = (out + 15) / 16 * 16, count = std::max(1, available_threads());
  thread_local std::vector<float, Eigen::aligned_allocator<float>> rows_;
  rows_.resize(static_cast<size_t>(count * stride));
  float* const rows = rows_.data();
  gemm_nt_int8_rows(
      xr, w, b, [rows, stride, count](Index) { return rows + std::min<Index>(thread_number(), count - 1) * stride; },
      [&](Index i, float* y) {
        activate(y, out);
        yq.quantize_row_of(y, i);
      });
  yq.check_finite();
}

}  // namespace detail
}  // namespace vitmae
