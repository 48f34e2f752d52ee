// SPDX-License-Identifier: Apache-2.0
// Inference forms. int8: the quantisers against values worked by hand, the int8 product against the
// same arithmetic done in float64 on the quantised values, both backends and thread counts giving
// the same bits, and the bundled model's accuracy in int8 on the bundled photos.
// Packed for inference: the packed product against float64, its bits on 1 or 2 threads, and
// pack_for_inference / unpack on whole models (exact, inference only in between).
#include "test_util.hpp"

#include <random>

#include <vitmae/train.hpp>

using vitmae::Index;
using vitmae::Matrix;
namespace d = vitmae::detail;

TEST_CASE("int8 quantisers: per-channel symmetric weights, per-row asymmetric activations") {
  Matrix<float> w(2, 3);
  w << 1.f, -0.5f, 0.25f, 0.f, 0.f, 0.f;
  const d::Int8Weight q = d::Int8Weight::of(w);
  CHECK(q.scale(0) == doctest::Approx(1.0 / 127));
  CHECK(q.scale(1) == 1.f);  // an all-zero row
  // 127, -63.5 -> -64 (half away from zero), 31.75 -> 32
  CHECK(int(q.q(0, 0)) == 127);
  CHECK(int(q.q(0, 1)) == -64);
  CHECK(int(q.q(0, 2)) == 32);
  CHECK(q.row_sum(0) == 95);
  CHECK(q.row_sum(1) == 0);

  Matrix<float> x(2, 3);
  x << -1.f, 0.f, 3.f, 0.5f, 1.1f, 2.f;
  d::Int8Rows r;
  d::Int8Rows::quantize(x, r);
  // Row 0: range [-1, 3], scale 4/255, zero round(63.75) = 64: -1 -> 0.75 -> 0, 0 -> 64, 3 -> 255.
  CHECK(r.scale(0) == doctest::Approx(4.0 / 255));
  CHECK(r.zero(0) == 64);
  CHECK(int(r.q(0, 0)) == 0);
  CHECK(int(r.q(0, 1)) == 64);
  CHECK(int(r.q(0, 2)) == 255);
  // Row 1: the range includes 0: [0, 2], zero 0; 0.5 -> 63.75 -> 64, 1.1 -> 140.25 -> 140, 2 -> 255.
  CHECK(r.zero(1) == 0);
  CHECK(int(r.q(1, 0)) == 64);
  CHECK(int(r.q(1, 1)) == 140);
  CHECK(int(r.q(1, 2)) == 255);

  Matrix<float> bad = x;
  bad(1, 2) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH_AS(d::Int8Rows::quantize(bad, r), doctest::Contains("row 1 of the input is not finite"),
                       vitmae::Error);

  // Rows longer than the 16 lanes of one pass: the range found anywhere (body or tail), a NaN or
  // an infinity caught there too.
  Matrix<float> wide = Matrix<float>::Constant(3, 37, 0.5f);
  wide(0, 20) = -2.f, wide(0, 35) = 6.5f;  // body and tail
  wide(1, 3) = std::numeric_limits<float>::infinity();
  wide(2, 17) = std::numeric_limits<float>::quiet_NaN();
  for (Index row : {1, 2}) {
    Matrix<float> one = wide;
    one.row(3 - row) = Matrix<float>::Constant(1, 37, 0.5f);  // leave only this row bad
    const std::string message = "row " + std::to_string(row) + " of the input is not finite";
    CHECK_THROWS_WITH_AS(d::Int8Rows::quantize(one, r), doctest::Contains(message.c_str()), vitmae::Error);
  }
  wide.bottomRows(2).setConstant(0.5f);
  d::Int8Rows::quantize(wide, r);
  CHECK(r.scale(0) == doctest::Approx(8.5 / 255));  // [-2, 6.5]
  CHECK(r.zero(0) == 60);                           // round(2 / (8.5 / 255)) = round(60.0)
  CHECK(int(r.q(0, 20)) == 0);
  CHECK(int(r.q(0, 35)) == 255);
  CHECK(r.zero(1) == 0);  // [0, 0.5]: the range includes 0
  CHECK(int(r.q(1, 0)) == 255);
}

