// SPDX-License-Identifier: Apache-2.0
// The activations of transformers.activations.ACT2FN that ViTMAE configs use.
#pragma once

#include <Eigen/Core>
#include <unsupported/Eigen/SpecialFunctions>

#include <cmath>
#include <string>

#include "vitmae/error.hpp"

namespace vitmae::ops {

enum class Activation { gelu, gelu_tanh, gelu_fast, quick_gelu, relu, silu, tanh, sigmoid, mish, linear };

/// Maps an HF `hidden_act` name to its function. "gelu" is the exact erf GELU; "gelu_new",
/// "gelu_pytorch_tanh" and "gelu_accurate" are the tanh approximation.
/// @throws vitmae::Error for a name HF does not define.
inline Activation activation_from_name(const std::string& name, const std::string& where = "hidden_act") {
  if (name == "gelu" || name == "gelu_python") return Activation::gelu;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_accurate")
    return Activation::gelu_tanh;
  if (name == "gelu_fast") return Activation::gelu_fast;
  if (name == "quick_gelu") return Activation::quick_gelu;
  if (name == "relu") return Activation::relu;
  if (name == "silu" || name == "swish") return Activation::silu;
  if (name == "tanh") return Activation::tanh;
  if (name == "sigmoid") return Activation::sigmoid;
  if (name == "mish") return Activation::mish;
  if (name == "linear") return Activation::linear;
  detail::fail(where, ": unknown activation '", name,
               "', expected one of gelu, gelu_python, gelu_new, gelu_pytorch_tanh, gelu_accurate, "
               "gelu_fast, quick_gelu, relu, silu, swish, tanh, sigmoid, mish, linear");
}

/// The scalar function, used by the vectorised loops below and by the gradient checks.
template <class Scalar>
inline Scalar activate(Activation a, Scalar x) {
  using std::erf, std::exp, std::tanh, std::log1p;
  constexpr Scalar kSqrt2OverPi = Scalar(0.7978845608028654);  // sqrt(2 / pi)
  switch (a) {
    case Activation::gelu: return Scalar(0.5) * x * (Scalar(1) + erf(x * Scalar(0.7071067811865476)));
    case Activation::gelu_tanh:
      return Scalar(0.5) * x * (Scalar(1) + tanh(kSqrt2OverPi * (x + Scalar(0.044715) * x * x * x)));
    case Activation::gelu_fast:  // HF FastGELUActivation
      return Scalar(0.5) * x * (Scalar(1) + tanh(x * kSqrt2OverPi * (Scalar(1) + Scalar(0.044715) * x * x)));
    case Activation::quick_gelu: return x / (Scalar(1) + exp(Scalar(-1.702) * x));
    case Activation::relu: return x > Scalar(0) ? x : Scalar(0);
    case Activation::silu: return x / (Scalar(1) + exp(-x));
    case Activation::tanh: return tanh(x);
    case Activation::sigmoid: return Scalar(1) / (Scalar(1) + exp(-x));
    case Activation::mish: {  // x * tanh(softplus(x)), softplus with torch's threshold 20
      const Scalar sp = x > Scalar(20) ? x : log1p(exp(x));
      return x * tanh(sp);
    }
    case Activation::linear: return x;
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
    case Activation::gelu: v = half * v * (one + (v * Scalar(0.7071067811865476)).erf()); break;
    case Activation::gelu_tanh:
      v = half * v * (one + (Scalar(0.7978845608028654) * (v + Scalar(0.044715) * v.cube())).tanh());
      break;
    case Activation::gelu_fast:
      v = half * v * (one + (v * Scalar(0.7978845608028654) * (one + Scalar(0.044715) * v.square())).tanh());
      break;
    case Activation::quick_gelu: v = v / (one + (Scalar(-1.702) * v).exp()); break;
    case Activation::relu: v = v.max(Scalar(0)); break;
    case Activation::silu: v = v / (one + (-v).exp()); break;
    case Activation::tanh: v = v.tanh(); break;
    case Activation::sigmoid: v = one / (one + (-v).exp()); break;
    case Activation::mish:
    case Activation::linear:
      for (Eigen::Index i = 0; i < x.rows(); ++i)
        for (Eigen::Index j = 0; j < x.cols(); ++j) x(i, j) = activate<Scalar>(a, x(i, j));
      break;
  }
}

}  // namespace vitmae::ops
