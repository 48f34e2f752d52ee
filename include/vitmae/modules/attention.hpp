// SPDX-License-Identifier: Apache-2.0
// ViTMAESelfAttention, ViTMAESelfOutput and ViTMAEAttention, with their backward.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "vitmae/config.hpp"
#include "vitmae/detail/gemm.hpp"
#include "vitmae/modules/linear.hpp"
#include "vitmae/ops/softmax.hpp"

namespace vitmae {

/// Multi-head scaled dot-product attention. Head h is the column block middleCols(h*d, d) of
/// the projections (HF's view(B, T, H, d)). HF names: query, key, value.
template <class Scalar = float>
struct SelfAttention {
  Linear<Scalar> query, key, value;
  Index num_attention_heads = 1;

  /// The projections and the softmax probabilities, (B*heads*T, T): sequence b, head h in rows
  /// (b*heads + h)*T ... (HF's [B, heads, T, T]); plus backward scratch.
  struct Cache {
    Matrix<Scalar> q, k, v, probs;
    Matrix<Scalar> dq, dk, dv;
    bool keep_probs = true;  // false: a forward alone, nobody reads the probabilities
    /// q, k and v rounded to bfloat16 when the heads ran in bf16 (bf16_heads or
    /// bf16_training_heads; `bf16` then true). bf16_training_heads: row-major, as q (the backward's
    /// products are bf16 too). bf16_heads (inference, `heads_major`): each head's (T, d) block
    /// dense, sequence b head h at (b * heads + h) * T * d, the layout oneDNN's fast bf16 kernels
    /// take (see bf16_heads).
    std::vector<std::uint16_t> q16, k16, v16;
    bool bf16 = false, heads_major = false;
  };

  SelfAttention() = default;
  explicit SelfAttention(const EncoderConfig& c, Storage s = Storage::zeros)
      : query(c.hidden_size, c.hidden_size, c.qkv_bias, s),
        key(c.hidden_size, c.hidden_size, c.qkv_bias, s),
        value(c.hidden_size, c.hidden_size, c.qkv_bias, s),
        num_attention_heads(c.num_attention_heads) {}

  /// Runs f(b, h) for every (sequence, head) pair, one pair per thread when it pays.
  template <class F>
  void for_each_head(Index B, Index T, Index d, F&& f) const {
    const Index pairs = B * num_attention_heads;
    const int threads = static_cast<int>(std::min<Index>(available_threads(), pairs));
    (void)threads, (void)T, (void)d;  // used by the OpenMP clause only
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && pairs * T * T * d >= 100000)
#endif
    for (Index bh = 0; bh < pairs; ++bh) f(bh / num_attention_heads, bh % num_attention_heads);
  }

  /// C (m, n) = op(A) op(B), row-major with leading dimensions, for one head on the calling thread:
  /// oneDNN's sgemm for float with the oneDNN backend (float32 even under BFloat16Products: the
  /// bf16 heads round their operands once, see bf16_training_heads), else false and the caller
  /// computes it with Eigen.
  static bool product(char ta, char tb, Index m, Index n, Index k, const Scalar* a, Index lda, const Scalar* b,
                      Index ldb, Scalar* c, Index ldc) {
    return detail::onednn_gemm(ta, tb, m, n, k, a, lda, b, ldb, 0.f, c, ldc, false);
  }

