// SPDX-License-Identifier: Apache-2.0
// Golden end-to-end tests of the models: every case of the reference fixtures (tests/data/hf,
// tests/data/formats, tests/data/hf_vit), produced by HF transformers in PyTorch, reproduced
// through the API (ViTMAEForPreTraining, ViTMAEModel, ViTForImageClassification). The fixtures
// have float64 references for the outputs only: float64 hidden_states and attentions are held to
// an independent float64 encoder written with loops (naive_encoder.hpp), itself held to PyTorch's.
#include "naive_encoder.hpp"
#include "test_util.hpp"

#include <string>

namespace io = vitmae::io;
using test::fixture_labels;

namespace {

using vitmae::Index;
using vitmae::Matrix;

/// The hidden_states.i and attentions.i a forward gave on the case in `dir` (its io.safetensors
/// `io`): float32 within 1e-4 of PyTorch's (float32) ones; float64 within 1e-12 of the independent
/// float64 encoder's, whose last_hidden_state is first held to PyTorch's float64 one at 1e-12.
template <class Scalar>
void check_layers(const std::string& dir, const vitmae::io::SafetensorsFile& io,
                  const std::vector<std::vector<Matrix<Scalar>>>& hidden_states,
                  const std::vector<std::vector<Matrix<Scalar>>>& attentions) {
  if (!io.contains("hidden_states.0")) return;
  const bool f64 = std::is_same_v<Scalar, double>;
  test::naive::Encoded naive;
  if (f64) {
    naive = test::naive::encode(dir);
    const auto ref = io.get<double>("last_hidden_state_f64");
    test::naive::check_close_to("the naive encoder's last_hidden_state against PyTorch's float64 one", ref.ptr(),
                                static_cast<long>(ref.numel()), naive.last_hidden_state, 1e-12);
  }
  for (size_t i = 0; io.contains("hidden_states." + std::to_string(i)); ++i) {
    REQUIRE(i < hidden_states.size());
    const auto got = test::flatten(hidden_states[i]);
    if (f64)
      test::naive::check_close_to("hidden_states." + std::to_string(i), got.data(), static_cast<long>(got.size()),
                                  naive.hidden_states[i], 1e-12);
    else
      test::check_close("hidden_states." + std::to_string(i), got.data(), static_cast<long>(got.size()),
                        io.get<double>("hidden_states." + std::to_string(i)), 1e-4);
  }
  for (size_t i = 0; io.contains("attentions." + std::to_string(i)); ++i) {
    REQUIRE(i < attentions.size());
    const auto got = test::flatten(attentions[i]);  // per sample (heads*T, T) = [heads, T, T]
    if (f64)
      test::naive::check_close_to("attentions." + std::to_string(i), got.data(), static_cast<long>(got.size()),
                                  naive.attentions[i], 1e-12);
    else
      test::check_close("attentions." + std::to_string(i), got.data(), static_cast<long>(got.size()),
                        io.get<double>("attentions." + std::to_string(i)), 1e-4);
  }
}

/// Runs the checkpoint in `dir` on its io.safetensors and checks every output it holds.
/// float32 within 1e-4 absolute of the float32 references; float64 within 1e-12 of the `*_f64`
/// references (every operation in float64, the softmax included) where the case has them (else
/// 1e-4 of the float32 ones), and hidden_states and attentions within 1e-12 of the independent
/// float64 encoder's (held to last_hidden_state_f64 first); mask and ids_restore exactly.
/// `packed`: the model made inference-only by pack_for_inference first (float; the same tolerances).
template <class Scalar>
void check_case(const std::string& dir, bool packed = false) {
  INFO("case " << dir << (packed ? ", packed for inference" : ""));
  const vitmae::io::SafetensorsFile io(test::data(dir + "/io.safetensors"));
  const bool interpolate =
      io.metadata().count("interpolate_pos_encoding") && io.metadata().at("interpolate_pos_encoding") == "true";
  const auto pixels = io.get<Scalar>("pixel_values");
  const auto noise_t = io.get<Scalar>("noise");
  const vitmae::Matrix<Scalar> noise =
      Eigen::Map<const vitmae::Matrix<Scalar>>(noise_t.ptr(), noise_t.size(0), noise_t.size(1));
  vitmae::ForwardOptions opts;
  opts.interpolate_pos_encoding = interpolate;
  opts.output_hidden_states = io.contains("hidden_states.0");
  opts.output_attentions = io.contains("attentions.0");

  const bool f64 = std::is_same_v<Scalar, double>;
  const double tol = f64 ? 1e-12 : 1e-4;
  auto expected = [&](const std::string& name) {
    const bool have64 = f64 && io.contains(name + "_f64");
    return std::make_pair(io.get<double>(have64 ? name + "_f64" : name), have64 ? tol : 1e-4);
  };

  vitmae::PreTrainingOutput<Scalar> out;
  const bool has_decoder = io.contains("logits");
  if (has_decoder) {
    auto model = vitmae::ViTMAEForPreTraining<Scalar>::from_pretrained(test::data(dir));
    if (packed)
      CHECK(vitmae::pack_for_inference(model) ==
            (vitmae::product_backend() == vitmae::Backend::onednn && !f64
                 ? model.config().num_hidden_layers * 6 + model.config().decoder_num_hidden_layers * 6 + 3
                 : 0));
    out = model.forward(pixels, noise, opts);
  } else {
    auto model = vitmae::ViTMAEModel<Scalar>::from_pretrained(test::data(dir));
    if (packed) vitmae::pack_for_inference(model);
    vitmae::ModelOutput<Scalar> enc = model.forward(pixels, noise, opts);
    out.last_hidden_state = std::move(enc.last_hidden_state);
    out.mask = std::move(enc.mask);
    out.ids_restore = std::move(enc.ids_restore);
    out.hidden_states = std::move(enc.hidden_states);
    out.attentions = std::move(enc.attentions);
  }

  const auto mask = io.get<double>("mask");
  const auto ids = io.get<std::int64_t>("ids_restore");
  REQUIRE(out.mask.size() == mask.numel());
  for (Index i = 0; i < mask.numel(); ++i) {
    CHECK(static_cast<double>(out.mask.data()[i]) == mask.data[static_cast<size_t>(i)]);
    CHECK(out.ids_restore.data()[i] == ids.data[static_cast<size_t>(i)]);
  }
  {
    auto [e, t] = expected("last_hidden_state");
    const auto got = test::flatten(out.last_hidden_state);
    test::check_close("last_hidden_state", got.data(), static_cast<long>(got.size()), e, t);
  }
  if (has_decoder) {
    auto [e, t] = expected("logits");
    const auto got = test::flatten(out.logits);
    test::check_close("logits", got.data(), static_cast<long>(got.size()), e, t);
    auto [el, tl] = expected("loss");
    test::check_close("loss", &out.loss, 1, el, tl);
  }
  if (io.contains("patchified_pixel_values")) {
    const auto model_cfg = vitmae::load_config(test::data(dir + "/config.json"));
    const vitmae::ForPreTraining<Scalar> shell(model_cfg);
    std::vector<vitmae::Matrix<Scalar>> patches;
    for (Index b = 0; b < pixels.size(0); ++b)
      patches.push_back(shell.patchify(vitmae::image_of(pixels, b), pixels.size(2), pixels.size(3)));
    const auto got = test::flatten(patches);
    test::check_close("patchified_pixel_values", got.data(), static_cast<long>(got.size()),
                      io.get<double>("patchified_pixel_values"), 0.0);
  }
  check_layers<Scalar>(dir, io, out.hidden_states, out.attentions);
}

/// Runs the case's checkpoint on its io.safetensors and checks every output it holds: float32
/// within 1e-4 of the float32 references; float64 within 1e-12 of the `*_f64` ones (every
/// operation in float64) where the case has them, else 1e-4 of the float32 ones; hidden_states
/// and attentions as check_layers says.
template <class Scalar>
void check_classifier_case(const std::string& dir) {
  INFO("case " << dir);
  const io::SafetensorsFile f(test::data(dir + "/io.safetensors"));
  const auto model = vitmae::ViTForImageClassification<Scalar>::from_pretrained(test::data(dir));
  vitmae::ForwardOptions opts;
  opts.interpolate_pos_encoding = f.metadata().at("interpolate_pos_encoding") == "true";
  opts.output_hidden_states = opts.output_attentions = true;
  const auto labels = fixture_labels<Scalar>(f);
  const auto out = model.forward(f.get<Scalar>("pixel_values"), &labels, opts);

  const bool f64 = std::is_same_v<Scalar, double>;
  auto expected = [&](const std::string& name) {
    const bool have64 = f64 && f.contains(name + "_f64");
    return std::make_pair(f.get<double>(have64 ? name + "_f64" : name), have64 ? 1e-12 : 1e-4);
  };
  {
    auto [e, t] = expected("logits");
    test::check_close("logits", out.logits.data(), static_cast<long>(out.logits.size()), e, t);
  }
  {
    auto [e, t] = expected("loss");
    REQUIRE(out.loss.has_value());
    test::check_close("loss", &*out.loss, 1, e, t);
  }
  {
    auto [e, t] = expected("last_hidden_state");
    const auto got = test::flatten(out.last_hidden_state);
    test::check_close("last_hidden_state", got.data(), static_cast<long>(got.size()), e, t);
  }
  const Index layers = model.config().num_hidden_layers;
  REQUIRE(static_cast<Index>(out.hidden_states.size()) == layers + 1);
  REQUIRE(static_cast<Index>(out.attentions.size()) == layers);
  REQUIRE(f.contains("hidden_states." + std::to_string(layers)));
  check_layers<Scalar>(dir, f, out.hidden_states, out.attentions);
  if (f.contains("loss_label_smoothing_0.1")) {  // torch's CrossEntropyLoss(label_smoothing=0.1) of the float32 logits
    const Scalar smoothed = model.loss_of(0.1).forward(out.logits, labels, static_cast<Matrix<Scalar>*>(nullptr));
    test::check_close("loss_label_smoothing_0.1", &smoothed, 1, f.get<double>("loss_label_smoothing_0.1"), 1e-4);
  }
}

const char* const kCases[] = {"hf_vit/cls_tiny", "hf_vit/cls_interp_48", "hf_vit/cls_multilabel",
                              "hf_vit/cls_regression", "hf_vit/cls_from_mae_tiny"};

}  // namespace

