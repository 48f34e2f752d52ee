// SPDX-License-Identifier: Apache-2.0
// ops/: activations, softmax, sin-cos tables, random masking, patchify, bicubic interpolation,
// against values computed by hand or with Python's math module.
#include "test_util.hpp"

#include <cmath>
#include <random>
#include <type_traits>

using vitmae::Index;
using vitmae::Matrix;
namespace ops = vitmae::ops;

TEST_CASE_TEMPLATE("activations match HF's definitions", Scalar, float, double) {
  const double tol = std::is_same_v<Scalar, float> ? 1e-6 : 1e-14;
  using A = ops::Activation;
  // Reference values from Python's math module (erf, tanh, exp, log1p).
  CHECK(ops::activate<Scalar>(A::gelu, Scalar(1)) == doctest::Approx(0.8413447460685429).epsilon(tol));
  CHECK(ops::activate<Scalar>(A::gelu, Scalar(-2)) == doctest::Approx(-0.04550026389635842).epsilon(tol));
  CHECK(ops::activate<Scalar>(A::gelu_tanh, Scalar(1)) == doctest::Approx(0.8411919906082768).epsilon(tol));
  CHECK(ops::activate<Scalar>(A::gelu_tanh, Scalar(-2)) == doctest::Approx(-0.04540230591222494).epsilon(tol));
  CHECK(ops::activate<Scalar>(A::gelu_fast, Scalar(1)) == doctest::Approx(0.8411919906082768).epsilon(tol));
  CHECK(ops::activate<Scalar>(A::quick_gelu, Scalar(1)) == doctest::Approx(0.8457957659328212).epsilon(tol));
  CHECK(ops::activate<Scalar>(A::silu, Scalar(1)) == doctest::Approx(0.7310585786300049).epsilon(tol));
  CHECK(ops::activate<Scalar>(A::mish, Scalar(1)) == doctest::Approx(0.8650983882673103).epsilon(tol));
  CHECK(ops::activate<Scalar>(A::sigmoid, Scalar(-2)) == doctest::Approx(0.11920292202211755).epsilon(tol));
  CHECK(ops::activate<Scalar>(A::tanh, Scalar(-2)) == doctest::Approx(-0.9640275800758169).epsilon(tol));
  CHECK(ops::activate<Scalar>(A::relu, Scalar(-2)) == Scalar(0));
  CHECK(ops::activate<Scalar>(A::relu, Scalar(3)) == Scalar(3));
  CHECK(ops::activate<Scalar>(A::linear, Scalar(-2)) == Scalar(-2));
}

TEST_CASE("activation names: HF's aliases, and a clear error for others") {
  CHECK(ops::activation_from_name("gelu") == ops::Activation::gelu);
  CHECK(ops::activation_from_name("gelu_new") == ops::Activation::gelu_tanh);
  CHECK(ops::activation_from_name("gelu_pytorch_tanh") == ops::Activation::gelu_tanh);
  CHECK(ops::activation_from_name("swish") == ops::Activation::silu);
  CHECK_THROWS_WITH_AS(ops::activation_from_name("gelu_fancy"), doctest::Contains("unknown activation 'gelu_fancy'"),
                       vitmae::Error);
}

TEST_CASE_TEMPLATE("softmax rows sum to one and subtract the max", Scalar, float, double) {
  Matrix<Scalar> x(2, 3);
  x << 1, 2, 3, 1000, 1000, 1000;
  ops::softmax_rows_inplace(x);
  const double tol = std::is_same_v<Scalar, double> ? 1e-15 : 1e-6;
  for (Index r = 0; r < x.rows(); ++r) CHECK(std::abs(static_cast<double>(x.row(r).sum()) - 1.0) < tol);
  const double e = std::exp(1.0);
  CHECK(x(0, 0) == doctest::Approx(1.0 / (1 + e + e * e)));
  CHECK(x(0, 2) == doctest::Approx(e * e / (1 + e + e * e)));
  CHECK(x(1, 1) == doctest::Approx(1.0 / 3));  // no overflow
}