  /// C (m, n) = op(A) op(B) on operands rounded to bfloat16, float32 sums, on the calling thread;
  /// false when it did not run (no oneDNN, or oneDNN failed). oneDNN's bf16 matmul
  /// (detail::gemm_bf16_rounded) costs about 2 us a call whatever its size, so a product of fewer
  /// than 2^17 multiply-adds (Fashion-MNIST's heads: 13 x 13 x 32, 50 x 50 x 16) runs as dnnl_sgemm
  /// on the rounded values widened (detail::gemm_rounded_sgemm): the same exact products, summed
  /// in float32 in another order, up to 6x faster there. Measured alone on the Zen 5 EPYC, 1 thread:
  /// 13 x 13 x 32 2.2 -> 0.33 us, 50 x 50 x 32 2.6 -> 2.1 us; from 50 x 50 x 64 on, oneDNN's bf16
  /// is as fast or faster (197 x 197 x 64: 16.6 against 29.2 us). The choice depends on the shape
  /// alone: the same bits on any number of threads or ranks.
  static bool gemm16(char ta, char tb, Index m, Index n, Index k, const std::uint16_t* a, Index lda,
                     const std::uint16_t* b, Index ldb, Scalar* c, Index ldc) {
#ifdef VITMAE_WITH_ONEDNN
    if constexpr (std::is_same_v<Scalar, float>) {
      if (static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k) < 131072.0)
        return detail::gemm_rounded_sgemm(ta, tb, m, n, k, a, lda, b, ldb, 0.f, c, ldc);
      return detail::gemm_bf16_rounded(ta, tb, m, n, k, a, lda, b, ldb, 0.f, c, ldc);
    }
#endif
    (void)ta, (void)tb, (void)m, (void)n, (void)k, (void)a, (void)lda, (void)b, (void)ldb, (void)c, (void)ldc;
    return false;
  }

  /// The calling thread's buffer of `size` values of type T for one head (one buffer a thread and
  /// type: each use ends before the next), or nullptr when it cannot be allocated (the caller then
  /// multiplies in float32).
  template <class T>
  static T* head_scratch(Index size) {
    thread_local std::vector<T> x;
    try {
      x.resize(static_cast<size_t>(size));
    } catch (...) {  // (bad_alloc: no exception may leave the caller's OpenMP region)
      return nullptr;
    }
    return x.data();
  }
  /// The calling thread's buffer of (n, n) bfloat16 values for one head (head_scratch).
  static std::uint16_t* head_buffer(Index n) { return head_scratch<std::uint16_t>(n * n); }

  /// Token i's row of a projection (heads * d values) rounded to bfloat16 into y16 head-major:
  /// head h's d values at ((b * heads + h) * T + t) * d, for i = b * T + t (Cache::heads_major).
  void round_heads_major(const float* row, Index i, Index T, Index d, std::uint16_t* y16) const {
    const Index H = num_attention_heads, b = i / T, t = i % T;
    for (Index h = 0; h < H; ++h) detail::round_to_bf16(row + h * d, d, y16 + ((b * H + h) * T + t) * d);
  }
  /// Every row of y rounded head-major into y16 (resized), the rows split over the threads: the
  /// heads_major form of detail::round_rows_to_bf16_split.
  void round_heads_major_split(const Matrix<float>& y, Index T, Index d, std::vector<std::uint16_t>& y16) const {
    y16.resize(static_cast<size_t>(y.size()));
    std::uint16_t* o = y16.data();  // (the caller's, shared by the workers: each writes its own rows)
    detail::split_rows(y.rows(), static_cast<double>(y.size()), [&](Index r0, Index n) {
      for (Index i = r0; i < r0 + n; ++i) round_heads_major(y.row(i).data(), i, T, d, o);
    });
  }

  /// A head's (n, n) block rounded to bfloat16 into head_buffer, or nullptr (see there).
  static const std::uint16_t* rounded_head(const Scalar* x, Index n) {
    if constexpr (std::is_same_v<Scalar, float>) {
      std::uint16_t* x16 = head_buffer(n);
      if (x16) detail::round_to_bf16(x, n * n, x16);
      return x16;
    }
    (void)x, (void)n;
    return nullptr;
  }

  /// True when query, key and value are all int8 (quantize_int8): x is quantised once for the three.
  bool int8_projections() const { return !query.int8.empty() && !key.int8.empty() && !value.int8.empty(); }
  /// True when query, key and value are plain float weights: neither int8 nor packed for inference.
  bool float_projections() const {
    for (const auto* l : {&query, &key, &value})
      if (!l->int8.empty() || l->packed_for_inference()) return false;
    return true;
  }

  /// True when the two products of each head run in bfloat16 (with float32 sums), as
  /// torch.autocast runs torch.matmul: in the forward of a model whose projections are int8
  /// (quantize_int8) or bfloat16 (to_bfloat16), on a CPU with bf16 products, when the
  /// probabilities are not kept (no backward, no output_attentions). The scores, the softmax and
  /// the context's sums stay float32. On vit-mae-base's features, the cosine to float32 moved
  /// only in the 7th digit (int8 0.9998749 -> 0.9998752, bfloat16 0.9999932 both ways). q, k
  /// and v are rounded head-major (Cache::heads_major) and each head's context is written dense,
  /// then copied into its columns: with dense operands and output oneDNN 2.6 runs its brgemm
  /// kernels, with strided ones a slower gemm (197 x 197 x 64 on the Zen 5 EPYC, 1 thread:
  /// q kᵀ 15.8 -> 13.2 us, P v 15.8 -> 12.1 us).
  bool bf16_heads(const Cache& c) const {
    if constexpr (std::is_same_v<Scalar, float>)
      return !c.keep_probs && (int8_projections() || (query.bfloat16() && key.bfloat16() && value.bfloat16())) &&
             bfloat16_supported();
    (void)c;
    return false;
  }

  /// True when a forward that keeps the probabilities (training) and its backward run the heads'
  /// products in bfloat16 with float32 sums (gemm16), as torch.autocast("cpu", dtype=torch.bfloat16)
  /// runs torch.matmul: while a BFloat16Products lives (--bf16), with the oneDNN backend, for
  /// float projections (neither int8 nor packed for inference: the Linear layers' rule). Forward:
  /// S = q16 k16ᵀ, P = softmax(S / sqrt(d)) in float32 (kept), context = P16 v16. Backward:
  /// dV = P16ᵀ dC16, dP = dC16 v16ᵀ, dS = P ∘ (dP - rowsum(dP ∘ P)) / sqrt(d) in float32,
  /// dQ = dS16 k16, dK = dS16ᵀ q16 (x16: x rounded to nearest even). The backward follows its
  /// forward (Cache::bf16), whether or not the scope still lives. The same bits on any number of
  /// threads. A product oneDNN cannot run is computed in float32 from the float operands.
  bool bf16_training_heads(const Cache& c) const {
    if constexpr (std::is_same_v<Scalar, float>)
      return c.keep_probs && detail::bf16_products() && product_backend() == Backend::onednn && float_projections();
    (void)c;
    return false;
  }

  /// x: (B*T, hidden), B sequences of `seq_len` tokens stacked -> context (B*T, hidden).
  /// Sequences attend only within themselves. The probabilities stay in c.probs when
  /// c.keep_probs.
  void forward(const Matrix<Scalar>& x, Index seq_len, Matrix<Scalar>& context, Cache& c) const {
    const Index T = seq_len, B = x.rows() / T, H = num_attention_heads, d = query.out_features() / H;
    detail::require(T > 0 && B * T == x.rows(), "SelfAttention: ", x.rows(), " rows are not a whole number of ", T,
                    "-token sequences");
    const Index ld = H * d;  // the row stride of q, k, v and context
    // bf16_heads, bf16_training_heads: q, k and v rounded to bfloat16 once (int8: each row as its
    // product completes it).
    const bool bf16 = bf16_heads(c), train16 = bf16_training_heads(c);
    c.bf16 = bf16 || train16;
    c.heads_major = bf16;
    auto &q16 = c.q16, &k16 = c.k16, &v16 = c.v16;
    bool projected = false;
    if constexpr (std::is_same_v<Scalar, float>) {
      if (int8_projections()) {
        // int8: x quantised once for the three projections; with bf16 heads, row i of y (resized
        // by its product) rounded into y16 as the product completes it.
        if (bf16) q16.resize(static_cast<size_t>(B * T * ld)), k16.resize(q16.size()), v16.resize(q16.size());
        auto rounded = [this, T, d](const Matrix<float>& y, std::vector<std::uint16_t>& y16) {
          return [this, T, d, m = &y, o = y16.data()](Index i) { round_heads_major(m->row(i).data(), i, T, d, o); };
        };
        thread_local detail::Int8Rows xq;
        detail::Int8Rows::quantize(x, xq);
        using After = std::function<void(Index)>;
        detail::gemm_nt_int8(xq, query.int8, query.bias, c.q, bf16 ? After(rounded(c.q, q16)) : nullptr);
        detail::gemm_nt_int8(xq, key.int8, key.bias, c.k, bf16 ? After(rounded(c.k, k16)) : nullptr);
        detail::gemm_nt_int8(xq, value.int8, value.bias, c.v, bf16 ? After(rounded(c.v, v16)) : nullptr);
        projected = true;
      } else if (train16) {
        query.forward(x, c.q), key.forward(x, c.k), value.forward(x, c.v);
        detail::round_rows_to_bf16_split(c.q, q16);
        detail::round_rows_to_bf16_split(c.k, k16);
        detail::round_rows_to_bf16_split(c.v, v16);
        projected = true;
      } else if (bf16) {
        query.forward(x, c.q), key.forward(x, c.k), value.forward(x, c.v);
        round_heads_major_split(c.q, T, d, q16);
        round_heads_major_split(c.k, T, d, k16);
        round_heads_major_split(c.v, T, d, v16);
        projected = true;
      }
    }
    if (!projected) {
      query.forward(x, c.q);  // (B*T, hidden)
      key.forward(x, c.k);    // (B*T, hidden)
      value.forward(x, c.v);  // (B*T, hidden)
    }
    const Scalar scale = Scalar(1) / std::sqrt(static_cast<Scalar>(d));
    context.resize(B * T, H * d);  // (B*T, hidden)
    auto at = [&](auto& m, Index b, Index h) { return m.data() + b * T * ld + h * d; };
    // The probabilities are kept (B*H*T, T) when the backward or output_attentions needs them;
    // otherwise each head's scores live in a small per-thread buffer that stays in cache.
    if (c.keep_probs) c.probs.resize(B * H * T, T);
    // train16: the products from the rounded operands (head16 below is bf16_heads' form).
    auto head = [&](auto&& scores, Index b, Index h) {
      const Index o = b * T * ld + h * d;
      // attention_scores = q @ kᵀ / sqrt(d); softmax(dim=-1)
      if (!(train16 && gemm16('N', 'T', T, T, d, q16.data() + o, ld, k16.data() + o, ld, scores.data(), T)) &&
          !product('N', 'T', T, T, d, at(c.q, b, h), ld, at(c.k, b, h), ld, scores.data(), T))
        scores.noalias() = c.q.block(b * T, h * d, T, d) * c.k.block(b * T, h * d, T, d).transpose();
      if constexpr (std::is_same_v<Scalar, float>) {
        ops::scaled_softmax_rows_inplace(scores.data(), T, T, T, scale);
      } else {
        scores *= scale;
        ops::softmax_rows_inplace(scores);
      }
      const std::uint16_t* p16 = train16 ? rounded_head(scores.data(), T) : nullptr;
      if (!(p16 && gemm16('N', 'N', T, d, T, p16, T, v16.data() + o, ld, at(context, b, h), ld)) &&
          !product('N', 'N', T, d, T, scores.data(), T, at(c.v, b, h), ld, at(context, b, h), ld))
        context.block(b * T, h * d, T, d).noalias() = scores * c.v.block(b * T, h * d, T, d);
    };
    // bf16_heads: the scores from the rounded q and k, the probabilities rounded for v. (false:
    // oneDNN could not run them; that head in float32.)
    auto head16 = [&](Matrix<Scalar>& scores, Index b, Index h) {
      if constexpr (std::is_same_v<Scalar, float>) {
        const Index o = (b * H + h) * T * d;  // (heads_major)
        if (!gemm16('N', 'T', T, T, d, q16.data() + o, d, k16.data() + o, d, scores.data(), T)) return false;
        std::uint16_t* p16 = head_buffer(T);
        float* y = head_scratch<float>(T * d);
        if (!p16 || !y) return false;
        ops::scaled_softmax_rows_bf16(scores.data(), T, T, T, scale, p16);
        if (!gemm16('N', 'N', T, d, T, p16, T, v16.data() + o, d, y, d)) return false;
        context.block(b * T, h * d, T, d) = Eigen::Map<const Matrix<float>>(y, T, d);
        return true;
      }
      return false;
    };
    for_each_head(B, T, d, [&](Index b, Index h) {
      if (c.keep_probs) {
        head(c.probs.middleRows((b * H + h) * T, T), b, h);
        return;
      }
      thread_local Matrix<Scalar> scores;
      scores.resize(T, T);
      if (bf16 && head16(scores, b, h)) return;
      head(scores, b, h);
    });
  }

  /// x: the forward's input; dcontext: (B*T, hidden) -> dx. Softmax backward per head:
  /// dS = P ∘ (dP - rowsum(dP ∘ P)).
  void backward(const Matrix<Scalar>& x, Index seq_len, const Matrix<Scalar>& dcontext, Cache& c, SelfAttention& g,
                Matrix<Scalar>& dx) const {
    const Index T = seq_len, B = x.rows() / T, H = num_attention_heads, d = query.out_features() / H;
    const Scalar scale = Scalar(1) / std::sqrt(static_cast<Scalar>(d));
    c.dq.resize(B * T, H * d);
    c.dk.resize(B * T, H * d);
    c.dv.resize(B * T, H * d);
    const Index ld = H * d;  // the row stride of q, k, v, their gradients and dcontext
    auto at = [&](auto& m, Index b, Index h) { return m.data() + b * T * ld + h * d; };
    // The forward's heads ran in bf16 (bf16_training_heads): so do these products, on dcontext
    // rounded once and the forward's rounded q, k and v.
    bool bf16 = false;
    thread_local std::vector<std::uint16_t> dc16_;
    auto& dc16 = dc16_;  // (the calling thread's, for the workers)
    if constexpr (std::is_same_v<Scalar, float>) {
      bf16 = c.bf16 && !c.heads_major && c.q16.size() == static_cast<size_t>(c.q.size());
      if (bf16) detail::round_rows_to_bf16_split(dcontext, dc16);
    }
    for_each_head(B, T, d, [&](Index b, Index h) {
      const Index o = b * T * ld + h * d;
      const auto P = c.probs.middleRows((b * H + h) * T, T);
      const auto dc = dcontext.block(b * T, h * d, T, d);
      const std::uint16_t* p16 = bf16 ? rounded_head(P.data(), T) : nullptr;
      if (!(p16 && gemm16('T', 'N', T, d, T, p16, T, dc16.data() + o, ld, at(c.dv, b, h), ld)) &&
          !product('T', 'N', T, d, T, P.data(), T, at(dcontext, b, h), ld, at(c.dv, b, h), ld))
        c.dv.block(b * T, h * d, T, d).noalias() = P.transpose() * dc;
      thread_local Matrix<Scalar> dS;
      dS.resize(T, T);
      if (!(bf16 && gemm16('N', 'T', T, T, d, dc16.data() + o, ld, c.v16.data() + o, ld, dS.data(), T)) &&
          !product('N', 'T', T, T, d, at(dcontext, b, h), ld, at(c.v, b, h), ld, dS.data(), T))
        dS.noalias() = dc * c.v.block(b * T, h * d, T, d).transpose();  // dP
      const ColVector<Scalar> dot = (dS.array() * P.array()).rowwise().sum();
      dS = (P.array() * (dS.array().colwise() - dot.array())).matrix() * scale;
      const std::uint16_t* ds16 = bf16 ? rounded_head(dS.data(), T) : nullptr;  // (p16's buffer, read no more)
      if (!(ds16 && gemm16('N', 'N', T, d, T, ds16, T, c.k16.data() + o, ld, at(c.dq, b, h), ld)) &&
          !product('N', 'N', T, d, T, dS.data(), T, at(c.k, b, h), ld, at(c.dq, b, h), ld))
        c.dq.block(b * T, h * d, T, d).noalias() = dS * c.k.block(b * T, h * d, T, d);
      if (!(ds16 && gemm16('T', 'N', T, d, T, ds16, T, c.q16.data() + o, ld, at(c.dk, b, h), ld)) &&
          !product('T', 'N', T, d, T, dS.data(), T, at(c.q, b, h), ld, at(c.dk, b, h), ld))
        c.dk.block(b * T, h * d, T, d).noalias() = dS.transpose() * c.q.block(b * T, h * d, T, d);
    });
    query.backward(x, c.dq, g.query, &dx);
    key.backward(x, c.dk, g.key, &dx, true);
    value.backward(x, c.dv, g.value, &dx, true);
  }

  template <class Self, class V>
  static void parameters(Self& m, const std::string& prefix, V& visit) {
    m.query.visit_parameters(prefix + "query.", visit);
    m.key.visit_parameters(prefix + "key.", visit);
    m.value.visit_parameters(prefix + "value.", visit);
  }
  VITMAE_VISIT_PARAMETERS
};

