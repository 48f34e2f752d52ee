// SPDX-License-Identifier: Apache-2.0
// vitmae-pretrain: MAE self-supervised pre-training on a folder of images, with MAE's recipe
// (random resized crop + flip, AdamW betas 0.9/0.95, weight decay 0.05, lr = base_lr*batch/256,
// warm-up then cosine). Writes HF-layout checkpoints that vitmae-reconstruct, vitmae-embed and
// transformers load, plus the loss curve as CSV and SVG.
#include "common.hpp"

#include <vitmae/train.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

constexpr const char* kUsage =
    "usage: vitmae-pretrain --data DIR|LIST --out DIR [--config config.json | --preset NAME | --init DIR]\n"
    "                       [--steps N | --epochs N] [--batch B] [--accum N] [--base-lr X | --lr X] [--min-lr X]\n"
    "                       [--warmup N] [--weight-decay X] [--clip-grad X] [--mask-ratio R] [--seed N]\n"
    "                       [--resume DIR] [--save-every N] [--keep N] [--threads N] [--workers N]\n"
    "                       [--scale-min X] [--no-flip] [--vflip] [--transpose] [--channel-shuffle]\n"
    "                       [--shorter-side N] [--log-every N]\n"
    "  --data      a folder of images (searched recursively) or a text file listing image paths\n"
    "  --out       where checkpoints go: OUT/checkpoint-STEP every --save-every steps (the last --keep\n"
    "              kept), OUT/final at the end, OUT/loss.csv and OUT/loss.svg; each checkpoint holds\n"
    "              config.json, model.safetensors, preprocessor_config.json, optimizer.safetensors,\n"
    "              trainer_state.json and loss.csv, and is written atomically\n"
    "  --config    the model to train from scratch (HF config.json); --preset mae-vit-base|large|huge;\n"
    "              --init DIR starts from a checkpoint's weights instead of a random initialisation\n"
    "  --steps     optimiser steps (default 1000); --epochs N sets steps to N passes over the data\n"
    "  --batch     images per micro-batch (default 64); --accum micro-batches per step (default 1)\n"
    "  --base-lr   MAE's base learning rate (default 1.5e-4), scaled by batch*accum/256; --lr sets\n"
    "              the peak rate directly. --warmup steps of linear warm-up (default 5% of steps),\n"
    "              then cosine decay to --min-lr (default 0)\n"
    "  --resume    continue from a checkpoint of the same run (same --batch, --accum, --steps)\n"
    "  --threads   threads over the batch (default: all cores); --workers image-decoding threads (1)\n"
    "  --shorter-side  shrink each image once, on decoding, to this shorter side when it is longer\n"
    "              (default 4x the model's image size; 0 keeps full size: exact torchvision crops,\n"
    "              slower); --scale-min the smallest crop area (0.2); --no-flip no mirroring\n"
    "  --vflip, --transpose, --channel-shuffle  extra augmentation for small datasets (not MAE's\n"
    "              recipe): upside-down views, swapped axes (all 8 orientations with the flips),\n"
    "              permuted RGB channels, each with probability 1/2\n";

struct Args {
  std::string data, out, config, preset, init, resume;
  long steps = 0, epochs = 0, save_every = 500, log_every = 0;
  int keep = 2, workers = 1, threads = 0, shorter_side = -1;
  double mask_ratio = -1, scale_min = 0.2;
  bool flip = true, vflip = false, transpose = false, channel_shuffle = false;
  vitmae::train::TrainOptions train;
};

