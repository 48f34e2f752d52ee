// SPDX-License-Identifier: Apache-2.0
// The training programs' one command line (vitmae-pretrain, vitmae-finetune, and any program a
// user writes on TrainingLoop): the flags they share are declared once here, with the same
// names, defaults and help text, as HF's TrainingArguments, and each program adds its own.
//
// --resume DIR: the flags a run was started with are stored in its checkpoints'
// trainer_state.json ("args"); a resumed run takes every one the command line does not give,
// and a flag given again must have the stored value (else a usage error naming both values),
// except those a run may change as it goes on (--out, --threads, --save-every, --keep, ...).
#pragma once

#include "vitmae/cli/command_line.hpp"
#include "vitmae/train/data.hpp"
#include "vitmae/train/loop.hpp"
#include "vitmae/train/run.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

namespace vitmae::cli {

/// What both training programs take: the data, the output, the model to start from, the
/// schedule, the augmentation and how to run.
struct TrainArgs {
  std::string data, out, init, config, resume;
  long steps = 0, epochs = 0;  // 0: the program's default length
  long save_every = 500, keep = 2, log_every = 0;
  int threads = 0, workers = 0;  // 0 threads: every core
  int shorter_side = -1;         // -1: 4x the model's image size
  bool skip_bad_images = false, overlap = true;
  vitmae::train::AugmentOptions aug;
};

/// Declares the shared flags on `cl`, writing into `a` and the recipe `o` (whose values at the
/// call are the program's defaults, shown in the help). `data_help` describes --data for this
/// program; `steps_default` says what the length is when neither --steps nor --epochs is given.
inline void add_shared_flags(CommandLine& cl, TrainArgs& a, vitmae::train::TrainOptions& o,
                             const std::string& data_help, const std::string& steps_default) {
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
  cl.path("--data", "SRC", a.data, data_help);
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
  cl.path(
      "--config", "FILE", a.config,
      "train from scratch the model an HF config.json describes (required: this,\n--init or --resume; default: none)",
      R::never);
  cl.path("--init", "DIR", a.init,
          "(or) start from a checkpoint's weights as a new run, with a fresh optimiser\nand schedule (default: none)",
          R::never);
  cl.text("--resume", "DIR", a.resume,
          "(or) continue a run from one of its checkpoints (OUT/checkpoint-STEP), bit for\n"
          "bit, with the flags it was started with (default: none); a flag given again\n"
          "must keep its value (exit 2 otherwise), except --out, --workers, the checkpoint\n"
          "and log flags, --skip-bad-images, --no-overlap, and --threads with another\n"
          "number of MPI ranks",
          R::never);
  cl.section("Schedule and optimiser (AdamW, linear warm-up, then half-cosine decay)");
  cl.integer("--steps", "N", a.steps, 1, 1'000'000'000, "optimiser steps (default " + steps_default + ")");
  cl.integer("--epochs", "N", a.epochs, 1, 1'000'000,
             "instead of --steps: N passes over the data (default: use --steps)");
  cl.integer("--batch", "B", o.batch, 1, 65536, "images per micro-batch (default " + std::to_string(o.batch) + ")");
  cl.integer("--accum", "N", o.accum, 1, 65536,
             "micro-batches per optimiser step (default " + std::to_string(o.accum) + ")");
  cl.number(
      "--base-lr", "X", o.base_lr, positive, "positive",
      "MAE's base learning rate (default " + num(o.base_lr) + "); the peak rate is\nbase-lr * batch * accum / 256" +
          (o.base_lr < 1e-3
               ? ", so a small batch trains slowly: --batch 8 gives\n1.5e-4 * 8 / 256 = 4.7e-6, and a short run learns "
                 "nothing visible. For short\nruns and small batches set the peak with --lr (the bundled model: --lr "
                 "1e-3)"
               : ""));
  cl.number("--lr", "X", o.lr, positive, "positive",
            "the peak learning rate itself, overriding --base-lr (default: from --base-lr)");
  cl.number("--min-lr", "X", o.min_lr, non_negative, ">= 0",
            "the floor of the cosine decay (default " + num(o.min_lr) + ")");
  cl.integer("--warmup", "N", o.warmup_steps, 0, 1'000'000'000,
             "steps of linear warm-up from 0 (default 5% of the steps)");
  cl.alias("--warmup-steps");
  cl.number("--weight-decay", "X", o.weight_decay, non_negative, ">= 0",
            "AdamW's decoupled weight decay, on weights only (default " + num(o.weight_decay) + ")");
  cl.number("--clip-grad", "X", o.clip_grad, non_negative, ">= 0",
            "clip the gradient's global norm to X (default 0: no clipping)");
  cl.integer("--seed", "N", o.seed, 0, INT64_MAX,
             "seeds the initial weights, the data order, the augmentation (default 0)");
  cl.toggle("--bf16", o.bf16, true,
            "mixed precision, as torch.autocast(\"cpu\", dtype=torch.bfloat16): the Linear,\n"
            "patch-projection and attention products of the forward and backward in bfloat16\n"
            "with float32 sums; weights, gradients, AdamW and every other operation float32\n"
            "(needs AVX512_BF16 or AMX; default: off, float32 throughout)");
  cl.section("Augmentation (MAE's recipe: random resized crop, horizontal flip)");
  cl.number(
      "--scale-min", "X", a.aug.scale_min, [](double x) { return x > 0 && x <= 1; }, "in (0, 1]",
      "smallest crop, as a fraction of the image's area; 1 turns the crop off\n(the whole image, resized) (default " +
          num(a.aug.scale_min) + ")");
  cl.alias("--crop-scale-min");
  cl.integer("--shorter-side", "N", a.shorter_side, 0, 1 << 20,
             "shrink each training image once, on decoding, to this shorter side when it is\nlonger (default 4x the "
             "model's image size; 0 keeps "
             "full size: exact torchvision\ncrops, slower)");
  cl.toggle("--no-flip", a.aug.hflip, false, "no horizontal mirroring (default: mirror with probability 1/2)");
  cl.toggle("--vflip", a.aug.vflip, true,
            "also turn views upside down, probability 1/2 (default: off; not MAE's recipe)");
  cl.toggle("--transpose", a.aug.transpose, true,
            "also swap rows and columns of square views, probability 1/2; with both flips\nall 8 orientations "
            "(default: off; not "
            "MAE's recipe)");
  cl.toggle("--channel-shuffle", a.aug.channel_shuffle, true,
            "also permute the RGB channels at random, probability 1/2 (default: off; not\nMAE's recipe)");
  cl.section("Running");
  cl.integer(
      "--save-every", "N", a.save_every, 0, 1'000'000'000,
      "write OUT/checkpoint-STEP every N steps (default " + std::to_string(a.save_every) + "; 0: only OUT/final)",
      R::free);
  cl.integer("--keep", "N", a.keep, 0, 1'000'000,
             "how many of those to keep, the newest (default " + std::to_string(a.keep) + ")", R::free);
  cl.integer("--threads", "N", a.threads, 1, 1024,
             "threads over the batch; the result depends on it (default: all cores)", R::free);
  cl.integer("--workers", "N", a.workers, 0, 256,
             "image-decoding threads that build batches ahead; 0: the --threads build\neach batch between steps "
             "(default 0: every "
             "core trains)",
             R::free);
  cl.integer("--log-every", "N", a.log_every, 1, 1'000'000'000,
             "print the progress line every N steps (default: every step on a terminal,\nelse 100 lines a run)",
             R::free);
  cl.toggle("--no-overlap", a.overlap, false,
            "under mpirun: sum the gradients over the ranks after each backward instead of\na layer at a time during "
            "it (the same "
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

/// The RunSettings (train/run.hpp) the shared flags give, for `program` on `images` training
/// images with the recipe `o` (its steps decided).
inline vitmae::train::RunSettings run_settings(const TrainArgs& a, const vitmae::train::TrainOptions& o,
                                               const std::string& program, size_t images) {
  vitmae::train::RunSettings s;
  s.program = program, s.out = a.out, s.resume = a.resume;
  s.save_every = a.save_every, s.keep = a.keep, s.log_every = a.log_every;
  s.epoch_steps = epoch_steps(o, images);
  s.data = a.data, s.images = static_cast<long>(images);
  return s;
}

/// " on each of N ranks" with several ranks, else "".
inline std::string on_ranks(const vitmae::train::World& w) {
  return w.size() > 1 ? " on each of " + std::to_string(w.size()) + " ranks" : std::string();
}

/// After parse(): with --resume, the flags the run was started with (its trainer_state.json's
/// "args") fill in what the command line leaves out, --threads is the checkpoint's (with the same
/// number of ranks, `world_size`) and --out defaults to the checkpoint's run folder. @throws UsageError when DIR is not
/// a checkpoint or a flag contradicts it.
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

/// Parses argv on `cl` and completes `a` as every training program needs: with --resume, the
/// checkpoint's flags (resume_flags); then --data and --out are required, and --steps and
/// --epochs exclusive. @throws UsageError.
inline void parse_training_flags(int argc, char** argv, CommandLine& cl, TrainArgs& a, int world_size) {
  cl.parse(argc, argv);
  resume_flags(cl, a, world_size);
  if (!a.resume.empty() && a.data.empty())
    throw UsageError("--resume " + a.resume +
                     ": its trainer_state.json records no command line (a checkpoint of an older " +
                     "vitmae): give --data and the flags the run was started with");
  if (a.data.empty() || a.out.empty()) throw UsageError("--data and --out are required (or --resume DIR)");
  if (a.steps && a.epochs) throw UsageError("give --steps or --epochs, not both");
}

}  // namespace vitmae::cli
