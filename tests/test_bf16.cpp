// SPDX-License-Identifier: Apache-2.0
// bfloat16 inference (to_bfloat16): the rounding against values worked by hand and against the
// scalar converter, the packed bf16 product against float64 arithmetic on the rounded values
// (a product of two bf16 values is exact in float32, so only the order of the sums differs), its
// bits on 1 or 2 threads, to_bfloat16 on whole models (inference only, reversible to the rounded
// weights), and the accuracy the issue asks for: cosine 0.9999 to float32 on the bundled photos and
// on vit-mae-base-shaped random weights, the bundled model's masked-patch loss within 0.5%.
// On a CPU without bf16 products (or a build without oneDNN) the cases that need them say so.
#include "test_util.hpp"

#include <limits>
#include <random>

#include <vitmae/train.hpp>

using vitmae::Index;
using vitmae::Matrix;
namespace d = vitmae::detail;

namespace bf16_test {
/// An independent rounding to bfloat16, written out with branches (the library's is branch-free):
/// NaN to a quiet NaN, otherwise to nearest even.
std::uint16_t reference_bf16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40);
  const std::uint32_t low = u & 0xffffu, half = 0x8000u;
  std::uint32_t high = u >> 16;
  if (low > half || (low == half && (high & 1u))) ++high;
  return static_cast<std::uint16_t>(high);
}
Matrix<float> rounded(const Matrix<float>& m) {
  return m.unaryExpr([](float v) { return d::bf16_rounded(v); });
}
double cosine(const vitmae::RowVector<float>& u, const vitmae::RowVector<float>& v) {
  return u.cast<double>().dot(v.cast<double>()) / (u.cast<double>().norm() * v.cast<double>().norm());
}
/// A SelfAttention of `hidden` features in 4 heads: weights uniform in [-w, w], biases in [-0.1, 0.1].
vitmae::SelfAttention<float> random_attention(Index hidden, float w, std::mt19937_64& rng) {
  vitmae::EncoderConfig c;
  c.hidden_size = hidden, c.num_attention_heads = 4;
  vitmae::SelfAttention<float> att(c);
  for (auto* l : {&att.query, &att.key, &att.value})
    l->weight = test::uniform_matrix(hidden, hidden, rng) * w, l->bias = test::uniform_matrix(1, hidden, rng) * 0.1f;
  return att;
}
bool skip() {
  if (vitmae::bfloat16_supported()) return false;
  MESSAGE("skipped: no bfloat16 products here (oneDNN and AVX512_BF16 or AMX)");
  return true;
}
}  // namespace bf16_test

TEST_CASE("bfloat16 rounding: to nearest even, NaN kept, the vector loop as an independent rounding") {
  const float tie_down = 1.f + std::ldexp(1.f, -8), tie_up = 1.f + 3 * std::ldexp(1.f, -8);
  const float above = 1.f + std::ldexp(1.f, -8) + std::ldexp(1.f, -20);
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const float big = std::numeric_limits<float>::max(), tiny = std::numeric_limits<float>::denorm_min();
  const std::vector<float> x{1.f, tie_down, tie_up, above, -tie_up, 0.f, -0.f, inf, -inf, nan, big, tiny, 3.14159265f};
  std::vector<std::uint16_t> y(x.size());
  d::round_to_bf16(x.data(), static_cast<Index>(x.size()), y.data());
  CHECK(y[0] == 0x3f80);                      // 1
  CHECK(y[1] == 0x3f80);                      // 1 + half an ulp: the tie goes to the even 1
  CHECK(y[2] == 0x3f82);                      // 1 + 1.5 ulp: to the even 1 + 2 ulp
  CHECK(y[3] == 0x3f81);                      // just above the tie: up
  CHECK(y[4] == 0xbf82);                      // the sign kept
  CHECK(y[5] == 0x0000);                      //
  CHECK(y[6] == 0x8000);                      // -0
  CHECK(y[7] == 0x7f80);                      // inf
  CHECK(y[8] == 0xff80);                      // -inf
  CHECK(std::isnan(d::bf16_to_float(y[9])));  // NaN stays NaN
  CHECK(y[10] == 0x7f80);                     // above bf16's largest: inf, as torch rounds
  CHECK(y[11] == 0x0000);                     // the smallest subnormal: to 0
  CHECK(y[12] == 0x4049);                     // pi: 3.140625
  // Every pattern of a sweep through the float bits, against the independent rounding.
  std::mt19937 rng(11);
  std::vector<float> many(1 << 16);
  for (auto& v : many) {
    const std::uint32_t u = rng();
    std::memcpy(&v, &u, 4);
  }
  std::vector<std::uint16_t> out(many.size());
  d::round_to_bf16(many.data(), static_cast<Index>(many.size()), out.data());
  size_t same = 0;
  for (size_t i = 0; i < many.size(); ++i) same += out[i] == bf16_test::reference_bf16(many[i]);
  CHECK(same == many.size());
}

