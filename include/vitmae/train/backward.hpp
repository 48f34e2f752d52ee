// SPDX-License-Identifier: Apache-2.0
// The backward pass of ViTMAEForPreTraining, module by module (llm.c style): each forward_train
// keeps what its backward needs in a cache; each backward adds parameter gradients into a second
// instance of the same module (so gradients carry the HF names) and returns the input gradient.
// Position embeddings are fixed, as in the reference: they get no gradient.
#pragma once

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "vitmae/for_pre_training.hpp"

namespace vitmae::train {

// ---------------------------------------------------------------- Linear, patch projection
template <class S>
struct LinearCache {
  Matrix<S> x;
};

template <class S>
Matrix<S> forward_train(const Linear<S>& m, const Matrix<S>& x, LinearCache<S>& c) {
  c.x = x;
  return m.forward(x);
}

/// dW += dyᵀ x, db += Σ dy, returns dx = dy W.
template <class S>
Matrix<S> backward(const Linear<S>& m, const Matrix<S>& dy, const LinearCache<S>& c, Linear<S>& g) {
  g.weight.noalias() += dy.transpose() * c.x;
  if (m.has_bias) g.bias += dy.colwise().sum();
  Matrix<S> dx(dy.rows(), m.weight.cols());
  dx.noalias() = dy * m.weight;
  return dx;
}

// ---------------------------------------------------------------- LayerNorm
template <class S>
struct LayerNormCache {
  Matrix<S> xhat;
  ColVector<S> rstd;
};

template <class S>
Matrix<S> forward_train(const LayerNorm<S>& m, const Matrix<S>& x, LayerNormCache<S>& c) {
  const S inv_n = S(1) / static_cast<S>(x.cols());
  c.xhat.resize(x.rows(), x.cols());
  c.rstd.resize(x.rows());
  for (Index r = 0; r < x.rows(); ++r) {
    const S mean = x.row(r).sum() * inv_n;
    const S var = (x.row(r).array() - mean).square().sum() * inv_n;
    c.rstd(r) = S(1) / std::sqrt(var + m.eps);
    c.xhat.row(r) = (x.row(r).array() - mean) * c.rstd(r);
  }
  Matrix<S> y = (c.xhat.array().rowwise() * m.weight.array()).matrix();
  y.rowwise() += m.bias;
  return y;
}

template <class S>
Matrix<S> backward(const LayerNorm<S>& m, const Matrix<S>& dy, const LayerNormCache<S>& c, LayerNorm<S>& g) {
  g.weight += (dy.array() * c.xhat.array()).colwise().sum().matrix();
  g.bias += dy.colwise().sum();
  const Matrix<S> dxhat = (dy.array().rowwise() * m.weight.array()).matrix();
  Matrix<S> dx(dy.rows(), dy.cols());
  const S inv_n = S(1) / static_cast<S>(dy.cols());
  for (Index r = 0; r < dy.rows(); ++r) {
    const S a = dxhat.row(r).sum() * inv_n;
    const S b = dxhat.row(r).dot(c.xhat.row(r)) * inv_n;
    dx.row(r) = c.rstd(r) * (dxhat.row(r).array() - a - c.xhat.row(r).array() * b).matrix();
  }
  return dx;
}

// ---------------------------------------------------------------- activations
/// d act(z) / dz for each supported activation.
template <class S>
S activation_grad(ops::Activation a, S z) {
  using std::exp, std::tanh, std::erf, std::sqrt;
  const S k = S(0.7978845608028654);
  auto sigmoid = [](S v) { return S(1) / (S(1) + std::exp(-v)); };
  switch (a) {
    case ops::Activation::gelu:
      return S(0.5) * (S(1) + erf(z * S(0.7071067811865476))) + z * exp(S(-0.5) * z * z) * S(0.3989422804014327);
    case ops::Activation::gelu_tanh:
    case ops::Activation::gelu_fast: {
      const S t = tanh(k * (z + S(0.044715) * z * z * z));
      return S(0.5) * (S(1) + t) + S(0.5) * z * (S(1) - t * t) * k * (S(1) + S(3) * S(0.044715) * z * z);
    }
    case ops::Activation::quick_gelu: {
      const S s = sigmoid(S(1.702) * z);
      return s + z * S(1.702) * s * (S(1) - s);
    }
    case ops::Activation::relu: return z > S(0) ? S(1) : S(0);
    case ops::Activation::silu: {
      const S s = sigmoid(z);
      return s + z * s * (S(1) - s);
    }
    case ops::Activation::tanh: {
      const S t = tanh(z);
      return S(1) - t * t;
    }
    case ops::Activation::sigmoid: {
      const S s = sigmoid(z);
      return s * (S(1) - s);
    }
    case ops::Activation::mish: {
      const S sp = z > S(20) ? z : std::log1p(exp(z));
      const S t = tanh(sp);
      return t + z * (S(1) - t * t) * sigmoid(z);
    }
    case ops::Activation::linear: return S(1);
  }
  return S(1);
}

// ---------------------------------------------------------------- attention
template <class S>
struct AttentionCache {
  LinearCache<S> q_in, k_in, v_in, out_in;
  Matrix<S> q, k, v, probs;  // probs: (B*H*T, T)
  Index seq_len = 0;
};

template <class S>
Matrix<S> forward_train(const Attention<S>& m, const Matrix<S>& x, AttentionCache<S>& c, Index seq_len) {
  const SelfAttention<S>& a = m.attention;
  const Index T = seq_len, B = x.rows() / T, H = a.num_attention_heads, d = a.query.out_features() / H;
  c.seq_len = T;
  c.q = forward_train(a.query, x, c.q_in);
  c.k = forward_train(a.key, x, c.k_in);
  c.v = forward_train(a.value, x, c.v_in);
  const S scale = S(1) / std::sqrt(static_cast<S>(d));
  Matrix<S> context(B * T, H * d);
  c.probs.resize(B * H * T, T);
  for (Index bh = 0; bh < B * H; ++bh) {
    const Index b = bh / H, h = bh % H;
    Matrix<S> scores(T, T);
    scores.noalias() = c.q.block(b * T, h * d, T, d) * c.k.block(b * T, h * d, T, d).transpose();
    scores *= scale;
    ops::softmax_rows_inplace(scores);
    c.probs.middleRows(bh * T, T) = scores;
    context.block(b * T, h * d, T, d).noalias() = scores * c.v.block(b * T, h * d, T, d);
  }
  return forward_train(m.output.dense, context, c.out_in);
}

template <class S>
Matrix<S> backward(const Attention<S>& m, const Matrix<S>& dy, const AttentionCache<S>& c, Attention<S>& g) {
  const SelfAttention<S>& a = m.attention;
  const Index T = c.seq_len, B = dy.rows() / T, H = a.num_attention_heads, d = a.query.out_features() / H;
  const Matrix<S> dctx = backward(m.output.dense, dy, c.out_in, g.output.dense);  // (B*T, D)
  const S scale = S(1) / std::sqrt(static_cast<S>(d));
  Matrix<S> dq(B * T, H * d), dk(B * T, H * d), dv(B * T, H * d);
  for (Index bh = 0; bh < B * H; ++bh) {
    const Index b = bh / H, h = bh % H;
    const auto P = c.probs.middleRows(bh * T, T);
    const auto dc = dctx.block(b * T, h * d, T, d);
    dv.block(b * T, h * d, T, d).noalias() = P.transpose() * dc;
    Matrix<S> dP(T, T);
    dP.noalias() = dc * c.v.block(b * T, h * d, T, d).transpose();
    // softmax backward: dS = P ∘ (dP - rowsum(dP ∘ P))
    const ColVector<S> dot = (dP.array() * P.array()).rowwise().sum();
    Matrix<S> dS = (P.array() * (dP.array().colwise() - dot.array())).matrix() * scale;
    dq.block(b * T, h * d, T, d).noalias() = dS * c.k.block(b * T, h * d, T, d);
    dk.block(b * T, h * d, T, d).noalias() = dS.transpose() * c.q.block(b * T, h * d, T, d);
  }
  Matrix<S> dx = backward(a.query, dq, c.q_in, g.attention.query);
  dx += backward(a.key, dk, c.k_in, g.attention.key);
  dx += backward(a.value, dv, c.v_in, g.attention.value);
  return dx;
}

// ---------------------------------------------------------------- Layer
template <class S>
struct LayerCache {
  LayerNormCache<S> ln_before, ln_after;
  AttentionCache<S> attention;
  LinearCache<S> fc1, fc2;
  Matrix<S> z;  // pre-activation
};

template <class S>
Matrix<S> forward_train(const Layer<S>& m, const Matrix<S>& x, LayerCache<S>& c, Index seq_len) {
  Matrix<S> h = forward_train(m.attention, forward_train(m.layernorm_before, x, c.ln_before), c.attention, seq_len);
  h += x;
  c.z = forward_train(m.intermediate.dense, forward_train(m.layernorm_after, h, c.ln_after), c.fc1);
  Matrix<S> a = c.z;
  ops::activate_inplace(m.intermediate.act, a);
  Matrix<S> y = forward_train(m.output.dense, a, c.fc2);
  y += h;
  return y;
}

template <class S>
Matrix<S> backward(const Layer<S>& m, const Matrix<S>& dy, const LayerCache<S>& c, Layer<S>& g) {
  Matrix<S> da = backward(m.output.dense, dy, c.fc2, g.output.dense);
  for (Index i = 0; i < da.size(); ++i) da.data()[i] *= activation_grad(m.intermediate.act, c.z.data()[i]);
  Matrix<S> dh = dy;  // residual
  dh += backward(m.layernorm_after, backward(m.intermediate.dense, da, c.fc1, g.intermediate.dense), c.ln_after,
                 g.layernorm_after);
  Matrix<S> dx = dh;  // residual
  dx += backward(m.layernorm_before, backward(m.attention, dh, c.attention, g.attention), c.ln_before, g.layernorm_before);
  return dx;
}

// ---------------------------------------------------------------- the whole model
template <class S>
struct PreTrainingCache {
  Index B = 0, H = 0, W = 0, L = 0, K = 0;
  std::vector<Matrix<S>> cols;                 // per sample (L, C*p*p) im2col of the patch projection
  std::vector<ops::Masking> masking;
  std::vector<LayerCache<S>> enc, dec;
  LayerNormCache<S> enc_norm, dec_norm;
  LinearCache<S> dec_embed, pred;
  std::vector<Matrix<S>> logits;
  Matrix<S> mask;
};

/// One training forward and backward of ViTMAEForPreTraining on (pixel_values, noise) at the
/// configured size. Adds every trainable parameter's gradient into `grads`; returns the loss.
/// dpixels, when given, receives d loss / d pixel_values (B, C*H*W), through both the encoder
/// and the reconstruction target (the reference does not detach the target).
/// loss_denominator, when positive, replaces this batch's count of masked patches: a slice of a
/// larger batch then returns its share of that batch's loss and gradients.
template <class S>
S forward_backward(const ForPreTraining<S>& m, const Tensor<S>& pixel_values, const Matrix<S>& noise, ForPreTraining<S>& grads,
                   Matrix<S>* dpixels = nullptr, S loss_denominator = S(0)) {
  const Config& cfg = m.config;
  m.vit.check_inputs(pixel_values, noise, false);
  PreTrainingCache<S> c;
  c.B = pixel_values.size(0), c.H = pixel_values.size(2), c.W = pixel_values.size(3), c.L = noise.cols();
  c.K = ops::num_kept(c.L, cfg.mask_ratio);
  const Index B = c.B, L = c.L, K = c.K, T = 1 + K, D = cfg.hidden_size, p = cfg.patch_size;
  const Embeddings<S>& emb = m.vit.embeddings;
  const PatchConv2d<S>& conv = emb.patch_embeddings.projection;
  // ---- forward: embeddings (the module's own forward; the im2col is kept for the backward)
  Matrix<S> x(B * T, D);
  c.cols.resize(static_cast<size_t>(B));
  c.masking.resize(static_cast<size_t>(B));
  c.mask.resize(B, L);
  for (Index b = 0; b < B; ++b) {
    const Matrix<S> img = detail::image_of(pixel_values, b);
    c.cols[static_cast<size_t>(b)] = PatchConv2d<S>::im2col(img, c.H, c.W, p);
    ops::Masking& mk = c.masking[static_cast<size_t>(b)];
    x.middleRows(b * T, T) = emb.forward(img, c.H, c.W, emb.position_embeddings, RowVector<S>(noise.row(b)), cfg.mask_ratio, false, mk);
    for (Index l = 0; l < L; ++l) c.mask(b, l) = static_cast<S>(mk.mask[static_cast<size_t>(l)]);
  }
  // ---- encoder
  c.enc.resize(m.vit.encoder.layer.size());
  for (size_t i = 0; i < c.enc.size(); ++i) x = forward_train(m.vit.encoder.layer[i], x, c.enc[i], T);
  const Matrix<S> latent = forward_train(m.vit.layernorm, x, c.enc_norm);
  // ---- decoder
  const Decoder<S>& dec = m.decoder;
  const Matrix<S> xe = forward_train(dec.decoder_embed, latent, c.dec_embed);  // (B*T, Dd)
  const Index Dd = cfg.decoder_hidden_size, TL = 1 + L;
  std::vector<std::vector<Index>> ids_restore(static_cast<size_t>(B));
  for (Index b = 0; b < B; ++b) ids_restore[static_cast<size_t>(b)] = c.masking[static_cast<size_t>(b)].ids_restore;
  Matrix<S> h = dec.unshuffle(xe, ids_restore, dec.decoder_pos_embed);
  c.dec.resize(dec.decoder_layers.size());
  for (size_t i = 0; i < c.dec.size(); ++i) h = forward_train(dec.decoder_layers[i], h, c.dec[i], TL);
  const Matrix<S> pred_all = forward_train(dec.decoder_pred, forward_train(dec.decoder_norm, h, c.dec_norm), c.pred);  // (B*TL, P)
  // ---- loss
  const Index P = pred_all.cols();
  const S den = loss_denominator > S(0) ? loss_denominator : c.mask.sum();
  S num = 0;
  Matrix<S> dpred_all = Matrix<S>::Zero(B * TL, P);
  if (dpixels) dpixels->setZero(B, pixel_values.size(1) * c.H * c.W);
  for (Index b = 0; b < B; ++b) {
    const Matrix<S> img = detail::image_of(pixel_values, b);
    Matrix<S> raw = ops::patchify(img, c.H, c.W, p);  // (L, P)
    Matrix<S> target = m.loss_target(img, c.H, c.W);
    const Matrix<S> pred = pred_all.middleRows(b * TL + 1, L);
    const Matrix<S> diff = pred - target;
    num += c.mask.row(b) * diff.array().square().rowwise().mean().matrix();
    // d loss / d pred = 2 (pred - target) / P * mask / den
    Matrix<S> dpred = (diff.array().colwise() * (c.mask.row(b).transpose().array() * (S(2) / (S(P) * den)))).matrix();
    dpred_all.middleRows(b * TL + 1, L) = dpred;
    if (dpixels) {
      // Through the target: d target = -d pred, then the per-patch normalisation's backward.
      Matrix<S> dt = -dpred;
      if (cfg.norm_pix_loss) {
        for (Index l = 0; l < L; ++l) {
          const S mean = raw.row(l).mean();
          const RowVector<S> xc = (raw.row(l).array() - mean).matrix();
          const S var = xc.squaredNorm() / static_cast<S>(P - 1);
          const S sd = std::sqrt(var + S(1e-6));
          const RowVector<S> g = dt.row(l);
          dt.row(l) = ((g.array() - g.mean()) / sd - xc.array() * (g.dot(xc) / (static_cast<S>(P - 1) * sd * sd * sd))).matrix();
        }
      }
      const Matrix<S> di = ops::unpatchify(dt, c.H, c.W, p, cfg.num_channels);
      dpixels->row(b) += Eigen::Map<const RowVector<S>>(di.data(), di.size());
    }
  }
  // ---- backward: decoder
  Matrix<S> dh = backward(dec.decoder_norm, backward(dec.decoder_pred, dpred_all, c.pred, grads.decoder.decoder_pred), c.dec_norm,
                          grads.decoder.decoder_norm);
  for (size_t i = c.dec.size(); i-- > 0;) dh = backward(dec.decoder_layers[i], dh, c.dec[i], grads.decoder.decoder_layers[i]);
  Matrix<S> dxe = Matrix<S>::Zero(B * T, Dd);
  for (Index b = 0; b < B; ++b) {
    dxe.row(b * T) = dh.row(b * TL);
    for (Index l = 0; l < L; ++l) {
      const Index r = c.masking[static_cast<size_t>(b)].ids_restore[static_cast<size_t>(l)];
      if (r < K) dxe.row(b * T + 1 + r) += dh.row(b * TL + 1 + l);
      else grads.decoder.mask_token += dh.row(b * TL + 1 + l);
    }
  }
  Matrix<S> dx = backward(m.vit.layernorm, backward(dec.decoder_embed, dxe, c.dec_embed, grads.decoder.decoder_embed), c.enc_norm,
                          grads.vit.layernorm);
  for (size_t i = c.enc.size(); i-- > 0;) dx = backward(m.vit.encoder.layer[i], dx, c.enc[i], grads.vit.encoder.layer[i]);
  // ---- embeddings
  PatchConv2d<S>& gconv = grads.vit.embeddings.patch_embeddings.projection;
  for (Index b = 0; b < B; ++b) {
    grads.vit.embeddings.cls_token += dx.row(b * T);
    Matrix<S> dpatches = Matrix<S>::Zero(L, D);
    for (Index k = 0; k < K; ++k) dpatches.row(c.masking[static_cast<size_t>(b)].ids_keep[static_cast<size_t>(k)]) = dx.row(b * T + 1 + k);
    gconv.weight.noalias() += dpatches.transpose() * c.cols[static_cast<size_t>(b)];
    gconv.bias += dpatches.colwise().sum();
    if (dpixels) {
      const Matrix<S> dcols = dpatches * conv.weight;  // (L, C*p*p)
      const Index C = cfg.num_channels, nw = c.W / p;
      for (Index l = 0; l < L; ++l)
        for (Index ch = 0; ch < C; ++ch)
          for (Index y = 0; y < p; ++y)
            for (Index xx = 0; xx < p; ++xx)
              (*dpixels)(b, ch * c.H * c.W + ((l / nw) * p + y) * c.W + (l % nw) * p + xx) += dcols(l, (ch * p + y) * p + xx);
    }
  }
  return num / den;
}

/// A zeroed twin of a model, to accumulate gradients into.
template <class S>
ForPreTraining<S> zero_grads_like(const ForPreTraining<S>& m) {
  ForPreTraining<S> g = m;
  g.visit_parameters("", [](const std::string&, auto& t, const std::vector<Index>&) { t.setZero(); });
  return g;
}

/// forward_backward with the batch split into contiguous slices, one per thread, each into its
/// own gradient twin; the twins are then added into `grads` in slice order. The result depends
/// on the thread count (summation order) but not on scheduling: the same threads give the same
/// bits. Keeps its twins between calls.
template <class S>
class ParallelBackward {
 public:
  S run(const ForPreTraining<S>& m, const Tensor<S>& pixel_values, const Matrix<S>& noise, ForPreTraining<S>& grads, int threads) {
    const Index B = pixel_values.size(0), L = noise.cols();
    detail::require(pixel_values.dim() == 4 && noise.rows() == B, "forward_backward: pixel_values has ", B,
                    " images but noise has ", noise.rows(), " rows");
    const int n = static_cast<int>(std::max<Index>(1, std::min<Index>(threads, B)));
    const S den = static_cast<S>(B * (L - ops::num_kept(L, m.config.mask_ratio)));
    if (n == 1) return forward_backward(m, pixel_values, noise, grads, static_cast<Matrix<S>*>(nullptr), den);
    if (static_cast<int>(twins_.size()) != n) twins_.assign(static_cast<size_t>(n), zero_grads_like(m));
    std::vector<S> losses(static_cast<size_t>(n), S(0));
    std::vector<std::string> errors(static_cast<size_t>(n));
    const Index per_image = pixel_values.numel() / B;
#if defined(_OPENMP)
#pragma omp parallel for num_threads(n) schedule(static, 1)
#endif
    for (int t = 0; t < n; ++t) {
      try {
        const Index b0 = B * t / n, b1 = B * (t + 1) / n;
        Tensor<S> part(std::vector<Index>{b1 - b0, pixel_values.size(1), pixel_values.size(2), pixel_values.size(3)});
        std::copy_n(pixel_values.ptr() + b0 * per_image, (b1 - b0) * per_image, part.ptr());
        ForPreTraining<S>& g = twins_[static_cast<size_t>(t)];
        g.visit_parameters("", [](const std::string&, auto& x, const std::vector<Index>&) { x.setZero(); });
        losses[static_cast<size_t>(t)] = forward_backward(m, part, Matrix<S>(noise.middleRows(b0, b1 - b0)), g, static_cast<Matrix<S>*>(nullptr), den);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(t)] = e.what();
      }
    }
    for (const auto& e : errors)
      if (!e.empty()) throw Error(e);
    std::map<std::string, S*> out;
    grads.visit_parameters("", [&](const std::string& name, auto& x, const std::vector<Index>&) { out[name] = x.data(); });
    S loss = 0;
    for (int t = 0; t < n; ++t) {
      loss += losses[static_cast<size_t>(t)];
      twins_[static_cast<size_t>(t)].visit_parameters("", [&](const std::string& name, auto& x, const std::vector<Index>&) {
        S* o = out.at(name);
        for (Index i = 0; i < x.size(); ++i) o[i] += x.data()[i];
      });
    }
    return loss;
  }

 private:
  std::vector<ForPreTraining<S>> twins_;
};

}  // namespace vitmae::train
