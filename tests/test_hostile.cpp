// SPDX-License-Identifier: Apache-2.0
// Bad input and failing writes: NaN propagation, atomic writes that leave the previous file
// intact, and the remaining malformed-input cases (IDX files and gzip among them, here so that
// CI's sanitizer pass runs them).
#include "test_util.hpp"

#include <vitmae/train/labelled.hpp>

#include <sys/resource.h>
#include <csignal>
#include <fstream>

namespace io = vitmae::io;
using vitmae::Tensor;

TEST_CASE("NaN in pixel_values is allowed and propagates like in PyTorch") {
  const auto m = vitmae::ViTMAEForPreTraining<float>::from_pretrained(test::data("hf/tiny"));
  Tensor<float> px({1, 3, 32, 32}, 0.1f);
  px.data[0] = std::numeric_limits<float>::quiet_NaN();  // pixel (0, 0) of channel 0: patch 0
  const vitmae::Matrix<float> noise = Eigen::RowVectorXf::LinSpaced(64, 0.0f, 1.0f);  // keeps patches 0..15
  const auto out = m.forward(px, noise);
  CHECK(std::isnan(out.last_hidden_state[0](1, 0)));  // patch 0's token
  CHECK(std::isnan(out.loss));
  // Other tokens attend to the NaN token, so (as in torch) NaN spreads through attention.
  CHECK(std::isnan(out.last_hidden_state[0](0, 0)));
}

TEST_CASE("a failing checkpoint write (file size limit: like a full disk) leaves the previous checkpoint loadable") {
  const std::string dir = test::tmp_dir("atomic_ckpt");
  auto model = vitmae::ViTMAEForPreTraining<float>::from_pretrained(test::data("hf/tiny"));
  model.save_pretrained(dir);
  std::ifstream before_in(dir + "/model.safetensors", std::ios::binary);
  const std::string before((std::istreambuf_iterator<char>(before_in)), std::istreambuf_iterator<char>());

  auto changed = model;
  changed.vit.layernorm.bias.setConstant(7.0f);
  // Limit file size below the checkpoint's (SIGXFSZ ignored so write() fails with EFBIG).
  rlimit old{};
  getrlimit(RLIMIT_FSIZE, &old);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit small = old;
  small.rlim_cur = 100000;
  REQUIRE(setrlimit(RLIMIT_FSIZE, &small) == 0);
  CHECK_THROWS_WITH_AS(changed.save_pretrained(dir),
                       doctest::Contains("model.safetensors: write failed: File too large"), vitmae::Error);
  setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);

  std::ifstream after_in(dir + "/model.safetensors", std::ios::binary);
  const std::string after((std::istreambuf_iterator<char>(after_in)), std::istreambuf_iterator<char>());
  CHECK(after == before);
  const auto back = vitmae::ViTMAEForPreTraining<float>::from_pretrained(dir);
  CHECK(back.vit.layernorm.bias == model.vit.layernorm.bias);
  // No temporary file is left behind.
  CHECK(std::system(("ls " + dir + " | grep -q tmp").c_str()) != 0);
}

TEST_CASE("an interrupted write (exception mid-file) leaves the old file and no temporary") {
  const std::string dir = test::tmp_dir("atomic_interrupt");
  io::write_file_atomic(dir + "/f.txt", std::string("old contents"));
  CHECK_THROWS_AS(io::write_file_atomic(dir + "/f.txt",
                                        [](std::FILE* f) {
                                          std::fputs("half of the new", f);
                                          throw vitmae::Error("interrupted");
                                        }),
                  vitmae::Error);
  std::ifstream in(dir + "/f.txt");
  const std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(s == "old contents");
  CHECK(std::system(("ls " + dir + " | grep -q tmp").c_str()) != 0);
  CHECK_THROWS_WITH_AS(io::write_file_atomic("/nonexistent/dir/f.txt", std::string("x")),
                       doctest::Contains("/nonexistent/dir/f.txt: cannot create"), vitmae::Error);
}

TEST_CASE("images of zero size and index files that are not JSON are errors") {
  const std::string dir = test::tmp_dir("hostile_misc");
  std::ofstream(dir + "/zero.pgm", std::ios::binary) << "P5\n0 0\n255\n";
  CHECK_THROWS_WITH_AS(io::load_image_raw(dir + "/zero.pgm"), doctest::Contains("zero.pgm: image has zero size (0x0)"),
                       vitmae::Error);
  std::ofstream(dir + "/model.safetensors.index.json") << "{\"weight_map\": ";
  CHECK_THROWS_WITH_AS(io::open_sharded_safetensors(dir + "/model.safetensors.index.json"),
                       doctest::Contains("not valid JSON"), vitmae::Error);
  std::ofstream(dir + "/model.safetensors.index.json") << "{\"metadata\": {}}";
  CHECK_THROWS_WITH_AS(io::open_sharded_safetensors(dir + "/model.safetensors.index.json"),
                       doctest::Contains("expected an object with a 'weight_map' object"), vitmae::Error);
  std::ofstream(dir + "/model.safetensors.index.json") << R"({"weight_map": {"a": "missing-shard.safetensors"}})";
  CHECK_THROWS_WITH_AS(io::open_sharded_safetensors(dir + "/model.safetensors.index.json"),
                       doctest::Contains("missing-shard.safetensors: cannot open"), vitmae::Error);
}