TEST_CASE("bfloat16 packed product: float64 on the rounded values, the same bits on 1 or 2 threads") {
  if (bf16_test::skip()) return;
  const test::RestoreBackendAndThreads restore;
  std::mt19937_64 rng(7);
  const Index in = 263, out = 197;  // not multiples of oneDNN's blocks (32 x 64)
  const Matrix<float> w = test::uniform_matrix(out, in, rng);
  const vitmae::RowVector<float> bias = test::uniform_matrix(1, out, rng);
  const d::PackedWeight p = d::PackedWeight::of(Matrix<float>(w), true);
  CHECK(p.bf16);
  CHECK(p.out == out);
  CHECK(p.in == in);
  CHECK((p.unpacked() - bf16_test::rounded(w)).cwiseAbs().maxCoeff() == 0.f);  // the weight, rounded
  // 131 tokens: 2 threads take whole panels of columns; 300: ranges of rows.
  for (const Index T : {Index(1), Index(131), Index(300)}) {
    CAPTURE(T);
    const Matrix<float> x = test::uniform_matrix(T, in, rng);
#ifdef _OPENMP
    omp_set_num_threads(2);
#endif
    Matrix<float> y2, y1, y0;
    d::gemm_nt_packed(x, p, bias, y2);
#ifdef _OPENMP
    omp_set_num_threads(1);
#endif
    d::gemm_nt_packed(x, p, bias, y1);
    d::gemm_nt_packed(x, p, vitmae::RowVector<float>(), y0);
    CHECK((y1 - y2).cwiseAbs().maxCoeff() == 0.f);
    const Matrix<double> want =
        (bf16_test::rounded(x).cast<double>() * bf16_test::rounded(w).cast<double>().transpose()).rowwise() +
        bias.cast<double>();
    const double scale = 1 + want.cwiseAbs().maxCoeff();
    CHECK((y1.cast<double>() - want).cwiseAbs().maxCoeff() <= 2e-6 * scale);
    CHECK(((y0.rowwise() + bias) - y1).cwiseAbs().maxCoeff() <= 2e-6 * scale);
    // Against float32 products of the unrounded values: bf16's 8 bits show.
    const Matrix<double> exact = (x.cast<double>() * w.cast<double>().transpose()).rowwise() + bias.cast<double>();
    CHECK((y1.cast<double>() - exact).cwiseAbs().maxCoeff() > 1e-4 * scale);
  }
}

TEST_CASE("to_bfloat16: every Linear and the patch projection, inference only, same bits on any thread count") {
  const test::RestoreBackendAndThreads restore;
  const auto m = vitmae::ViTMAEForPreTraining<float>::from_pretrained(test::data("hf/tiny"));
  auto f64 = vitmae::ViTMAEForPreTraining<double>::from_pretrained(test::data("hf/tiny"));
  CHECK_THROWS_WITH_AS(vitmae::to_bfloat16(f64), doctest::Contains("for float models"), vitmae::Error);
  if (bf16_test::skip()) {
    auto h = m;
    CHECK_THROWS_AS(vitmae::to_bfloat16(h), vitmae::Error);
    return;
  }
  const int layers = 4 * 6 + 3;
  vitmae::Tensor<float> px({2, 3, 32, 32});
  for (Index i = 0; i < static_cast<Index>(px.data.size()); ++i)
    px.data[static_cast<size_t>(i)] = std::cos(0.11f * float(i));
  std::mt19937_64 rng(3);
  const Matrix<float> noise = vitmae::ops::uniform_noise<float>(2, m.config().num_patches(), rng);
  const auto ref = m.forward(px, noise);

  auto h = m;
  CHECK(vitmae::to_bfloat16(h) == layers);
  CHECK(vitmae::is_bfloat16(h));
  CHECK(vitmae::is_packed(h));
  CHECK_FALSE(vitmae::is_bfloat16(m));
#ifdef _OPENMP
  omp_set_num_threads(2);
#endif
  const auto two = h.forward(px, noise);
#ifdef _OPENMP
  omp_set_num_threads(1);
#endif
  const auto one = h.forward(px, noise);
  for (int b = 0; b < 2; ++b) CHECK((one.logits[b] - two.logits[b]).cwiseAbs().maxCoeff() == 0.f);
  // Near float32, but not float32 (the products took 8-bit mantissas).
  const float diff = (one.logits[1] - ref.logits[1]).cwiseAbs().maxCoeff(), size = ref.logits[1].cwiseAbs().maxCoeff();
  MESSAGE("tiny model: bf16 logits within " << diff / size << " of float32's largest; loss " << one.loss << " vs "
                                            << ref.loss);
  CHECK(diff > 0.f);
  CHECK(diff <= 0.05f * size);
  CHECK(one.loss == doctest::Approx(ref.loss).epsilon(0.02));
  CHECK(one.mask == ref.mask);
  // Inference only, as pack_for_inference leaves a model.
  CHECK_THROWS_WITH_AS(h.save_pretrained(test::tmp_dir("bf16_save")), doctest::Contains("call vitmae::unpack(model)"),
                       vitmae::Error);
  // Again from the bf16 model, or from an int8 one: the same bf16 model.
  auto again = h;
  CHECK(vitmae::to_bfloat16(again) == layers);
  auto q = m;
  vitmae::quantize_int8(q);
  vitmae::pack_for_inference(q);
  CHECK(vitmae::to_bfloat16(q) == layers);
  CHECK_FALSE(vitmae::is_int8(q));
  CHECK((again.forward(px, noise).logits[0] - one.logits[0]).cwiseAbs().maxCoeff() == 0.f);
  // unpack: float32 products on the rounded weights.
  vitmae::unpack(h);
  CHECK_FALSE(vitmae::is_bfloat16(h));
  size_t same = 0, all = 0;
  vitmae::visit_lockstep(
      m,
      [&](const auto& a, const auto& b) {
        ++all;
        const Matrix<float> av = a.values(), bv = b.values();  // (the weights of products: rounded)
        same += ((a.kind == vitmae::ParamKind::weight ? bf16_test::rounded(av) : av) - bv).cwiseAbs().maxCoeff() == 0;
      },
      h);
  CHECK(same == all);
  // oneDNN's products only.
  vitmae::set_product_backend(vitmae::Backend::eigen);
  auto e = m;
  CHECK_THROWS_WITH_AS(vitmae::to_bfloat16(e), doctest::Contains("products are set to Eigen"), vitmae::Error);
}