TEST_CASE("scaled softmax rows: float64 at every tail width and sign of the scale, the bf16 form the rounded bits") {
  std::mt19937_64 rng(4);
  // (a scale of 0 or below: the tail's padding lanes must stay -inf, not become NaN or +inf)
  for (const float scale : {0.125f, 0.f, -0.5f})
    for (Index cols : {1, 15, 16, 17, 37, 197}) {
      CAPTURE(cols);
      CAPTURE(scale);
      const Index rows = 3, ld = cols + 5;  // (rows ld apart; the gap untouched)
      Matrix<float> x = test::uniform_matrix(rows, ld, rng) * 40.f;
      Matrix<float> in = x, out16 = x;
      ops::scaled_softmax_rows_inplace(x.data(), rows, cols, ld, scale);
      std::vector<std::uint16_t> p16(static_cast<size_t>(rows * cols));
      ops::scaled_softmax_rows_bf16(out16.data(), rows, cols, ld, scale, p16.data());
      for (Index r = 0; r < rows; ++r) {
        std::vector<double> e(static_cast<size_t>(cols));
        double top = -INFINITY, sum = 0;
        for (Index k = 0; k < cols; ++k) top = std::max(top, double(in(r, k) * scale));
        for (Index k = 0; k < cols; ++k) sum += e[static_cast<size_t>(k)] = std::exp(double(in(r, k) * scale) - top);
        for (Index k = 0; k < cols; ++k) {
          CHECK(std::abs(x(r, k) - e[static_cast<size_t>(k)] / sum) <= 1e-6);
          CHECK(p16[static_cast<size_t>(r * cols + k)] == vitmae::detail::float_to_bf16(x(r, k)));
        }
        for (Index k = cols; k < ld; ++k) CHECK(x(r, k) == in(r, k));
      }
    }
}

TEST_CASE("2-D sin-cos table: HF's layout (first half encodes the column, second the row)") {
  const Matrix<double> t = ops::get_2d_sincos_pos_embed<double>(8, 2, 3, true);
  REQUIRE(t.rows() == 1 + 6);
  CHECK(t.row(0).isZero());
  // Row for grid row i = 1, column j = 2: 1 + 1*3 + 2 = 6. Frequencies for D/2 = 4: 1, 1/100.
  auto f = [](double v) { return static_cast<double>(static_cast<float>(v)); };
  CHECK(t(6, 0) == f(std::sin(2.0)));
  CHECK(t(6, 1) == f(std::sin(0.02)));
  CHECK(t(6, 2) == f(std::cos(2.0)));
  CHECK(t(6, 3) == f(std::cos(0.02)));
  CHECK(t(6, 4) == f(std::sin(1.0)));
  CHECK(t(6, 5) == f(std::sin(0.01)));
  CHECK(t(6, 6) == f(std::cos(1.0)));
  CHECK(t(6, 7) == f(std::cos(0.01)));
  CHECK_THROWS_WITH_AS(ops::get_2d_sincos_pos_embed<double>(6, 2, 2, true), doctest::Contains("multiple of 4"),
                       vitmae::Error);
}

TEST_CASE("random masking: argsort of the noise, ids_restore, mask, len_keep truncated") {
  Eigen::RowVectorXd noise(4);
  noise << 0.5, 0.1, 0.9, 0.3;
  const ops::Masking m = ops::random_masking(noise, 0.5);
  CHECK(m.ids_keep == std::vector<Index>{1, 3});
  CHECK(m.ids_restore == std::vector<Index>{2, 0, 3, 1});
  CHECK(m.mask == std::vector<Index>{1, 0, 1, 0});
  // int(L * (1 - mask_ratio)) in double precision, truncated.
  CHECK(ops::num_kept(64, 0.6) == 25);
  CHECK(ops::num_kept(196, 0.75) == 49);
  CHECK(ops::num_kept(64, 0.0) == 64);
  CHECK(ops::num_kept(10, 0.7) == 3);  // 10 * 0.30000000000000004 = 3.0000000000000004
  // Ties keep index order (stable).
  Eigen::RowVectorXd ties = Eigen::RowVectorXd::Constant(3, 0.5);
  CHECK(ops::random_masking(ties, 0.34).ids_keep == std::vector<Index>{0});
}

TEST_CASE("seeded noise is reproducible and uniform in 0 to 1") {
  std::mt19937_64 a(7), b(7);
  const Matrix<double> x = ops::uniform_noise<double>(3, 50, a);
  const Matrix<double> y = ops::uniform_noise<double>(3, 50, b);
  CHECK(x == y);
  CHECK(x.minCoeff() >= 0.0);
  CHECK(x.maxCoeff() < 1.0);
  CHECK(std::abs(x.mean() - 0.5) < 0.1);
}

