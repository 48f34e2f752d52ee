// SPDX-License-Identifier: Apache-2.0
// io/safetensors.hpp: round trips in every dtype, half-precision conversions, and every kind of
// malformed file rejected with a message that names the problem.
#include "test_util.hpp"

#include <cstring>
#include <fstream>

namespace io = vitmae::io;

namespace {

/// Writes 8-byte length + header + data exactly as given (no validation: for malformed files).
std::string write_raw(const std::string& name, const std::string& header, const std::string& data,
                      std::uint64_t length_override = 0) {
  const std::string path = test::tmp_dir("safetensors_raw") + "/" + name;
  std::ofstream f(path, std::ios::binary);
  const std::uint64_t n = length_override ? length_override : header.size();
  f.write(reinterpret_cast<const char*>(&n), 8);
  f << header << data;
  return path;
}

}  // namespace

TEST_CASE("writer and reader round-trip F64, F32, I64 exactly and F16/BF16 by rounding") {
  const std::string path = test::tmp_dir("safetensors_rt") + "/t.safetensors";
  const std::vector<double> v{1.0, -2.5, 3.14159265358979, 65504.0, 1e-8, 0.0};
  io::SafetensorsWriter w;
  w.set_metadata("format", "pt");
  w.add("a.f64", v.data(), {2, 3}, io::DType::F64);
  w.add("a.f32", v.data(), {6}, io::DType::F32);
  w.add("a.f16", v.data(), {3, 2}, io::DType::F16);
  w.add("a.bf16", v.data(), {6}, io::DType::BF16);
  const std::vector<std::int64_t> ids{5, -1, 1LL << 40};
  w.add("ids", ids.data(), {3}, io::DType::I64);
  w.save(path);

  const io::SafetensorsFile f(path);
  CHECK(f.metadata().at("format") == "pt");
  CHECK(f.info("a.f64").shape == std::vector<std::int64_t>{2, 3});
  CHECK(f.get<double>("a.f64").data == v);
  const auto f32 = f.get<double>("a.f32").data;
  for (size_t i = 0; i < v.size(); ++i) CHECK(f32[i] == static_cast<double>(static_cast<float>(v[i])));
  const auto f16 = f.get<double>("a.f16").data;
  CHECK(f16[0] == 1.0);
  CHECK(f16[1] == -2.5);
  CHECK(f16[2] == 3.140625);                             // nearest binary16
  CHECK(f16[3] == 65504.0);                              // largest binary16
  CHECK(f16[4] == doctest::Approx(1e-8).epsilon(0.05));  // subnormal: 2^-24 * round(1e-8 / 2^-24)
  const auto bf16 = f.get<double>("a.bf16").data;
  CHECK(bf16[2] == 3.140625);
  CHECK(bf16[3] == 65536.0);  // 65504 rounds up in bfloat16
  CHECK(f.get<std::int64_t>("ids").data == ids);
}

TEST_CASE("half conversions: known bit patterns") {
  using namespace vitmae::detail;
  CHECK(f16_to_float(0x3c00) == 1.0f);
  CHECK(f16_to_float(0xc000) == -2.0f);
  CHECK(f16_to_float(0x7bff) == 65504.0f);
  CHECK(f16_to_float(0x0001) == std::ldexp(1.0f, -24));
  CHECK(std::isinf(f16_to_float(0x7c00)));
  CHECK(std::isnan(f16_to_float(0x7e00)));
  CHECK(float_to_f16(1.0f) == 0x3c00);
  CHECK(float_to_f16(65520.0f) == 0x7c00);  // rounds to inf
  CHECK(float_to_f16(std::ldexp(1.0f, -24)) == 0x0001);
  CHECK(bf16_to_float(0x3f80) == 1.0f);
  CHECK(float_to_bf16(1.0f) == 0x3f80);
  for (std::uint32_t h = 0; h < 0x7c00; ++h) CHECK(float_to_f16(f16_to_float(static_cast<std::uint16_t>(h))) == h);
}