Args parse(int argc, char** argv) {
  using examples::to_double, examples::to_int, examples::value, examples::UsageError;
  Args a;
  a.train.threads = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    auto num = [&] { return to_double(f, value(argc, argv, i)); };
    auto integer = [&](long long lo, long long hi) { return to_int(f, value(argc, argv, i), lo, hi); };
    if (f == "--data") a.data = value(argc, argv, i);
    else if (f == "--out") a.out = value(argc, argv, i);
    else if (f == "--config") a.config = value(argc, argv, i);
    else if (f == "--preset") a.preset = value(argc, argv, i);
    else if (f == "--init") a.init = value(argc, argv, i);
    else if (f == "--resume") a.resume = value(argc, argv, i);
    else if (f == "--steps") a.steps = integer(1, 1'000'000'000);
    else if (f == "--epochs") a.epochs = integer(1, 1'000'000);
    else if (f == "--batch") a.train.batch = static_cast<int>(integer(1, 65536));
    else if (f == "--accum") a.train.accum = static_cast<int>(integer(1, 65536));
    else if (f == "--base-lr") a.train.base_lr = num();
    else if (f == "--lr") a.train.lr = num();
    else if (f == "--min-lr") a.train.min_lr = num();
    else if (f == "--warmup") a.train.warmup_steps = integer(0, 1'000'000'000);
    else if (f == "--weight-decay") a.train.weight_decay = num();
    else if (f == "--clip-grad") a.train.clip_grad = num();
    else if (f == "--mask-ratio") a.mask_ratio = num();
    else if (f == "--seed") a.train.seed = static_cast<std::uint64_t>(integer(0, INT64_MAX));
    else if (f == "--save-every") a.save_every = integer(0, 1'000'000'000);
    else if (f == "--keep") a.keep = static_cast<int>(integer(0, 1'000'000));
    else if (f == "--threads") a.threads = static_cast<int>(integer(1, 1024));
    else if (f == "--workers") a.workers = static_cast<int>(integer(1, 256));
    else if (f == "--scale-min") a.scale_min = num();
    else if (f == "--shorter-side") a.shorter_side = static_cast<int>(integer(0, 1 << 20));
    else if (f == "--no-flip") a.flip = false;
    else if (f == "--vflip") a.vflip = true;
    else if (f == "--transpose") a.transpose = true;
    else if (f == "--channel-shuffle") a.channel_shuffle = true;
    else if (f == "--log-every") a.log_every = integer(1, 1'000'000'000);
    else if (f == "-h" || f == "--help") {
      std::cout << kUsage;
      std::exit(0);
    } else throw UsageError("unknown argument '" + f + "'");
  }
  if (a.data.empty() || a.out.empty()) throw UsageError("--data and --out are required");
  if (!a.config.empty() + !a.preset.empty() + !a.init.empty() > 1) throw UsageError("give one of --config, --preset, --init");
  if (a.config.empty() && a.preset.empty() && a.init.empty() && a.resume.empty())
    throw UsageError("give the model: --config, --preset, --init or --resume");
  if (a.steps && a.epochs) throw UsageError("give --steps or --epochs, not both");
  if (!(a.train.base_lr > 0) || a.train.lr < 0 || a.train.min_lr < 0 || a.train.weight_decay < 0 || a.train.clip_grad < 0)
    throw UsageError("learning rates must be positive, --min-lr, --weight-decay and --clip-grad non-negative");
  if (a.mask_ratio != -1 && !(a.mask_ratio > 0 && a.mask_ratio < 1)) throw UsageError("--mask-ratio must be in (0, 1)");
  if (!(a.scale_min > 0 && a.scale_min <= 1)) throw UsageError("--scale-min must be in (0, 1]");
  return a;
}

std::string hms(double s) {
  const long t = static_cast<long>(s + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  return examples::run_main("vitmae-pretrain", kUsage, [&] {
    namespace fs = std::filesystem;
    using Scalar = float;
    using vitmae::ForPreTraining;
    Args a = parse(argc, argv);
    examples::set_threads(a.threads);
    examples::tune_allocator();
    a.train.threads = a.threads > 0 ? a.threads : vitmae::available_threads();

    // The model: a checkpoint to start from, or a config/preset initialised as MAE does.
    std::string source = !a.init.empty() ? a.init : a.resume;
    ForPreTraining<Scalar> model = [&] {
      if (!a.config.empty() || !a.preset.empty()) {
        vitmae::Config cfg = a.config.empty() ? vitmae::Config::preset(a.preset) : vitmae::Config::load(a.config);
        if (a.mask_ratio > 0) cfg.mask_ratio = a.mask_ratio;
        ForPreTraining<Scalar> m(cfg);
        auto rng = vitmae::seeded_rng(a.train.seed, 0x494E4954ull);  // "INIT"
        m.init_weights(rng);
        return m;
      }
      ForPreTraining<Scalar> m = ForPreTraining<Scalar>::from_pretrained(source);
      if (a.mask_ratio > 0) m.config().mask_ratio = a.mask_ratio;
      return m;
    }();
    vitmae::ImageProcessor proc;
    if (!source.empty() && vitmae::io::file_exists(vitmae::io::join_path(source, "preprocessor_config.json"))) {
      proc = vitmae::ImageProcessor::for_checkpoint(source, model.config());
    } else {  // MAE's normalisation (ImageNet statistics) and bicubic resampling, at the model's size
      proc.height = proc.width = model.config().image_size;
      proc.resample = 3;
      proc.image_mean = {0.485, 0.456, 0.406};
      proc.image_std = {0.229, 0.224, 0.225};
      if (model.config().num_channels != 3) proc.image_mean = {0.45}, proc.image_std = {0.225};
    }

    const int shorter = a.shorter_side >= 0 ? a.shorter_side : 4 * static_cast<int>(std::max(proc.height, proc.width));
    const auto data = vitmae::train::ImageDataset::open(a.data, static_cast<int>(model.config().num_channels), shorter);
    if (a.epochs) {
      const long per_step = static_cast<long>(a.train.batch) * a.train.accum;
      a.train.steps = (a.epochs * static_cast<long>(data.size()) + per_step - 1) / per_step;
    } else if (a.steps) {
      a.train.steps = a.steps;
    }
    vitmae::train::Trainer<Scalar> trainer(std::move(model), a.train);
    if (!a.resume.empty()) vitmae::train::resume(trainer, a.resume);
    if (a.mask_ratio > 0) trainer.model().config().mask_ratio = a.mask_ratio;
    const auto& opts = trainer.options();

    vitmae::train::AugmentOptions aug;
    aug.scale_min = a.scale_min;
    aug.hflip = a.flip;
    aug.vflip = a.vflip;
    aug.transpose = a.transpose;
    aug.channel_shuffle = a.channel_shuffle;
    vitmae::train::DataLoader<Scalar> loader(data, proc, aug, opts.batch, opts.seed, a.workers, 2 + a.workers,
                                             trainer.step() * opts.accum);
    long params = 0;
    trainer.model().visit_parameters("", [&](const vitmae::Parameter<const Scalar>& p) {
      if (p.trainable()) params += static_cast<long>(p.size);
    });
    std::fprintf(stderr,
                 "vitmae-pretrain: %zu images, %ld trainable parameters, %dx%d patch %ld, steps %ld from %ld, batch %d x %d, "
                 "peak lr %.3g, warm-up %ld, %d threads\n",
                 data.size(), params, static_cast<int>(proc.width), static_cast<int>(proc.height),
                 static_cast<long>(trainer.model().config().patch_size), opts.steps, trainer.step(), opts.batch, opts.accum,
                 opts.peak_lr(), opts.warmup(), opts.threads);

    fs::create_directories(a.out);
    auto write_curves = [&] {
      vitmae::io::write_file_atomic((fs::path(a.out) / "loss.csv").string(), vitmae::train::loss_csv(trainer.history()));
      vitmae::io::write_file_atomic((fs::path(a.out) / "loss.svg").string(), vitmae::train::loss_curve_svg(trainer.history()));
    };
    std::vector<long> saved;
    auto save = [&](long step, bool final) {
      const std::string dir = (fs::path(a.out) / (final ? std::string("final") : "checkpoint-" + std::to_string(step))).string();
      vitmae::train::save_checkpoint(trainer, dir, proc);
      write_curves();
      if (!final) {
        saved.push_back(step);
        while (static_cast<int>(saved.size()) > a.keep) {
          std::error_code ec;
          fs::remove_all(fs::path(a.out) / ("checkpoint-" + std::to_string(saved.front())), ec);
          saved.erase(saved.begin());
        }
      }
      return dir;
    };

    const bool tty = ::isatty(2);
    const long log_every = a.log_every ? a.log_every : (tty ? 1 : std::max(1L, opts.steps / 100));
    const auto start = std::chrono::steady_clock::now();
    const long first = trainer.step();
    double avg_loss = 0;
    long avg_n = 0;
    while (trainer.step() < opts.steps) {
      const auto r = trainer.train_step([&] { return loader.next(); });
      avg_loss += r.loss, ++avg_n;
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const long done = trainer.step() - first;
      if (r.step % log_every == 0 || r.step == opts.steps) {
        const double ips = static_cast<double>(done) * opts.batch * opts.accum / elapsed;
        const double eta = elapsed / static_cast<double>(done) * static_cast<double>(opts.steps - trainer.step());
        std::fprintf(stderr, "%sstep %ld/%ld  loss %.4f  lr %.3e  %.1f img/s  elapsed %s  ETA %s%s", tty ? "\r" : "", r.step,
                     opts.steps, avg_loss / static_cast<double>(avg_n), r.lr, ips, hms(elapsed).c_str(), hms(eta).c_str(),
                     tty ? "   " : "\n");
        avg_loss = 0, avg_n = 0;
      }
      if (a.save_every > 0 && r.step % a.save_every == 0 && r.step != opts.steps) save(r.step, false);
    }
    const std::string dir = save(trainer.step(), true);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const long done = trainer.step() - first;
    std::fprintf(stderr, "%s", tty ? "\n" : "");
    std::printf("trained %ld steps (%ld images) in %s, %.1f images/s; final model: %s\n", done,
                done * opts.batch * opts.accum, hms(elapsed).c_str(),
                done ? static_cast<double>(done) * opts.batch * opts.accum / elapsed : 0.0, dir.c_str());
  });
}
