// SPDX-License-Identifier: Apache-2.0
// Labelled images for fine-tuning and linear probing: torchvision's ImageFolder layout, a list
// file ("path label"), and IDX files (MNIST's format, gzip or not, as Debian's
// dataset-fashion-mnist ships them); seeded subsets with N images per class.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "vitmae/error.hpp"
#include "vitmae/io/gzip.hpp"
#include "vitmae/io/image.hpp"
#include "vitmae/random.hpp"
#include "vitmae/train/data.hpp"

namespace vitmae::train {

/// Fashion-MNIST's class names, in label order.
inline std::vector<std::string> fashion_mnist_classes() {
  return {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
}

/// Images with a class index each, and the class names (index = label). Images are files
/// (decoded on demand) or held in memory (IDX).
class LabelledDataset {
 public:
  std::vector<std::string> classes;

  size_t size() const { return labels_.size(); }
  std::int64_t label(size_t i) const { return labels_.at(i); }
  const std::vector<std::int64_t>& labels() const { return labels_; }
  /// The file of sample i, or "FILE#k" for the k-th image of an IDX file.
  std::string source(size_t i) const {
    return files_.empty() ? idx_name_ + "#" + std::to_string(index_.at(i)) : files_.at(i);
  }

  /// Sample i's image with `channels` channels (PIL's conversions). @throws vitmae::Error naming
  /// the file when it cannot be decoded.
  io::Image8 image(size_t i, int channels) const {
    if (files_.empty())
      return shrink_to_shorter_side(io::to_channels((*memory_)[static_cast<size_t>(index_.at(i))], channels),
                                    shorter_side_);
    return shrink_to_shorter_side(io::load_image(files_.at(i), channels), shorter_side_);
  }
  /// Images whose shorter side is longer than `n` are shrunk to it on decoding
  /// (shrink_to_shorter_side; 0, the default: full size).
  void set_shorter_side(int n) { shorter_side_ = n; }
  /// The same with the channels set_channels chose (what DataLoader reads).
  std::shared_ptr<const io::Image8> image(size_t i) const {
    return std::make_shared<const io::Image8>(image(i, channels_));
  }
  int channels() const { return channels_; }
  void set_channels(int c) { channels_ = c; }

  /// torchvision's ImageFolder: root/<class>/..., classes the sorted names of root's
  /// sub-folders, each one's image files (searched recursively) in sorted order.
  /// @throws vitmae::Error naming the folder when it has no class folder or a class has no image.
  static LabelledDataset image_folder(const std::string& root) {
    namespace fs = std::filesystem;
    std::error_code ec, entry_ec;  // entry_ec: an entry that cannot be examined (a dangling link) is skipped
    detail::require(fs::is_directory(root, ec), "dataset ", root, ": not a folder (expected root/<class>/<images>)");
    LabelledDataset d;
    for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec))
      if (it->is_directory(entry_ec)) d.classes.push_back(it->path().filename().string());
    detail::require(!ec, "dataset ", root, ": cannot list the folder: ", ec.message());
    std::sort(d.classes.begin(), d.classes.end());
    d.name_ = root;
    detail::require(!d.classes.empty(), "dataset ", root, ": no class folders (expected root/<class>/<images>)");
    for (size_t c = 0; c < d.classes.size(); ++c) {
      const fs::path dir = fs::path(root) / d.classes[c];
      std::vector<std::string> files;
      fs::recursive_directory_iterator it(dir, fs::directory_options::follow_directory_symlink, ec), end;
      for (; !ec && it != end; it.increment(ec))
        if (it->is_regular_file(entry_ec) && ImageDataset::is_image_name(it->path().string()))
          files.push_back(it->path().string());
      detail::require(!ec, "dataset ", dir.string(), ": cannot list the folder: ", ec.message());
      detail::require(!files.empty(), "dataset ", dir.string(), ": class '", d.classes[c], "' has no image files");
      std::sort(files.begin(), files.end());
      for (std::string& f : files) {
        d.files_.push_back(std::move(f));
        d.labels_.push_back(static_cast<std::int64_t>(c));
      }
    }
    return d;
  }