TEST_CASE(
    "bfloat16 accuracy: cosine 0.9999 to float32 on the bundled photos and vit-mae-base, chelsea loss within 0.5%") {
  if (bf16_test::skip()) return;
  const auto f32 = vitmae::ViTMAEForPreTraining<float>::from_pretrained(VITMAE_BUNDLED_MODEL);
  auto h = f32;
  vitmae::to_bfloat16(h);
  const auto proc = vitmae::ImageProcessor::for_checkpoint(VITMAE_BUNDLED_MODEL, f32.config());
  auto features = [](const auto& model, const vitmae::Tensor<float>& px) {
    std::mt19937_64 r(0);
    vitmae::ForwardOptions o;
    o.mask_ratio = 0.0;
    const Matrix<float> noise = vitmae::ops::uniform_noise<float>(px.shape[0], model.config().num_patches(), r);
    return Matrix<float>(model.vit.forward(px, noise, o).last_hidden_state[0]);
  };
  auto check_features = [&](const std::string& what, const Matrix<float>& a, const Matrix<float>& b) {
    const double cls = bf16_test::cosine(a.row(0), b.row(0));
    const double mean =
        bf16_test::cosine(a.bottomRows(a.rows() - 1).colwise().mean(), b.bottomRows(b.rows() - 1).colwise().mean());
    MESSAGE(what << ": 1 - cosine to float32: CLS " << 1 - cls << ", mean " << 1 - mean);
    CHECK(cls >= 0.9999);
    CHECK(mean >= 0.9999);
  };
  for (const std::string photo : {"chelsea.png", "astronaut.png", "camera.png", "coffee.png", "rocket.jpg"}) {
    CAPTURE(photo);
    const auto px = proc.preprocess<float>({vitmae::io::load_image(test::data("images/" + photo), 3)});
    check_features(photo, features(f32, px), features(h, px));
    if (photo == "chelsea.png") {  // the masked-patch loss, mean of 10 masks
      double l32 = 0, l16 = 0;
      for (int seed = 0; seed < 10; ++seed) {
        std::mt19937_64 r1(seed), r2(seed);
        l32 += f32.forward(px, r1).loss / 10.0, l16 += h.forward(px, r2).loss / 10.0;
      }
      MESSAGE("chelsea masked-patch loss (10 masks): float32 " << l32 << ", bfloat16 " << l16);
      CHECK(std::abs(l16 - l32) <= 0.005 * l32);
    }
  }
  // vit-mae-base's shape (HF's defaults), the library's random init; its encoder only.
  vitmae::ViTMAEModel<float> base{vitmae::Config{}};
  std::mt19937_64 rng(0);
  base.init_weights(rng);
  auto base16 = base;
  vitmae::to_bfloat16(base16);
  vitmae::Tensor<float> px({1, 3, 224, 224});
  vitmae::NormalGenerator<std::mt19937_64> g(rng);
  for (auto& v : px.data) v = static_cast<float>(g());
  auto base_features = [&](const vitmae::ViTMAEModel<float>& model) {
    std::mt19937_64 r(0);
    vitmae::ForwardOptions o;
    o.mask_ratio = 0.0;
    const Matrix<float> noise = vitmae::ops::uniform_noise<float>(1, model.config.num_patches(), r);
    return Matrix<float>(model.forward(px, noise, o).last_hidden_state[0]);
  };
  check_features("vit-mae-base-shaped random weights", base_features(base), base_features(base16));
}

