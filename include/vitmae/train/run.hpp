// SPDX-License-Identifier: Apache-2.0
// A training run as the programs make it, around a TrainingLoop (train/loop.hpp), the same for
// every job: the output folder OUT (created with its first file; an earlier run's outputs there
// replaced; a killed run's temporaries removed), OUT/checkpoint-STEP every `save_every` steps
// with the newest `keep` kept, the progress line, OUT/metrics.csv (a row a step, resumed from the
// checkpoint), the curves (loss.csv, loss.svg, accuracy.svg), an optional evaluation every
// `eval_every` steps with its writers (per_class.csv, confusion.csv and .svg), and OUT/final.
// Rank 0 prints and writes; every rank learns how that went (together()).
//
// Also here, for the programs around a run: check_images (every image decoded before anything
// is written), progress_lines, and what a lost MPI rank prints (note_checkpoint, watch_ranks).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <unistd.h>

#include "vitmae/images/image_processor.hpp"
#include "vitmae/io/file.hpp"
#include "vitmae/train/checkpoint.hpp"
#include "vitmae/train/data.hpp"
#include "vitmae/train/finetune.hpp"
#include "vitmae/train/loop.hpp"
#include "vitmae/train/plot.hpp"
#include "vitmae/train/world.hpp"
#ifdef VITMAE_WITH_MPI
#include "vitmae/train/mpi.hpp"
#endif