TEST_CASE("int8 product: the quantised arithmetic in float64, any backend, any thread count, the same bits") {
  const Index T = 130, in = 300, out = 211;  // 4.1 M int8 "FLOP" / 4: over the threshold of threads
  std::mt19937_64 rng(9);
  auto random = [&](Index r, Index c) { return test::uniform_matrix(r, c, rng); };
  const Matrix<float> x = random(T, in) * 3.f, w = random(out, in) * 0.1f;
  const vitmae::RowVector<float> b = random(1, out);
  const d::Int8Weight qw = d::Int8Weight::of(w);
  const d::Int8Weight packed = [&] {  // oneDNN's matmul on the integers packed once (where the CPU has VNNI)
    d::Int8Weight p = qw;
    p.pack();
    return p;
  }();
#ifdef VITMAE_WITH_ONEDNN
  CHECK(bool(packed.packed) == d::onednn_int8_exact());
#endif
  CHECK((packed.q.size() == 0) == d::onednn_int8_exact());  // packed: the integers' one copy
  CHECK(packed.integers() == qw.q);                         // given back exactly
  CHECK(packed.dequantized() == qw.dequantized());
  CHECK(packed.out_features() == out);
  CHECK(packed.in_features() == in);
  d::Int8Rows qx;
  d::Int8Rows::quantize(x, qx);
  // Independent: dequantise both sides in float64 and multiply with a plain loop.
  Matrix<double> want(T, out);
  for (Index i = 0; i < T; ++i)
    for (Index c = 0; c < out; ++c) {
      double s = 0;
      for (Index k = 0; k < in; ++k)
        s += (double(qx.scale(i)) * (int(qx.q(i, k)) - qx.zero(i))) * (double(qw.scale(c)) * int(qw.q(c, k)));
      want(i, c) = s + b(c);
    }
  Matrix<double> exact = (x.cast<double>() * w.cast<double>().transpose()).rowwise() + b.cast<double>();
  std::vector<vitmae::Backend> backends{vitmae::Backend::eigen};
  if (vitmae::onednn_available()) backends.push_back(vitmae::Backend::onednn);
  const test::RestoreBackendAndThreads restore;
  Matrix<float> first;
  for (const vitmae::Backend be : backends)
    for (int threads : {1, 2})
      for (const d::Int8Weight* weight : {&qw, &packed}) {
        const std::string name = vitmae::backend_name(be);
        const bool is_packed = weight == &packed;
        CAPTURE(name);
        CAPTURE(threads);
        CAPTURE(is_packed);
        vitmae::set_product_backend(be);
#ifdef _OPENMP
        omp_set_num_threads(threads);
#endif
        Matrix<float> y;
        d::gemm_nt_int8(x, *weight, b, y);
        CHECK((y.cast<double>() - want).cwiseAbs().maxCoeff() <= 1e-5 * (1 + want.cwiseAbs().maxCoeff()));
        // and near the float product: the quantisation error, well under 1% of the output's range
        CHECK((y.cast<double>() - exact).cwiseAbs().maxCoeff() <= 0.01 * exact.cwiseAbs().maxCoeff());
        if (first.size() == 0) first = y;
        CHECK((y - first).cwiseAbs().maxCoeff() == 0.f);  // integer sums: exact everywhere
      }
}