TEST_CASE("attention heads in bf16 for int8 and bf16 models: float64 on the rounded q, k, v and probabilities") {
  const test::RestoreBackendAndThreads restore;
  // (T = 37 and 131: rows of scores that are not whole lanes; 256 x 262: the projections and the
  // roundings of q, k and v split over the threads too)
  struct Shape {
    Index hidden, B, T;
  };
  for (const Shape shape : {Shape{64, 2, 37}, Shape{256, 2, 131}})
    for (const std::string form : {"int8", "bfloat16", "float32"}) {
      const Index hidden = shape.hidden, B = shape.B, T = shape.T, H = 4, dh = hidden / H;
      CAPTURE(hidden);
      CAPTURE(form);
      std::mt19937_64 rng(21);
      const auto att = bf16_test::random_attention(hidden, 2.4f / std::sqrt(float(hidden)), rng);
      const Matrix<float> x = test::uniform_matrix(B * T, hidden, rng);
      auto a = att;
      if (form == "int8") vitmae::quantize_int8(a), vitmae::pack_for_inference(a);
      if (form == "bfloat16") {
        if (bf16_test::skip()) continue;
        vitmae::to_bfloat16(a);
      }
      vitmae::SelfAttention<float>::Cache kept, alone;
      alone.keep_probs = false;
      CHECK_FALSE(a.bf16_heads(kept));  // (the probabilities kept: float32, as the backward needs)
      CHECK(a.bf16_heads(alone) == (form != "float32" && vitmae::bfloat16_supported()));
      Matrix<float> with_probs, ctx;
      a.forward(x, T, with_probs, kept);
#ifdef _OPENMP
      omp_set_num_threads(2);
#endif
      a.forward(x, T, ctx, alone);
      if (!a.bf16_heads(alone)) {  // float32 either way: the same bits
        CHECK((ctx - with_probs).cwiseAbs().maxCoeff() == 0.f);
        continue;
      }
      CHECK(alone.heads_major);  // (each head dense: the layout the products below read)
      CHECK_FALSE(kept.heads_major);
      // float64 on q, k, v rounded to bf16 (the products of the projections, kept in the cache), the
      // probabilities rounded as float, summed in float64.
      auto r16 = [](double v) { return double(d::bf16_to_float(bf16_test::reference_bf16(float(v)))); };
      Matrix<double> want(B * T, hidden);
      // A probability within float32's error of a rounding boundary may round the other way: the
      // outputs of its row are allowed that step (times |v|) more.
      std::vector<double> slack(static_cast<size_t>(B * T * H), 0.0);
      for (Index b = 0; b < B; ++b)
        for (Index h = 0; h < H; ++h) {
          Matrix<double> s(T, T);
          for (Index i = 0; i < T; ++i)
            for (Index j = 0; j < T; ++j) {
              double acc = 0;
              for (Index k = 0; k < dh; ++k)
                acc += r16(alone.q(b * T + i, h * dh + k)) * r16(alone.k(b * T + j, h * dh + k));
              s(i, j) = acc / std::sqrt(double(dh));
            }
          for (Index i = 0; i < T; ++i) {
            const double m = s.row(i).maxCoeff();
            s.row(i) = (s.row(i).array() - m).exp().matrix();
            s.row(i) /= s.row(i).sum();
            for (Index j = 0; j < T; ++j) {
              const double p = s(i, j);
              s(i, j) = r16(p);
              if (r16(p * (1 + 1e-6)) != r16(p * (1 - 1e-6)))
                slack[static_cast<size_t>((b * T + i) * H + h)] += p / 128;
            }
          }
          for (Index i = 0; i < T; ++i)
            for (Index k = 0; k < dh; ++k) {
              double acc = 0;
              for (Index j = 0; j < T; ++j) acc += s(i, j) * r16(alone.v(b * T + j, h * dh + k));
              want(b * T + i, h * dh + k) = acc;
            }
        }
      const double v_max = alone.v.cwiseAbs().maxCoeff();
      double err = 0;  // float32 sums of exact products: about 1e-7 of |v|
      size_t beyond = 0;
      for (Index r = 0; r < B * T; ++r)
        for (Index k = 0; k < hidden; ++k) {
          const double e = std::abs(double(ctx(r, k)) - want(r, k));
          err = std::max(err, e);
          beyond += e > (1e-5 + slack[static_cast<size_t>(r * H + k / dh)]) * v_max;
        }
      MESSAGE(form << ": bf16 heads within " << err / v_max << " |v| of float64 on the rounded operands");
      CHECK(beyond == 0);
      CHECK((ctx - with_probs).cwiseAbs().maxCoeff() > 0.f);  // not the float32 heads
      CHECK((ctx - with_probs).cwiseAbs().maxCoeff() <= 0.02 * with_probs.cwiseAbs().maxCoeff());
#ifdef _OPENMP
      omp_set_num_threads(1);
#endif
      Matrix<float> one;
      a.forward(x, T, one, alone);
      CHECK((one - ctx).cwiseAbs().maxCoeff() == 0.f);  // the same bits on 1 or 2 threads
    }
}