namespace vitmae::train {

/// "H:MM:SS"
inline std::string hms(double seconds) {
  const long t = static_cast<long>(seconds + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  return buf;
}

/// A Progress that prints "<what>: N of M (T s)" about once a second, from 2 s on (a quick pass
/// says nothing), redrawn in place on a terminal. `say` prints text.
inline Progress progress_lines(const std::string& what, const std::function<void(const std::string&)>& say) {
  struct State {
    std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now(), last;
    bool shown = false;
  };
  auto st = std::make_shared<State>();
  const bool tty = ::isatty(2);
  return [st, what, say, tty](size_t done, size_t total) {
    const auto now = std::chrono::steady_clock::now();
    const double s = std::chrono::duration<double>(now - st->t0).count();
    if (s < 2 || (st->shown && now - st->last < std::chrono::seconds(1) && done < total)) return;
    if (done >= total && !st->shown) return;
    st->shown = true, st->last = now;
    char line[64];
    std::snprintf(line, sizeof line, ": %zu of %zu (%.0f s)", done, total, s);
    say((tty ? "\r" : "") + what + line + (tty && done < total ? "" : "\n"));
  };
}

/// Before anything is written: every image of `data` (an ImageDataset or a LabelledDataset) is
/// decoded once on `threads` threads, with a progress line on large sets. An image that cannot
/// be read ends the run naming it; with `skip` (--skip-bad-images) those are left out, counted
/// and listed (the first ten). `program` and `src` name the lines; `say` prints text.
template <class Dataset>
void check_images(Dataset& data, bool skip, int threads, const std::string& program, const std::string& src,
                  const std::function<void(const std::string&)>& say) {
  const size_t all = data.size();
  const Progress progress = progress_lines(program + ": checking the images of " + src, say);
  const std::vector<SkippedImage> bad =
      skip ? data.skip_unreadable(threads, progress) : data.find_unreadable(threads, progress);
  if (!skip) {
    if (!bad.empty())
      throw Error("vitmae: " + bad.front().reason + " (" +
                  (bad.size() > 1
                       ? std::to_string(bad.size()) + " of " + std::to_string(all) + " images cannot be read; "
                       : std::string()) +
                  "--skip-bad-images leaves out the images that cannot be read)");
    return;
  }
  if (bad.empty()) return say(detail::concat(program, ": --skip-bad-images: all ", all, " images can be read\n"));
  say(detail::concat(program, ": --skip-bad-images: left out ", bad.size(), " of ", all,
                     " images, which cannot be read:\n"));
  for (size_t i = 0; i < bad.size() && i < 10; ++i) say("  " + bad[i].reason + "\n");
  if (bad.size() > 10) say(detail::concat("  ... and ", bad.size() - 10, " more\n"));
}

namespace run_detail {
struct LastCheckpoint {
  std::mutex mutex;
  std::string dir;
};
inline LastCheckpoint& last_checkpoint() {
  static LastCheckpoint c;
  return c;
}
/// v with `digits` digits after the point.
inline std::string fixed(double v, int digits) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", digits, v);
  return b;
}
template <class M, class = void>
struct can_save_pretrained : std::false_type {};
template <class M>
struct can_save_pretrained<M, std::void_t<decltype(std::declval<const M&>().save_pretrained(std::string()))>>
    : std::true_type {};
}  // namespace run_detail

/// Records `dir` as the run's last complete checkpoint (every rank, once they agree it was
/// written), for the line watch_ranks prints when a rank is lost.
inline void note_checkpoint(const std::string& dir) {
  std::lock_guard<std::mutex> lock(run_detail::last_checkpoint().mutex);
  run_detail::last_checkpoint().dir = dir;
}

/// From here on, a rank of this machine whose process ends before the run does (killed, crashed)
/// ends the others of its machine at once, the lowest of them printing one line that names it
/// and the last checkpoint (note_checkpoint), instead of Open MPI's lines about every transfer
/// it can no longer make. The line says "was killed by signal N" when /proc still showed how the
/// process ended (its parent, Open MPI's daemon, usually collects it first), else "ended without
/// finishing"; one seen to exit with a status (MPI_Abort, after printing why) ends them silently.
/// Nothing with one process, nor without MPI. Ranks on other machines are not watched.
inline void watch_ranks(World& world, const std::string& program) {
#ifdef VITMAE_WITH_MPI
  auto* mpi = dynamic_cast<MpiWorld*>(&world);
  if (!mpi || world.size() == 1) return;
  mpi->watch_ranks([program, me = world.rank(), size = world.size()](const LostRank& lost) {
    if (lost.exit_status < 0 && me == lost.lowest_watcher) {
      std::string dir;
      {
        std::lock_guard<std::mutex> lock(run_detail::last_checkpoint().mutex);
        dir = run_detail::last_checkpoint().dir;
      }
      const std::string how =
          lost.signal ? "was killed by signal " + std::to_string(lost.signal) + " (" + strsignal(lost.signal) + ")"
                      : std::string("ended without finishing");
      const std::string then =
          dir.empty() ? "no checkpoint was written" : "the last checkpoint, " + dir + ", is complete";
      std::fprintf(stderr, "%s: rank %d of %d %s; %s\n", program.c_str(), lost.rank, size, how.c_str(), then.c_str());
      std::fflush(stderr);
    }
    std::_Exit(1);
  });
#else
  (void)world, (void)program;
#endif
}

/// OUT/metrics.csv: a row a step (step,epoch,loss,lr,grad_norm,images_per_s,val_top1,val_top5,
/// val_loss; the val_ cells empty where no evaluation ran), appended and flushed as the run goes
/// (a log, readable while it runs). The file is created with its first row, so that a run that
/// ends before leaves no file. Every checkpoint holds the rows so far; a resumed run starts from
/// them.
class MetricsLog {
 public:
  static constexpr const char* header = "step,epoch,loss,lr,grad_norm,images_per_s,val_top1,val_top5,val_loss\n";

  explicit MetricsLog(std::string path) : path_(std::move(path)), text_(header) {}