TEST_CASE_TEMPLATE("patchify orders (h, w, p, q, c), unpatchify inverts it, non-square and C=2", Scalar, float,
                   double) {
  const Index C = 2, H = 4, W = 6, p = 2;
  Matrix<Scalar> img(C, H * W);
  for (Index c = 0; c < C; ++c)
    for (Index i = 0; i < H * W; ++i) img(c, i) = static_cast<Scalar>(100 * c + i);
  const Matrix<Scalar> patches = ops::patchify(img, H, W, p);
  REQUIRE(patches.rows() == 6);
  REQUIRE(patches.cols() == 8);
  // Patch (h=1, w=2) is row 1*3 + 2 = 5; its pixel (y=1, x=0), channel 1 is column (1*2+0)*2+1 = 5
  // and comes from image row 1*2+1 = 3, column 2*2+0 = 4: 100 + 3*6 + 4.
  CHECK(patches(5, 5) == Scalar(122));
  CHECK(ops::unpatchify(patches, H, W, p, C) == img);
  CHECK_THROWS_WITH_AS(ops::patchify(img, H, W, 4), doctest::Contains("not divisible by the patch size 4"),
                       vitmae::Error);
  CHECK_THROWS_WITH_AS(ops::unpatchify(patches, 8, 8, p, C), doctest::Contains("do not tile"), vitmae::Error);
}

TEST_CASE_TEMPLATE("bicubic interpolation: torch's A=-0.75 kernel, clamped borders", Scalar, float, double) {
  // 1 x 2 -> 1 x 4 of [0, 1]: hand-computed from the cubic convolution kernel. PyTorch gives
  // [-0.10546875, 0.2265625, 0.7734375, 1.10546875] for this input.
  Matrix<Scalar> g(2, 1);
  g << 0, 1;
  const Matrix<Scalar> up = ops::bicubic_resize<Scalar>(g, 1, 2, 1, 4);
  CHECK(up(0, 0) == doctest::Approx(-0.10546875));
  CHECK(up(1, 0) == doctest::Approx(0.2265625));
  CHECK(up(2, 0) == doctest::Approx(0.7734375));
  CHECK(up(3, 0) == doctest::Approx(1.10546875));
  // Same size is the identity; constants stay constant when downsampling.
  Matrix<Scalar> r = Matrix<Scalar>::Random(9, 3);
  CHECK((ops::bicubic_resize<Scalar>(r, 3, 3, 3, 3) - r).cwiseAbs().maxCoeff() < 1e-6);
  const Matrix<Scalar> ones = Matrix<Scalar>::Ones(36, 2);
  CHECK((ops::bicubic_resize<Scalar>(ones, 6, 6, 4, 5).array() - 1).abs().maxCoeff() < 1e-6);
}

TEST_CASE("random streams are pinned: uniform53, masking noise and init draws from fixed seeds") {
  // Literal values from an independent Python implementation of MT19937-64 (checked against the
  // C++ standard's 10000th output of a default-seeded std::mt19937_64) and of MT19937 (Python's
  // own random.random(), numpy's formula, on the state std::mt19937 starts from).
  std::mt19937_64 check;
  check.discard(9999);
  CHECK(check() == 9981545732273789042ull);
  std::mt19937_64 r0(0);
  const Matrix<double> noise = ops::uniform_noise<double>(1, 4, r0);
  CHECK(noise(0, 0) == 0.1597933633704608);
  CHECK(noise(0, 1) == 0.9921452096298288);
  CHECK(noise(0, 2) == 0.03956902584486566);
  CHECK(noise(0, 3) == 0.5974946626946717);
  std::mt19937 r32;  // any standard engine: a 32-bit one takes two draws per uniform
  CHECK(vitmae::uniform53(r32) == 0.8147236863931789);
  CHECK(vitmae::uniform53(r32) == 0.9057919370756192);
  CHECK(vitmae::uniform53(r32) == 0.12698681629350606);
  // Box-Muller: cos first, then the spare sin; init_weights draws cls_token first.
  std::mt19937_64 r123(123);
  vitmae::NormalGenerator<std::mt19937_64> normal(r123);
  CHECK(normal() == doctest::Approx(-1.430468121035136).epsilon(1e-15));
  CHECK(normal() == doctest::Approx(-0.524963278189159).epsilon(1e-15));
  vitmae::Config c;
  c.hidden_size = 16, c.num_hidden_layers = 1, c.num_attention_heads = 2, c.intermediate_size = 24;
  c.decoder_hidden_size = 8, c.decoder_num_hidden_layers = 1, c.decoder_num_attention_heads = 2,
  c.decoder_intermediate_size = 12;
  c.image_size = 8, c.patch_size = 2;
  vitmae::ForPreTraining<double> m(c);
  std::mt19937_64 init(123);
  m.init_weights(init);
  CHECK(m.vit.embeddings.cls_token(0) == doctest::Approx(-1.430468121035136 * 0.02).epsilon(1e-15));
  CHECK(m.vit.embeddings.cls_token(1) == doctest::Approx(-0.524963278189159 * 0.02).epsilon(1e-15));
  // The masks of a forward from seed 0 are argsort of exactly that noise.
  vitmae::Tensor<double> px({1, 3, 8, 8}, 0.5);
  std::mt19937_64 a(0), b(0);
  const auto out = m.forward(px, a);
  const ops::Masking expected = ops::random_masking(ops::uniform_noise<double>(1, 16, b).row(0), c.mask_ratio);
  for (Index l = 0; l < 16; ++l) CHECK(out.ids_restore(0, l) == expected.ids_restore[static_cast<size_t>(l)]);
}