  /// A list file: one "path<TAB>label" per line (split at the first tab, so that either may
  /// hold spaces), or "path label" (split at the last space). The label is a class name, or an
  /// index when `classes` is given and the label is a number. Relative paths are relative to the
  /// list's folder; blank lines and lines starting with # are skipped. Without `classes`, labels
  /// that are all whole numbers are class indices (classes "0" .. the largest, in numeric order;
  /// a class no line uses has no sample) unless the largest is over twice their count plus 16
  /// (then they are names, in numeric order); other labels are the sorted names the file uses.
  /// @throws vitmae::Error naming the file and line.
  static LabelledDataset list_file(const std::string& path, std::vector<std::string> classes = {}) {
    namespace fs = std::filesystem;
    std::ifstream in(path);
    detail::require(in.good(), "dataset ", path, ": cannot open the list file");
    detail::require_list_file(
        path, "a folder root/<class>/<images>, a list file of 'path<TAB>label' lines or fashion-mnist:DIR:SPLIT");
    const fs::path base = fs::path(path).parent_path();
    struct Row {
      std::string file, label;
      long line;
    };
    std::vector<Row> rows;
    std::string line;
    for (long n = 1; std::getline(in, line); ++n) {
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
      const size_t s = line.find_first_not_of(" \t");
      if (s == std::string::npos || line[s] == '#') continue;
      const size_t tab = line.find('\t', s);
      const size_t sep = tab != std::string::npos ? tab : line.find_last_of(' ');
      detail::require(sep != std::string::npos && sep > s, "dataset ", path, ":", n,
                      ": expected 'path<TAB>label' or 'path label', got '", line, "'");
      const std::string file = line.substr(s, line.find_last_not_of(" \t", sep) + 1 - s);
      const size_t l = line.find_first_not_of(" \t", sep);
      const fs::path p(file);
      rows.push_back({p.is_absolute() ? p.string() : (base / p).string(), line.substr(l), n});
    }
    detail::require(!rows.empty(), "dataset ", path, ": no 'path<TAB>label' lines");
    auto is_index = [](const std::string& v) {
      return !v.empty() && v.size() < 10 && v.find_first_not_of("0123456789") == std::string::npos;
    };
    LabelledDataset d;
    d.name_ = path;
    const bool given = !classes.empty();
    const bool numbers =
        !given && std::all_of(rows.begin(), rows.end(), [&](const Row& r) { return is_index(r.label); });
    std::vector<long> values;
    for (const Row& r : rows)
      if (numbers) values.push_back(std::stol(r.label));
    std::sort(values.begin(), values.end());
    values.erase(std::unique(values.begin(), values.end()), values.end());
    // Whole numbers are class indices (0 .. the largest, so that index k is class k) unless they
    // are too sparse for that (20230101): then names in numeric order. Never sorted as text.
    const bool indices = numbers && values.back() <= 2 * static_cast<long>(values.size()) + 16;
    if (indices) {
      for (long c = 0; c <= values.back(); ++c) classes.push_back(std::to_string(c));
    } else if (numbers) {
      for (long v : values) classes.push_back(std::to_string(v));
    } else if (!given) {
      for (const Row& r : rows) classes.push_back(r.label);
      std::sort(classes.begin(), classes.end());
      classes.erase(std::unique(classes.begin(), classes.end()), classes.end());
    }
    d.classes = std::move(classes);
    for (const Row& r : rows) {
      d.files_.push_back(r.file);
      d.lines_.push_back(r.line);
      d.labels_.push_back(indices ? std::stol(r.label)
                                  : d.class_index(numbers ? std::to_string(std::stol(r.label)) : r.label, given,
                                                  path + ":" + std::to_string(r.line)));
    }
    return d;
  }