TEST_CASE("bf16 training heads: the forward and backward products against float64 on the rounded operands") {
  if (bf16_test::skip()) return;
  const test::RestoreBackendAndThreads restore;
  struct Shape {
    Index hidden, B, T;
  };
  // (T = 37 and 131: rows that are not whole lanes; 256 wide: q, k, v and dcontext rounded with
  // their rows split over the threads)
  for (const Shape shape : {Shape{64, 2, 37}, Shape{256, 2, 131}}) {
    const Index hidden = shape.hidden, B = shape.B, T = shape.T, H = 4, dh = hidden / H;
    CAPTURE(hidden);
    std::mt19937_64 rng(23);
    const auto att = bf16_test::random_attention(hidden, 2.4f / std::sqrt(float(hidden)), rng);
    const Matrix<float> x = test::uniform_matrix(B * T, hidden, rng), dctx = test::uniform_matrix(B * T, hidden, rng);
    struct Run {
      vitmae::SelfAttention<float>::Cache c;
      Matrix<float> ctx, dx;
      vitmae::SelfAttention<float> g;
    };
    auto run = [&](bool bf16, int threads) {
      Run r;
      r.g = att;
      for (auto* l : {&r.g.query, &r.g.key, &r.g.value}) l->weight.setZero(), l->bias.setZero();
#ifdef _OPENMP
      omp_set_num_threads(threads);
#endif
      (void)threads;
      const vitmae::BFloat16Products scope(bf16);
      CHECK(att.bf16_training_heads(r.c) == bf16);
      att.forward(x, T, r.ctx, r.c);
      CHECK(r.c.bf16 == bf16);
      att.backward(x, T, dctx, r.c, r.g, r.dx);
      return r;
    };
    const Run got = run(true, 2), one = run(true, 1), f32 = run(false, 2);
    // float64 on the rounded operands: q, k, v as the projections gave them (kept in the cache),
    // rounded; the probabilities and dS computed in float64 and rounded. A value within float32's
    // error of a rounding boundary may round the other way: the outputs that sum it are allowed
    // that step (times the largest operand it multiplies) more.
    auto r16 = [](double v) { return double(d::bf16_to_float(bf16_test::reference_bf16(float(v)))); };
    auto flips = [&](double v, double err) { return r16(v + err) != r16(v - err); };
    const auto& q = got.c.q;
    const auto& k = got.c.k;
    const auto& v = got.c.v;
    Matrix<double> ctx(B * T, hidden), dq(B * T, hidden), dk(B * T, hidden), dv(B * T, hidden);
    Matrix<double> ctx_sum(B * T, hidden), dq_sum(B * T, hidden), dk_sum(B * T, hidden), dv_sum(B * T, hidden);
    ctx_sum.setZero(), dq_sum.setZero(), dk_sum.setZero(), dv_sum.setZero();  // sums of |terms|
    Matrix<double> no_slack = Matrix<double>::Zero(B * T, hidden), dq_slack = no_slack, dk_slack = no_slack;
    double probs_err = 0;
    const double scale = 1 / std::sqrt(double(dh));
    for (Index b = 0; b < B; ++b)
      for (Index h = 0; h < H; ++h) {
        auto at = [&](const Matrix<float>& m, Index t, Index j) { return double(m(b * T + t, h * dh + j)); };
        Matrix<double> P(T, T), dP(T, T), dS(T, T);
        const Matrix<double> Pf = got.c.probs.middleRows((b * H + h) * T, T).cast<double>();
        for (Index i = 0; i < T; ++i)
          for (Index j = 0; j < T; ++j) {
            double s = 0;
            for (Index e = 0; e < dh; ++e) s += r16(at(q, i, e)) * r16(at(k, j, e));
            P(i, j) = s * scale;
          }
        for (Index i = 0; i < T; ++i) {
          P.row(i) = (P.row(i).array() - P.row(i).maxCoeff()).exp().matrix();
          P.row(i) /= P.row(i).sum();
          for (Index j = 0; j < T; ++j) probs_err = std::max(probs_err, std::abs(P(i, j) - Pf(i, j)));
        }
        // From here on the probabilities are the float32 ones kept (checked above), as the products
        // and the backward read them. context = P16 v16, dv = P16ᵀ dc16, dP = dc16 v16ᵀ
        for (Index i = 0; i < T; ++i)
          for (Index e = 0; e < dh; ++e) {
            double s = 0, s_abs = 0, t = 0, t_abs = 0;
            for (Index j = 0; j < T; ++j) {
              s += r16(Pf(i, j)) * r16(at(v, j, e)), s_abs += Pf(i, j) * std::abs(at(v, j, e));
              t += r16(Pf(j, i)) * r16(at(dctx, j, e)), t_abs += Pf(j, i) * std::abs(at(dctx, j, e));
            }
            ctx(b * T + i, h * dh + e) = s, ctx_sum(b * T + i, h * dh + e) = s_abs;
            dv(b * T + i, h * dh + e) = t, dv_sum(b * T + i, h * dh + e) = t_abs;
          }
        Matrix<double> dP_abs(T, T);  // the sums of |terms| of dP
        for (Index i = 0; i < T; ++i)
          for (Index j = 0; j < T; ++j) {
            double s = 0, s_abs = 0;
            for (Index e = 0; e < dh; ++e) {
              const double t = r16(at(dctx, i, e)) * r16(at(v, j, e));
              s += t, s_abs += std::abs(t);
            }
            dP(i, j) = s, dP_abs(i, j) = s_abs;
          }
        // dS = P ∘ (dP - rowsum(dP ∘ P)) / sqrt(d), in float64. float32's dP is within about 1e-7
        // of its sum of |terms| (64 terms at most), its rowsum within that of P's dP_abs: err(i, j) is
        // ten times the resulting bound on dS's float32 error.
        Matrix<double> err(T, T);
        for (Index i = 0; i < T; ++i) {
          const double dot = (dP.row(i).array() * Pf.row(i).array()).sum();
          const double dot_abs = (dP_abs.row(i).array() * Pf.row(i).array()).sum() + std::abs(dot);
          for (Index j = 0; j < T; ++j) {
            dS(i, j) = Pf(i, j) * (dP(i, j) - dot) * scale;
            err(i, j) = 1e-5 * Pf(i, j) * (dP_abs(i, j) + dot_abs + std::abs(dP(i, j) - dot)) * scale;
          }
        }
        // dq = dS16 k16, dk = dS16ᵀ q16
        for (Index i = 0; i < T; ++i)
          for (Index e = 0; e < dh; ++e) {
            double s = 0, s_abs = 0, t = 0, t_abs = 0;
            for (Index j = 0; j < T; ++j) {
              const double a = dS(i, j), step = flips(a, err(i, j)) ? std::abs(a) / 128 + err(i, j) : 0;
              s += r16(a) * r16(at(k, j, e)), s_abs += std::abs(a * at(k, j, e));
              dq_slack(b * T + i, h * dh + e) += step * std::abs(at(k, j, e));
              const double a_t = dS(j, i), step_t = flips(a_t, err(j, i)) ? std::abs(a_t) / 128 + err(j, i) : 0;
              t += r16(a_t) * r16(at(q, j, e)), t_abs += std::abs(a_t * at(q, j, e));
              dk_slack(b * T + i, h * dh + e) += step_t * std::abs(at(q, j, e));
            }
            dq(b * T + i, h * dh + e) = s, dq_sum(b * T + i, h * dh + e) = s_abs;
            dk(b * T + i, h * dh + e) = t, dk_sum(b * T + i, h * dh + e) = t_abs;
          }
      }
    CHECK(probs_err <= 1e-6);  // the probabilities kept are float32's softmax of the bf16 scores
    // float32 sums of exact products: within 1e-5 of the sum of the terms' magnitudes (at most
    // 131 terms: 131 x 6e-8 in the worst order), plus the slack of values on a boundary. The slack
    // is generous (a value is taken as on a boundary when within ten times float32's bound of its
    // error), so the outputs that need it must also be few: products of the unrounded values would
    // need it nearly everywhere.
    auto check = [&](const char* name, const Matrix<float>& m, const Matrix<double>& want, const Matrix<double>& sum,
                     const Matrix<double>& slack) {
      double worst = 0;
      size_t beyond = 0, needed = 0;
      for (Index r = 0; r < want.rows(); ++r)
        for (Index e = 0; e < want.cols(); ++e) {
          const double diff = std::abs(double(m(r, e)) - want(r, e));
          worst = std::max(worst, diff / std::max(sum(r, e), 1e-30));
          needed += diff > 1e-5 * sum(r, e);
          beyond += diff > 1e-5 * sum(r, e) + slack(r, e) + 1e-30;
        }
      MESSAGE(std::string(name) << ": " << needed << " of " << want.size()
                                << " outputs beyond 1e-5 of the sum of |terms| of float64 on the rounded operands (a"
                                << " value on a rounding boundary; worst " << worst << ")");
      CHECK(beyond == 0);
      CHECK(needed * 50 <= static_cast<size_t>(want.size()));
    };
    check("context", got.ctx, ctx, ctx_sum, no_slack);
    check("dv", got.c.dv, dv, dv_sum, no_slack);
    check("dq", got.c.dq, dq, dq_sum, dq_slack);
    check("dk", got.c.dk, dk, dk_sum, dk_slack);
    // Not the float32 heads, but near them; the same bits on 1 or 2 threads.
    struct Pair {
      const char* name;
      const Matrix<float>*a, *b;
    };
    for (const Pair p :
         {Pair{"context", &got.ctx, &f32.ctx}, Pair{"dq", &got.c.dq, &f32.c.dq}, Pair{"dk", &got.c.dk, &f32.c.dk},
          Pair{"dv", &got.c.dv, &f32.c.dv}, Pair{"dx", &got.dx, &f32.dx}}) {
      CAPTURE(p.name);
      const float diff = (*p.a - *p.b).cwiseAbs().maxCoeff();
      CHECK(diff > 0.f);
      CHECK(diff <= 0.03f * p.b->cwiseAbs().maxCoeff());
    }
    CHECK((got.ctx - one.ctx).cwiseAbs().maxCoeff() == 0.f);
    CHECK((got.dx - one.dx).cwiseAbs().maxCoeff() == 0.f);
    const vitmae::Linear<float>*g2[] = {&got.g.query, &got.g.key, &got.g.value},
          *g1[] = {&one.g.query, &one.g.key, &one.g.value};
    for (int i = 0; i < 3; ++i) {
      CHECK((g2[i]->weight - g1[i]->weight).cwiseAbs().maxCoeff() == 0.f);
      CHECK((g2[i]->bias - g1[i]->bias).cwiseAbs().maxCoeff() == 0.f);
    }
  }
  // Models for inference keep their heads when the probabilities are kept (output_attentions)
  // under the scope: the same bits with or without it. Packed projections, and int8 ones
  // (quantize_int8 alone keeps the float weights, for saving).
  std::mt19937_64 rng(29);
  const auto att = bf16_test::random_attention(64, 0.3f, rng);
  const Matrix<float> x = test::uniform_matrix(2 * 37, 64, rng);
  auto packed = att, int8 = att;
  vitmae::pack_for_inference(packed);
  vitmae::quantize_int8(int8);
  for (const auto* m : {&packed, &int8}) {
    CAPTURE(m == &int8);
    vitmae::SelfAttention<float>::Cache without, with;
    Matrix<float> y0, y1;
    m->forward(x, 37, y0, without);
    {
      const vitmae::BFloat16Products scope;
      CHECK_FALSE(m->bf16_training_heads(with));
      m->forward(x, 37, y1, with);
    }
    CHECK_FALSE(with.bf16);
    CHECK((y1 - y0).cwiseAbs().maxCoeff() == 0.f);
    CHECK((with.probs - without.probs).cwiseAbs().maxCoeff() == 0.f);
  }
}

