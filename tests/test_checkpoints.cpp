// SPDX-License-Identifier: Apache-2.0
// Checkpoint files (io/): safetensors (round trips in every dtype, half conversions, malformed and
// truncated files, sharded checkpoints), PyTorch's pytorch_model.bin and the MAE release's .pth
// (zip, pickle, timm names, fused qkv) read as the weights of hf/tiny, and the readers' refusals.
#include "test_util.hpp"

#include <cstring>
#include <fstream>

namespace io = vitmae::io;
using vitmae::Tensor;

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

std::string write(const std::string& dir, const std::string& name, const std::string& bytes) {
  const std::string p = dir + "/" + name;
  std::ofstream(p, std::ios::binary) << bytes;
  return p;
}

/// Replaces the first occurrence of `from` by `to` (same length, so zip offsets stay valid).
std::string patch(std::string bytes, const std::string& from, const std::string& to) {
  REQUIRE(from.size() == to.size());
  const size_t at = bytes.find(from);
  REQUIRE(at != std::string::npos);
  bytes.replace(at, from.size(), to);
  return bytes;
}

/// Every tensor of `a` equals the same-named tensor of the reference safetensors file.
void check_same_weights(const io::TensorSource& a, const std::string& reference) {
  const io::SafetensorsFile ref(reference);
  CHECK(a.names().size() == ref.tensors().size());
  for (const auto& [name, info] : ref.tensors()) {
    INFO(name);
    REQUIRE(a.contains(name));
    CHECK(a.shape(name) == info.shape);
    std::vector<double> x(static_cast<size_t>(info.numel())), y(x.size());
    a.read(name, x.data());
    ref.read(name, y.data());
    CHECK(x == y);
  }
}

}  // namespace

// ---------------------------------------------------------------- safetensors

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

// ---------------------------------------------------------------- PyTorch checkpoints

TEST_CASE("pytorch_model.bin holds exactly the weights of hf/tiny") {
  io::PytorchSource src(test::data("formats/pytorch_bin/pytorch_model.bin"));
  check_same_weights(src, test::data("hf/tiny/model.safetensors"));
}

TEST_CASE("zip64 archives (what torch.save writes past 4 GiB) load the same tensors") {
  // tests/tools/make_zip64.py rewrote pytorch_model.bin with all sizes and offsets in zip64 records.
  io::PytorchSource src(test::data("formats/pytorch_bin_zip64/pytorch_model.bin"));
  check_same_weights(src, test::data("hf/tiny/model.safetensors"));
}

TEST_CASE("the MAE release's checkpoint.pth maps (timm names, split qkv) to the weights of hf/tiny") {
  const auto src = vitmae::open_pretrained_weights(test::data("formats/mae_original/checkpoint.pth"));
  check_same_weights(*src, test::data("hf/tiny/model.safetensors"));
}

TEST_CASE_TEMPLATE("parity formats/pytorch_bin and formats/mae_original through from_pretrained", Scalar, float,
                   double) {
  for (const char* dir : {"formats/pytorch_bin", "formats/mae_original"}) {
    INFO(dir);
    const io::SafetensorsFile ref(test::data(std::string(dir) + "/io.safetensors"));
    const auto model = vitmae::ViTMAEForPreTraining<Scalar>::from_pretrained(test::data(dir));
    const auto px = ref.get<Scalar>("pixel_values");
    const auto nt = ref.get<Scalar>("noise");
    const auto out = model.forward(px, Eigen::Map<const vitmae::Matrix<Scalar>>(nt.ptr(), nt.size(0), nt.size(1)));
    const auto lhs = test::flatten(out.last_hidden_state);
    const auto logits = test::flatten(out.logits);
    test::check_close("last_hidden_state", lhs.data(), static_cast<long>(lhs.size()),
                      ref.get<double>("last_hidden_state"), 1e-4);
    test::check_close("logits", logits.data(), static_cast<long>(logits.size()), ref.get<double>("logits"), 1e-4);
    test::check_close("loss", &out.loss, 1, ref.get<double>("loss"), 1e-4);
    const auto ids = ref.get<std::int64_t>("ids_restore");
    CHECK(std::equal(ids.data.begin(), ids.data.end(), out.ids_restore.data()));
  }
  // A .pth file named directly, with the config beside it; and a preset instead of config.json.
  CHECK_NOTHROW(vitmae::ViTMAEModel<Scalar>::from_pretrained(test::data("formats/mae_original/checkpoint.pth")));
  CHECK_THROWS_WITH_AS(vitmae::ViTMAEModel<Scalar>::from_pretrained(test::data("formats/mae_original"), "mae-vit-base"),
                       doctest::Contains("'vit.embeddings.cls_token' has shape [1, 1, 64], expected [1, 1, 768]"),
                       vitmae::Error);
}

