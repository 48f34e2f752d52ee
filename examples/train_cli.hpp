// SPDX-License-Identifier: Apache-2.0
// The training programs' one command line (vitmae-pretrain, vitmae-finetune): the flags they
// share are declared once here, with the same names, defaults and help text, and each program
// adds its own. A flag is a name, a metavar, its help (which ends with its default) and what it
// sets; the help text is generated from the table.
//
// --resume DIR: the flags a run was started with are stored in its checkpoints'
// trainer_state.json ("args"); a resumed run takes every one the command line does not give,
// and a flag given again must have the stored value (else a usage error naming both values),
// except those a run may change as it goes on (--out, --threads, --save-every, --keep, ...).
#pragma once

#include "common.hpp"

#include <vitmae/train.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <chrono>

#include <unistd.h>
#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace examples {

class CommandLine {
 public:
  /// What --resume does with a flag: the checkpoint's value is taken unless given, and a value
  /// given must agree (kept); taken unless given, and may change (free); not recorded (never).
  enum class OnResume { kept, free, never };

  struct Flag {
    std::string name, metavar, help;
    std::function<void(const std::string& value)> set;  // a switch: "off" unsets it, anything else sets it
    std::function<std::string()> get;                    // the value now, as set() takes it
    OnResume on_resume = OnResume::kept;
    std::vector<std::string> aliases;  // older spellings, accepted and not shown
    std::string default_value;         // get() when declared
  };

  /// `head`: the usage lines and any text before the flags.
  CommandLine(std::string program, std::string head) : program_(std::move(program)), head_(std::move(head)) {}

  void section(std::string title) { sections_.push_back({std::move(title), {}}); }

  void add(Flag f) {
    if (sections_.empty()) section("Flags");
    f.default_value = f.get();
    sections_.back().second.push_back(std::move(f));
  }

  /// A switch: sets `target` to `on`.
  void toggle(const std::string& name, bool& target, bool on, std::string help, OnResume r = OnResume::kept) {
    add({name, "", std::move(help), [&target, on](const std::string& v) { target = v == "off" ? !on : on; },
         [&target, on] { return std::string(target == on ? "on" : "off"); }, r, {}, {}});
  }
  void text(const std::string& name, const std::string& metavar, std::string& target, std::string help,
            OnResume r = OnResume::kept) {
    add({name, metavar, std::move(help), [&target](const std::string& v) { target = v; }, [&target] { return target; }, r, {}, {}});
  }
  /// An integer in [lo, hi].
  template <class Int>
  void integer(const std::string& name, const std::string& metavar, Int& target, long long lo, long long hi, std::string help,
               OnResume r = OnResume::kept) {
    add({name, metavar, std::move(help),
         [&target, name, lo, hi](const std::string& v) { target = static_cast<Int>(to_int(name, v, lo, hi)); },
         [&target] { return std::to_string(target); }, r, {}, {}});
  }
  /// A finite number for which ok(x) holds (`range` says which, for the error).
  void number(const std::string& name, const std::string& metavar, double& target, std::function<bool(double)> ok,
              const std::string& range, std::string help, OnResume r = OnResume::kept) {
    add({name, metavar, std::move(help),
         [&target, name, ok, range](const std::string& v) {
           const double x = to_double(name, v);
           if (!std::isfinite(x) || !ok(x)) throw UsageError(name + " must be " + range + ", got '" + v + "'");
           target = x;
         },
         [&target] {  // the shortest text that reads back as the same double
           char b[32];
           for (int digits = 1; digits <= 17; ++digits) {
             std::snprintf(b, sizeof b, "%.*g", digits, target);
             if (std::strtod(b, nullptr) == target) break;
           }
           return std::string(b);
         },
         r, {}, {}});
  }
  /// An older spelling of `name` (the last flag added when empty).
  void alias(const std::string& old_name) { sections_.back().second.back().aliases.push_back(old_name); }

