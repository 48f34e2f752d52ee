// SPDX-License-Identifier: Apache-2.0
// PyTorch checkpoints: HF's pytorch_model.bin and the original MAE release's .pth (timm names,
// fused qkv), the zip container and the pickle reader's refusals.
#include "test_util.hpp"

#include <fstream>

namespace io = vitmae::io;
using vitmae::Tensor;

namespace {

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

TEST_CASE("presets have the MAE release's sizes") {
  const auto b = vitmae::Config::preset("mae-vit-base");
  CHECK(b.hidden_size == 768);
  CHECK(b.layer_norm_eps == 1e-6);
  const auto l = vitmae::Config::preset("mae-vit-large");
  CHECK(l.hidden_size == 1024);
  CHECK(l.num_hidden_layers == 24);
  CHECK(l.num_attention_heads == 16);
  const auto h = vitmae::Config::preset("mae-vit-huge");
  CHECK(h.hidden_size == 1280);
  CHECK(h.num_hidden_layers == 32);
  CHECK(h.patch_size == 14);
  CHECK(h.decoder_hidden_size == 512);
  CHECK_THROWS_WITH_AS(vitmae::Config::preset("mae-vit-giant"), doctest::Contains("unknown name 'mae-vit-giant'"),
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
