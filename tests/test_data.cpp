// SPDX-License-Identifier: Apache-2.0
// The training data (train/data.hpp, train/labelled.hpp): crop parameters, flips and augmentation,
// image folders and list files (labelled or not), damaged files left out, hold-out splits,
// shrinking on decoding, and the loader's determinism across worker counts.
#include "test_util.hpp"

#include <vitmae/train.hpp>

#include <sys/stat.h>
#include <algorithm>
#include <fstream>
#include <set>

namespace io = vitmae::io;
namespace train = vitmae::train;
using test::copy;
using test::kNotAnImage;
using test::processor;
using vitmae::Index;
using vitmae::Matrix;

namespace {

/// A list file of `per_class` lines for each of `classes` (the files need not exist to be listed).
std::string list_file(const std::string& dir, int classes, int per_class) {
  std::string text;
  for (int c = 0; c < classes; ++c)
    for (int k = 0; k < per_class; ++k)
      text += "img-" + std::to_string(c) + "-" + std::to_string(k) + ".png\tclass " + std::to_string(c) + "\n";
  io::write_file_atomic(dir + "/list.txt", text);
  return dir + "/list.txt";
}

}  // namespace

// ---------------------------------------------------------------- images, crops and the loader

TEST_CASE("random resized crop: boxes inside the image, areas and ratios in range, torchvision's fallback") {
  train::AugmentOptions o;
  std::mt19937_64 rng(3);
  int in_range = 0;
  double smallest = 1, largest = 0;
  for (int i = 0; i < 2000; ++i) {
    const int H = 50 + i % 300, W = H / 2 + (i * 7) % (3 * H / 2);  // aspect 1/2 to 2: a fitting crop exists
    const train::CropBox b = train::random_resized_crop_box(H, W, o, rng);
    REQUIRE(b.top >= 0);
    REQUIRE(b.left >= 0);
    REQUIRE(b.top + b.height <= H);
    REQUIRE(b.left + b.width <= W);
    // Width and height are rounded to whole pixels, so allow half a pixel each way.
    const double h = b.height, w = b.width, area = static_cast<double>(H) * W;
    const bool ok =
        (w + 0.5) * (h + 0.5) >= 0.2 * area && (w + 0.5) / (h - 0.5) >= 0.75 && (w - 0.5) / (h + 0.5) <= 4.0 / 3.0;
    in_range += ok;
    smallest = std::min(smallest, w * h / area);
    largest = std::max(largest, w * h / area);
  }
  CHECK(in_range == 2000);
  MESSAGE("crop areas from " << smallest << " to " << largest << " of the image");
  CHECK(smallest < 0.25);  // the whole range is used
  CHECK(largest > 0.9);
  // A 10x1000 strip: no crop of area >= 20% fits the ratio range, so ten tries fail and the
  // fallback takes the full height with width round(10 * 4/3) = 13, centred: left (1000-13)/2.
  const train::CropBox f = train::random_resized_crop_box(10, 1000, o, rng);
  CHECK(f.top == 0);
  CHECK(f.height == 10);
  CHECK(f.width == 13);
  CHECK(f.left == 493);
  // And a 1000x10 column: width 10, height round(10 / (3/4)) = 13.
  const train::CropBox g = train::random_resized_crop_box(1000, 10, o, rng);
  CHECK(g.width == 10);
  CHECK(g.height == 13);
  CHECK(g.top == 493);
}