TEST_CASE("malformed safetensors files are rejected with the reason") {
  const std::string ok_data(8, '\0');
  auto open = [](const std::string& p) { io::SafetensorsFile f(p); };
  CHECK_THROWS_WITH_AS(open("/nonexistent.safetensors"), doctest::Contains("/nonexistent.safetensors: cannot open"),
                       vitmae::Error);
  {
    const std::string p = test::tmp_dir("safetensors_short") + "/short.safetensors";
    std::ofstream(p, std::ios::binary) << "abc";
    CHECK_THROWS_WITH_AS(open(p), doctest::Contains("3 bytes, expected at least 8"), vitmae::Error);
  }
  CHECK_THROWS_WITH_AS(open(write_raw("big.safetensors", "{}", "", 1000)),
                       doctest::Contains("header length 1000 is larger than the file"), vitmae::Error);
  CHECK_THROWS_WITH_AS(open(write_raw("huge.safetensors", "{}", "", 1ULL << 62)),
                       doctest::Contains("is larger than the limit"), vitmae::Error);
  CHECK_THROWS_WITH_AS(open(write_raw("notjson.safetensors", "{\"a\": [1, 2", "")),
                       doctest::Contains("header is not valid JSON"), vitmae::Error);
  CHECK_THROWS_WITH_AS(open(write_raw("array.safetensors", "[1, 2]  ", "")),
                       doctest::Contains("header must be a JSON object"), vitmae::Error);
  CHECK_THROWS_WITH_AS(open(write_raw("dtype.safetensors",
                                      R"({"x": {"dtype": "F128", "shape": [1], "data_offsets": [0, 8]}})", ok_data)),
                       doctest::Contains("tensor 'x': unknown dtype 'F128'"), vitmae::Error);
  CHECK_THROWS_WITH_AS(
      open(write_raw("neg.safetensors", R"({"x": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", ok_data)),
      doctest::Contains("must hold non-negative integers"), vitmae::Error);
  CHECK_THROWS_WITH_AS(
      open(write_raw("overflow.safetensors",
                     R"({"x": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]}})", ok_data)),
      doctest::Contains("element count that overflows"), vitmae::Error);
  CHECK_THROWS_WITH_AS(open(write_raw("range.safetensors",
                                      R"({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", ok_data)),
                       doctest::Contains("run past the data section (8 bytes)"), vitmae::Error);
  CHECK_THROWS_WITH_AS(open(write_raw("reversed.safetensors",
                                      R"({"x": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}})", ok_data)),
                       doctest::Contains("are reversed"), vitmae::Error);
  CHECK_THROWS_WITH_AS(
      open(write_raw("size.safetensors", R"({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}})", ok_data)),
      doctest::Contains("span 8 bytes, expected shape [1] x F32 = 4"), vitmae::Error);
  CHECK_THROWS_WITH_AS(open(write_raw("overlap.safetensors",
                                      R"({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                                      R"( "y": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}})",
                                      ok_data)),
                       doctest::Contains("overlap"), vitmae::Error);
  CHECK_THROWS_WITH_AS(open(write_raw("dup.safetensors",
                                      R"({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                                      R"( "x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                                      ok_data)),
                       doctest::Contains("duplicate tensor name 'x'"), vitmae::Error);
  CHECK_THROWS_WITH_AS(open(write_raw("meta.safetensors", R"({"__metadata__": {"a": 1}})", "")),
                       doctest::Contains("__metadata__ 'a' must be a string"), vitmae::Error);
  CHECK_THROWS_WITH_AS(
      open(write_raw("offsets.safetensors", R"({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", ok_data)),
      doctest::Contains("'data_offsets' must be an array [begin, end]"), vitmae::Error);
}

TEST_CASE("a truncated checkpoint is an error, not a crash") {
  std::ifstream in(test::data("hf/tiny/model.safetensors"), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string p = test::tmp_dir("safetensors_trunc") + "/model.safetensors";
  std::ofstream(p, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  CHECK_THROWS_WITH_AS(io::SafetensorsFile{p}, doctest::Contains("run past the data section"), vitmae::Error);
}

TEST_CASE("sharded checkpoints: the index maps names to shards, a tensor missing from its shard is named") {
  const auto src = io::open_checkpoint_weights(test::data("formats/sharded"));
  CHECK(src->contains("vit.embeddings.cls_token"));
  CHECK(src->contains("decoder.decoder_pred.bias"));
  CHECK(src->names().size() == io::SafetensorsFile(test::data("hf/tiny/model.safetensors")).tensors().size());

  const std::string dir = test::tmp_dir("sharded_bad");
  std::system(("cp " + test::data("formats/sharded") + "/model-0000* " + dir).c_str());
  std::ifstream in(test::data("formats/sharded/model.safetensors.index.json"));
  nlohmann::json j = nlohmann::json::parse(in);
  const std::string wrong = j["weight_map"]["decoder.decoder_pred.bias"];
  CHECK(wrong == "model-00002-of-00002.safetensors");
  j["weight_map"]["decoder.decoder_pred.bias"] = "model-00001-of-00002.safetensors";
  std::ofstream(dir + "/model.safetensors.index.json") << j.dump();
  CHECK_THROWS_WITH_AS(io::open_checkpoint_weights(dir),
                       doctest::Contains("tensor 'decoder.decoder_pred.bias' is listed in shard "
                                         "'model-00001-of-00002.safetensors' but that file does not hold it"),
                       vitmae::Error);
  j["weight_map"]["decoder.decoder_pred.bias"] = "../evil.safetensors";
  std::ofstream(dir + "/model.safetensors.index.json") << j.dump();
  CHECK_THROWS_WITH_AS(io::open_checkpoint_weights(dir), doctest::Contains("must be a plain file name"), vitmae::Error);
}
