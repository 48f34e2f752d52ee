// SPDX-License-Identifier: Apache-2.0
// The pre-training data pipeline of the MAE recipe: image files from a folder (recursive) or a
// list file; RandomResizedCrop (torchvision's parameter search: scale 0.2-1, ratio 3/4-4/3,
// ten tries then a centre crop) resized with PIL's bicubic; horizontal flip with probability
// 1/2; the model's normalisation (ImageProcessor). Worker threads build batches ahead of the
// trainer. A damaged image ends a run naming the file, unless skip_unreadable left it out first.
//
// Reproducible: batch k holds the samples at positions k*B .. k*B+B-1 of an endless stream of
// epochs, each epoch a seeded permutation of the files, and every sample's augmentation draws
// from its own generator seeded by (seed, position). So a batch depends on (seed, k) only, not
// on the number of workers or their timing, and resuming at batch k needs only k.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "vitmae/detail/parallel.hpp"
#include "vitmae/images/image_processor.hpp"
#include "vitmae/io/image.hpp"
#include "vitmae/random.hpp"

namespace vitmae::train {

// ---------------------------------------------------------------- augmentation

struct AugmentOptions {
  double scale_min = 0.2, scale_max = 1.0;              // of the image's area
  double ratio_min = 3.0 / 4.0, ratio_max = 4.0 / 3.0;  // width / height
  bool hflip = true;                                    // mirror with probability 1/2
  bool random_crop = true;                              // false: resize the whole image (no crop)
  // Beyond MAE's recipe, for small datasets (each with probability 1/2, off by default):
  bool vflip = false;            // upside down
  bool transpose = false;        // swap rows and columns (square views only);
                                 // with both flips: all 8 rotations/reflections
  bool channel_shuffle = false;  // a random permutation of the RGB channels
};

struct CropBox {
  int top = 0, left = 0, height = 0, width = 0;
};

/// torchvision's RandomResizedCrop.get_params: ten tries of a random area and log-uniform aspect
/// ratio that fits, else the whole image clamped to the ratio range, centred.
inline CropBox random_resized_crop_box(int height, int width, const AugmentOptions& o, std::mt19937_64& rng) {
  const double area = static_cast<double>(height) * width;
  const double log_lo = std::log(o.ratio_min), log_hi = std::log(o.ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * (o.scale_min + (o.scale_max - o.scale_min) * uniform53(rng));
    const double aspect = std::exp(log_lo + (log_hi - log_lo) * uniform53(rng));
    const int w = static_cast<int>(std::lround(std::sqrt(target * aspect)));
    const int h = static_cast<int>(std::lround(std::sqrt(target / aspect)));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const int top = uniform_int(rng, height - h + 1);
      const int left = uniform_int(rng, width - w + 1);
      return {top, left, h, w};
    }
  }
  const double in_ratio = static_cast<double>(width) / height;
  int w = width, h = height;
  if (in_ratio < o.ratio_min) {
    h = static_cast<int>(std::lround(w / o.ratio_min));
  } else if (in_ratio > o.ratio_max) {
    w = static_cast<int>(std::lround(h * o.ratio_max));
  }
  return {(height - h) / 2, (width - w) / 2, h, w};
}

inline io::Image8 crop(const io::Image8& in, const CropBox& b) {
  detail::require(b.top >= 0 && b.left >= 0 && b.height > 0 && b.width > 0 && b.top + b.height <= in.height &&
                      b.left + b.width <= in.width,
                  "crop: box ", b.width, "x", b.height, "+", b.left, "+", b.top, " is outside the ", in.width, "x",
                  in.height, " image");
  io::Image8 out{b.width, b.height, in.channels,
                 std::vector<std::uint8_t>(static_cast<size_t>(b.width) * b.height * in.channels)};
  const size_t row = static_cast<size_t>(b.width) * in.channels;
  for (int y = 0; y < b.height; ++y)
    std::copy_n(&in.data[(static_cast<size_t>(b.top + y) * in.width + b.left) * in.channels], row, &out.data[y * row]);
  return out;
}