TEST_CASE("a non-contiguous (transposed) view is read as torch would") {
  // Re-point the first (64, 64) weight's stride (64, 1) at (1, 64) in the pickle: the same
  // storage read as the transpose. Exactly that tensor must change, to its transpose.
  const std::string dir = test::tmp_dir("pytorch_strided");
  const std::string good = test::slurp(test::data("formats/pytorch_bin/pytorch_model.bin"));
  const std::string p =
      write(dir, "strided.bin", patch(good, std::string("K@K\x01\x86", 5), std::string("K\x01K@\x86", 5)));
  io::PytorchSource a(test::data("formats/pytorch_bin/pytorch_model.bin")), b(p);
  int changed = 0;
  for (const std::string& name : a.names()) {
    const auto s = a.shape(name);
    std::int64_t n = 1;
    for (auto d : s) n *= d;
    std::vector<float> x(static_cast<size_t>(n)), y(x.size());
    a.read(name, x.data());
    b.read(name, y.data());
    if (x == y) continue;
    ++changed;
    INFO(name);
    REQUIRE(s == std::vector<std::int64_t>{64, 64});
    for (int i = 0; i < 64; ++i)
      for (int j = 0; j < 64; ++j) CHECK(y[static_cast<size_t>(i * 64 + j)] == x[static_cast<size_t>(j * 64 + i)]);
  }
  CHECK(changed == 1);
}

TEST_CASE("pytorch reader errors: not a zip, truncated, unknown global, bad opcode, short storage, deflated entry") {
  const std::string dir = test::tmp_dir("pytorch_bad");
  const std::string good = test::slurp(test::data("formats/pytorch_bin/pytorch_model.bin"));
  auto open = [](const std::string& p) { io::PytorchSource s(p); };

  CHECK_THROWS_WITH_AS(open(write(dir, "text.bin", "this is not a checkpoint at all, just text")),
                       doctest::Contains("not a zip archive"), vitmae::Error);
  CHECK_THROWS_WITH_AS(open(write(dir, "trunc.bin", good.substr(0, good.size() / 2))),
                       doctest::Contains("end-of-central-directory record not found (truncated archive?)"),
                       vitmae::Error);
  // os.system instead of collections.OrderedDict: same length, so the archive stays valid.
  CHECK_THROWS_WITH_AS(
      open(write(dir, "global.bin",
                 patch(good, "collections\nOrderedDict\n", std::string("os\nsystem\n") + std::string(14, '\n')))),
      doctest::Contains("unknown pickle global 'os.system'"), vitmae::Error);
  // The first opcode after PROTO 2 is EMPTY_DICT '}'; make it INST 'i' (protocol 0, calls code).
  {
    std::string b = good;
    const size_t pkl = b.find(std::string("\x80\x02}", 3));
    REQUIRE(pkl != std::string::npos);
    b[pkl + 2] = 'i';
    CHECK_THROWS_WITH_AS(open(write(dir, "opcode.bin", b)), doctest::Contains("unsupported pickle opcode 0x69 ('i')"),
                         vitmae::Error);
  }
  // Storage shorter than its view: claim a 64-element storage holds 65 elements of a (65) view.
  {
    io::PytorchSource src(test::data("formats/pytorch_bin/pytorch_model.bin"));
    CHECK(src.shape("vit.layernorm.weight") == std::vector<std::int64_t>{64});
  }
  {
    // In the pickle, a tensor's size tuple (64,) is "K@\x85" (BININT1 64, TUPLE1); 65 is 'A'.
    const std::string b = patch(good, std::string("K@\x85", 3), std::string("KA\x85", 3));
    CHECK_THROWS_WITH_AS(open(write(dir, "short.bin", b)), doctest::Contains("storage shorter than its view"),
                         vitmae::Error);
  }
  // Deflated entry: set the first central-directory entry's method to 8.
  {
    std::string b = good;
    const size_t cd = b.find("PK\x01\x02");
    REQUIRE(cd != std::string::npos);
    b[cd + 10] = 8;
    CHECK_THROWS_WITH_AS(open(write(dir, "deflate.bin", b)), doctest::Contains("is compressed (method 8)"),
                         vitmae::Error);
    b[cd + 10] = 0;
    b[cd + 8] = 1;  // encrypted flag
    CHECK_THROWS_WITH_AS(open(write(dir, "encrypted.bin", b)), doctest::Contains("is encrypted"), vitmae::Error);
  }
}