TEST_CASE("int8 MLP: fc1's rows activated and quantised for fc2 in cache, the bits of the products one by one") {
  const test::RestoreBackendAndThreads restore;
  vitmae::EncoderConfig c;
  const Index hidden = 128, inter = 512, T = 150;  // (4.9 M int8 "FLOP" / 4 a product: split over threads)
  c.hidden_size = hidden, c.intermediate_size = inter, c.num_attention_heads = 4;
  std::mt19937_64 rng(12);
  vitmae::Layer<float> layer(c);
  auto& fc1 = layer.intermediate.dense;
  auto& fc2 = layer.output.dense;
  fc1.weight = test::uniform_matrix(inter, hidden, rng) * 0.2f, fc1.bias = test::uniform_matrix(1, inter, rng);
  fc2.weight = test::uniform_matrix(hidden, inter, rng) * 0.05f, fc2.bias = test::uniform_matrix(1, hidden, rng);
  CHECK(vitmae::quantize_int8(layer) == 6);
  const Matrix<float> x = test::uniform_matrix(T, hidden, rng) * 2.f, residual = test::uniform_matrix(T, hidden, rng);
  // One by one: fc1 in int8, GELU, fc2's input quantised as a float matrix, fc2, the residual.
  Matrix<float> z, a, want;
  layer.intermediate.forward(x, z, a);
  layer.output.forward(a, residual, want);
  // ...against a GELU computed apart from the library's: the quantised rows are those of act(z).
  Matrix<double> act(T, inter);
  for (Index i = 0; i < T; ++i)
    for (Index k = 0; k < inter; ++k) act(i, k) = 0.5 * z(i, k) * (1 + std::erf(z(i, k) / std::sqrt(2.0)));
  CHECK((a.cast<double>() - act).cwiseAbs().maxCoeff() <= 1e-6 * (1 + act.cwiseAbs().maxCoeff()));
  // oneDNN's matmul on the integers packed once (where the CPU has VNNI: rows split over the
  // threads, each finished on its own), and the column blocks with the rows finished afterwards
  // (the Eigen backend: a plain integer loop).
  std::vector<vitmae::Backend> backends{vitmae::Backend::eigen};
  if (vitmae::onednn_available()) backends.push_back(vitmae::Backend::onednn);
  for (const vitmae::Backend be : backends)
    for (int threads : {1, 2}) {
      CAPTURE(threads);
      CAPTURE(vitmae::backend_name(be));
      vitmae::set_product_backend(be);
#ifdef _OPENMP
      omp_set_num_threads(threads);
#endif
      d::Int8Rows xq, aq, want_aq;
      d::Int8Rows::quantize(x, xq);
      layer.intermediate.forward_quantized(xq, aq);
      d::Int8Rows::quantize(a, want_aq);
      CHECK(aq.q == want_aq.q);
      CHECK(aq.scale == want_aq.scale);
      CHECK(aq.zero == want_aq.zero);
      Matrix<float> y;
      layer.output.forward(aq, residual, y);
      CHECK((y - want).cwiseAbs().maxCoeff() == 0.f);
      // The whole layer takes this way (its z and act(z) are not kept).
      vitmae::Layer<float>::Cache cache;
      Matrix<float> out, again, z2, a2;
      layer.forward(x, T, out, cache);
      CHECK(cache.a.size() == 0);
      layer.intermediate.forward(cache.ln2, z2, a2);
      layer.output.forward(a2, cache.h, again);
      CHECK((out - again).cwiseAbs().maxCoeff() == 0.f);
      // ... and the attention's output projection adds the residual to its rows as it completes
      // them: the bits of adding it after.
      vitmae::Attention<float>::Cache ac;
      Matrix<float> h;
      layer.attention.forward(cache.ln1, T, h, ac);
      h += x;
      CHECK((cache.h - h).cwiseAbs().maxCoeff() == 0.f);
    }
  // A row that is not finite after the activation is refused, naming it.
  fc1.bias(3) = std::numeric_limits<float>::quiet_NaN();
  d::Int8Rows xq, aq;
  d::Int8Rows::quantize(x, xq);
  CHECK_THROWS_WITH_AS(layer.intermediate.forward_quantized(xq, aq),
                       doctest::Contains("row 0 of the input is not finite"), vitmae::Error);
}

TEST_CASE("quantize_int8: every Linear and the patch projection, inference only, reversible") {
  auto m = vitmae::ViTMAEForPreTraining<float>::from_pretrained(test::data("hf/tiny"));
  CHECK_FALSE(vitmae::is_int8(m));
  // 2 encoder + 2 decoder layers of 6 Linear each, decoder_embed, decoder_pred, the projection
  CHECK(vitmae::quantize_int8(m) == 4 * 6 + 3);
  CHECK(vitmae::is_int8(m));
  CHECK(!m.vit.encoder.layer[1].attention.attention.value.int8.empty());
  vitmae::train::TrainOptions o;
  o.batch = 2;
  o.steps = 1;
  CHECK_THROWS_WITH_AS(vitmae::train::Trainer<float>(m, o).train_step([&] {
    return vitmae::Tensor<float>({2, 3, 32, 32}, 0.1f);
  }),
                       doctest::Contains("int8 model is for inference only"), vitmae::Error);
  vitmae::dequantize(m);
  CHECK_FALSE(vitmae::is_int8(m));
  CHECK(m.vit.encoder.layer[1].attention.attention.value.int8.empty());
}