  /// The rows of the checkpoint `dir` (its metrics.csv; from `history` for a checkpoint that has
  /// none, with each step's own images/s).
  /// @throws vitmae::Error naming the file when it cannot be read or a row is not numbers.
  void resume(const std::string& dir, const std::vector<StepRecord>& history, long epoch_steps, long images_per_step) {
    const std::string path = io::join_path(dir, "metrics.csv");
    if (!io::file_exists(path)) {
      for (const StepRecord& h : history)
        text_ += row(h, static_cast<double>(h.step) / static_cast<double>(epoch_steps),
                     h.seconds > 0 ? static_cast<double>(images_per_step) / h.seconds : 0, nullptr);
      return;
    }
    const auto bytes = io::read_file_bytes(path, "checkpoint metrics");
    std::istringstream in(std::string(bytes.begin(), bytes.end()));
    std::string line;
    std::getline(in, line);
    detail::require(line + "\n" == header, path, ": expected the header ",
                    std::string(header, std::strlen(header) - 1));
    for (long n = 2; std::getline(in, line); ++n) {
      std::vector<std::string> f;
      std::istringstream cells(line);
      for (std::string c; std::getline(cells, c, ',');) f.push_back(c);
      char* end = nullptr;
      const double epoch = f.size() >= 6 ? std::strtod(f[1].c_str(), &end) : 0;
      detail::require(f.size() >= 6 && end && !*end, path, ": line ", n, " is not a row of numbers");
      if (f.size() >= 7 && !f[6].empty())
        accuracy_.points.emplace_back(epoch, 100 * std::strtod(f[6].c_str(), nullptr));
      text_ += line + "\n";
    }
  }

  /// Appends the row of step `r` (`e`: the evaluation after it, or nullptr).
  /// @throws vitmae::Error naming the file when it cannot be written.
  void add(const StepRecord& r, double epoch, double images_per_s, const Evaluation* e) {
    const std::string line = row(r, epoch, images_per_s, e);
    if (e) accuracy_.points.emplace_back(epoch, 100 * e->top1);
    text_ += line;
    if (!file_.is_open()) {
      io::make_dirs(std::filesystem::path(path_).parent_path().string());
      file_.open(path_);
      file_ << text_;
    } else {
      file_ << line;
    }
    file_.flush();
    detail::require(file_.good(), path_, ": cannot be written");
  }

  const std::string& text() const { return text_; }
  /// Validation top-1 (%) by epoch, for accuracy.svg.
  const Series& accuracy() const { return accuracy_; }

 private:
  static std::string row(const StepRecord& r, double epoch, double images_per_s, const Evaluation* e) {
    std::string out = std::to_string(r.step) + "," + run_detail::fixed(epoch, 3) + "," + run_detail::fixed(r.loss, 6) +
                      "," + run_detail::fixed(r.lr, 9) + "," + run_detail::fixed(r.grad_norm, 6) + "," +
                      run_detail::fixed(images_per_s, 2) + ",";
    return out +
           (e ? run_detail::fixed(e->top1, 6) + "," + (e->has_top5() ? run_detail::fixed(e->top5, 6) : std::string()) +
                    "," + run_detail::fixed(e->loss, 6) + "\n"
              : std::string(",,\n"));
  }
  std::string path_, text_;
  std::ofstream file_;
  Series accuracy_{"validation top-1 (%)", "#d62728", {}};
};

/// What a run writes and says, besides the loop's options.
struct RunSettings {
  std::string program;               // names its lines ("vitmae-pretrain")
  std::string out;                   // OUT
  std::string resume;                // the checkpoint it continues, or empty
  long save_every = 500;             // OUT/checkpoint-STEP every N steps (0: none)
  long keep = 2;                     // the newest N of them kept
  long log_every = 0;                // the progress line every N steps (0: every step on a terminal, else 100 a run)
  long epoch_steps = 1;              // steps an epoch (the metrics' epoch column; the default eval_every)
  long eval_every = 0;               // with an evaluation: steps between them (0: an epoch)
  std::string eval_name;             // what the evaluation scores ("held-out images"), for accuracy.svg
  std::vector<std::string> classes;  // the evaluation's class names, for per_class.csv and the confusion matrix
  enum class Final {
    checkpoint,
    model,
    none
  } final = Final::checkpoint;  // OUT/final: a checkpoint, the model alone, nothing
  std::string data;             // the training set (its spec), and
  long images = -1;             // how many images it has: data.json, which a resumed run must match (-1: not checked)
};

/// A run of `loop` to its last step, with the outputs described at the top.
template <class Loop>
class TrainingRun {
 public:
  using Model = typename Loop::Model;
  using Batch = typename Loop::Batch;
  /// Scores a model (rank 0 alone calls it).
  using Evaluate = std::function<Evaluation(const Model&)>;