TEST_CASE_TEMPLATE("parity hf/tiny (gelu, qkv bias, mask 0.75, batch 2)", Scalar, float, double) {
  check_case<Scalar>("hf/tiny");
}
TEST_CASE_TEMPLATE("parity hf/tiny_normpix_gelu_new (norm_pix_loss, gelu_new, no qkv bias)", Scalar, float, double) {
  check_case<Scalar>("hf/tiny_normpix_gelu_new");
}
TEST_CASE_TEMPLATE("parity hf/tiny_gray_p8 (1 channel, patch 8)", Scalar, float, double) {
  check_case<Scalar>("hf/tiny_gray_p8");
}
TEST_CASE_TEMPLATE("parity hf/tiny_no_mask (mask_ratio 0, loss NaN)", Scalar, float, double) {
  check_case<Scalar>("hf/tiny_no_mask");
}
TEST_CASE_TEMPLATE("parity hf/tiny_interp_48 (interpolate_pos_encoding)", Scalar, float, double) {
  check_case<Scalar>("hf/tiny_interp_48");
}
TEST_CASE_TEMPLATE("parity hf/tiny_tables (non-zero position tables, the decoder's included)", Scalar, float, double) {
  check_case<Scalar>("hf/tiny_tables");
}
TEST_CASE_TEMPLATE("parity hf/tiny_tables_interp_40 (both tables interpolated to 40x40)", Scalar, float, double) {
  check_case<Scalar>("hf/tiny_tables_interp_40");
}
TEST_CASE_TEMPLATE("parity formats/sharded", Scalar, float, double) { check_case<Scalar>("formats/sharded"); }
TEST_CASE_TEMPLATE("parity formats/fp16", Scalar, float, double) { check_case<Scalar>("formats/fp16"); }
TEST_CASE_TEMPLATE("parity formats/bf16", Scalar, float, double) { check_case<Scalar>("formats/bf16"); }
TEST_CASE_TEMPLATE("parity formats/encoder_only (ViTMAEModel)", Scalar, float, double) {
  check_case<Scalar>("formats/encoder_only");
}