  /// IDX image and label files (MNIST's format: magic 0x00000803 images [N, rows, cols] of
  /// bytes, 0x00000801 labels [N] of bytes; big-endian sizes), gzip-compressed or not.
  /// @throws vitmae::Error naming the file: a wrong magic number, a truncated body, counts that
  /// differ, a label out of range of `classes`.
  static LabelledDataset idx(const std::string& images_path, const std::string& labels_path,
                             std::vector<std::string> classes) {
    const std::vector<std::uint8_t> img = io::read_maybe_gzip(images_path, "IDX"),
                                    lab = io::read_maybe_gzip(labels_path, "IDX");
    auto be32 = [](const std::vector<std::uint8_t>& b, size_t at) {
      return (static_cast<std::uint32_t>(b[at]) << 24) | (static_cast<std::uint32_t>(b[at + 1]) << 16) |
             (static_cast<std::uint32_t>(b[at + 2]) << 8) | static_cast<std::uint32_t>(b[at + 3]);
    };
    detail::require(img.size() >= 16 && be32(img, 0) == 0x803, images_path, ": not an IDX image file (magic number ",
                    img.size() >= 4 ? be32(img, 0) : 0u, ", expected 2051 = 0x00000803: unsigned bytes, 3 dimensions)");
    detail::require(lab.size() >= 8 && be32(lab, 0) == 0x801, labels_path, ": not an IDX label file (magic number ",
                    lab.size() >= 4 ? be32(lab, 0) : 0u, ", expected 2049 = 0x00000801: unsigned bytes, 1 dimension)");
    const std::uint64_t n = be32(img, 4), rows = be32(img, 8), cols = be32(img, 12), nl = be32(lab, 4);
    detail::require(rows > 0 && cols > 0 && rows <= 65536 && cols <= 65536, images_path, ": image size ", rows, "x",
                    cols, " is not plausible");
    detail::require(img.size() - 16 == n * rows * cols, images_path, ": truncated or oversized body: ", img.size() - 16,
                    " bytes of pixels, the header says ", n, " images of ", rows, "x", cols, " = ", n * rows * cols);
    detail::require(lab.size() - 8 == nl, labels_path, ": truncated or oversized body: ", lab.size() - 8,
                    " labels, the header says ", nl);
    detail::require(n == nl, images_path, " has ", n, " images but ", labels_path, " has ", nl, " labels");
    LabelledDataset d;
    d.classes = std::move(classes);
    d.idx_name_ = d.name_ = images_path;
    auto memory = std::make_shared<std::vector<io::Image8>>(static_cast<size_t>(n));
    for (size_t i = 0; i < n; ++i) {
      const std::int64_t y = lab[8 + i];
      detail::require(y < static_cast<std::int64_t>(d.classes.size()), labels_path, ": label ", y, " of image ", i,
                      " is out of range: ", d.classes.size(), " classes");
      io::Image8& im = (*memory)[i];
      im.width = static_cast<int>(cols), im.height = static_cast<int>(rows), im.channels = 1;
      im.data.assign(img.begin() + static_cast<std::ptrdiff_t>(16 + i * rows * cols),
                     img.begin() + static_cast<std::ptrdiff_t>(16 + (i + 1) * rows * cols));
      d.labels_.push_back(y);
      d.index_.push_back(static_cast<std::int64_t>(i));
    }
    d.memory_ = std::move(memory);
    return d;
  }

  /// Fashion-MNIST's "train" (60,000) or "t10k" (10,000) split from `dir` (Debian's
  /// dataset-fashion-mnist: /usr/share/datasets/fashion-mnist).
  static LabelledDataset fashion_mnist(const std::string& dir, const std::string& split) {
    if (split != "train" && split != "t10k")  // a mistyped request, not a damaged file
      throw RequestError("vitmae: dataset fashion-mnist:" + dir + ":" + split + ": SPLIT must be train or t10k, got '" +
                         split + "'");
    return idx(dir + "/" + split + "-images-idx3-ubyte.gz", dir + "/" + split + "-labels-idx1-ubyte.gz",
               fashion_mnist_classes());
  }

  /// Whether `spec` names Fashion-MNIST's IDX files (fashion-mnist:DIR:SPLIT), as open() reads it.
  static bool is_fashion_mnist_spec(const std::string& spec) { return spec.rfind("fashion-mnist:", 0) == 0; }