  TrainingRun(Loop& loop, RunSettings s, ImageProcessor proc, Evaluate evaluate = {})
      : loop_(loop),
        s_(std::move(s)),
        proc_(std::move(proc)),
        evaluate_(std::move(evaluate)),
        metrics_(""),
        root_(world().rank() == 0),
        tty_(::isatty(2)) {
    if (!s_.eval_every) s_.eval_every = s_.epoch_steps;
  }

  /// Rank 0 prints `text` on stderr.
  void say(const std::string& text) const {
    if (root_) std::fputs(text.c_str(), stderr);
  }

  /// Before run(): continues from RunSettings::resume when given (train::resume on every rank,
  /// refusing a checkpoint trained on another number of images), checks that every rank holds
  /// the same weights (`source` names where they come from) and says "resuming from step N of M".
  /// @throws RequestError when the checkpoint contradicts the run (train::resume, data.json).
  void start(const std::string& source) {
    together(world(), [&] {
      if (s_.resume.empty()) return;
      if constexpr (run_detail::can_save_pretrained<Model>::value) resume(loop_, s_.resume);
      const std::string path = io::join_path(s_.resume, "data.json");
      if (s_.images < 0 || !io::file_exists(path)) return;
      const nlohmann::json theirs = io::read_json_file(path, "checkpoint data");
      const nlohmann::json n =
          theirs.contains("images") ? theirs["images"] : theirs.value("train_images", nlohmann::json());
      if (n.is_number_integer() && n.get<long>() != s_.images)
        throw RequestError(detail::concat("vitmae: ", path, ": the run was trained on ", n.get<long>(), " images of ",
                                          theirs.value("data", theirs.value("train", std::string("its data"))),
                                          ", this run has ", s_.images,
                                          "; a resumed run must train on the same images"));
    });
    together(world(), [&] { require_same_weights(world(), loop_.model(), s_.resume.empty() ? source : s_.resume); });
    if (!s_.resume.empty())
      say(detail::concat(s_.program, ": resuming from step ", loop_.step(), " of ", loop_.options().steps, " (",
                         s_.resume, ")\n"));
  }

