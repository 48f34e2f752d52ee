// SPDX-License-Identifier: Apache-2.0
// vitmae-pretrain: MAE self-supervised pre-training on a folder of images, with MAE's recipe
// (random resized crop + flip, AdamW betas 0.9/0.95, weight decay 0.05, lr = base_lr*batch/256,
// warm-up then cosine). Writes HF-layout checkpoints that vitmae-reconstruct, vitmae-embed and
// transformers load, plus the loss curve as CSV and SVG.
#include "common.hpp"
#include "distributed.hpp"

#include <vitmae/train.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

constexpr const char* kUsage =
    "usage: vitmae-pretrain --data SRC --out DIR\n"
    "                       (--config FILE | --preset NAME | --init DIR | --resume DIR)\n"
    "                       [--steps N | --epochs N] [--batch B] [--accum N] [--base-lr X | --lr X]\n"
    "                       [--min-lr X] [--warmup N] [--weight-decay X] [--clip-grad X]\n"
    "                       [--mask-ratio R] [--seed N] [--save-every N] [--keep N] [--threads N]\n"
    "                       [--workers N] [--log-every N] [--scale-min X] [--shorter-side N] [--no-flip]\n"
    "                       [--vflip] [--transpose] [--channel-shuffle] [--skip-bad-images] [--no-overlap]\n"
    "Data and output:\n"
    "  --data SRC          (required) a folder of images (searched recursively), a text file listing\n"
    "                      image paths, one a line, or fashion-mnist:DIR:SPLIT (the IDX files of\n"
    "                      Debian's dataset-fashion-mnist, DIR /usr/share/datasets/fashion-mnist,\n"
    "                      SPLIT train or t10k; the labels are not used)\n"
    "  --out DIR           (required) OUT/checkpoint-STEP every --save-every steps, OUT/final at the end,\n"
    "                      OUT/loss.csv and OUT/loss.svg; each checkpoint holds config.json,\n"
    "                      model.safetensors, preprocessor_config.json, optimizer.safetensors,\n"
    "                      trainer_state.json and loss.csv, and is written atomically\n"
    "  --skip-bad-images   decode every image once at the start, leave out those that cannot be read\n"
    "                      (saying how many and which) and train on the rest (default: off, the first\n"
    "                      damaged image a batch needs ends the run, naming the file)\n"
    "The model (required: --config, --preset, --init or --resume):\n"
    "  --config FILE       train from scratch the model an HF config.json describes (required, or one of\n"
    "                      the next three)\n"
    "  --preset NAME       train from scratch mae-vit-base, mae-vit-large or mae-vit-huge (required, or\n"
    "                      another of the four)\n"
    "  --init DIR          start from a checkpoint's weights as a new run, with a fresh optimiser and\n"
    "                      schedule (required, or another of the four)\n"
    "  --resume DIR        continue a run from one of its checkpoints, bit for bit (required, or another\n"
    "                      of the four). The run must keep the checkpoint's --batch, --accum, --steps,\n"
    "                      --seed and --threads: a different --steps, --seed or --threads is refused\n"
    "                      (exit 2), naming both values\n"
    "Schedule and optimiser (MAE's recipe: AdamW betas 0.9/0.95, warm-up then cosine decay):\n"
    "  --steps N           optimiser steps (default 1000)\n"
    "  --epochs N          instead of --steps: N passes over the data (default: use --steps)\n"
    "  --batch B           images per micro-batch (default 64)\n"
    "  --accum N           micro-batches per optimiser step (default 1)\n"
    "  --base-lr X         MAE's base learning rate (default 1.5e-4); the peak rate is\n"
    "                      base-lr * batch * accum / 256, so a small batch trains slowly: --batch 8 gives\n"
    "                      1.5e-4 * 8 / 256 = 4.7e-6, and a short run learns nothing visible. For short\n"
    "                      runs and small batches set the peak with --lr (the bundled model: --lr 1e-3)\n"
    "  --lr X              the peak learning rate itself, overriding --base-lr (default: from --base-lr)\n"
    "  --min-lr X          the floor of the cosine decay (default 0)\n"
    "  --warmup N          steps of linear warm-up (default 5% of the steps)\n"
    "  --weight-decay X    AdamW's decoupled weight decay, on weights only (default 0.05)\n"
    "  --clip-grad X       clip the gradient's global norm to X (default 0: no clipping)\n"
    "  --mask-ratio R      fraction of patches hidden, in (0, 1) (default: the config's, 0.75 in HF's)\n"
    "  --seed N            seeds the initial weights, the data order, the crops and the masks (default 0)\n"
    "Augmentation (MAE's recipe: random resized crop, horizontal flip):\n"
    "  --scale-min X       smallest crop, as a fraction of the image's area, in (0, 1] (default 0.2)\n"
    "  --shorter-side N    shrink each image once, on decoding, to this shorter side when it is longer\n"
    "                      (default 4x the model's image size; 0 keeps full size: exact torchvision\n"
    "                      crops, slower)\n"
    "  --no-flip           no horizontal mirroring (default: mirror with probability 1/2)\n"
    "  --vflip             also turn views upside down, probability 1/2 (default: off; not MAE's recipe)\n"
    "  --transpose         also swap rows and columns of square views, probability 1/2; with both flips\n"
    "                      all 8 orientations (default: off; not MAE's recipe)\n"
    "  --channel-shuffle   also permute the RGB channels at random, probability 1/2 (default: off; not\n"
    "                      MAE's recipe)\n"
    "Running:\n"
    "  --save-every N      write OUT/checkpoint-STEP every N steps (default 500; 0: only OUT/final)\n"
    "  --keep N            how many of those to keep, the newest (default 2)\n"
    "  --threads N         threads over the batch; the result depends on it (default: all cores)\n"
    "  --workers N         image-decoding threads that build batches ahead; 0: the --threads build\n"
    "                      each batch between steps (default 0: every core trains)\n"
    "  --log-every N       print the loss every N steps (default: every step on a terminal, else 100\n"
    "                      lines a run)\n"
    "  --no-overlap        under mpirun: sum the gradients over the ranks after each backward instead of\n"
    "                      a layer at a time during it (the same bits; default: during it)\n"
    "  -h, --help          print this text and exit\n";

