// SPDX-License-Identifier: Apache-2.0
// A correctly rounded, vectorised square root for Eigen array expressions: `x.unaryExpr(
// detail::ExactSqrt<S>())`. Eigen's own `sqrt()` on packets is, under EIGEN_FAST_MATH (its
// default), a reciprocal-square-root estimate refined by Newton steps: not the IEEE result
// std::sqrt (and torch) give, and NaN for +inf, 0 for subnormals. Here the packets use the
// instructions' own sqrt (SSE, AVX, AVX-512), the scalar remainder std::sqrt: the same bits.
#pragma once

#include <Eigen/Core>

#include <cmath>
#include <type_traits>

namespace vitmae::detail {

#if defined(EIGEN_VECTORIZE_SSE2)
#define VITMAE_EXACT_SQRT_PACKETS 1
inline Eigen::internal::Packet4f exact_sqrt_packet(const Eigen::internal::Packet4f& x) { return _mm_sqrt_ps(x); }
inline Eigen::internal::Packet2d exact_sqrt_packet(const Eigen::internal::Packet2d& x) { return _mm_sqrt_pd(x); }
#else
#define VITMAE_EXACT_SQRT_PACKETS 0
#endif
#if defined(EIGEN_VECTORIZE_AVX)
inline Eigen::internal::Packet8f exact_sqrt_packet(const Eigen::internal::Packet8f& x) { return _mm256_sqrt_ps(x); }
inline Eigen::internal::Packet4d exact_sqrt_packet(const Eigen::internal::Packet4d& x) { return _mm256_sqrt_pd(x); }
#endif
#if defined(EIGEN_VECTORIZE_AVX512)
inline Eigen::internal::Packet16f exact_sqrt_packet(const Eigen::internal::Packet16f& x) { return _mm512_sqrt_ps(x); }
inline Eigen::internal::Packet8d exact_sqrt_packet(const Eigen::internal::Packet8d& x) { return _mm512_sqrt_pd(x); }
#endif

template <class Scalar>
struct ExactSqrt {
  Scalar operator()(const Scalar& x) const { return std::sqrt(x); }
  template <class Packet>
  Packet packetOp(const Packet& x) const {
    return exact_sqrt_packet(x);
  }
};

}  // namespace vitmae::detail

namespace Eigen::internal {
template <class Scalar>
struct functor_traits<vitmae::detail::ExactSqrt<Scalar>> {
  enum {
    Cost = 20 * NumTraits<Scalar>::MulCost,
    // float and double packets on x86; elsewhere (no overload above) element by element.
    PacketAccess =
        VITMAE_EXACT_SQRT_PACKETS && (std::is_same<Scalar, float>::value || std::is_same<Scalar, double>::value)
  };
};
}  // namespace Eigen::internal