TEST_CASE("int8 accuracy of the bundled model on the bundled photos: features and masked-patch loss") {
  // The acceptance of int8 inference (examples/library.md, "int8 inference"): CLS and mean features
  // within cosine 0.99 of float32 on every photo, the masked-patch loss on chelsea within 2%.
  const auto f32 = vitmae::ViTMAEForPreTraining<float>::from_pretrained(VITMAE_BUNDLED_MODEL);
  auto i8 = f32;
  vitmae::quantize_int8(i8);
  const auto proc = vitmae::ImageProcessor::for_checkpoint(VITMAE_BUNDLED_MODEL, f32.config());
  for (const std::string photo : {"chelsea.png", "astronaut.png", "camera.png", "coffee.png", "rocket.jpg"}) {
    CAPTURE(photo);
    const auto px = proc.preprocess<float>({vitmae::io::load_image(test::data("images/" + photo), 3)});
    std::mt19937_64 r1(0), r2(0);
    vitmae::ForwardOptions o;
    o.mask_ratio = 0.0;
    const Matrix<float> noise = vitmae::ops::uniform_noise<float>(1, f32.config().num_patches(), r1);
    const Matrix<float> a = f32.vit.forward(px, noise, o).last_hidden_state[0],
                        b = i8.vit.forward(px, noise, o).last_hidden_state[0];
    auto cosine = [](const vitmae::RowVector<float>& u, const vitmae::RowVector<float>& v) {
      return double(u.dot(v)) / (double(u.norm()) * double(v.norm()));
    };
    const double cls = cosine(a.row(0), b.row(0));
    const double mean =
        cosine(a.bottomRows(a.rows() - 1).colwise().mean(), b.bottomRows(b.rows() - 1).colwise().mean());
    MESSAGE(photo << ": cosine to float32: CLS " << cls << ", mean " << mean);
    CHECK(cls >= 0.99);
    CHECK(mean >= 0.99);
    if (photo == "chelsea.png") {
      const float l32 = f32.forward(px, r2).loss;
      std::mt19937_64 r3(0);
      const float l8 = i8.forward(px, r3).loss;
      MESSAGE("chelsea masked-patch loss: float32 " << l32 << ", int8 " << l8);
      CHECK(std::abs(l8 - l32) <= 0.02 * l32);
    }
  }
}

namespace int8_test {
/// Writes the int8 checkpoint `f` again to `path`, without the tensor `left_out`.
void save_without(const vitmae::io::SafetensorsFile& f, const std::string& left_out, const std::string& path) {
  vitmae::io::SafetensorsWriter w;
  w.set_metadata("format", "pt");
  for (const auto& kv : f.tensors()) {
    if (kv.first == left_out) continue;
    const auto t = f.get<double>(kv.first);
    if (kv.second.dtype == vitmae::io::DType::I8) {
      std::string bytes;
      for (double v : t.data) bytes.push_back(static_cast<char>(static_cast<std::int8_t>(v)));
      w.add_raw(kv.first, vitmae::io::DType::I8, kv.second.shape, bytes);
    } else {
      w.add(kv.first, t.ptr(), kv.second.shape, vitmae::io::DType::F32);
    }
  }
  w.save(path);
}
}  // namespace int8_test