TEST_CASE("load_for_inference in bfloat16: float, BF16 and int8 checkpoints packed as loaded, as to_bfloat16") {
  if (bf16_test::skip()) return;
  const auto m = vitmae::ViTMAEForPreTraining<float>::from_pretrained(test::data("hf/tiny"));
  vitmae::Tensor<float> px({1, 3, 32, 32});
  for (Index i = 0; i < static_cast<Index>(px.data.size()); ++i)
    px.data[static_cast<size_t>(i)] = std::sin(0.07f * float(i));
  std::mt19937_64 rng(5);
  const Matrix<float> noise = vitmae::ops::uniform_noise<float>(1, m.config().num_patches(), rng);
  auto h = m;
  vitmae::to_bfloat16(h);
  const auto want = h.forward(px, noise);
  const std::string dir = test::tmp_dir("bf16_load");
  for (const auto dtype : {vitmae::io::DType::F32, vitmae::io::DType::BF16, vitmae::io::DType::I8}) {
    CAPTURE(std::string(vitmae::io::dtype_name(dtype)));
    const std::string ckpt = dir + "/" + vitmae::io::dtype_name(dtype);
    m.save_pretrained(ckpt, dtype);
    const auto loaded =
        vitmae::load_for_inference<vitmae::ViTMAEForPreTraining<float>>(ckpt, "", vitmae::Precision::bfloat16);
    CHECK(vitmae::is_bfloat16(loaded));
    CHECK(loaded.vit.encoder.layer[0].intermediate.dense.weight.size() == 0);  // released, never written
    const auto got = loaded.forward(px, noise);
    // The same model as the checkpoint loaded in float and made bfloat16 (a BF16 file rounds its
    // other tensors too; an int8 one's weights are dequantised, then rounded), bit for bit.
    auto full = vitmae::ViTMAEForPreTraining<float>::from_pretrained(ckpt);
    vitmae::to_bfloat16(full);
    CHECK((got.logits[0] - full.forward(px, noise).logits[0]).cwiseAbs().maxCoeff() == 0.f);
    const float gap = (got.logits[0] - want.logits[0]).cwiseAbs().maxCoeff();
    if (dtype == vitmae::io::DType::F32) CHECK(gap == 0.f);
    else CHECK(gap <= 0.05f * want.logits[0].cwiseAbs().maxCoeff());
  }
}