  /// Every flag, its metavar and its help, by section, after the head.
  std::string help() const {
    std::string out = head_;
    for (const auto& [title, flags] : sections_) {
      out += title + ":\n";
      for (const Flag& f : flags) {
        std::string left = "  " + f.name + (f.metavar.empty() ? "" : " " + f.metavar);
        left += left.size() < 22 ? std::string(22 - left.size(), ' ') : "\n" + std::string(22, ' ');
        std::string body;
        for (char c : f.help) body += c == '\n' ? "\n" + std::string(22, ' ') : std::string(1, c);
        out += left + body + "\n";
      }
    }
    return out + "  -h, --help          print this text and exit\n";
  }
  const std::string& head() const { return head_; }

  /// Sets what argv gives; -h/--help prints help() and exits 0.
  /// @throws UsageError on an unknown flag or a bad value.
  void parse(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "-h" || a == "--help") {
        std::cout << help();
        std::exit(0);
      }
      const Flag* f = find(a);
      if (!f) throw UsageError("unknown argument '" + a + "'");
      const std::string v = f->metavar.empty() ? std::string() : value(argc, argv, i);
      f->set(v);
      given_[f->name] = v;
    }
  }

  bool given(const std::string& name) const { return given_.count(name) > 0; }
  std::string given_value(const std::string& name) const { return given_.at(name); }

  /// What --resume takes again: every recorded flag's value now, given or not ({"--name":
  /// "value", ...}, a switch "on" or "off"), and the program's name.
  nlohmann::json recorded() const {
    nlohmann::json j = nlohmann::json::object();
    j["program"] = program_;
    for (const auto& s : sections_)
      for (const Flag& f : s.second)
        if (f.on_resume != OnResume::never) j[f.name] = f.get();
    return j;
  }

  /// --resume: sets each flag of `stored` (recorded() of the run being resumed) that this
  /// command line does not give. `where` names the file, for errors.
  /// @throws UsageError (one line) when a kept flag was given with another value, naming both,
  /// or when the checkpoint is another program's.
  void resume_from(const nlohmann::json& stored, const std::string& where) {
    if (!stored.is_object()) return;
    if (stored.contains("program") && stored["program"] != program_)
      throw UsageError("vitmae: " + where + ": a checkpoint of " + stored["program"].get<std::string>() + ", not of " + program_, false);
    std::map<std::string, std::string> taken;
    for (const auto& [name, j] : stored.items()) {
      const Flag* f = find(name);
      if (!f || !j.is_string() || f->on_resume == OnResume::never) continue;
      std::string theirs = j.get<std::string>();
      if (f->metavar.empty() && theirs.empty()) theirs = "on";  // (a switch as the first records of this session held it)
      if (!given(name)) {
        if (theirs != f->default_value) f->set(theirs), taken[name] = theirs;
        continue;
      }
      const std::string mine = f->get();
      if (f->on_resume != OnResume::kept || same_value(mine, theirs)) continue;
      if (f->metavar.empty())
        throw UsageError("vitmae: " + where + ": the run was started without " + name + "; a resumed run must keep that (leave the " +
                             "flag out)", false);
      throw UsageError("vitmae: " + where + ": the run was started with " + name + " " + theirs + ", this run gives " + name + " " +
                           mine + "; a resumed run must keep it (leave the flag out to keep it)",
                       false);
    }
    given_.insert(taken.begin(), taken.end());  // the run's own choices, as if given again
  }

 private:
  const Flag* find(const std::string& name) const {
    for (const auto& s : sections_)
      for (const Flag& f : s.second)
        if (f.name == name || std::find(f.aliases.begin(), f.aliases.end(), name) != f.aliases.end()) return &f;
    return nullptr;
  }
  static bool same_value(const std::string& a, const std::string& b) {
    if (a == b) return true;
    char *ea = nullptr, *eb = nullptr;
    const double x = std::strtod(a.c_str(), &ea), y = std::strtod(b.c_str(), &eb);
    return !a.empty() && !b.empty() && !*ea && !*eb && x == y;
  }

  std::string program_, head_;
  std::vector<std::pair<std::string, std::vector<Flag>>> sections_;
  std::map<std::string, std::string> given_;
};