TEST_CASE("parity of float models packed for inference (oneDNN's matmul on packed weights), every case") {
  for (const char* dir :
       {"hf/tiny", "hf/tiny_normpix_gelu_new", "hf/tiny_gray_p8", "hf/tiny_no_mask", "hf/tiny_interp_48",
        "hf/tiny_tables", "hf/tiny_tables_interp_40", "formats/sharded", "formats/encoder_only"})
    check_case<float>(dir, true);
}

TEST_CASE("float64 forward matches the reference to 1e-12 relative on train_steps' F64 inputs") {
  // train_steps.safetensors holds each step's batch as F64; the loss of step 0 is the forward
  // pass of the case's own weights (before any update).
  const auto model = vitmae::ViTMAEForPreTraining<double>::from_pretrained(test::data("hf/tiny"));
  const vitmae::io::SafetensorsFile steps(test::data("hf/tiny/train_steps.safetensors"));
  const auto px = steps.get<double>("pixel_values");  // [12, 4, 3, 32, 32]
  const auto noise = steps.get<double>("noise");      // [12, 4, 64]
  const double ref = steps.get<double>("loss").data[0];
  vitmae::Tensor<double> batch({4, 3, 32, 32});
  std::copy(px.data.begin(), px.data.begin() + batch.numel(), batch.data.begin());
  const vitmae::Matrix<double> n = Eigen::Map<const vitmae::Matrix<double>>(noise.ptr(), 4, 64);
  const double loss = model.forward(batch, n).loss;
  INFO("loss " << loss << " reference " << ref);
  CHECK(std::abs(loss - ref) <= 1e-12 * std::abs(ref));
}