  /// A labelled set named by `spec`: a folder root/<class>/<images> (ImageFolder), a list file of
  /// "path label" lines, or fashion-mnist:DIR:SPLIT (fashion_mnist(DIR, SPLIT)).
  /// @throws vitmae::Error naming `spec` when it is none of them or cannot be read.
  static LabelledDataset open(const std::string& spec) {
    const std::string fm = "fashion-mnist:";
    if (is_fashion_mnist_spec(spec)) {
      const size_t colon = spec.rfind(':');
      detail::require(colon > fm.size(), "dataset ", spec, ": expected fashion-mnist:DIR:SPLIT");
      return fashion_mnist(spec.substr(fm.size(), colon - fm.size()), spec.substr(colon + 1));
    }
    std::error_code ec;
    LabelledDataset d = std::filesystem::is_directory(spec, ec) ? image_folder(spec) : list_file(spec);
    d.name_ = spec;
    return d;
  }

  /// The names of the classes at least one sample has.
  std::vector<std::string> used_classes() const {
    std::vector<bool> used(classes.size(), false);
    for (std::int64_t y : labels_) used[static_cast<size_t>(y)] = true;
    std::vector<std::string> out;
    for (size_t c = 0; c < classes.size(); ++c)
      if (used[c]) out.push_back(classes[c]);
    return out;
  }

  /// What the set was opened from (open's spec), for messages.
  const std::string& name() const { return name_; }

  /// Decodes every file-backed image once on `threads` threads and returns those that cannot be
  /// read, with the decoder's reason (an IDX set is decoded already: none).
  std::vector<SkippedImage> find_unreadable(int threads = 1, const Progress& progress = {}) const {
    std::vector<SkippedImage> out;
    if (files_.empty()) return out;
    const std::vector<std::string> errors = detail::decode_all(
        files_.size(), threads, [&](size_t i) { image(i, channels_); }, progress);
    for (size_t i = 0; i < errors.size(); ++i)
      if (!errors[i].empty()) out.push_back({files_[i], errors[i]});
    return out;
  }

  /// find_unreadable, then leaves those images out (the rest in order). Returns those left out.
  /// @throws vitmae::Error when none can be read.
  std::vector<SkippedImage> skip_unreadable(int threads = 1, const Progress& progress = {}) {
    const std::vector<SkippedImage> bad = find_unreadable(threads, progress);
    if (bad.empty()) return bad;
    detail::require(bad.size() < size(), "dataset ", name_, ": none of the ", size(),
                    " images can be read; the first: ", bad.front().reason);
    std::vector<size_t> keep;
    for (size_t i = 0, k = 0; i < size(); ++i) {
      if (k < bad.size() && files_[i] == bad[k].file) {
        ++k;
        continue;
      }
      keep.push_back(i);
    }
    *this = select(keep);
    return bad;
  }

  /// The samples at `positions`, in that order (the classes unchanged).
  LabelledDataset select(const std::vector<size_t>& positions) const {
    LabelledDataset d;
    d.classes = classes;
    d.name_ = name_;
    d.idx_name_ = idx_name_;
    d.memory_ = memory_;
    d.channels_ = channels_;
    d.shorter_side_ = shorter_side_;
    for (size_t p : positions) {
      detail::require(p < size(), "select: position ", p, " of a dataset of ", size());
      d.labels_.push_back(labels_[p]);
      if (files_.empty()) d.index_.push_back(index_[p]);
      else d.files_.push_back(files_[p]);
      if (!lines_.empty()) d.lines_.push_back(lines_[p]);
    }
    return d;
  }

  /// Holds `per_class` samples of every class out (seeded, stream holdout: independent of a
  /// --labels-per-class subset of the same seed) and returns them; this set keeps the rest.
  /// `asked` names the request in errors. @throws vitmae::Error naming the class when one has
  /// no more than `per_class` samples (none would be left to train on).
  LabelledDataset hold_out(size_t per_class, std::uint64_t seed, const std::string& asked) {
    std::vector<size_t> count(classes.size(), 0);
    for (std::int64_t y : labels_) ++count[static_cast<size_t>(y)];
    for (size_t c = 0; c < count.size(); ++c)
      detail::require(count[c] == 0 || count[c] > per_class, name_, ": class '", classes[c], "' has ", count[c],
                      " images: ", asked, " would leave none to train on");
    std::vector<size_t> rest;
    LabelledDataset out = per_class_subset(per_class, seed ^ seed_streams::holdout, &rest);
    *this = select(rest);
    return out;
  }