TEST_CASE("int8 checkpoints: I8 weights with per-channel scales, loaded back as the same int8 model") {
  const std::string dir = test::tmp_dir("int8_ckpt");
  auto m = vitmae::ViTMAEForPreTraining<float>::from_pretrained(test::data("hf/tiny"));
  m.save_pretrained(dir, vitmae::io::DType::I8);
  const vitmae::io::SafetensorsFile f(dir + "/model.safetensors");
  CHECK(f.info("vit.encoder.layer.0.attention.attention.query.weight").dtype == vitmae::io::DType::I8);
  CHECK(f.info("vit.embeddings.patch_embeddings.projection.weight").dtype == vitmae::io::DType::I8);
  CHECK(f.info("vit.embeddings.patch_embeddings.projection.weight").shape == std::vector<std::int64_t>{64, 3, 4, 4});
  CHECK(f.info("decoder.decoder_pred.weight_scale").shape == std::vector<std::int64_t>{48});
  CHECK(f.info("vit.encoder.layer.0.attention.attention.query.bias").dtype == vitmae::io::DType::F32);
  CHECK(f.info("vit.layernorm.weight").dtype == vitmae::io::DType::F32);

  const auto back = vitmae::ViTMAEForPreTraining<float>::from_pretrained(dir);
  CHECK(vitmae::is_int8(back));
  auto q = m;
  vitmae::quantize_int8(q);
  const auto& a = q.vit.encoder.layer[1].intermediate.dense;
  const auto& b = back.vit.encoder.layer[1].intermediate.dense;
  CHECK(a.int8.integers() == b.int8.integers());  // the integers survive the round trip exactly
  CHECK((a.int8.scale - b.int8.scale).cwiseAbs().maxCoeff() <= 1e-6f * a.int8.scale.cwiseAbs().maxCoeff());
  // the file's values, dequantised, are the float weights of the loaded model
  CHECK((b.weight - a.int8.dequantized()).cwiseAbs().maxCoeff() <= 1e-6f * a.weight.cwiseAbs().maxCoeff());
  vitmae::Tensor<float> px({1, 3, 32, 32});
  for (Index i = 0; i < static_cast<Index>(px.data.size()); ++i)
    px.data[static_cast<size_t>(i)] = std::sin(0.37f * float(i));
  std::mt19937_64 r1(4), r2(4);
  const float l1 = q.forward(px, r1).loss, l2 = back.forward(px, r2).loss;
  CHECK(l2 == doctest::Approx(l1).epsilon(1e-5));
  // Loading into a model that is already int8 quantises the new weights (nothing stale).
  vitmae::ViTMAEForPreTraining<float> z(m.config());
  vitmae::quantize_int8(z);
  z.load_weights(*vitmae::open_pretrained_weights(test::data("hf/tiny")));
  CHECK(vitmae::is_int8(z));
  CHECK(z.vit.encoder.layer[1].intermediate.dense.int8.integers() == a.int8.integers());
  // A float64 model loads the dequantised values (products in float64).
  const auto d = vitmae::ViTMAEForPreTraining<double>::from_pretrained(dir);
  CHECK(d.vit.encoder.layer[1].intermediate.dense.weight.cast<float>().isApprox(b.weight, 1e-6f));

  // An int8 weight without its scales is refused, naming both.
  int8_test::save_without(f, "decoder.decoder_pred.weight_scale", dir + "/model.safetensors");
  CHECK_THROWS_WITH_AS(
      vitmae::ViTMAEForPreTraining<float>::from_pretrained(dir),
      doctest::Contains("'decoder.decoder_pred.weight' is int8 but 'decoder.decoder_pred.weight_scale' (its "
                        "per-channel scales) is missing"),
      vitmae::Error);
}

TEST_CASE("packed product: against a float64 loop, the same bits on 1 or 2 threads, unpacked exactly") {
  // Shapes that are not multiples of oneDNN's blocks (16 x 64); 2 threads take 66 and 65 rows.
  const test::RestoreBackendAndThreads restore;
  if (vitmae::product_backend() != vitmae::Backend::onednn) return;  // (pack_for_inference packs nothing then)
  const Index T = 131, in = 263, out = 197;
  std::mt19937_64 rng(7);
  auto random = [&](Index r, Index c) { return test::uniform_matrix(r, c, rng); };
  const Matrix<float> x = random(T, in), w = random(out, in);
  const vitmae::RowVector<float> bias = random(1, out);
#ifdef _OPENMP
  omp_set_num_threads(2);
#endif
  const d::PackedWeight p = d::PackedWeight::of(Matrix<float>(w));
  CHECK(p.out == out);
  CHECK(p.in == in);
  CHECK((p.unpacked() - w).cwiseAbs().maxCoeff() == 0.f);
  Matrix<float> y2, y1, y0;
  d::gemm_nt_packed(x, p, bias, y2);
#ifdef _OPENMP
  omp_set_num_threads(1);
#endif
  d::gemm_nt_packed(x, p, bias, y1);
  d::gemm_nt_packed(x, p, vitmae::RowVector<float>(), y0);
  CHECK((y1 - y2).cwiseAbs().maxCoeff() == 0.f);
  const Matrix<double> want = (x.cast<double>() * w.cast<double>().transpose()).rowwise() + bias.cast<double>();
  CHECK((y1.cast<double>() - want).cwiseAbs().maxCoeff() <= 1e-5 * (1 + want.cwiseAbs().maxCoeff()));
  CHECK(((y0.rowwise() + bias) - y1).cwiseAbs().maxCoeff() <= 1e-5f * y1.cwiseAbs().maxCoeff());
  CHECK_THROWS_WITH_AS(d::gemm_nt_packed(random(3, in + 1), p, bias, y0),
                       doctest::Contains("input has 264 features, expected 263"), vitmae::Error);
}

