// SPDX-License-Identifier: Apache-2.0
// The activations of transformers.activations.ACT2FN that ViTMAE configs use.
#pragma once

#include <Eigen/Core>
#include <unsupported/Eigen/SpecialFunctions>

#include <cmath>
#include <string>

#include "vitmae/config.hpp"
#include "vitmae/error.hpp"

namespace vitmae::ops {

// The names (Activation, activation_from_name) are config.json's vocabulary: config.hpp, which checks
// `hidden_act`, defines them; the functions are here.
using vitmae::Activation;
using vitmae::activation_from_name;

/// The scalar function, used by the vectorised loops below and by the gradient checks.
template <class Scalar>
inline Scalar activate(Activation a, Scalar x) {
  using std::erf, std::exp, std::tanh, std::log1p;
  constexpr Scalar kSqrt2OverPi = Scalar(0.7978845608028654);  // sqrt(2 / pi)
  switch (a) {
    case Activation::gelu:
      return Scalar(0.5) * x * (Scalar(1) + erf(x * Scalar(0.7071067811865476)));
    case Activation::gelu_tanh:
      return Scalar(0.5) * x * (Scalar(1) + tanh(kSqrt2OverPi * (x + Scalar(0.044715) * x * x * x)));
    case Activation::gelu_fast:  // HF FastGELUActivation
      return Scalar(0.5) * x * (Scalar(1) + tanh(x * kSqrt2OverPi * (Scalar(1) + Scalar(0.044715) * x * x)));
    case Activation::quick_gelu:
      return x / (Scalar(1) + exp(Scalar(-1.702) * x));
    case Activation::relu:
      return x > Scalar(0) ? x : Scalar(0);
    case Activation::silu:
      return x / (Scalar(1) + exp(-x));
    case Activation::tanh:
      return tanh(x);
    case Activation::sigmoid:
      return Scalar(1) / (Scalar(1) + exp(-x));
    case Activation::mish: {  // x * tanh(softplus(x)), softplus with torch's threshold 20
      const Scalar sp = x > Scalar(20) ? x : log1p(exp(x));
      return x * tanh(sp);
    }
    case Activation::linear:
      return x;
  }
  return x;
}

/// Applies `a` elementwise, in place, with Eigen's vectorised kernels (erf, tanh, exp; AVX
/// when compiled for it). The formulas are activate()'s.
template <class Derived>
inline void activate_inplace(Activation a, Eigen::DenseBase<Derived>& x) {
  using Scalar = typename Derived::Scalar;
  auto v = x.derived().array();
  const Scalar half(0.5), one(1);
  switch (a) {
    case Activation::gelu:
      v = half * v * (one + (v * Scalar(0.7071067811865476)).erf());
      break;
    case Activation::gelu_tanh:
      v = half * v * (one + (Scalar(0.7978845608028654) * (v + Scalar(0.044715) * v.cube())).tanh());
      break;
    case Activation::gelu_fast:
      v = half * v * (one + (v * Scalar(0.7978845608028654) * (one + Scalar(0.044715) * v.square())).tanh());
      break;
    case Activation::quick_gelu:
      v = v / (one + (Scalar(-1.702) * v).exp());
      break;
    case Activation::relu:
      v = v.max(Scalar(0));
      break;
    case Activation::silu:
      v = v / (one + (-v).exp());
      break;
    case Activation::tanh:
      v = v.tanh();
      break;
    case Activation::sigmoid:
      v = one / (one + (-v).exp());
      break;
    case Activation::mish:
    case Activation::linear:
      for (Eigen::Index i = 0; i < x.rows(); ++i)
        for (Eigen::Index j = 0; j < x.cols(); ++j) x(i, j) = activate<Scalar>(a, x(i, j));
      break;
  }
}

/// d act(z) / dz, the derivative of activate() for each activation.
template <class S>
S activation_grad(Activation a, S z) {
  using std::exp, std::tanh, std::erf;
  const S k = S(0.7978845608028654);
  auto sigmoid = [](S v) { return S(1) / (S(1) + std::exp(-v)); };
  switch (a) {
    case Activation::gelu:
      return S(0.5) * (S(1) + erf(z * S(0.7071067811865476))) + z * exp(S(-0.5) * z * z) * S(0.3989422804014327);
    case Activation::gelu_tanh:
    case Activation::gelu_fast: {
      const S t = tanh(k * (z + S(0.044715) * z * z * z));
      return S(0.5) * (S(1) + t) + S(0.5) * z * (S(1) - t * t) * k * (S(1) + S(3) * S(0.044715) * z * z);
    }
    case Activation::quick_gelu: {
      const S s = sigmoid(S(1.702) * z);
      return s + z * S(1.702) * s * (S(1) - s);
    }
    case Activation::relu:
      return z > S(0) ? S(1) : S(0);
    case Activation::silu: {
      const S s = sigmoid(z);
      return s + z * s * (S(1) - s);
    }
    case Activation::tanh: {
      const S t = tanh(z);
      return S(1) - t * t;
    }
    case Activation::sigmoid: {
      const S s = sigmoid(z);
      return s * (S(1) - s);
    }
    case Activation::mish: {
      const S sp = z > S(20) ? z : std::log1p(exp(z));
      const S t = tanh(sp);
      return t + z * (S(1) - t * t) * sigmoid(z);
    }
    case Activation::linear:
      return S(1);
  }
  return S(1);
}

/// The backward of activate_inplace: dy (the gradient of act(z)) becomes the gradient of z,
/// dy *= act'(z). The GELUs, the sigmoid family, tanh and relu use Eigen's vectorised kernels
/// (the same formulas as activation_grad); mish runs element by element.
template <class Derived, class DerivedZ>
inline void activation_backward_inplace(Activation a, const Eigen::DenseBase<DerivedZ>& z,
                                        Eigen::DenseBase<Derived>& dy) {
  using Scalar = typename Derived::Scalar;
  auto g = dy.derived().array();
  const auto v = z.derived().array();
  const Scalar half(0.5), one(1), k(0.7978845608028654), c(0.044715);
  switch (a) {
    case Activation::gelu:
      g *= half * (one + (v * Scalar(0.7071067811865476)).erf()) +
           v * (Scalar(-0.5) * v.square()).exp() * Scalar(0.3989422804014327);
      return;
    case Activation::gelu_tanh:
    case Activation::gelu_fast: {
      const Eigen::Array<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> t = (k * (v + c * v.cube())).tanh();
      g *= half * (one + t) + half * v * (one - t.square()) * k * (one + Scalar(3) * c * v.square());
      return;
    }
    case Activation::relu:
      g *= (v > Scalar(0)).template cast<Scalar>();
      return;
    case Activation::tanh:
      g *= one - v.tanh().square();
      return;
    case Activation::linear:
      return;
    case Activation::quick_gelu:
    case Activation::silu:
    case Activation::sigmoid:
    case Activation::mish:
      break;
  }
  Scalar* gp = dy.derived().data();
  const Scalar* zp = z.derived().data();
  for (Eigen::Index i = 0; i < dy.size(); ++i) gp[i] *= activation_grad<Scalar>(a, zp[i]);
}

}  // namespace vitmae::ops