TEST_CASE("bf16 training products: the GEMMs against float64 on the rounded operands, every transposition") {
  if (bf16_test::skip()) return;
  const test::RestoreBackendAndThreads restore;
  std::mt19937_64 rng(13);
  // 16.8 MFLOP a product: 2 threads split it into column blocks, each a strided product.
  const Matrix<float> x = test::uniform_matrix(128, 256, rng), w = test::uniform_matrix(272, 256, rng),
                      dy = test::uniform_matrix(128, 272, rng);
  const vitmae::RowVector<float> bias = test::uniform_matrix(1, 272, rng);
  auto r64 = [](const Matrix<float>& m) { return Matrix<double>(bf16_test::rounded(m).cast<double>()); };
  auto check = [](const std::string& what, const Matrix<float>& got, const Matrix<double>& want) {
    const double gap = (got.cast<double>() - want).cwiseAbs().maxCoeff(), scale = 1 + want.cwiseAbs().maxCoeff();
    INFO(what << ": largest difference " << gap);
    CHECK(gap <= 2e-6 * scale);
  };
  Matrix<float> y32;
  d::gemm_nt(x, w, bias, y32);  // (float32, outside the scope)
  std::vector<Matrix<float>> by_threads;
  for (const int threads : {1, 2}) {
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    const std::string t = std::to_string(threads) + " threads: ";
    Matrix<float> y, dx, dw = Matrix<float>::Ones(272, 256), dx_acc = Matrix<float>::Ones(128, 256);
    const vitmae::BFloat16Products on;
    d::gemm_nt(x, w, bias, y);  // the forward: x wᵀ + b
    check(t + "x wT + b", y, (r64(x) * r64(w).transpose()).rowwise() + bias.cast<double>());
    d::gemm_nn(dy, w, dx, false);  // dx = dy w
    check(t + "dy w", dx, r64(dy) * r64(w));
    d::gemm_nn(dy, w, dx_acc, true);  // dx += dy w
    check(t + "1 + dy w", dx_acc, (r64(dy) * r64(w)).array() + 1.0);
    d::gemm_tn_add(dy, x, dw);  // dw += dyᵀ x
    check(t + "1 + dyT x", dw, (r64(dy).transpose() * r64(x)).array() + 1.0);
    CHECK((y - y32).cwiseAbs().maxCoeff() > 0.f);  // not float32
    by_threads.push_back(y);
  }
  CHECK((by_threads[0] - by_threads[1]).cwiseAbs().maxCoeff() == 0.f);  // the same bits on 1 or 2 threads
  Matrix<float> after;
  d::gemm_nt(x, w, bias, after);
  CHECK((after - y32).cwiseAbs().maxCoeff() == 0.f);  // the scope ended: float32 again
}