struct Args {
  std::string data, out, config, preset, init, resume;
  long steps = 0, epochs = 0, save_every = 500, log_every = 0;
  int keep = 2, workers = 0, threads = 0, shorter_side = -1;
  double mask_ratio = -1, scale_min = 0.2;
  bool flip = true, vflip = false, transpose = false, channel_shuffle = false, skip_bad_images = false, overlap = true;
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
    else if (f == "--workers") a.workers = static_cast<int>(integer(0, 256));
    else if (f == "--scale-min") a.scale_min = num();
    else if (f == "--shorter-side") a.shorter_side = static_cast<int>(integer(0, 1 << 20));
    else if (f == "--no-flip") a.flip = false;
    else if (f == "--vflip") a.vflip = true;
    else if (f == "--transpose") a.transpose = true;
    else if (f == "--channel-shuffle") a.channel_shuffle = true;
    else if (f == "--skip-bad-images") a.skip_bad_images = true;
    else if (f == "--no-overlap") a.overlap = false;
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
  if (!a.preset.empty()) examples::check_preset(a.preset);
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
  const auto world = examples::launch_world("vitmae-pretrain", &argc, &argv);
  const bool root = world->rank() == 0;  // rank 0 alone prints and writes
  auto say = [&](const char* format, auto... values) {
    if (root) std::fprintf(stderr, format, values...);
  };
  return examples::run_ranks("vitmae-pretrain", kUsage, *world, [&] {
    namespace fs = std::filesystem;
    using Scalar = float;
    using vitmae::ForPreTraining;
    Args a = parse(argc, argv);
    examples::set_threads(a.threads);
    a.train.threads = a.threads > 0 ? a.threads : vitmae::available_threads();

    // The model: a checkpoint to start from, or a config/preset initialised as MAE does.
    std::string source = !a.init.empty() ? a.init : a.resume;
    std::optional<ForPreTraining<Scalar>> loaded_model;
    examples::together(*world, [&] { loaded_model.emplace([&] {
      if (!a.config.empty() || !a.preset.empty()) {
        vitmae::Config cfg = a.config.empty() ? vitmae::Config::preset(a.preset) : vitmae::Config::load(a.config);
        if (a.mask_ratio > 0) cfg.mask_ratio = a.mask_ratio;
        examples::doing("allocating the model of " + (a.config.empty() ? "preset " + a.preset : a.config) + " (" +
                        examples::model_size(cfg, true) + ")");
        ForPreTraining<Scalar> m(cfg);
        auto rng = vitmae::seeded_rng(a.train.seed, 0x494E4954ull);  // "INIT"
        m.init_weights(rng);
        return m;
      }
      examples::doing("loading the model " + source);
      ForPreTraining<Scalar> m = ForPreTraining<Scalar>::from_pretrained(source);
      if (a.mask_ratio > 0) m.config().mask_ratio = a.mask_ratio;
      return m;
    }()); });
    ForPreTraining<Scalar> model = std::move(*loaded_model);
    loaded_model.reset();
    vitmae::ImageProcessor proc;
    if (!source.empty() && vitmae::io::file_exists(vitmae::io::join_path(source, "preprocessor_config.json"))) {
      examples::together(*world, [&] { proc = vitmae::ImageProcessor::for_checkpoint(source, model.config()); });
    } else {  // MAE's normalisation (ImageNet statistics) and bicubic resampling, at the model's size
      proc.height = proc.width = model.config().image_size;
      proc.resample = 3;
      proc.image_mean = {0.485, 0.456, 0.406};
      proc.image_std = {0.229, 0.224, 0.225};
      if (model.config().num_channels != 3) proc.image_mean = {0.45}, proc.image_std = {0.225};
    }

    const int shorter = a.shorter_side >= 0 ? a.shorter_side : 4 * static_cast<int>(std::max(proc.height, proc.width));
    examples::doing("reading the images of " + a.data);
    // Unlabelled images (ImageDataset), or a labelled set whose labels pre-training ignores.
    const bool labelled = vitmae::train::LabelledDataset::is_fashion_mnist_spec(a.data);
    std::optional<vitmae::train::ImageDataset> images;
    std::optional<vitmae::train::LabelledDataset> idx;
    examples::together(*world, [&] {
      if (labelled) {
        idx = vitmae::train::LabelledDataset::open(a.data);
        idx->set_channels(static_cast<int>(model.config().num_channels));
        if (a.skip_bad_images) say("vitmae-pretrain: --skip-bad-images: %s is decoded already\n", a.data.c_str());
      } else {
        images = vitmae::train::ImageDataset::open(a.data, static_cast<int>(model.config().num_channels), shorter);
      }
      if (images && a.skip_bad_images) {
        auto& data = *images;
        const size_t all = data.size();
        const auto skipped = data.skip_unreadable(std::max(a.workers, a.train.threads));
        if (skipped.empty()) say("vitmae-pretrain: --skip-bad-images: all %zu images can be read\n", all);
        else say("vitmae-pretrain: --skip-bad-images: left out %zu of %zu images, which cannot be read:\n", skipped.size(), all);
        const size_t shown = 10;
        for (size_t i = 0; i < skipped.size() && i < shown; ++i) say("  %s\n", skipped[i].reason.c_str());
        if (skipped.size() > shown) say("  ... and %zu more\n", skipped.size() - shown);
      }
    });
    const size_t n_images = images ? images->size() : idx->size();
    examples::together(*world, [&] {  // every rank must see the same images, or the batches would differ
      vitmae::train::require_same_on_ranks(*world, a.data + ": the number of images", static_cast<double>(n_images));
      vitmae::train::require_same_on_ranks(*world, "the preprocessing (preprocessor_config.json)", proc.to_json().dump());
    });
    if (a.epochs) {
      const long per_step = static_cast<long>(a.train.batch) * a.train.accum;
      a.train.steps = (a.epochs * static_cast<long>(n_images) + per_step - 1) / per_step;
    } else if (a.steps) {
      a.train.steps = a.steps;
    }
    examples::doing("allocating the trainer (gradients and AdamW moments: 3 more copies of the model)");
    std::optional<vitmae::train::Trainer<Scalar>> made;
    examples::together(*world, [&] { made.emplace(std::move(model), a.train, world); });
    vitmae::train::Trainer<Scalar>& trainer = *made;
    trainer.set_overlap(a.overlap);
    examples::together(*world, [&] {
      if (a.resume.empty()) return;
      examples::doing("loading the checkpoint " + a.resume);
      try {
        vitmae::train::resume(trainer, a.resume);
      } catch (const vitmae::Error& e) {
        // A --steps, --seed or --threads that differs from the checkpoint's is the user's to
        // change: a usage error, its one line. (A different --batch or --accum still exits 1,
        // which tests/test_pretrain.cpp asserts.)
        static const std::regex refusal("trained with (batch|accum|steps|seed|threads) -?[0-9]+, this run asks for -?[0-9]+; a resumed run must keep it$");
        if (std::regex_search(e.what(), refusal)) throw examples::UsageError(e.what(), false);
        throw;
      }
    });
    examples::together(*world, [&] { vitmae::train::require_same_weights(*world, trainer.model(), a.resume.empty() ? source : a.resume); });
    if (a.mask_ratio > 0) trainer.model().config().mask_ratio = a.mask_ratio;
    const auto& opts = trainer.options();

    vitmae::train::AugmentOptions aug;
    aug.scale_min = a.scale_min;
    aug.hflip = a.flip;
    aug.vflip = a.vflip;
    aug.transpose = a.transpose;
    aug.channel_shuffle = a.channel_shuffle;
    const long first_batch = trainer.step() * opts.accum;
    std::unique_ptr<vitmae::train::DataLoader<Scalar>> image_loader;
    std::unique_ptr<vitmae::train::DataLoader<Scalar, vitmae::train::LabelledDataset>> idx_loader;
    if (images)
      image_loader = std::make_unique<vitmae::train::DataLoader<Scalar>>(*images, proc, aug, opts.batch, opts.seed, a.workers,
                                                                         2 + a.workers, first_batch, trainer.slice());
    else
      idx_loader = std::make_unique<vitmae::train::DataLoader<Scalar, vitmae::train::LabelledDataset>>(
          *idx, proc, aug, opts.batch, opts.seed, a.workers, 2 + a.workers, first_batch, trainer.slice());
    long params = 0;
    trainer.model().visit_parameters("", [&](const vitmae::Parameter<const Scalar>& p) {
      if (p.trainable()) params += static_cast<long>(p.size);
    });
    const std::string ranks = world->size() > 1 ? " on each of " + std::to_string(world->size()) + " ranks" : "";
    say("vitmae-pretrain: %zu images, %ld trainable parameters, %dx%d patch %ld, steps %ld from %ld, batch %d x %d, "
        "peak lr %.3g, warm-up %ld, %d threads%s\n",
        n_images, params, static_cast<int>(proc.width), static_cast<int>(proc.height),
        static_cast<long>(trainer.model().config().patch_size), opts.steps, trainer.step(), opts.batch, opts.accum,
        opts.peak_lr(), opts.warmup(), opts.threads, ranks.c_str());

    examples::together(*world, [&] {
      if (root) fs::create_directories(a.out);
    });
    auto write_curves = [&] {
      vitmae::io::write_file_atomic((fs::path(a.out) / "loss.csv").string(), vitmae::train::loss_csv(trainer.history()));
      vitmae::io::write_file_atomic((fs::path(a.out) / "loss.svg").string(), vitmae::train::loss_curve_svg(trainer.history()));
    };
    vitmae::train::CheckpointRotation rotation(a.out, a.keep);
    auto save = [&](long step, bool final) {  // rank 0 writes; every rank learns how that went
      const std::string dir = final ? (fs::path(a.out) / "final").string() : rotation.dir(step);
      examples::together(*world, [&] {
        if (!root) return;
        vitmae::train::save_checkpoint(trainer, dir, proc);
        write_curves();
        if (!final) rotation.added(step);
      });
      return dir;
    };

    const bool tty = ::isatty(2);
    const long log_every = a.log_every ? a.log_every : (tty ? 1 : std::max(1L, opts.steps / 100));
    const auto start = std::chrono::steady_clock::now();
    const long first = trainer.step();
    double avg_loss = 0;
    long avg_n = 0;
    examples::doing("training");
    auto next_batch = [&] {
      if (idx_loader) return idx_loader->next();
      try {
        return image_loader->next();
      } catch (const vitmae::Error& e) {
        // An image that cannot be read names itself; say how to train on without it.
        const std::string what = e.what();
        for (const std::string& f : images->files())
          if (what.rfind("vitmae: " + f + ": ", 0) == 0)
            throw vitmae::Error(what + " (--skip-bad-images leaves out the images that cannot be read)");
        throw;
      }
    };
    while (trainer.step() < opts.steps) {
      const auto r = trainer.train_step(next_batch);
      avg_loss += r.loss, ++avg_n;
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const long done = trainer.step() - first;
      if (r.step % log_every == 0 || r.step == opts.steps) {
        const double ips = static_cast<double>(done) * opts.batch * opts.accum / elapsed;
        const double eta = elapsed / static_cast<double>(done) * static_cast<double>(opts.steps - trainer.step());
        say("%sstep %ld/%ld  loss %.4f  lr %.3e  %.1f img/s  elapsed %s  ETA %s%s", tty ? "\r" : "", r.step, opts.steps,
            avg_loss / static_cast<double>(avg_n), r.lr, ips, hms(elapsed).c_str(), hms(eta).c_str(), tty ? "   " : "\n");
        avg_loss = 0, avg_n = 0;
      }
      if (a.save_every > 0 && r.step % a.save_every == 0 && r.step != opts.steps) save(r.step, false);
    }
    const std::string dir = save(trainer.step(), true);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const long done = trainer.step() - first;
    say("%s", tty ? "\n" : "");
    if (root)
      std::printf("trained %ld steps (%ld images) in %s, %.1f images/s; final model: %s\n", done,
                done * opts.batch * opts.accum, hms(elapsed).c_str(),
                done ? static_cast<double>(done) * opts.batch * opts.accum / elapsed : 0.0, dir.c_str());
    if (world->size() > 1 && done > 0)
      say("vitmae-pretrain: summing the gradients over %d ranks took %.1f ms a step (%.1f%% of the time)%s\n", world->size(),
          1e3 * trainer.data_parallel().reduce_seconds() / static_cast<double>(done),
          100 * trainer.data_parallel().reduce_seconds() / elapsed,
          trainer.data_parallel().overlaps() ? " after the backward, beyond what overlapping it hid" : "");
  });
}