  /// Opens OUT (checks it can be created, removes a killed run's temporaries and an earlier
  /// run's outputs, takes the resumed checkpoint's metrics rows) and trains to the last step,
  /// calling next_batch() for this rank's micro-batches. Returns the last evaluation.
  const Evaluation& run(const std::function<Batch()>& next_batch) {
    World& w = world();
    together(w, [&] {
      if (root_) open();
    });
    if (!s_.resume.empty()) note_checkpoint(s_.resume);
    watch_ranks(w, s_.program);
    const long steps = loop_.options().steps;
    const long log_every = s_.log_every ? s_.log_every : tty_ ? 1 : std::max(1L, steps / 100);
    const long first = loop_.step();
    const auto start = std::chrono::steady_clock::now();
    double window_loss = 0, eval_seconds = 0;
    long window = 0, evaluations = 0;
    while (loop_.step() < steps) {
      const StepRecord r = loop_.train_step(next_batch);
      window_loss += r.loss, ++window;
      train_seconds_ += r.seconds;
      const long done = r.step - first;
      const double ips = static_cast<double>(done * images_per_step()) / std::max(train_seconds_, 1e-9);
      const bool evaluate_now = evaluate_ && (r.step % s_.eval_every == 0 || r.step == steps);
      const bool save_now = s_.save_every > 0 && r.step % s_.save_every == 0 && r.step != steps;
      if (r.step % log_every == 0 || r.step == steps ||
          evaluate_now) {  // images/s of training only; the ETA adds evaluations to come
        const long evals_left =
            evaluate_ ? steps / s_.eval_every - r.step / s_.eval_every + (steps % s_.eval_every ? 1 : 0) : 0;
        const double eta =
            train_seconds_ / static_cast<double>(done) * static_cast<double>(steps - r.step) +
            (evaluations ? eval_seconds / static_cast<double>(evaluations) : 0.0) * static_cast<double>(evals_left);
        const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        char line[200];
        std::snprintf(line, sizeof line, "%sstep %ld/%ld  loss %.4f  lr %.3e  %.1f img/s  elapsed %s  ETA %s%s",
                      tty_ ? "\r" : "", r.step, steps, window_loss / static_cast<double>(window), r.lr, ips,
                      hms(elapsed).c_str(), hms(eta).c_str(), tty_ && !evaluate_now && r.step != steps ? "   " : "\n");
        say(line);
        window_loss = 0, window = 0;
      }
      const double epoch = static_cast<double>(r.step) / static_cast<double>(s_.epoch_steps);
      together(w, [&] {  // rank 0 evaluates and writes; every rank learns how that went
        if (!root_) return;
        if (evaluate_now) {
          const auto e0 = std::chrono::steady_clock::now();
          last_ = evaluate_(loop_.model());
          eval_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - e0).count(), ++evaluations;
          say(detail::concat("epoch ", run_detail::fixed(epoch, 2), " (step ", r.step, "): validation ",
                             last_.summary(), "\n"));
        }
        metrics_.add(r, epoch, ips, evaluate_now ? &last_ : nullptr);
        if (save_now) save(rotation_->dir(r.step)), rotation_->added(r.step);
        if (evaluate_now || save_now) write_curves();
      });
      if (save_now)
        note_checkpoint(
            io::join_path(s_.out, "checkpoint-" + std::to_string(r.step)));  // written: every rank knows it now
    }
    trained_ = loop_.step() - first;
    wall_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    together(w, [&] {
      if (root_ && evaluate_ && last_.count == 0) last_ = evaluate_(loop_.model());  // resumed at the last step
    });
    return last_;
  }

  /// Writes OUT/final (as RunSettings::final says; `write_model(folder)` writes the model's files
  /// in place of the loop's model, for Final::model), the evaluation's per_class.csv,
  /// confusion.csv and confusion.svg, and the curves; prints "trained N steps (M images) in T,
  /// X images/s; final model: DIR" on stdout (rank 0). Returns OUT/final ("" without one).
  std::string finish(const std::function<void(const std::string& folder)>& write_model = {}) {
    const std::string dir = s_.final == RunSettings::Final::none ? std::string() : io::join_path(s_.out, "final");
    together(world(), [&] {
      if (!root_) return;
      if (s_.final == RunSettings::Final::checkpoint) save(dir);
      if (s_.final == RunSettings::Final::model)
        io::write_folder_atomic(dir, [&](const std::string& tmp) {
          if (write_model) write_model(tmp);
          else if constexpr (run_detail::can_save_pretrained<Model>::value) loop_.model().save_pretrained(tmp);
          proc_.save(io::join_path(tmp, "preprocessor_config.json"));
        });
      if (evaluate_) {
        io::write_file_atomic(io::join_path(s_.out, "per_class.csv"), last_.per_class_csv(s_.classes));
        io::write_file_atomic(io::join_path(s_.out, "confusion.csv"), last_.confusion_csv(s_.classes));
        io::write_file_atomic(io::join_path(s_.out, "confusion.svg"), confusion_svg(last_.confusion, s_.classes));
      }
      write_curves();
    });
    if (s_.final == RunSettings::Final::checkpoint) note_checkpoint(dir);
    if (root_)
      std::printf("trained %ld steps (%ld images) in %s, %.1f images/s; %s\n", trained_, trained_ * images_per_step(),
                  hms(wall_seconds_).c_str(),
                  trained_ ? static_cast<double>(trained_ * images_per_step()) / train_seconds_ : 0.0,
                  dir.empty() ? "no final model" : ("final model: " + dir).c_str());
    const auto& dp = loop_.data_parallel();
    if (world().size() > 1 && trained_ > 0)
      say(detail::concat(s_.program, ": summing the gradients over ", world().size(), " ranks took ",
                         run_detail::fixed(1e3 * dp.reduce_seconds() / static_cast<double>(trained_), 1),
                         " ms a step (", run_detail::fixed(100 * dp.reduce_seconds() / wall_seconds_, 1),
                         "% of the time)", dp.overlaps() ? " after the backward, beyond what overlapping it hid" : "",
                         "\n"));
    return dir;
  }