/// What both training programs take: the data, the output, the model to start from, the
/// schedule, the augmentation and how to run.
struct TrainArgs {
  std::string data, out, init, config, resume;
  long steps = 0, epochs = 0;          // 0: the program's default length
  long save_every = 500, keep = 2, log_every = 0;
  int threads = 0, workers = 0;        // 0 threads: every core
  int shorter_side = -1;               // -1: 4x the model's image size
  bool skip_bad_images = false, overlap = true;
  vitmae::train::AugmentOptions aug;
};

/// Declares the shared flags on `cl`, writing into `a` and the recipe `o` (whose values at the
/// call are the program's defaults, shown in the help). `data_help` describes --data for this
/// program; `steps_default` says what the length is when neither --steps nor --epochs is given.
inline void add_shared_flags(CommandLine& cl, TrainArgs& a, vitmae::train::TrainOptions& o, const std::string& data_help,
                             const std::string& steps_default) {
  using R = CommandLine::OnResume;
  auto num = [](double v) {  // the shorter of 0.05 and 1.5e-4
    char g[32], e[32];
    std::snprintf(g, sizeof g, "%g", v);
    std::snprintf(e, sizeof e, "%.6e", v);
    std::string m = e, x = m.substr(m.find('e'));
    m = m.substr(0, m.find('e'));
    while (m.back() == '0') m.pop_back();
    if (m.back() == '.') m.pop_back();
    x = x.substr(0, 2) + std::to_string(std::abs(std::stoi(x.substr(2))));  // e-04 -> e-4
    const std::string sci = m + (x == "e+0" || x == "e-0" ? "" : x == "e+" + x.substr(2) ? "e" + x.substr(2) : x);
    return sci.size() < std::string(g).size() ? sci : std::string(g);
  };
  auto positive = [](double x) { return x > 0; };
  auto non_negative = [](double x) { return x >= 0; };
  cl.section("Data and output");
  cl.text("--data", "SRC", a.data, data_help);
  cl.alias("--train");
  cl.text("--out", "DIR", a.out,
          "(required unless --resume: then the checkpoint's run folder) the output\n"
          "folder, created with its parents: OUT/checkpoint-STEP every --save-every\n"
          "steps, OUT/final at the end, and the run's logs",
          R::never);
  cl.toggle("--skip-bad-images", a.skip_bad_images, true,
            "decode every image once at the start, leave out those that cannot be read\n"
            "(saying how many and which) and train on the rest (default: off, the first\n"
            "damaged image a batch needs ends the run, naming the file)",
            R::free);
  cl.section("The model (required: one of them)");
  cl.text("--config", "FILE", a.config, "(one of the model's flags is required) train from scratch the model an HF\nconfig.json describes", R::never);
  cl.text("--init", "DIR", a.init, "(or) start from a checkpoint's weights as a new run, with a fresh optimiser\nand schedule (default: none)", R::never);
  cl.text("--resume", "DIR", a.resume,
          "(or) continue a run from one of its checkpoints (OUT/checkpoint-STEP), bit for\n"
          "bit, with the flags it was started with (default: none); a flag given again\n"
          "must keep its value (exit 2 otherwise), except --out, --workers, the checkpoint\n"
          "and log flags, --skip-bad-images, --no-overlap, and --threads with another\n"
          "number of MPI ranks",
          R::never);
  cl.section("Schedule and optimiser (AdamW, linear warm-up, then half-cosine decay)");
  cl.integer("--steps", "N", a.steps, 1, 1'000'000'000, "optimiser steps (default " + steps_default + ")");
  cl.integer("--epochs", "N", a.epochs, 1, 1'000'000, "instead of --steps: N passes over the data (default: use --steps)");
  cl.integer("--batch", "B", o.batch, 1, 65536, "images per micro-batch (default " + std::to_string(o.batch) + ")");
  cl.integer("--accum", "N", o.accum, 1, 65536, "micro-batches per optimiser step (default " + std::to_string(o.accum) + ")");
  cl.number("--base-lr", "X", o.base_lr, positive, "positive",
            "MAE's base learning rate (default " + num(o.base_lr) + "); the peak rate is\nbase-lr * batch * accum / 256" +
                (o.base_lr < 1e-3 ? ", so a small batch trains slowly: --batch 8 gives\n1.5e-4 * 8 / 256 = 4.7e-6, and a short run learns "
                                    "nothing visible. For short\nruns and small batches set the peak with --lr (the bundled model: --lr 1e-3)"
                                  : ""));
  cl.number("--lr", "X", o.lr, positive, "positive", "the peak learning rate itself, overriding --base-lr (default: from --base-lr)");
  cl.number("--min-lr", "X", o.min_lr, non_negative, ">= 0", "the floor of the cosine decay (default " + num(o.min_lr) + ")");
  cl.integer("--warmup", "N", o.warmup_steps, 0, 1'000'000'000, "steps of linear warm-up from 0 (default 5% of the steps)");
  cl.alias("--warmup-steps");
  cl.number("--weight-decay", "X", o.weight_decay, non_negative, ">= 0",
            "AdamW's decoupled weight decay, on weights only (default " + num(o.weight_decay) + ")");
  cl.number("--clip-grad", "X", o.clip_grad, non_negative, ">= 0", "clip the gradient's global norm to X (default 0: no clipping)");
  cl.integer("--seed", "N", o.seed, 0, INT64_MAX, "seeds the initial weights, the data order, the augmentation (default 0)");
  cl.section("Augmentation (MAE's recipe: random resized crop, horizontal flip)");
  cl.number("--scale-min", "X", a.aug.scale_min, [](double x) { return x > 0 && x <= 1; }, "in (0, 1]",
            "smallest crop, as a fraction of the image's area; 1 turns the crop off\n(the whole image, resized) (default " +
                num(a.aug.scale_min) + ")");
  cl.alias("--crop-scale-min");
  cl.integer("--shorter-side", "N", a.shorter_side, 0, 1 << 20,
             "shrink each image once, on decoding, to this shorter side when it is longer\n(default 4x the model's image size; 0 keeps "
             "full size: exact torchvision\ncrops, slower)");
  cl.toggle("--no-flip", a.aug.hflip, false, "no horizontal mirroring (default: mirror with probability 1/2)");
  cl.toggle("--vflip", a.aug.vflip, true, "also turn views upside down, probability 1/2 (default: off; not MAE's recipe)");
  cl.toggle("--transpose", a.aug.transpose, true,
            "also swap rows and columns of square views, probability 1/2; with both flips\nall 8 orientations (default: off; not "
            "MAE's recipe)");
  cl.toggle("--channel-shuffle", a.aug.channel_shuffle, true,
            "also permute the RGB channels at random, probability 1/2 (default: off; not\nMAE's recipe)");
  cl.section("Running");
  cl.integer("--save-every", "N", a.save_every, 0, 1'000'000'000,
             "write OUT/checkpoint-STEP every N steps (default " + std::to_string(a.save_every) + "; 0: only OUT/final)", R::free);
  cl.integer("--keep", "N", a.keep, 0, 1'000'000, "how many of those to keep, the newest (default " + std::to_string(a.keep) + ")",
             R::free);
  cl.integer("--threads", "N", a.threads, 1, 1024, "threads over the batch; the result depends on it (default: all cores)", R::free);
  cl.integer("--workers", "N", a.workers, 0, 256,
             "image-decoding threads that build batches ahead; 0: the --threads build\neach batch between steps (default 0: every "
             "core trains)",
             R::free);
  cl.integer("--log-every", "N", a.log_every, 1, 1'000'000'000,
             "print the progress line every N steps (default: every step on a terminal,\nelse 100 lines a run)", R::free);
  cl.toggle("--no-overlap", a.overlap, false,
            "under mpirun: sum the gradients over the ranks after each backward instead of\na layer at a time during it (the same "
            "bits; default: during it)",
            R::free);
}

/// Steps an epoch: ceil(images / (batch * accum)).
inline long epoch_steps(const vitmae::train::TrainOptions& o, size_t images) {
  const long per_step = static_cast<long>(o.batch) * o.accum;
  return std::max<long>(1, (static_cast<long>(images) + per_step - 1) / per_step);
}

/// The run's length: --steps, or --epochs passes of ceil(images / (batch * accum)) steps (as
/// HF's Trainer counts them), or `default_steps` when neither is given.
inline long run_steps(const TrainArgs& a, const vitmae::train::TrainOptions& o, size_t images, long default_steps) {
  return a.steps ? a.steps : a.epochs ? a.epochs * epoch_steps(o, images) : default_steps;
}

/// Before anything is written: every image of `data` (an ImageDataset or a LabelledDataset) is
/// decoded once on `threads` threads, with a progress line on large sets. An image that cannot
/// be read ends the run naming it; with --skip-bad-images (`skip`) those are left out, counted
/// and listed (the first ten). `say` prints text (rank 0's stderr).
/// A progress callback that prints "<what>: N of M (T s)" about once a second, from 2 s on (a
/// quick pass says nothing), redrawn in place on a terminal. `say` prints text.
inline vitmae::train::Progress progress_lines(const std::string& what, const std::function<void(const std::string&)>& say) {
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

template <class Dataset>
void check_images(Dataset& data, bool skip, int threads, const std::string& program, const std::string& src,
                  const std::function<void(const std::string&)>& say) {
  const size_t all = data.size();
  const vitmae::train::Progress progress = progress_lines(program + ": checking the images of " + src, say);
  const std::vector<vitmae::train::SkippedImage> bad = skip ? data.skip_unreadable(threads, progress) : data.find_unreadable(threads, progress);
  if (!skip) {
    if (!bad.empty())
      throw vitmae::Error("vitmae: " + bad.front().reason + " (" + (bad.size() > 1 ? std::to_string(bad.size()) + " of " + std::to_string(all) +
                          " images cannot be read; " : std::string()) + "--skip-bad-images leaves out the images that cannot be read)");
    return;
  }
  char head[200];
  if (bad.empty())
    std::snprintf(head, sizeof head, "%s: --skip-bad-images: all %zu images can be read", program.c_str(), all);
  else
    std::snprintf(head, sizeof head, "%s: --skip-bad-images: left out %zu of %zu images, which cannot be read:", program.c_str(),
                  bad.size(), all);
  say(std::string(head) + "\n");
  for (size_t i = 0; i < bad.size() && i < 10; ++i) say("  " + bad[i].reason + "\n");
  if (bad.size() > 10) say("  ... and " + std::to_string(bad.size() - 10) + " more\n");
}

/// After parse(): with --resume, the flags the run was started with (its trainer_state.json's
/// "args") fill in what the command line leaves out, --threads is the checkpoint's (with the same
/// number of ranks, `world_size`) and --out defaults to the checkpoint's run folder. @throws UsageError when DIR is not a checkpoint or a flag contradicts it.
inline void resume_flags(CommandLine& cl, TrainArgs& a, int world_size) {
  if (a.resume.empty()) return;
  const std::string state = vitmae::io::join_path(a.resume, "trainer_state.json");
  if (!vitmae::io::file_exists(state))
    throw UsageError("--resume " + a.resume + ": not a checkpoint (no trainer_state.json; give OUT/checkpoint-STEP)");
  const nlohmann::json st = vitmae::io::read_json_file(state, "trainer state");
  const bool threads_given = cl.given("--threads");
  if (st.contains("args")) cl.resume_from(st["args"], state);
  // The same threads continue bit for bit. With another number of ranks, the same threads in all
  // (ranks x threads) keep the order of the gradient's sums when it divides (train/world.hpp).
  if (!threads_given && st.contains("threads") && st["threads"].is_number_integer()) {
    const int t = st["threads"].get<int>(), w = st.value("world_size", 1);
    a.threads = w == world_size ? t : (t * w) % world_size == 0 ? t * w / world_size : 0;
  }
  if (a.out.empty()) {
    std::filesystem::path p = std::filesystem::path(a.resume).lexically_normal();
    if (!p.has_filename()) p = p.parent_path();  // "OUT/checkpoint-10/"
    a.out = p.parent_path().empty() ? "." : p.parent_path().string();
  }
}

}  // namespace examples