inline io::Image8 hflip(const io::Image8& in) {
  io::Image8 out = in;
  for (int y = 0; y < in.height; ++y)
    for (int x = 0; x < in.width; ++x)
      for (int c = 0; c < in.channels; ++c) out.at(y, x, c) = in.at(y, in.width - 1 - x, c);
  return out;
}

inline io::Image8 vflip(const io::Image8& in) {
  io::Image8 out = in;
  const size_t row = static_cast<size_t>(in.width) * in.channels;
  for (int y = 0; y < in.height; ++y)
    std::copy_n(&in.data[static_cast<size_t>(in.height - 1 - y) * row], row, &out.data[y * row]);
  return out;
}

inline io::Image8 transpose(const io::Image8& in) {
  io::Image8 out{in.height, in.width, in.channels, std::vector<std::uint8_t>(in.data.size())};
  for (int y = 0; y < out.height; ++y)
    for (int x = 0; x < out.width; ++x)
      for (int c = 0; c < in.channels; ++c) out.at(y, x, c) = in.at(x, y, c);
  return out;
}

/// One training view of an image: crop box, PIL resize to the processor's size with its
/// resample filter, flip. Draws from `rng` in torchvision's order (crop, then flip), then the
/// optional extras in the order vflip, transpose, channel permutation.
inline io::Image8 augment(const io::Image8& img, const ImageProcessor& proc, const AugmentOptions& o,
                          std::mt19937_64& rng) {
  const CropBox box =
      o.random_crop ? random_resized_crop_box(img.height, img.width, o, rng) : CropBox{0, 0, img.height, img.width};
  io::Image8 view = detail::pil_resize(box.height == img.height && box.width == img.width ? img : crop(img, box),
                                       static_cast<int>(proc.width), static_cast<int>(proc.height),
                                       static_cast<detail::Resample>(proc.resample));
  if (o.hflip && uniform53(rng) < 0.5) view = hflip(view);
  if (o.vflip && uniform53(rng) < 0.5) view = vflip(view);
  if (o.transpose && view.width == view.height && uniform53(rng) < 0.5) view = transpose(view);
  if (o.channel_shuffle && view.channels == 3) {
    int perm[3] = {0, 1, 2};
    for (int i = 2; i > 0; --i) std::swap(perm[i], perm[uniform_int(rng, i + 1)]);
    if (perm[0] != 0 || perm[1] != 1) {
      const io::Image8 src = view;
      for (size_t i = 0; i < view.data.size(); i += 3)
        for (int c = 0; c < 3; ++c) view.data[i + static_cast<size_t>(c)] = src.data[i + static_cast<size_t>(perm[c])];
    }
  }
  return view;
}

// ---------------------------------------------------------------- dataset

/// A file ImageDataset::skip_unreadable left out, and why (the decoder's message, which names it).
struct SkippedImage {
  std::string file, reason;
};

/// Progress of a long pass over a dataset: (images done, images in all).
using Progress = std::function<void(size_t done, size_t total)>;

}  // namespace vitmae::train