/// The attention output projection. Unlike Output, it does not add the residual (Layer does).
template <class Scalar = float>
struct SelfOutput {
  Linear<Scalar> dense;
  SelfOutput() = default;
  explicit SelfOutput(const EncoderConfig& c, Storage s = Storage::zeros)
      : dense(c.hidden_size, c.hidden_size, true, s) {}
  template <class Self, class V>
  static void parameters(Self& m, const std::string& prefix, V& visit) {
    m.dense.visit_parameters(prefix + "dense.", visit);
  }
  VITMAE_VISIT_PARAMETERS
};

/// HF names: attention.{query,key,value}, output.dense.
template <class Scalar = float>
struct Attention {
  SelfAttention<Scalar> attention;
  SelfOutput<Scalar> output;

  struct Cache {
    typename SelfAttention<Scalar>::Cache attention;
    Matrix<Scalar> context, dcontext;  // output.dense's input and its gradient
  };

  Attention() = default;
  explicit Attention(const EncoderConfig& c, Storage s = Storage::zeros) : attention(c, s), output(c, s) {}

  /// x: (B*T, hidden) -> y (B*T, hidden), sequences of seq_len tokens. With `residual` (the
  /// layer's input, same shape), y = that + residual: an int8 output projection adds it to each
  /// row as its product completes the row, in cache (the same bits as adding it after).
  void forward(const Matrix<Scalar>& x, Index seq_len, Matrix<Scalar>& y, Cache& c,
               const Matrix<Scalar>* residual = nullptr) const {
    if (residual)
      detail::require(residual->rows() == x.rows() && residual->cols() == output.dense.out_features(),
                      "Attention: the residual is ", residual->rows(), " x ", residual->cols(), ", expected ", x.rows(),
                      " x ", output.dense.out_features());
    attention.forward(x, seq_len, c.context, c.attention);
    if constexpr (std::is_same_v<Scalar, float>) {
      if (residual && !output.dense.int8.empty()) {
        detail::gemm_nt_int8(c.context, output.dense.int8, output.dense.bias, y,
                             [&](Index i) { y.row(i) += residual->row(i); });
        return;
      }
    }
    output.dense.forward(c.context, y);  // (tokens, hidden)
    if (residual) detail::add_rows(y, *residual);
  }
  void backward(const Matrix<Scalar>& x, Index seq_len, const Matrix<Scalar>& dy, Cache& c, Attention& g,
                Matrix<Scalar>& dx) const {
    output.dense.backward(c.context, dy, g.output.dense, &c.dcontext);
    attention.backward(x, seq_len, c.dcontext, c.attention, g.attention, dx);
  }

  template <class Self, class V>
  static void parameters(Self& m, const std::string& prefix, V& visit) {
    m.attention.visit_parameters(prefix + "attention.", visit);
    m.output.visit_parameters(prefix + "output.", visit);
  }
  VITMAE_VISIT_PARAMETERS
};

}  // namespace vitmae