TEST_CASE("crop, flip and augment: pixels where they belong") {
  io::Image8 img{5, 3, 3, {}};
  for (int i = 0; i < 5 * 3 * 3; ++i) img.data.push_back(static_cast<std::uint8_t>(i * 3));
  const io::Image8 c = train::crop(img, {1, 2, 2, 3});
  REQUIRE(c.width == 3);
  REQUIRE(c.height == 2);
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 3; ++x)
      for (int ch = 0; ch < 3; ++ch) CHECK(c.at(y, x, ch) == img.at(y + 1, x + 2, ch));
  const io::Image8 f = train::hflip(img);
  for (int y = 0; y < 3; ++y)
    for (int x = 0; x < 5; ++x) CHECK(f.at(y, x, 1) == img.at(y, 4 - x, 1));
  CHECK_THROWS_WITH_AS(train::crop(img, {2, 0, 2, 5}), doctest::Contains("outside the 5x3 image"), vitmae::Error);
  const io::Image8 u = train::vflip(img), t = train::transpose(img);
  REQUIRE(t.width == 3);
  REQUIRE(t.height == 5);
  for (int y = 0; y < 3; ++y)
    for (int x = 0; x < 5; ++x)
      for (int ch = 0; ch < 3; ++ch) {
        CHECK(u.at(y, x, ch) == img.at(2 - y, x, ch));
        CHECK(t.at(x, y, ch) == img.at(y, x, ch));
      }

  // Without crop and flip, augment is exactly the processor's resize (HF's preprocessing).
  const io::Image8 photo = io::load_image(test::data("images/coffee.png"), 3);
  const vitmae::ImageProcessor p = processor(24);
  train::AugmentOptions none;
  none.random_crop = false;
  none.hflip = false;
  std::mt19937_64 rng(0);
  CHECK(train::augment(photo, p, none, rng).data == p.resize(photo).data);
  // The default options crop: the view is 24x24 and differs from the plain resize.
  const io::Image8 v = train::augment(photo, p, train::AugmentOptions{}, rng);
  CHECK(v.width == 24);
  CHECK(v.height == 24);
  CHECK(v.data != p.resize(photo).data);

  // The extras: every view is one of the 8 orientations of the plain resize, channels permuted.
  const io::Image8 base = p.resize(photo);
  train::AugmentOptions extras = none;
  extras.hflip = extras.vflip = extras.transpose = extras.channel_shuffle = true;
  std::set<std::vector<std::uint8_t>> seen;
  for (int i = 0; i < 400; ++i) {
    const io::Image8 w = train::augment(photo, p, extras, rng);
    bool found = false;
    for (int k = 0; k < 8 && !found; ++k) {
      io::Image8 o = base;
      if (k & 1) o = train::hflip(o);
      if (k & 2) o = train::vflip(o);
      if (k & 4) o = train::transpose(o);
      int perm[3] = {0, 1, 2};
      do {
        bool same = true;
        for (size_t j = 0; j < o.data.size() && same; ++j)
          same = w.data[j] == o.data[j - j % 3 + static_cast<size_t>(perm[j % 3])];
        found = same;
      } while (!found && std::next_permutation(perm, perm + 3));
    }
    CHECK(found);
    seen.insert(w.data);
  }
  CHECK(seen.size() == 48);  // 8 orientations x 6 channel orders, all drawn
}

TEST_CASE("datasets: a folder recursively, a list file, clear errors") {
  const std::string dir = test::tmp_dir("dataset");
  ::mkdir((dir + "/sub").c_str(), 0755);
  std::system(("cp '" + test::data("images/coffee.png") + "' '" + dir + "/b.png'").c_str());
  std::system(("cp '" + test::data("images/rocket.jpg") + "' '" + dir + "/sub/a.JPG'").c_str());
  io::write_file_atomic(dir + "/notes.txt", std::string("not an image"));
  const auto d = train::ImageDataset::open(dir, 3);
  REQUIRE(d.size() == 2);
  CHECK(d.files()[0] == dir + "/b.png");
  CHECK(d.files()[1] == dir + "/sub/a.JPG");
  CHECK(d.image(1)->width == 640);

  io::write_file_atomic(dir + "/list.txt", std::string("# training images\n\nsub/a.JPG\n  b.png  \n" +
                                                       test::data("images/camera.png") + "\n"));
  const auto l = train::ImageDataset::open(dir + "/list.txt", 3, 100);
  REQUIRE(l.size() == 3);
  CHECK(l.files()[0] == dir + "/sub/a.JPG");
  CHECK(l.files()[1] == dir + "/b.png");
  // shorter_side 100: the 640x427 rocket becomes round(640*100/427) x 100 = 150x100.
  CHECK(l.image(0)->width == 150);
  CHECK(l.image(0)->height == 100);
  CHECK(l.image(2)->channels == 3);  // grey camera converted for an RGB model

  const std::string empty = test::tmp_dir("dataset_empty");
  CHECK_THROWS_WITH_AS(train::ImageDataset::open(empty, 3), doctest::Contains("no image files found"), vitmae::Error);
  CHECK_THROWS_WITH_AS(train::ImageDataset::open(empty + "/nope.txt", 3),
                       doctest::Contains("not a folder or a readable list file"), vitmae::Error);
  io::write_file_atomic(dir + "/bad.txt", std::string("missing.png\n"));
  const auto bad = train::ImageDataset::open(dir + "/bad.txt", 3);
  train::DataLoader<float> loader(bad, processor(16), {}, 2, 0, 1);
  CHECK_THROWS_WITH_AS(loader.next(), doctest::Contains("missing.png"), vitmae::Error);
}

