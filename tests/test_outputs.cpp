// SPDX-License-Identifier: Apache-2.0
// outputs.hpp: a forward's inputs read from and its outputs written to safetensors under HF's
// names, round-tripped on the tiny fixtures and compared with PyTorch's tensors; io/npy.hpp: the
// .npy format 1.0 bytes, header checked byte for byte.
#include "test_util.hpp"

#include <vitmae/io/npy.hpp>
#include <vitmae/models/outputs.hpp>

#include <cstring>
#include <set>

namespace io = vitmae::io;

namespace {

/// The names a file holds (without __metadata__).
std::set<std::string> tensor_names(const io::SafetensorsFile& f) {
  std::set<std::string> names;
  for (const auto& [name, info] : f.tensors()) names.insert(name);
  return names;
}

/// `got`'s tensor `name` is what `written` holds, bit for bit, and within `atol` of the
/// fixture's, with the fixture's shape.
template <class Scalar>
void check_written(const io::SafetensorsFile& got, const io::SafetensorsFile& fixture, const std::string& name,
                   const std::vector<Scalar>& written, double atol) {
  CAPTURE(name);
  REQUIRE(got.contains(name));
  CHECK(got.info(name).shape == fixture.info(name).shape);
  CHECK(got.get<Scalar>(name).data == written);
  test::check_close(name, written.data(), static_cast<long>(written.size()), fixture.get<double>(name), atol);
}

}  // namespace

TEST_CASE("add_outputs: ViTMAEForPreTraining's outputs under HF's names, as PyTorch's, read back bit for bit") {
  const io::SafetensorsFile in(test::data("hf/tiny/io.safetensors"));
  const auto model = vitmae::ViTMAEForPreTraining<float>::from_pretrained(test::data("hf/tiny"));
  const vitmae::Tensor<float> pixels = vitmae::read_pixel_values<float>(in);
  const std::optional<vitmae::Matrix<float>> noise = vitmae::read_noise<float>(in);
  REQUIRE(noise);
  CHECK(noise->rows() == 2);
  CHECK(noise->cols() == 64);
  vitmae::ForwardOptions opts;
  opts.output_hidden_states = opts.output_attentions = true;
  const vitmae::PreTrainingOutput<float> out = model.forward(pixels, *noise, opts);

  io::SafetensorsWriter w;
  vitmae::add_outputs(w, out, io::DType::F32);
  CHECK(w.names() == std::vector<std::string>{"last_hidden_state", "mask", "ids_restore", "logits", "loss",
                                              "hidden_states.0", "hidden_states.1", "hidden_states.2", "attentions.0",
                                              "attentions.1"});
  const std::string path = test::tmp_dir("outputs_pretraining") + "/out.safetensors";
  w.save(path);
  const io::SafetensorsFile got(path);
  CHECK(got.info("ids_restore").dtype == io::DType::I64);
  CHECK(got.info("attentions.0").shape == std::vector<std::int64_t>{2, 4, 17, 17});
  check_written(got, in, "last_hidden_state", test::flatten(out.last_hidden_state), 1e-4);
  check_written(got, in, "logits", test::flatten(out.logits), 1e-4);
  check_written(got, in, "loss", std::vector<float>{out.loss}, 1e-5);
  check_written(got, in, "mask", std::vector<float>(out.mask.data(), out.mask.data() + out.mask.size()), 0.0);
  check_written(got, in, "ids_restore",
                std::vector<std::int64_t>(out.ids_restore.data(), out.ids_restore.data() + out.ids_restore.size()),
                0.0);
  for (int i = 0; i < 3; ++i)
    check_written(got, in, "hidden_states." + std::to_string(i),
                  test::flatten(out.hidden_states[static_cast<size_t>(i)]), 1e-4);
  for (int i = 0; i < 2; ++i)
    check_written(got, in, "attentions." + std::to_string(i), test::flatten(out.attentions[static_cast<size_t>(i)]),
                  1e-4);
}

TEST_CASE("save_outputs: ViTMAEModel in float64 against PyTorch's float64 references, with metadata") {
  const io::SafetensorsFile in(test::data("hf/tiny/io.safetensors"));
  const auto model = vitmae::ViTMAEModel<double>::from_pretrained(test::data("hf/tiny"));
  const vitmae::ModelOutput<double> out =
      model.forward(vitmae::read_pixel_values<double>(in), *vitmae::read_noise<double>(in));
  const std::string path = test::tmp_dir("outputs_model") + "/out.safetensors";
  vitmae::save_outputs(path, out, io::DType::F64, {{"interpolate_pos_encoding", "false"}});
  const io::SafetensorsFile got(path);
  CHECK(tensor_names(got) ==
        std::set<std::string>{"last_hidden_state", "mask", "ids_restore"});  // no decoder: no logits, no loss
  CHECK(got.metadata().at("interpolate_pos_encoding") == "false");
  CHECK(got.info("last_hidden_state").dtype == io::DType::F64);
  const vitmae::Tensor<double> h = got.get<double>("last_hidden_state");
  CHECK(h.shape == std::vector<vitmae::Index>{2, 17, 64});
  test::check_close("last_hidden_state", h.ptr(), static_cast<long>(h.numel()), in.get<double>("last_hidden_state_f64"),
                    1e-12);
  const vitmae::Tensor<double> ids = got.get<double>("ids_restore");
  test::check_close("ids_restore", ids.ptr(), static_cast<long>(ids.numel()), in.get<double>("ids_restore"), 0.0);
}