TEST_CASE_TEMPLATE("ViTForImageClassification matches transformers on every hf_vit case", Scalar, float, double) {
  for (const char* c : kCases) check_classifier_case<Scalar>(c);
}

TEST_CASE(
    "the independent float64 encoder (loops, no library module) reproduces PyTorch's float64 last_hidden_state within "
    "1e-12") {
  // Every fixture case with hidden states: the MAE's (masked by the fixture's ids) and the ViT
  // classifiers' (every patch, learned tables, one interpolated).
  for (const std::string dir :
       {"hf/tiny", "hf/tiny_normpix_gelu_new", "hf/tiny_gray_p8", "hf/tiny_no_mask", "hf/tiny_interp_48",
        "hf/tiny_tables", "hf/tiny_tables_interp_40", "hf_vit/cls_tiny", "hf_vit/cls_interp_48",
        "hf_vit/cls_multilabel", "hf_vit/cls_regression", "hf_vit/cls_from_mae_tiny"}) {
    INFO(dir);
    const vitmae::io::SafetensorsFile io(test::data(dir + "/io.safetensors"));
    const test::naive::Encoded naive = test::naive::encode(dir);
    const auto ref = io.get<double>("last_hidden_state_f64");
    test::naive::check_close_to("last_hidden_state_f64", ref.ptr(), static_cast<long>(ref.numel()),
                                naive.last_hidden_state, 1e-12);
    // Its layers agree with PyTorch's float32 ones as float32 allows.
    for (size_t i = 0; i < naive.hidden_states.size(); ++i) {
      const auto h = io.get<double>("hidden_states." + std::to_string(i));
      test::naive::check_close_to("hidden_states." + std::to_string(i), h.ptr(), static_cast<long>(h.numel()),
                                  naive.hidden_states[i], 1e-4);
    }
    for (size_t i = 0; i < naive.attentions.size(); ++i) {
      const auto a = io.get<double>("attentions." + std::to_string(i));
      test::naive::check_close_to("attentions." + std::to_string(i), a.ptr(), static_cast<long>(a.numel()),
                                  naive.attentions[i], 1e-4);
    }
    // The MAE checkpoints hold the fixed 2-D sin-cos table (as float32), but for tiny_tables*'s.
    const nlohmann::json cfg = vitmae::io::read_json_file(test::data(dir + "/config.json"));
    if (dir.rfind("hf/tiny_tables", 0) != 0 && cfg.value("model_type", std::string()) == "vit_mae") {
      const long d = cfg.at("hidden_size"),
                 g = static_cast<long>(cfg.at("image_size")) / static_cast<long>(cfg.at("patch_size"));
      const vitmae::io::SafetensorsFile weights(test::data(dir + "/model.safetensors"));
      const auto stored = weights.get<double>("vit.embeddings.position_embeddings");
      test::naive::check_close_to("vit.embeddings.position_embeddings", stored.ptr(), static_cast<long>(stored.numel()),
                                  test::naive::sincos_table(d, g), 1e-7);
    }
  }
}