TEST_CASE("ImageDataset::skip_unreadable leaves out damaged files, names them, keeps the rest in order") {
  const std::string dir = test::tmp_dir("new_user_skip_lib");
  copy(test::data("images/coffee.png"), dir + "/a.png");
  copy(test::data("images/NOTICE"), dir + "/b.png");  // text named like an image
  copy(test::data("images/camera.png"), dir + "/c.png");
  copy(test::data("images/truncated.jpg"), dir + "/d.jpg");
  copy(test::data("images/rocket.jpg"), dir + "/e.jpg");
  auto data = train::ImageDataset::open(dir, 3, 64);
  REQUIRE(data.size() == 5);
  const auto copy_before = data;  // a copy made before keeps its own files and cache
  const std::vector<train::SkippedImage> skipped = data.skip_unreadable(2);
  REQUIRE(skipped.size() == 2);
  CHECK(skipped[0].file == dir + "/b.png");
  CHECK(skipped[0].reason == dir + "/b.png" + kNotAnImage);
  CHECK(skipped[1].file == dir + "/d.jpg");
  CHECK(skipped[1].reason == dir + "/d.jpg: cannot decode image: truncated or corrupt JPEG");
  CHECK(data.files() == std::vector<std::string>{dir + "/a.png", dir + "/c.png", dir + "/e.jpg"});
  // The cache follows the new indices: image 2 is e.jpg (rocket 640x427 shrunk to 96x64).
  CHECK(data.image(2)->width == 96);
  CHECK(data.image(2)->height == 64);
  CHECK(data.image(1)->data == copy_before.image(2)->data);
  CHECK(copy_before.size() == 5);

  const std::string bad = test::tmp_dir("new_user_skip_all");
  copy(test::data("images/NOTICE"), bad + "/x.png");
  auto none = train::ImageDataset::open(bad, 3);
  CHECK_THROWS_WITH_AS(
      none.skip_unreadable(),
      ("vitmae: dataset: none of the 1 images can be read; the first: " + bad + "/x.png" + kNotAnImage).c_str(),
      vitmae::Error);
}

TEST_CASE("data loader: batch k depends on (seed, k) only, epochs are permutations") {
  const std::string dir = test::tmp_dir("loader");
  std::string list;
  for (const char* f : {"astronaut.png", "camera.png", "chelsea.png", "coffee.png", "rocket.jpg"})
    list += test::data(std::string("images/") + f) + "\n";
  io::write_file_atomic(dir + "/list.txt", list);
  const auto data = train::ImageDataset::open(dir + "/list.txt", 3);
  const long n = static_cast<long>(data.size());
  REQUIRE(n >= 5);

  train::DataLoader<float> one(data, processor(16), {}, 3, 7, 1), three(data, processor(16), {}, 3, 7, 3, 4);
  train::DataLoader<float> late(data, processor(16), {}, 3, 7, 2, 2, /*first_batch=*/4);
  std::vector<vitmae::Tensor<float>> batches;
  for (int k = 0; k < 6; ++k) {
    batches.push_back(one.next());
    CHECK(three.next().data == batches.back().data);
    CHECK(batches.back().shape == std::vector<Index>{3, 3, 16, 16});
  }
  CHECK(late.next().data == batches[4].data);
  CHECK(late.next().data == batches[5].data);
  CHECK(batches[0].data != batches[1].data);
  train::DataLoader<float> other_seed(data, processor(16), {}, 3, 8, 1);
  CHECK(other_seed.next().data != batches[0].data);
  for (long e = 0; e < 3; ++e) {
    std::set<size_t> seen;
    for (long i = 0; i < n; ++i) seen.insert(one.file_at(e * n + i));
    CHECK(static_cast<long>(seen.size()) == n);
  }
  // Normalisation: every value is (q/255 - 0.5)/0.5 for an 8-bit level q (an all-zero batch
  // would be level 127.5 everywhere), and the batch is not flat.
  double sum = 0, sq = 0;
  for (float v : batches[0].data) {
    const double q = (static_cast<double>(v) * 0.5 + 0.5) * 255.0;
    REQUIRE(std::abs(q - std::round(q)) < 1e-3);
    REQUIRE((q > -0.5 && q < 255.5));
    sum += v, sq += static_cast<double>(v) * v;
  }
  const double count = static_cast<double>(batches[0].data.size());
  CHECK(sq / count - (sum / count) * (sum / count) > 0.01);
  // Without crop and flip, a sample is the processor's own preprocessing of its file.
  train::AugmentOptions plain;
  plain.random_crop = false;
  plain.hflip = false;
  train::DataLoader<float> exact(data, processor(16), plain, 3, 7, 1);
  const vitmae::Tensor<float> b0 = exact.next();
  for (long i = 0; i < 3; ++i) {
    const vitmae::Tensor<float> ref =
        processor(16).preprocess<float>({io::load_image(data.files()[exact.file_at(i)], 3)});
    CHECK(std::equal(ref.data.begin(), ref.data.end(), b0.data.begin() + i * ref.numel()));
  }
}