TEST_CASE("add_outputs: ViTForImageClassification's logits, last_hidden_state and loss with the fixture's labels") {
  const io::SafetensorsFile in(test::data("hf_vit/cls_tiny/io.safetensors"));
  const auto model = vitmae::ViTForImageClassification<float>::from_pretrained(test::data("hf_vit/cls_tiny"));
  const std::optional<vitmae::Labels<float>> labels = vitmae::read_labels<float>(in);
  REQUIRE(labels);
  CHECK(labels->integer);
  CHECK(labels->classes == in.get<std::int64_t>("labels").data);
  CHECK_FALSE(vitmae::read_noise<float>(in));
  const auto out = model.forward(vitmae::read_pixel_values<float>(in), &*labels);
  io::SafetensorsWriter w;
  vitmae::add_outputs(w, out, io::DType::F32);
  CHECK(w.names() == std::vector<std::string>{"logits", "last_hidden_state", "loss"});
  const std::string path = test::tmp_dir("outputs_classifier") + "/out.safetensors";
  w.save(path);
  const io::SafetensorsFile got(path);
  check_written(got, in, "logits", std::vector<float>(out.logits.data(), out.logits.data() + out.logits.size()), 1e-4);
  check_written(got, in, "last_hidden_state", test::flatten(out.last_hidden_state), 1e-4);
  check_written(got, in, "loss", std::vector<float>{*out.loss}, 1e-5);
  // Without labels there is no loss.
  io::SafetensorsWriter w2;
  vitmae::add_outputs(w2, model.forward(vitmae::read_pixel_values<float>(in)), io::DType::F32);
  CHECK(w2.names() == std::vector<std::string>{"logits", "last_hidden_state"});
}

TEST_CASE("read_pixel_values, read_noise, read_labels: float targets, and files that lack or misshape them") {
  const std::string dir = test::tmp_dir("outputs_inputs");
  io::SafetensorsWriter w;
  const std::vector<float> targets{0.f, 1.f, 0.5f, 1.f, 0.f, 0.25f};
  w.add("labels", targets.data(), {2, 3}, io::DType::F32);
  w.add("noise", targets.data(), {6}, io::DType::F32);
  w.add("pixel_values", targets.data(), {2, 3}, io::DType::F32);
  w.save(dir + "/bad.safetensors");
  const io::SafetensorsFile f(dir + "/bad.safetensors");
  const std::optional<vitmae::Labels<float>> labels = vitmae::read_labels<float>(f);
  REQUIRE(labels);
  CHECK_FALSE(labels->integer);
  REQUIRE(labels->targets.rows() == 2);
  REQUIRE(labels->targets.cols() == 3);
  CHECK(labels->targets(1, 2) == 0.25f);
  CHECK_THROWS_WITH_AS(
      vitmae::read_pixel_values<float>(f),
      ("vitmae: " + dir + "/bad.safetensors: 'pixel_values' must be [batch, channels, height, width], got [2, 3]")
          .c_str(),
      vitmae::Error);
  CHECK_THROWS_WITH_AS(
      vitmae::read_noise<float>(f),
      ("vitmae: " + dir + "/bad.safetensors: 'noise' has shape [6], expected [batch, num_patches]").c_str(),
      vitmae::Error);

  io::SafetensorsWriter empty;
  empty.add("x", targets.data(), {1}, io::DType::F32);
  empty.save(dir + "/empty.safetensors");
  const io::SafetensorsFile e(dir + "/empty.safetensors");
  CHECK_THROWS_WITH_AS(vitmae::read_pixel_values<float>(e),
                       ("vitmae: " + dir + "/empty.safetensors: no tensor 'pixel_values'").c_str(), vitmae::Error);
  CHECK_FALSE(vitmae::read_labels<float>(e));
}

TEST_CASE(
    "io::npy: format 1.0 bytes, numpy's header dict padded with spaces to a multiple of 64, data little-endian C "
    "order") {
  const std::vector<float> x{1.5f, -2.f, 3.25f, 0.f, 7.f, -0.5f};
  const std::string b = io::npy(x.data(), {2, 3});
  // magic, version 1.0, header length 118 (little-endian), the dict, spaces to byte 127, '\n'.
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  const std::string header = dict + std::string(117 - dict.size(), ' ') + "\n";
  CHECK(b.substr(0, 10) == std::string("\x93NUMPY\x01\x00\x76\x00", 10));
  CHECK(b.substr(10, 118) == header);
  REQUIRE(b.size() == 128 + x.size() * 4);
  CHECK(std::memcmp(b.data() + 128, x.data(), x.size() * 4) == 0);
  CHECK(b.substr(128, 4) == std::string("\x00\x00\xc0\x3f", 4));  // 1.5f little-endian

  // One dimension is Python's one-element tuple; doubles and int64 name their own descr.
  const std::vector<double> d{0.25, 1e300, -3};
  const std::string bd = io::npy(d.data(), {3});
  CHECK(bd.substr(10, 57) == "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }");
  CHECK(bd.substr(8, 2) == std::string("\x76\x00", 2));  // 118 bytes of header again: the data at 128
  CHECK(bd.substr(67, 61) == std::string(60, ' ') + "\n");
  REQUIRE(bd.size() == 128 + 24);
  CHECK(std::memcmp(bd.data() + 128, d.data(), 24) == 0);
  const std::vector<std::int64_t> ids{7, -1};
  const std::string bi = io::npy(ids.data(), {1, 2});
  CHECK(bi.find("{'descr': '<i8', 'fortran_order': False, 'shape': (1, 2), }") == 10);
  CHECK(bi.size() == 128 + 16);

  const std::string path = test::tmp_dir("npy") + "/x.npy";
  io::save_npy(path, x.data(), {2, 3});
  CHECK(test::slurp(path) == b);
}