  /// A seeded subset with `per_class` samples of every class (each class's samples shuffled by
  /// the seed, the first per_class kept; the subset in dataset order). The rest, when given,
  /// receives the positions left out (a held-out set for choices). `asked` names the request in
  /// errors (a program's flag, "--labels-per-class 10"). @throws vitmae::Error naming the set
  /// and the class when a class has fewer samples.
  LabelledDataset per_class_subset(size_t per_class, std::uint64_t seed, std::vector<size_t>* rest = nullptr,
                                   const std::string& asked = "") const {
    std::vector<std::vector<size_t>> by_class(classes.size());
    for (size_t i = 0; i < size(); ++i) by_class[static_cast<size_t>(labels_[i])].push_back(i);
    std::vector<size_t> keep;
    auto rng = seeded_rng(seed, seed_streams::subset);  // "SUBSET"
    for (size_t c = 0; c < classes.size(); ++c) {
      std::vector<size_t>& v = by_class[c];
      if (v.empty()) continue;  // a class no sample has (integer labels with gaps)
      detail::require(v.size() >= per_class, "dataset ", name_.empty() ? std::string("(unnamed)") : name_, ": class '",
                      classes[c], "' has ", v.size(), " images, fewer than ",
                      asked.empty() ? "the " + std::to_string(per_class) + " asked for" : asked);
      shuffle(v, rng);
      keep.insert(keep.end(), v.begin(), v.begin() + static_cast<std::ptrdiff_t>(per_class));
    }
    std::sort(keep.begin(), keep.end());
    if (rest) {
      rest->clear();
      size_t k = 0;
      for (size_t i = 0; i < size(); ++i) {
        if (k < keep.size() && keep[k] == i) {
          ++k;
          continue;
        }
        rest->push_back(i);
      }
    }
    return select(keep);
  }

  /// Re-labels this set (validation, test) by the class names of the set a model was trained
  /// on. @throws vitmae::Error naming this set (`name`) and a class the training set does not have.
  void use_classes_of(const std::vector<std::string>& train_classes, const std::string& name = "",
                      const std::string& whose = "the training set's") {
    std::vector<std::int64_t> map(classes.size(), -1);
    std::vector<bool> used(classes.size(), false);
    for (std::int64_t y : labels_) used[static_cast<size_t>(y)] = true;
    for (size_t c = 0; c < classes.size(); ++c) {
      if (!used[c]) continue;  // a class no sample has (integer labels 0 .. the largest) needs no row
      const auto it = std::find(train_classes.begin(), train_classes.end(), classes[c]);
      if (it == train_classes.end()) {  // name where the class first appears: the list file's line, or the class folder
        std::string where = name.empty() ? name_ : name;
        for (size_t i = 0; i < size(); ++i)
          if (labels_[i] == static_cast<std::int64_t>(c)) {
            if (!lines_.empty()) where += ":" + std::to_string(lines_[i]);
            break;
          }
        detail::fail("dataset ", where, ": class '", classes[c], "' is not one of ", whose, " ", train_classes.size(),
                     " classes");
      }
      map[c] = it - train_classes.begin();
    }
    for (std::int64_t& y : labels_) y = map[static_cast<size_t>(y)];
    classes = train_classes;
  }

 private:
  std::vector<std::string> files_;  // one per sample (file-backed sets)
  std::vector<std::int64_t> labels_;
  std::vector<std::int64_t> index_;  // IDX-backed sets: the image's index in memory_
  std::vector<long> lines_;          // list files: each sample's line
  std::string idx_name_, name_;
  std::shared_ptr<const std::vector<io::Image8>> memory_;
  int channels_ = 3, shorter_side_ = 0;

  std::int64_t class_index(const std::string& label, bool numeric_allowed, const std::string& where) const {
    const auto it = std::find(classes.begin(), classes.end(), label);
    if (it != classes.end()) return it - classes.begin();
    if (numeric_allowed && !label.empty() && label.find_first_not_of("0123456789") == std::string::npos &&
        label.size() < 10) {
      const std::int64_t y = std::stoll(label);
      detail::require(y < static_cast<std::int64_t>(classes.size()), "dataset ", where, ": label ", y,
                      " is out of range: ", classes.size(), " classes");
      return y;
    }
    detail::fail("dataset ", where, ": label '", label, "' is not one of the ", classes.size(), " classes");
  }
};

}  // namespace vitmae::train