TEST_CASE("pack_for_inference: float weights released (packed, or int8), inference only until unpack, exact") {
  const test::RestoreBackendAndThreads restore;
  const auto m = vitmae::ViTMAEForPreTraining<float>::from_pretrained(test::data("hf/tiny"));
  const int layers = 4 * 6 + 3;
  vitmae::Tensor<float> px({2, 3, 32, 32});
  for (Index i = 0; i < static_cast<Index>(px.data.size()); ++i)
    px.data[static_cast<size_t>(i)] = std::cos(0.11f * float(i));
  std::mt19937_64 rng(3);
  const Matrix<float> noise = vitmae::ops::uniform_noise<float>(2, m.config().num_patches(), rng);
  const auto ref = m.forward(px, noise);
  const bool onednn = vitmae::product_backend() == vitmae::Backend::onednn;

  auto p = m;
#ifdef _OPENMP
  omp_set_num_threads(2);
#endif
  CHECK(vitmae::pack_for_inference(p) == (onednn ? layers : 0));
  CHECK(vitmae::is_packed(p) == onednn);
  CHECK(vitmae::pack_for_inference(p) == 0);  // already packed
  const auto two = p.forward(px, noise);
#ifdef _OPENMP
  omp_set_num_threads(1);
#endif
  const auto one = p.forward(px, noise);
  CHECK((one.logits[1] - two.logits[1]).cwiseAbs().maxCoeff() == 0.f);  // any thread count, the same bits
  CHECK((one.logits[1] - ref.logits[1]).cwiseAbs().maxCoeff() <= 1e-5f * ref.logits[1].cwiseAbs().maxCoeff());
  CHECK(one.loss == doctest::Approx(ref.loss).epsilon(1e-5));
  if (onednn) {
    CHECK(p.vit.encoder.layer[0].attention.attention.query.weight.size() == 0);  // released
    CHECK(p.vit.encoder.layer[0].intermediate.dense.in_features() == m.config().hidden_size);
    CHECK(p.vit.encoder.layer[0].intermediate.dense.out_features() == m.config().intermediate_size);
    // Inference only: saving, training and loading name the weight and the way back.
    CHECK_THROWS_WITH_AS(
        p.save_pretrained(test::tmp_dir("packed_save")),
        doctest::Contains("vit.embeddings.patch_embeddings.projection.weight: the model's float weights were "
                          "released for inference (pack_for_inference); call vitmae::unpack(model)"),
        vitmae::Error);
    vitmae::train::TrainOptions o;
    o.batch = 2;
    o.steps = 1;
    CHECK_THROWS_WITH_AS(vitmae::train::Trainer<float>(p, o), doctest::Contains("call vitmae::unpack(model)"),
                         vitmae::Error);
    CHECK_THROWS_WITH_AS(p.load_weights(*vitmae::open_pretrained_weights(test::data("hf/tiny"))),
                         doctest::Contains("call vitmae::unpack(model)"), vitmae::Error);
  }
  vitmae::unpack(p);
  CHECK_FALSE(vitmae::is_packed(p));
  size_t same = 0, all = 0;
  vitmae::visit_lockstep(
      m, [&](const auto& a, const auto& b) { ++all, same += (a.values() - b.values()).cwiseAbs().maxCoeff() == 0; }, p);
  CHECK(all == vitmae::parameter_list(m).size());
  CHECK(same == all);  // unpacking gives back the exact weights

  // int8: the float weights go, the integers stay; unpack gives their dequantised values.
  auto q = m;
  vitmae::quantize_int8(q);
  const auto q_out = q.forward(px, noise);
  CHECK(vitmae::pack_for_inference(q) == layers);
  CHECK(vitmae::is_int8(q));
  CHECK(q.decoder.decoder_pred.weight.size() == 0);
  CHECK((q.forward(px, noise).logits[0] - q_out.logits[0]).cwiseAbs().maxCoeff() == 0.f);
  vitmae::unpack(q);
  CHECK(vitmae::is_int8(q));
  CHECK(q.decoder.decoder_pred.weight == q.decoder.decoder_pred.int8.dequantized());
  CHECK((q.forward(px, noise).logits[0] - q_out.logits[0]).cwiseAbs().maxCoeff() == 0.f);
  // A packed float model quantised: unpacked first, then int8 as from the float weights.
  auto pq = m;
  vitmae::pack_for_inference(pq);
  vitmae::quantize_int8(pq);
  CHECK(pq.vit.encoder.layer[1].output.dense.int8.integers() == q.vit.encoder.layer[1].output.dense.int8.integers());

  // Nothing to pack in float64, nor for float products on Eigen (int8 weights are still released).
  auto f64 = vitmae::ViTMAEForPreTraining<double>::from_pretrained(test::data("hf/tiny"));
  CHECK(vitmae::pack_for_inference(f64) == 0);
  vitmae::set_product_backend(vitmae::Backend::eigen);
  auto e = m;
  CHECK(vitmae::pack_for_inference(e) == 0);
  CHECK_FALSE(vitmae::is_packed(e));
  auto eq = m;
  vitmae::quantize_int8(eq);
  CHECK(vitmae::pack_for_inference(eq) == layers);
}