TEST_CASE("fuzz finding: a JPEG whose Huffman table overflows stb's is refused before decoding") {
  // Found by tests/fuzz/fuzz_image: stb_image 2.27 writes past its Huffman table for a DHT
  // segment declaring more than 256 codes (UBSan: index 257 out of bounds).
  CHECK_THROWS_WITH_AS(io::load_image_raw(test::data("fuzz/dht_overflow.jpg")),
                       doctest::Contains("corrupt JPEG: a Huffman table declares 586 codes, at most 256 are allowed"),
                       vitmae::Error);
}

TEST_CASE("IDX files, gzip or not: pixels and labels as Python wrote them, and every way they can be broken") {
  using vitmae::train::LabelledDataset;
  const std::vector<std::string> abc{"a", "b", "c"};
  // tests/tools/make_idx.py: pixel (i, r, c) = (17 i + 5 r + c) % 256, labels 2 0 1 2 1.
  const auto d =
      LabelledDataset::idx(test::data("idx/images-idx3-ubyte.gz"), test::data("idx/labels-idx1-ubyte.gz"), abc);
  REQUIRE(d.size() == 5);
  CHECK(d.labels() == std::vector<std::int64_t>{2, 0, 1, 2, 1});
  for (size_t i = 0; i < 5; ++i) {
    const auto im = d.image(i, 1);
    REQUIRE((im.width == 4 && im.height == 3 && im.channels == 1));
    for (int r = 0; r < 3; ++r)
      for (int c = 0; c < 4; ++c) CHECK(im.at(r, c, 0) == (17 * i + 5 * r + c) % 256);
  }
  CHECK(d.image(3, 3).channels == 3);
  CHECK(d.source(4) == test::data("idx/images-idx3-ubyte.gz") + "#4");
  // Uncompressed labels read the same.
  CHECK(
      LabelledDataset::idx(test::data("idx/images-idx3-ubyte.gz"), test::data("idx/labels-idx1-ubyte"), abc).labels() ==
      d.labels());
  CHECK_THROWS_WITH_AS(
      LabelledDataset::idx(test::data("idx/bad-magic-idx3-ubyte.gz"), test::data("idx/labels-idx1-ubyte.gz"), abc),
      doctest::Contains("bad-magic-idx3-ubyte.gz: not an IDX image file (magic number 2049, expected 2051"),
      vitmae::Error);
  CHECK_THROWS_WITH_AS(
      LabelledDataset::idx(test::data("idx/truncated-idx3-ubyte.gz"), test::data("idx/labels-idx1-ubyte.gz"), abc),
      doctest::Contains(
          "truncated-idx3-ubyte.gz: truncated or oversized body: 53 bytes of pixels, the header says 5 images"),
      vitmae::Error);
  CHECK_THROWS_WITH_AS(
      LabelledDataset::idx(test::data("idx/cut-gzip-idx3-ubyte.gz"), test::data("idx/labels-idx1-ubyte.gz"), abc),
      doctest::Contains("cut-gzip-idx3-ubyte.gz"), vitmae::Error);
  CHECK_THROWS_WITH_AS(
      LabelledDataset::idx(test::data("idx/images-idx3-ubyte.gz"), test::data("idx/labels-idx1-ubyte.gz"), {"a", "b"}),
      doctest::Contains("labels-idx1-ubyte.gz: label 2 of image 0 is out of range: 2 classes"), vitmae::Error);
  CHECK_THROWS_WITH_AS(
      LabelledDataset::idx(test::data("idx/labels-idx1-ubyte.gz"), test::data("idx/labels-idx1-ubyte.gz"), abc),
      doctest::Contains("not an IDX image file"), vitmae::Error);
  // Seeded per-class subsets: reproducible, balanced, in dataset order; the rest is the complement.
  std::vector<size_t> rest;
  const auto s = d.per_class_subset(1, 5, &rest);
  CHECK(s.size() == 3);
  CHECK(rest.size() == 2);
  std::vector<std::int64_t> got = s.labels();
  std::sort(got.begin(), got.end());
  CHECK(got == std::vector<std::int64_t>{0, 1, 2});
  CHECK(d.per_class_subset(1, 5).labels() == s.labels());
  CHECK_THROWS_WITH_AS(d.per_class_subset(2, 5),
                       doctest::Contains("class 'a' has 1 images, fewer than the 2 asked for"), vitmae::Error);
}