// ---------------------------------------------------------------- labelled data

TEST_CASE("ImageFolder and list files: classes sorted, labels by folder or name, clear errors") {
  using vitmae::train::LabelledDataset;
  const std::string root = test::tmp_dir("image_folder");
  vitmae::io::Image8 px{2, 2, 3, std::vector<std::uint8_t>(12, 100)};
  test::write_pngs(root, {"dog/b.png", "dog/a.png", "cat/x/deep.png", "cat/c.png"}, px);
  const auto d = LabelledDataset::image_folder(root);
  CHECK(d.classes == std::vector<std::string>{"cat", "dog"});
  REQUIRE(d.size() == 4);
  CHECK(d.labels() == std::vector<std::int64_t>{0, 0, 1, 1});
  CHECK(d.source(0) == root + "/cat/c.png");
  CHECK(d.source(1) == root + "/cat/x/deep.png");
  CHECK(d.source(2) == root + "/dog/a.png");
  CHECK(d.image(3, 3).width == 2);
  vitmae::io::write_file_atomic(root + "/list.txt", "# comment\ndog/a.png dog\n\ncat/c.png cat\r\n");
  const auto l = LabelledDataset::list_file(root + "/list.txt");
  CHECK(l.classes == std::vector<std::string>{"cat", "dog"});
  CHECK(l.labels() == std::vector<std::int64_t>{1, 0});
  CHECK(l.source(0) == root + "/dog/a.png");
  vitmae::io::write_file_atomic(root + "/numbers.txt", "dog/a.png 1\ncat/c.png 0\n");
  CHECK(LabelledDataset::list_file(root + "/numbers.txt", {"cat", "dog"}).labels() == std::vector<std::int64_t>{1, 0});
  vitmae::io::write_file_atomic(root + "/bad.txt", "dog/a.png 7\n");
  CHECK_THROWS_WITH_AS(LabelledDataset::list_file(root + "/bad.txt", {"cat", "dog"}),
                       doctest::Contains("label 7 is out of range: 2 classes"), vitmae::Error);
  std::filesystem::create_directories(root + "/empty_root/bird");
  CHECK_THROWS_WITH_AS(LabelledDataset::image_folder(root + "/empty_root"),
                       doctest::Contains("class 'bird' has no image files"), vitmae::Error);
  // Validation classes are mapped onto the training set's; an unknown one is refused.
  auto v = LabelledDataset::list_file(root + "/list.txt");
  v.use_classes_of({"dog", "cat"});
  CHECK(v.labels() == std::vector<std::int64_t>{0, 1});
  CHECK_THROWS_WITH_AS(v.use_classes_of({"dog", "horse"}),
                       doctest::Contains("class 'cat' is not one of the training set's 2 classes"), vitmae::Error);
}

TEST_CASE("ImageFolder: a dangling link is skipped, the files after it are still found") {
  const std::string root = test::tmp_dir("image_folder_links");
  vitmae::io::Image8 px{2, 2, 3, std::vector<std::uint8_t>(12, 100)};
  test::write_pngs(root, {"a/1.png", "a/3.png", "b/1.png"}, px);
  std::filesystem::create_symlink(root + "/nowhere.png", root + "/a/2.png");
  std::filesystem::create_symlink(root + "/nowhere", root + "/c");  // not a class: no folder behind it
  const auto d = vitmae::train::LabelledDataset::image_folder(root);
  CHECK(d.classes == std::vector<std::string>{"a", "b"});
  CHECK(d.size() == 3);
  CHECK(vitmae::train::ImageDataset::open(root, 3).size() == 3);
}