  const Evaluation& last_evaluation() const { return last_; }
  const MetricsLog& metrics() const { return metrics_; }

 private:
  World& world() const { return loop_.data_parallel().world(); }
  long images_per_step() const { return static_cast<long>(loop_.options().batch) * loop_.options().accum; }

  void open() {
    io::require_can_create(s_.out);
    io::remove_stale_temporaries(s_.out);  // what a killed run's atomic writes left
    MetricsLog log(io::join_path(s_.out, "metrics.csv"));
    if (!s_.resume.empty())
      log.resume(s_.resume, loop_.history(), s_.epoch_steps, images_per_step());  // read before anything goes
    for (const char* f :
         {"metrics.csv", "loss.csv", "loss.svg", "accuracy.svg", "per_class.csv", "confusion.csv", "confusion.svg"})
      std::remove(io::join_path(s_.out, f).c_str());  // an earlier run's, never mixed with this one's
    std::error_code ec;
    std::filesystem::remove_all(io::join_path(s_.out, "final"), ec);
    metrics_ = std::move(log);
    rotation_.emplace(s_.out, s_.keep, !s_.resume.empty());  // a resumed run's earlier checkpoints count for --keep
  }

  void save(const std::string& dir) {  // rank 0
    if constexpr (run_detail::can_save_pretrained<Model>::value) {
      std::vector<std::pair<std::string, std::string>> files{{"metrics.csv", metrics_.text()}};
      if (s_.images >= 0)
        files.emplace_back("data.json", nlohmann::json{{"data", s_.data}, {"images", s_.images}}.dump(2) + "\n");
      save_checkpoint(loop_, dir, proc_, files);
    } else {
      (void)dir;
      detail::fail(s_.program,
                   ": this job's model cannot be saved as a checkpoint (save_every 0, Final::model or none)");
    }
  }

  void write_curves() {  // rank 0
    io::make_dirs(s_.out);
    io::write_file_atomic(io::join_path(s_.out, "loss.csv"), loss_csv(loop_.history()));
    io::write_file_atomic(io::join_path(s_.out, "loss.svg"), loss_curve_svg(loop_.history()));
    if (evaluate_)
      io::write_file_atomic(
          io::join_path(s_.out, "accuracy.svg"),
          line_chart_svg({metrics_.accuracy()},
                         "validation top-1 (%)" + (s_.eval_name.empty() ? "" : " on " + s_.eval_name), "epoch"));
  }

  Loop& loop_;
  RunSettings s_;
  ImageProcessor proc_;
  Evaluate evaluate_;
  MetricsLog metrics_;
  std::optional<CheckpointRotation> rotation_;
  Evaluation last_;
  bool root_, tty_;
  long trained_ = 0;
  double train_seconds_ = 0, wall_seconds_ = 0;
};

}  // namespace vitmae::train