namespace vitmae::detail {

/// Runs decode(i) for i in [0, n) on `threads` threads; returns each item's error message ("":
/// it decoded), without the leading "vitmae: ". progress(done, n) is called on the caller's
/// thread about once a second. An error that is not the item's (out of memory) is rethrown.
template <class Decode>
std::vector<std::string> decode_all(size_t n, int threads, Decode&& decode, const train::Progress& progress = {}) {
  std::vector<std::string> errors(n);
  const size_t workers = std::min<size_t>(static_cast<size_t>(std::max(1, threads)), std::max<size_t>(n, 1));
  std::vector<std::exception_ptr> fatal(workers);
  std::atomic<size_t> next{0}, done{0}, running{workers};
  std::mutex finished_mutex;
  std::condition_variable finished;
  auto work = [&](size_t worker) {
    try {
      for (size_t i; (i = next++) < n; ++done) {
        try {
          decode(i);
        } catch (const Error& e) {
          const std::string what = e.what();
          errors[i] = what.rfind("vitmae: ", 0) == 0 ? what.substr(8) : what;
          if (errors[i].empty()) errors[i] = "item " + std::to_string(i) + ": cannot be read";
        }
      }
    } catch (...) {  // not the file's fault (out of memory): stop and rethrow on the caller's thread
      fatal[worker] = std::current_exception();
      next = n;
    }
    if (--running == 0) {  // under the lock: the reporting thread cannot miss it between its test and its wait
      std::lock_guard<std::mutex> lock(finished_mutex);
      finished.notify_all();
    }
  };
  std::vector<std::thread> pool;
  struct Join {  // whatever happens on this thread (a thread that cannot start, a throwing progress), the pool is
                 // joined
    std::vector<std::thread>& threads;
    ~Join() {
      for (auto& t : threads)
        if (t.joinable()) t.join();
    }
  } join{pool};
  if (progress) {  // the pool decodes; this thread reports about once a second
    for (size_t t = 0; t < workers; ++t) pool.emplace_back(work, t);
    std::unique_lock<std::mutex> lock(finished_mutex);
    while (!finished.wait_for(lock, std::chrono::seconds(1), [&] { return running.load() == 0; })) {
      lock.unlock();  // (a worker finishing meanwhile takes the lock to say so)
      progress(std::min<size_t>(done.load(), n), n);
      lock.lock();
    }
    lock.unlock();
    for (auto& t : pool) t.join();
    progress(std::min<size_t>(done.load(), n), n);
  } else {
    for (size_t t = 1; t < workers; ++t) pool.emplace_back(work, t);
    work(0);
    for (auto& t : pool) t.join();
  }
  for (const auto& f : fatal)
    if (f) std::rethrow_exception(f);
  return errors;
}

/// Refuses a file given where a list of paths is expected when it is an image or not text.
inline void require_list_file(const std::string& path, const char* expected) {
  std::ifstream in(path, std::ios::binary);
  char head[512];
  in.read(head, sizeof head);
  const std::streamsize got = in.gcount();
  const std::string start(head, static_cast<size_t>(got));
  const bool image = start.rfind("\x89PNG", 0) == 0 || start.rfind("\xFF\xD8\xFF", 0) == 0;
  const bool binary = image || start.find('\0') != std::string::npos;
  require(!binary, "dataset ", path, ": ", image ? "an image" : "a binary file", ", not a dataset (expected ", expected,
          ")");
}

}  // namespace vitmae::detail