TEST_CASE(
    "LabelledDataset::open: folders, list files and fashion-mnist:DIR:SPLIT by their form, errors naming the spec") {
  using vitmae::train::LabelledDataset;
  CHECK_THROWS_WITH_AS(LabelledDataset::open("fashion-mnist:/nowhere"),
                       doctest::Contains("expected fashion-mnist:DIR:SPLIT"), vitmae::Error);
  CHECK_THROWS_WITH_AS(LabelledDataset::open("fashion-mnist:/nowhere:valid"),
                       doctest::Contains("SPLIT must be train or t10k, got 'valid'"), vitmae::Error);
  CHECK_THROWS_WITH_AS(LabelledDataset::open("fashion-mnist:/nowhere:t10k"),
                       doctest::Contains("/nowhere/t10k-images-idx3-ubyte.gz"), vitmae::Error);
  const std::string root = test::tmp_dir("open_spec");
  vitmae::io::Image8 px{2, 2, 3, std::vector<std::uint8_t>(12, 100)};
  test::write_pngs(root, {"b/1.png", "a/2.png"}, px);
  CHECK(LabelledDataset::open(root).classes == std::vector<std::string>{"a", "b"});
  io::write_file_atomic(root + "/list.txt", "b/1.png b\na/2.png a\n");
  CHECK(LabelledDataset::open(root + "/list.txt").size() == 2);
}

TEST_CASE("Fashion-MNIST as Debian ships it (when dataset-fashion-mnist is installed)") {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!vitmae::io::file_exists(dir + "/t10k-labels-idx1-ubyte.gz")) {
    MESSAGE("dataset-fashion-mnist is not installed: the committed IDX fixtures above cover the reader");
    return;
  }
  // Expected values from Python's gzip module on the same files.
  const auto test_set = vitmae::train::LabelledDataset::fashion_mnist(dir, "t10k");
  CHECK(test_set.size() == 10000);
  CHECK(std::vector<std::int64_t>(test_set.labels().begin(), test_set.labels().begin() + 8) ==
        std::vector<std::int64_t>{9, 2, 1, 1, 6, 1, 4, 6});
  CHECK(test_set.classes[9] == "Ankle boot");
}

TEST_CASE(
    "LabelledDataset::hold_out: N of every class, seeded, disjoint from what is left, refused when a class would be "
    "emptied") {
  const std::string dir = test::tmp_dir("hold_out");
  auto data = train::LabelledDataset::open(list_file(dir, 3, 4));
  REQUIRE(data.size() == 12);
  auto copy = data;
  const auto held = data.hold_out(1, 7, "--holdout 1");
  CHECK(held.size() == 3);
  CHECK(data.size() == 9);
  std::set<std::int64_t> held_classes(held.labels().begin(), held.labels().end());
  CHECK(held_classes.size() == 3);  // one of each
  std::set<std::string> all;
  for (size_t i = 0; i < held.size(); ++i) all.insert(held.source(i));
  for (size_t i = 0; i < data.size(); ++i) CHECK(all.insert(data.source(i)).second);  // disjoint
  CHECK(all.size() == 12);
  const auto same = copy.hold_out(1, 7, "--holdout 1");  // the same seed, the same split
  for (size_t i = 0; i < 3; ++i) CHECK(same.source(i) == held.source(i));
  CHECK_THROWS_WITH_AS(copy.hold_out(4, 7, "--holdout 4"),
                       doctest::Contains("class 'class 0' has 3 images: --holdout 4 would leave none"), vitmae::Error);
}

TEST_CASE(
    "datasets shrink an image to its shorter side on decoding (PIL bicubic), labelled ones too, 0 keeps full size") {
  const std::string dir = test::tmp_dir("shorter_side");
  vitmae::io::Image8 im{64, 32, 3, std::vector<std::uint8_t>(64 * 32 * 3, 90)};
  const auto small = train::shrink_to_shorter_side(im, 16);
  CHECK(small.width == 32);
  CHECK(small.height == 16);
  CHECK(small.data == std::vector<std::uint8_t>(32 * 16 * 3, 90));  // a flat image stays flat
  CHECK(train::shrink_to_shorter_side(im, 0).width == 64);
  CHECK(train::shrink_to_shorter_side(im, 40).width == 64);  // already shorter
  test::write_pngs(dir + "/data/a", {"x.png"}, im);
  test::write_pngs(dir + "/data/b", {"y.png"}, im);
  auto set = train::LabelledDataset::open(dir + "/data");
  set.set_shorter_side(8);
  CHECK(set.image(0, 3).width == 16);
  CHECK(set.image(0, 3).height == 8);
  CHECK(set.select({1}).image(0, 3).height == 8);  // a subset keeps it
}