TEST_CASE("bf16 training: each weight rounded once a step (RoundedWeightsOnce), the bits of a fresh rounding") {
  if (bf16_test::skip()) return;
  const test::RestoreBackendAndThreads restore;
  std::mt19937_64 rng(19);
  const Matrix<float> x = test::uniform_matrix(128, 256, rng), dy = test::uniform_matrix(128, 272, rng);
  Matrix<float> w = test::uniform_matrix(272, 256, rng);
  const vitmae::RowVector<float> bias = test::uniform_matrix(1, 272, rng);
  const vitmae::BFloat16Products on;
  auto fresh = [&](Matrix<float>& y, Matrix<float>& dx) {  // no cache: each product rounds w itself
    d::gemm_nt(x, w, bias, y, true);
    d::gemm_nn(dy, w, dx, false, true);
  };
  const d::RoundedWeightsUser user(true);
  for (const int threads : {1, 2}) {
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    CAPTURE(threads);
    for (int step = 0; step < 2; ++step) {  // the second step on changed weights: rounded again
      CAPTURE(step);
      Matrix<float> y0, dx0, y, dx, y_again;
      fresh(y0, dx0);
      {
        const d::RoundedWeightsOnce once(true);
        d::gemm_nt(x, w, bias, y, true);     // rounds w
        d::gemm_nn(dy, w, dx, false, true);  // (1 thread: the same entry as the forward's)
        d::gemm_nt(x, w, bias, y_again, true);
        CHECK((y - y0).cwiseAbs().maxCoeff() == 0.f);
        CHECK((dx - dx0).cwiseAbs().maxCoeff() == 0.f);
        CHECK((y_again - y0).cwiseAbs().maxCoeff() == 0.f);
        // Within the step the weights must not change: a change is not seen (what the trainer
        // guarantees, shown here).
        const Matrix<float> saved = w;
        w *= 2.f;
        d::gemm_nt(x, w, bias, y_again, true);
        CHECK((y_again - y0).cwiseAbs().maxCoeff() == 0.f);
        w = saved;
      }
      w.array() += 0.25f;  // the optimiser's update, between steps
    }
  }
}

TEST_CASE("--bf16 training: loss and gradients near float32's, the same bits again, options checked") {
  const auto m = vitmae::ViTMAEForPreTraining<float>::from_pretrained(test::data("hf/tiny"));
  vitmae::Tensor<float> px({4, 3, 32, 32});
  for (Index i = 0; i < static_cast<Index>(px.data.size()); ++i)
    px.data[static_cast<size_t>(i)] = std::cos(0.013f * float(i * i % 977));
  std::mt19937_64 rng(17);
  const Matrix<float> noise = vitmae::ops::uniform_noise<float>(4, m.config().num_patches(), rng);
  namespace train = vitmae::train;
  train::TrainOptions o;
  o.bf16 = true;
  if (!vitmae::bfloat16_supported()) {
    CHECK_THROWS_WITH_AS(train::Trainer<float>(m, o), doctest::Contains("bf16"), vitmae::Error);
    MESSAGE("no bfloat16 products here: only the refusal is checked");
    return;
  }
  auto g32 = train::zero_grads_like(m), g16 = train::zero_grads_like(m), again = train::zero_grads_like(m);
  const float l32 = train::forward_backward(m, px, noise, g32);
  float l16 = 0, l16b = 0;
  {
    const vitmae::BFloat16Products on;
    l16 = train::forward_backward(m, px, noise, g16);
    l16b = train::forward_backward(m, px, noise, again);
  }
  MESSAGE("hf/tiny, batch 4: loss float32 " << l32 << ", bf16 " << l16);
  CHECK(l16 != l32);
  CHECK(std::abs(l16 - l32) <= 0.01 * l32);
  CHECK(l16b == l16);
  double dot = 0, n32 = 0, n16 = 0;
  size_t same = 0, all = 0;
  vitmae::visit_lockstep(
      g32,
      [&](const vitmae::Parameter<float>& a, const vitmae::Parameter<float>& b, const vitmae::Parameter<float>& c) {
        const auto u = a.values().cast<double>(), v = b.values().cast<double>();
        dot += u.dot(v), n32 += u.squaredNorm(), n16 += v.squaredNorm();
        ++all, same += (b.values() - c.values()).cwiseAbs().maxCoeff() == 0.f;
      },
      g16, again);
  const double cosine = dot / std::sqrt(n32 * n16);
  MESSAGE("the whole gradient: 1 - cosine to float32's " << 1 - cosine);
  CHECK(cosine >= 0.999);
  CHECK(cosine < 1.0);
  CHECK(same == all);  // run again: the same bits
  // The trainer holds the scope during its steps, records the option, and refuses double.
  train::TrainOptions t = o;
  t.batch = 4, t.steps = 2, t.lr = 1e-3;
  train::Trainer<float> trainer(m, t);
  t.bf16 = false;
  train::Trainer<float> trainer32(m, t);
  const double first = trainer.train_step([&] { return px; }).loss,
               first32 = trainer32.train_step([&] { return px; }).loss;
  CHECK(first != first32);
  CHECK(std::abs(first - first32) <= 0.01 * first32);
  CHECK(trainer.state_json()["bf16"] == true);
  CHECK(trainer32.state_json()["bf16"] == false);
  t.bf16 = true;
  const auto m64 = vitmae::ViTMAEForPreTraining<double>::from_pretrained(test::data("hf/tiny"));
  CHECK_THROWS_WITH_AS(train::Trainer<double>(m64, t), doctest::Contains("bf16 products are for float models"),
                       vitmae::Error);
}