TEST_CASE(
    "load_for_inference: an int8 checkpoint straight into int8 layers, a float one packed, as the model it was saved "
    "from") {
  const std::string dir = test::tmp_dir("int8_direct");
  const auto m = vitmae::ViTMAEForPreTraining<float>::from_pretrained(test::data("hf/tiny"));
  auto q = m;
  vitmae::quantize_int8(q);
  m.save_pretrained(dir, vitmae::io::DType::I8);
  const auto source = vitmae::open_pretrained_weights(dir);
  auto in = vitmae::load_for_inference<vitmae::ViTMAEForPreTraining<float>>(m.config(), *source);
  CHECK(vitmae::is_int8(in));
  CHECK(vitmae::is_packed(in));
  int layers = 0;
  auto same = [&](const auto& a, const auto& b) {  // the quantised model's integers and scales, exactly
    CHECK(b.weight.size() == 0);                   // released: no float weight was ever kept
    CHECK(a.int8.integers() == b.int8.integers());
    CHECK(a.int8.scale == b.int8.scale);
    CHECK(a.int8.row_sum == b.int8.row_sum);
    ++layers;
  };
  same(q.vit.embeddings.patch_embeddings.projection, in.vit.embeddings.patch_embeddings.projection);
  for (size_t i = 0; i < q.vit.encoder.layer.size(); ++i) {
    same(q.vit.encoder.layer[i].attention.attention.key, in.vit.encoder.layer[i].attention.attention.key);
    same(q.vit.encoder.layer[i].output.dense, in.vit.encoder.layer[i].output.dense);
  }
  same(q.decoder.decoder_pred, in.decoder.decoder_pred);
  CHECK(layers == 2 + 2 * static_cast<int>(q.vit.encoder.layer.size()));
  // Hence the same forward, bit for bit, as the model quantised in memory.
  vitmae::Tensor<float> px({2, 3, 32, 32});
  for (Index i = 0; i < static_cast<Index>(px.data.size()); ++i)
    px.data[static_cast<size_t>(i)] = std::cos(0.21f * float(i));
  std::mt19937_64 r1(9), r2(9);
  const auto a = q.forward(px, r1), b = in.forward(px, r2);
  CHECK(a.loss == b.loss);
  CHECK(a.logits[1] == b.logits[1]);
  // Inference only until unpack, which gives the dequantised weights.
  CHECK_THROWS_AS(in.save_pretrained(test::tmp_dir("int8_direct_save")), vitmae::Error);
  vitmae::unpack(in);
  CHECK(in.vit.encoder.layer[0].output.dense.weight == q.vit.encoder.layer[0].output.dense.int8.dequantized());

  // ViTMAEModel from the same int8 file (its decoder ignored), and a float checkpoint: the model
  // from_pretrained gives, packed.
  const auto enc = vitmae::load_for_inference<vitmae::ViTMAEModel<float>>(m.config(), *source);
  CHECK(vitmae::is_int8(enc));
  CHECK(enc.encoder.layer[1].intermediate.dense.int8.integers() ==
        q.vit.encoder.layer[1].intermediate.dense.int8.integers());
  const auto f = vitmae::load_for_inference<vitmae::ViTMAEForPreTraining<float>>(
      m.config(), *vitmae::open_pretrained_weights(test::data("hf/tiny")));
  CHECK(!vitmae::is_int8(f));
  CHECK(vitmae::is_packed(f) == (vitmae::product_backend() == vitmae::Backend::onednn));
  auto p = m;
  vitmae::pack_for_inference(p);
  std::mt19937_64 r3(9), r4(9);
  CHECK(p.forward(px, r3).loss == f.forward(px, r4).loss);
  const auto f64 = vitmae::load_for_inference<vitmae::ViTMAEForPreTraining<double>>(
      m.config(), *source);  // dequantised, as from_pretrained
  CHECK(f64.vit.encoder.layer[1].intermediate.dense.weight.cast<float>().isApprox(
      q.vit.encoder.layer[1].intermediate.dense.int8.dequantized(), 1e-6f));

  // From a path, checked against its config first, as from_pretrained: the same model. A float
  // checkpoint with int8: the model quantize_int8 gives.
  const auto viapath = vitmae::load_for_inference<vitmae::ViTMAEForPreTraining<float>>(dir);
  CHECK(viapath.vit.encoder.layer[1].attention.attention.value.int8.integers() ==
        q.vit.encoder.layer[1].attention.attention.value.int8.integers());
  CHECK(viapath.vit.encoder.layer[1].attention.attention.value.int8.scale ==
        q.vit.encoder.layer[1].attention.attention.value.int8.scale);
  const auto fq = vitmae::load_for_inference<vitmae::ViTMAEForPreTraining<float>>(test::data("hf/tiny"), "", true);
  CHECK(vitmae::is_int8(fq));
  CHECK(vitmae::is_packed(fq));
  CHECK(fq.decoder.decoder_layers[0].intermediate.dense.int8.integers() ==
        q.decoder.decoder_layers[0].intermediate.dense.int8.integers());
  CHECK(fq.decoder.decoder_layers[0].intermediate.dense.int8.scale ==
        q.decoder.decoder_layers[0].intermediate.dense.int8.scale);
  CHECK_THROWS_WITH_AS(vitmae::load_for_inference<vitmae::ViTMAEModel<float>>(dir, "mae-vit-base"),
                       doctest::Contains("(preset 'mae-vit-base' asks for hidden_size 768)"), vitmae::Error);

  // A checkpoint that lacks a tensor is refused as by from_pretrained, and models built after
  // that start from zeros again (the uninitialised weights are only for the load).
  const std::string partial = test::tmp_dir("int8_direct_partial") + "/model.safetensors";
  int8_test::save_without(vitmae::io::SafetensorsFile(dir + "/model.safetensors"),
                          "vit.encoder.layer.1.output.dense.bias", partial);
  CHECK_THROWS_WITH_AS(vitmae::load_for_inference<vitmae::ViTMAEForPreTraining<float>>(
                           m.config(), vitmae::io::SafetensorsSource(partial)),
                       doctest::Contains("missing tensors: 'vit.encoder.layer.1.output.dense.bias'"), vitmae::Error);
  const vitmae::ViTMAEForPreTraining<float> fresh(m.config());
  CHECK(fresh.vit.encoder.layer[0].output.dense.weight.isZero(0));
}