namespace vitmae::train {

/// `image` with its shorter side brought down to `shorter_side` when it is longer (PIL bicubic,
/// aspect kept); unchanged when shorter_side is 0. The datasets' decoding: it bounds the cost of
/// every later crop's resize.
inline io::Image8 shrink_to_shorter_side(io::Image8 image, int shorter_side) {
  const int shorter = std::min(image.width, image.height);
  if (shorter_side <= 0 || shorter <= shorter_side) return image;
  const double f = static_cast<double>(shorter_side) / shorter;
  return detail::pil_resize(image, std::max(1, static_cast<int>(std::lround(image.width * f))),
                            std::max(1, static_cast<int>(std::lround(image.height * f))), detail::Resample::bicubic);
}

/// The image files of a folder (recursive, sorted, by extension) or of a list file (one path per
/// line, relative to the list's folder; blank lines and lines starting with '#' skipped).
/// Decoded images are kept in memory up to `cache_bytes` (so small datasets decode once). With
/// `shorter_side` > 0, an image whose shorter side is longer is shrunk once on decoding (PIL
/// bicubic, aspect kept), which bounds the cost of every later crop's resize.
class ImageDataset {
 public:
  static bool is_image_name(const std::string& name) {
    std::string ext = std::filesystem::path(name).extension().string();
    for (auto& ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    for (const char* e : {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tga", ".ppm", ".pgm", ".pnm", ".psd"})
      if (ext == e) return true;
    return false;
  }

  /// @throws vitmae::Error naming `path` when it holds no image or cannot be read.
  static ImageDataset open(const std::string& path, int channels, int shorter_side = 0,
                           std::int64_t cache_bytes = std::int64_t(1) << 31) {
    namespace fs = std::filesystem;
    ImageDataset d;
    d.channels_ = channels;
    d.shorter_side_ = shorter_side;
    d.cache_budget_ = cache_bytes;
    std::error_code ec, entry_ec;  // entry_ec: an entry that cannot be examined (a dangling link) is skipped
    if (fs::is_directory(path, ec)) {
      fs::recursive_directory_iterator it(path, fs::directory_options::follow_directory_symlink, ec), end;
      detail::require(!ec, "dataset ", path, ": cannot list the folder: ", ec.message());
      for (; it != end; it.increment(ec)) {
        detail::require(!ec, "dataset ", path, ": cannot list the folder: ", ec.message());
        if (it->is_regular_file(entry_ec) && is_image_name(it->path().string()))
          d.files_.push_back(it->path().string());
      }
      std::sort(d.files_.begin(), d.files_.end());
    } else {
      std::ifstream in(path);
      detail::require(in.good(), "dataset ", path, ": not a folder or a readable list file");
      detail::require_list_file(path, "a folder of images or a text file listing image paths, one a line");
      const fs::path base = fs::path(path).parent_path();
      std::string line;
      while (std::getline(in, line)) {
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
        size_t s = line.find_first_not_of(" \t");
        if (s == std::string::npos || line[s] == '#') continue;
        const fs::path p(line.substr(s));
        d.files_.push_back(p.is_absolute() ? p.string() : (base / p).string());
      }
    }
    detail::require(!d.files_.empty(), "dataset ", path,
                    ": no image files found (looked for .png .jpg .jpeg .bmp .gif .tga .ppm .pgm .pnm .psd)");
    d.cache_ = std::make_shared<Cache>();
    return d;
  }

  /// Decodes every image once, on `threads` threads (filling the cache as image() does), and
  /// returns the files that cannot be read (missing, not images, truncated or corrupt), in file
  /// order, with the decoder's reason. Without such a pass, the first unreadable image a batch
  /// needs ends the run (its loader rethrows the error naming the file).
  std::vector<SkippedImage> find_unreadable(int threads = 1, const Progress& progress = {}) {
    const std::vector<std::string> errors = detail::decode_all(
        files_.size(), threads, [&](size_t i) { image(i); }, progress);
    std::vector<SkippedImage> out;
    for (size_t i = 0; i < errors.size(); ++i)
      if (!errors[i].empty()) out.push_back({files_[i], errors[i]});
    return out;
  }

  /// find_unreadable, then leaves those files out: the rest keep their order, so a run's
  /// batches depend on which files were left out. Returns those left out.
  /// @throws vitmae::Error when none of the images can be read.
  std::vector<SkippedImage> skip_unreadable(int threads = 1, const Progress& progress = {}) {
    const size_t n = files_.size();
    const std::vector<std::string> errors = detail::decode_all(
        n, threads, [&](size_t i) { image(i); }, progress);

    std::vector<SkippedImage> skipped;
    std::vector<std::string> kept;
    auto cache = std::make_shared<Cache>();  // a new one: copies made before this call keep theirs
    {
      std::lock_guard<std::mutex> lock(cache_->mutex);
      for (size_t i = 0; i < n; ++i) {
        if (!errors[i].empty()) {
          skipped.push_back({files_[i], errors[i]});
          continue;
        }
        auto it = cache_->images.find(i);
        if (it != cache_->images.end()) {
          cache->images[kept.size()] = it->second;
          cache->bytes += static_cast<std::int64_t>(it->second->data.size());
        }
        kept.push_back(files_[i]);
      }
    }
    detail::require(!kept.empty(), "dataset: none of the ", n,
                    " images can be read; the first: ", skipped.front().reason);
    files_ = std::move(kept);
    cache_ = std::move(cache);
    return skipped;
  }

  size_t size() const { return files_.size(); }
  const std::vector<std::string>& files() const { return files_; }
  int channels() const { return channels_; }

  /// Image i decoded and converted to the model's channels (thread-safe). @throws vitmae::Error.
  std::shared_ptr<const io::Image8> image(size_t i) const {
    {
      std::lock_guard<std::mutex> lock(cache_->mutex);
      auto it = cache_->images.find(i);
      if (it != cache_->images.end()) return it->second;
    }
    auto img = std::make_shared<const io::Image8>(
        shrink_to_shorter_side(io::load_image(files_.at(i), channels_), shorter_side_));
    std::lock_guard<std::mutex> lock(cache_->mutex);
    const auto bytes = static_cast<std::int64_t>(img->data.size());
    if (cache_->bytes + bytes <= cache_budget_ && !cache_->images.count(i)) {
      cache_->images[i] = img;
      cache_->bytes += bytes;
    }
    return img;
  }

 private:
  struct Cache {
    std::mutex mutex;
    std::map<size_t, std::shared_ptr<const io::Image8>> images;
    std::int64_t bytes = 0;
  };
  std::vector<std::string> files_;
  int channels_ = 3, shorter_side_ = 0;
  std::int64_t cache_budget_ = 0;
  std::shared_ptr<Cache> cache_;
};

// ---------------------------------------------------------------- loader

/// Endless batches of augmented, normalised pixel_values [B, C, H, W], built by worker threads
/// up to `prefetch` batches ahead. Batch k is a function of (seed, k) only (see the top).
/// Dataset: ImageDataset, or LabelledDataset (train/labelled.hpp), whose batch labels
/// labels_of(k) gives. `slice` (a rank's of a data-parallel run, train/world.hpp): only the
/// images [first, second) of each batch are built, the same as in the whole batch; {0, 0}: all.
template <class S, class Dataset = ImageDataset>
class DataLoader {
 public:
  DataLoader(Dataset data, ImageProcessor proc, AugmentOptions aug, int batch, std::uint64_t seed, int workers = 1,
             int prefetch = 2, long first_batch = 0, std::pair<Index, Index> slice = {0, 0})
      : data_(std::move(data)),
        proc_(std::move(proc)),
        aug_(aug),
        batch_(batch),
        seed_(seed),
        first_(slice.second > 0 ? slice.first : 0),
        end_(slice.second > 0 ? slice.second : batch),
        next_(first_batch),
        produce_(first_batch),
        prefetch_(std::max(1, prefetch)) {
    detail::require(batch > 0, "DataLoader: batch size must be positive, got ", batch);
    detail::require(first_ >= 0 && first_ < end_ && end_ <= batch, "DataLoader: the slice [", first_, ", ", end_,
                    ") is not within a batch of ", batch);
    detail::require(data_.size() > 0, "DataLoader: empty dataset");
    // workers 0: no threads of its own; next() builds each batch on the caller's threads (what
    // a machine whose cores all train wants: a worker would take a core from the step).
    for (int w = 0; w < workers; ++w) threads_.emplace_back([this] { work(); });
  }
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;
  ~DataLoader() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

  /// The dataset index at stream position `pos` (epoch = pos / N, seeded permutation per epoch).
  size_t file_at(long pos) const {
    const long n = static_cast<long>(data_.size());
    const long epoch = pos / n;
    std::lock_guard<std::mutex> lock(perm_mutex_);
    auto it = perms_.find(epoch);
    if (it == perms_.end()) {
      std::vector<size_t> p(data_.size());
      for (size_t i = 0; i < p.size(); ++i) p[i] = i;
      auto rng = seeded_rng(seed_, seed_streams::permutation + static_cast<std::uint64_t>(epoch));  // "PERM"
      shuffle(p, rng);
      if (perms_.size() > 4) perms_.erase(perms_.begin());
      it = perms_.emplace(epoch, std::move(p)).first;
    }
    return it->second[static_cast<size_t>(pos % n)];
  }

  /// Batch k (its slice), computed by the calling thread (what the workers run), or with
  /// `parallel` by the calling thread's OpenMP team, its images split over the threads (the
  /// same bits: each image depends on its position only).
  Tensor<S> make_batch(long k, bool parallel = false) const {
    const Index C = data_.channels(), H = proc_.height, W = proc_.width, n = end_ - first_;
    Tensor<S> t({n, C, H, W});
    auto one = [&](size_t b) {
      const long pos = k * batch_ + static_cast<long>(first_) + static_cast<long>(b);
      auto rng = seeded_rng(seed_, static_cast<std::uint64_t>(pos));
      const auto img = data_.image(file_at(pos));
      const Matrix<S> pv = proc_.to_pixel_values<S>(augment(*img, proc_, aug_, rng));
      std::copy_n(pv.data(), pv.size(), t.data.data() + b * static_cast<size_t>(pv.size()));
    };
    if (!parallel) {
      for (size_t b = 0; b < static_cast<size_t>(n); ++b) one(b);
      return t;
    }
    std::vector<std::exception_ptr> errors(static_cast<size_t>(n));
    detail::parallel_for(static_cast<size_t>(n), [&](size_t b) {
      try {
        one(b);
      } catch (...) {
        errors[b] = std::current_exception();
      }
    });
    for (const auto& e : errors)
      if (e) std::rethrow_exception(e);  // the first image's error, as the serial loop would
    return t;
  }

  /// The labels of batch k (a LabelledDataset's), in the order of its images: the whole
  /// batch's, also with a slice.
  std::vector<std::int64_t> labels_of(long k) const {
    std::vector<std::int64_t> y(static_cast<size_t>(batch_));
    for (int b = 0; b < batch_; ++b) y[static_cast<size_t>(b)] = data_.label(file_at(k * batch_ + b));
    return y;
  }

  /// The next batch in order (waits for a worker). Rethrows a worker's error (a damaged image's
  /// vitmae::Error names the file). Without workers, the calling thread's team builds it now.
  Tensor<S> next() {
    if (threads_.empty()) {
      std::lock_guard<std::mutex> lock(mutex_);
      return make_batch(next_++, true);
    }
    std::unique_lock<std::mutex> lock(mutex_);
    const long k = next_;
    cv_.wait(lock, [&] { return ready_.count(k) || errors_.count(k); });
    if (errors_.count(k)) std::rethrow_exception(errors_[k]);  // as thrown: vitmae::Error, std::bad_alloc
    Tensor<S> t = std::move(ready_[k]);
    ready_.erase(k);
    ++next_;
    lock.unlock();
    cv_.notify_all();
    return t;
  }

  long batches_taken() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return next_;
  }

 private:
  void work() {
    for (;;) {
      long k;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return stop_ || produce_ < next_ + prefetch_; });
        if (stop_) return;
        k = produce_++;
      }
      try {
        Tensor<S> t = make_batch(k);
        std::lock_guard<std::mutex> lock(mutex_);
        ready_[k] = std::move(t);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        errors_[k] = std::current_exception();
      }
      cv_.notify_all();
    }
  }

  Dataset data_;
  ImageProcessor proc_;
  AugmentOptions aug_;
  int batch_;
  std::uint64_t seed_;
  Index first_, end_;  // the slice of each batch built
  mutable std::mutex mutex_, perm_mutex_;
  mutable std::map<long, std::vector<size_t>> perms_;
  std::condition_variable cv_;
  long next_, produce_;
  int prefetch_;
  bool stop_ = false;
  std::map<long, Tensor<S>> ready_;
  std::map<long, std::exception_ptr> errors_;
  std::vector<std::thread> threads_;
};

}  // namespace vitmae::train