TEST_CASE("products: each backend against a float64 loop, oneDNN the same bits with 1 or 2 threads") {
  // gemm_nt (with and without bias), gemm_nn (set and accumulate), gemm_tn_add, on shapes that
  // are not multiples of any vector width, big enough to be split across threads.
  namespace d = vitmae::detail;
  const Index T = 131, in = 263, out = 197;  // 13.6 MFLOP: over split_columns' threshold
  std::mt19937_64 rng(5);
  auto random = [&](Index r, Index c) { return test::uniform_matrix(r, c, rng); };
  const Matrix<float> x = random(T, in), w = random(out, in), dy = random(T, out), acc0 = random(T, in),
                      g0 = random(out, in);
  const vitmae::RowVector<float> bias = random(1, out);
  const Matrix<double> xd = x.cast<double>(), wd = w.cast<double>(), dyd = dy.cast<double>();
  Matrix<double> nt(T, out), nn(T, in), tn(out, in);  // the float64 loops
  for (Index i = 0; i < T; ++i)
    for (Index j = 0; j < out; ++j) {
      double s = bias(j);
      for (Index k = 0; k < in; ++k) s += xd(i, k) * wd(j, k);
      nt(i, j) = s;
    }
  for (Index i = 0; i < T; ++i)
    for (Index j = 0; j < in; ++j) {
      double s = 0;
      for (Index k = 0; k < out; ++k) s += dyd(i, k) * wd(k, j);
      nn(i, j) = s;
    }
  for (Index i = 0; i < out; ++i)
    for (Index j = 0; j < in; ++j) {
      double s = 0;
      for (Index k = 0; k < T; ++k) s += dyd(k, i) * xd(k, j);
      tn(i, j) = s;
    }
  auto close = [](const Matrix<float>& got, const Matrix<double>& want) {
    REQUIRE(got.rows() == want.rows());
    REQUIRE(got.cols() == want.cols());
    return (got.cast<double>() - want).cwiseAbs().maxCoeff() <= 1e-5 * (1 + want.cwiseAbs().maxCoeff());
  };
  std::vector<vitmae::Backend> backends{vitmae::Backend::eigen};
  if (vitmae::onednn_available()) backends.push_back(vitmae::Backend::onednn);
  else
    CHECK_THROWS_WITH_AS(vitmae::set_product_backend(vitmae::Backend::onednn), doctest::Contains("no oneDNN"),
                         vitmae::Error);
  const test::RestoreBackendAndThreads restore;
  for (const vitmae::Backend b : backends) {
    const std::string backend = vitmae::backend_name(b);
    CAPTURE(backend);
    vitmae::set_product_backend(b);
    Matrix<float> runs[2][5];
    for (int threads : {1, 2}) {
#ifdef _OPENMP
      omp_set_num_threads(threads);
#endif
      Matrix<float>* r = runs[threads - 1];
      d::gemm_nt(x, w, bias, r[0]);
      d::gemm_nt(x, w, vitmae::RowVector<float>(), r[1]);
      d::gemm_nn(dy, w, r[2], false);
      r[3] = acc0;
      d::gemm_nn(dy, w, r[3], true);
      r[4] = g0;
      d::gemm_tn_add(dy, x, r[4]);
      CHECK(close(r[0], nt));
      CHECK(close(r[1], nt.rowwise() - bias.cast<double>()));
      CHECK(close(r[2], nn));
      CHECK(close(r[3], nn + acc0.cast<double>()));
      CHECK(close(r[4], tn + g0.cast<double>()));
    }
    // oneDNN's single-threaded product of a column block gives each element the bits of the
    // whole product; Eigen's blocking depends on the block's width, so its bits may differ.
    for (int i = 0; b == vitmae::Backend::onednn && i < 5; ++i) {
      CAPTURE(i);
      CHECK((runs[0][i] - runs[1][i]).cwiseAbs().maxCoeff() == 0.f);
    }
  }
}
