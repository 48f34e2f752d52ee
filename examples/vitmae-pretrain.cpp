// SPDX-License-Identifier: Apache-2.0
// vitmae-pretrain: MAE self-supervised pre-training on a folder of images, with MAE's recipe
// (random resized crop + flip, AdamW betas 0.9/0.95, weight decay 0.05, lr = base_lr*batch/256,
// warm-up then cosine). Writes HF-layout checkpoints that vitmae-reconstruct, vitmae-embed and
// transformers load, plus the loss curve as CSV and SVG.
#include "common.hpp"
#include "distributed.hpp"
#include "train_cli.hpp"

#include <vitmae/train.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

struct Args : examples::TrainArgs {
  std::string preset;
  double mask_ratio = -1;
  vitmae::train::TrainOptions train;  // MAE's pre-training recipe by default
};

examples::CommandLine command_line(Args& a) {
  using R = examples::CommandLine::OnResume;
  examples::CommandLine cl("vitmae-pretrain",
                           "usage: vitmae-pretrain --data SRC --out DIR (--config FILE | --preset NAME | --init DIR)\n"
                           "                       [--steps N | --epochs N] [--batch B] [--lr X] [flags below]\n"
                           "       vitmae-pretrain --resume OUT/checkpoint-STEP [flags below]\n"
                           "MAE self-supervised pre-training of a ViTMAEForPreTraining on unlabelled images. Writes\n"
                           "HF-layout checkpoints (config.json, model.safetensors, preprocessor_config.json, with\n"
                           "optimizer.safetensors, trainer_state.json and loss.csv, each written atomically) and\n"
                           "OUT/loss.csv and OUT/loss.svg.\n");
  examples::add_shared_flags(cl, a, a.train,
                             "(required unless --resume) a folder of images (searched recursively), a\n"
                             "text file listing image paths, one a line, or fashion-mnist:DIR:SPLIT\n"
                             "(the IDX files of Debian's dataset-fashion-mnist, DIR\n"
                             "/usr/share/datasets/fashion-mnist, SPLIT train or t10k; labels unused)",
                             "1000");
  cl.section("Pre-training only");
  cl.text("--preset", "NAME", a.preset,
          "instead of --config: train from scratch mae-vit-base, mae-vit-large or\nmae-vit-huge (default: none)", R::never);
  cl.number("--mask-ratio", "R", a.mask_ratio, [](double x) { return x > 0 && x < 1; }, "in (0, 1)",
            "fraction of patches hidden (default: the config's, 0.75 in HF's)");
  return cl;
}

void parse(int argc, char** argv, examples::CommandLine& cl, Args& a, int world_size) {
  using examples::UsageError;
  cl.parse(argc, argv);
  examples::resume_flags(cl, a, world_size);
  if (a.data.empty() || a.out.empty()) throw UsageError("--data and --out are required (or --resume DIR)");
  // (With --resume the checkpoint's model is the run's; a --config given too must describe it.)
  if (!a.config.empty() + !a.preset.empty() + !a.init.empty() > 1) throw UsageError("give one of --config, --preset, --init");
  if (a.config.empty() && a.preset.empty() && a.init.empty() && a.resume.empty())
    throw UsageError("give the model: --config, --preset, --init or --resume");
  if (!a.preset.empty()) examples::check_preset(a.preset);
  if (a.steps && a.epochs) throw UsageError("give --steps or --epochs, not both");
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
  Args usage_args;
  const std::string usage = command_line(usage_args).head();
  return examples::run_ranks("vitmae-pretrain", usage.c_str(), *world, [&] {
    namespace fs = std::filesystem;
    using Scalar = float;
    using vitmae::ForPreTraining;
    Args a;
    examples::CommandLine cl = command_line(a);
    examples::together(*world, [&] { parse(argc, argv, cl, a, world->size()); });  // reads the checkpoint: on every rank
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
        auto rng = vitmae::seeded_rng(a.train.seed, vitmae::seed_streams::init_mae);
        m.init_weights(rng);
        return m;
      }
      examples::doing("loading the model " + source);
      vitmae::train::require_trainable_weights(source);
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
      } else {
        images = vitmae::train::ImageDataset::open(a.data, static_cast<int>(model.config().num_channels), shorter);
      }
      const auto line = [&](const std::string& l) { say("%s", l.c_str()); };
      const int threads = std::max(a.workers, a.train.threads);
      if (images) examples::check_images(*images, a.skip_bad_images, threads, "vitmae-pretrain", a.data, line);
      else examples::check_images(*idx, a.skip_bad_images, threads, "vitmae-pretrain", a.data, line);
    });
    const size_t n_images = images ? images->size() : idx->size();
    examples::together(*world, [&] {  // every rank must see the same images, or the batches would differ
      vitmae::train::require_same_on_ranks(*world, a.data + ": the number of images", static_cast<double>(n_images));
      vitmae::train::require_same_on_ranks(*world, "the preprocessing (preprocessor_config.json)", proc.to_json().dump());
    });
    a.train.steps = examples::run_steps(a, a.train, n_images, 1000);
    examples::doing("allocating the trainer (gradients and AdamW moments: 3 more copies of the model)");
    std::optional<vitmae::train::Trainer<Scalar>> made;
    examples::together(*world, [&] { made.emplace(std::move(model), a.train, world); });
    vitmae::train::Trainer<Scalar>& trainer = *made;
    trainer.set_overlap(a.overlap);
    trainer.set_run_args(cl.recorded());
    examples::together(*world, [&] {
      if (a.resume.empty()) return;
      examples::doing("loading the checkpoint " + a.resume);
      vitmae::train::resume(trainer, a.resume);  // a refused resume: vitmae::RequestError, exit 2
    });
    examples::together(*world, [&] { vitmae::train::require_same_weights(*world, trainer.model(), a.resume.empty() ? source : a.resume); });
    if (a.mask_ratio > 0) trainer.model().config().mask_ratio = a.mask_ratio;
    const auto& opts = trainer.options();

    vitmae::train::AugmentOptions aug = a.aug;
    aug.random_crop = aug.scale_min < 1;
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
    if (!a.resume.empty()) say("vitmae-pretrain: resuming from step %ld of %ld (%s)\n", trainer.step(), opts.steps, a.resume.c_str());
    say("vitmae-pretrain: %zu images, %ld trainable parameters, %dx%d patch %ld, steps %ld from %ld, batch %d x %d, "
        "peak lr %.3g, warm-up %ld, %d threads%s\n",
        n_images, params, static_cast<int>(proc.width), static_cast<int>(proc.height),
        static_cast<long>(trainer.model().config().patch_size), opts.steps, trainer.step(), opts.batch, opts.accum,
        opts.peak_lr(), opts.warmup(), opts.threads, ranks.c_str());

    // OUT is created with the first file written there (a checkpoint, the curves), so a run that
    // ends before leaves no empty folder; what a killed run's atomic writes left there goes.
    examples::together(*world, [&] {
      if (!root) return;
      vitmae::io::require_can_create(a.out);
      vitmae::io::remove_stale_temporaries(a.out);
    });
    if (!a.resume.empty()) examples::note_checkpoint(a.resume);
    auto write_curves = [&] {
      vitmae::io::write_file_atomic((fs::path(a.out) / "loss.csv").string(), vitmae::train::loss_csv(trainer.history()));
      vitmae::io::write_file_atomic((fs::path(a.out) / "loss.svg").string(), vitmae::train::loss_curve_svg(trainer.history()));
    };
    vitmae::train::CheckpointRotation rotation(a.out, a.keep, !a.resume.empty());  // a resumed run's earlier ones count
    auto save = [&](long step, bool final) {  // rank 0 writes; every rank learns how that went
      const std::string dir = final ? (fs::path(a.out) / "final").string() : rotation.dir(step);
      examples::together(*world, [&] {
        if (!root) return;
        vitmae::train::save_checkpoint(trainer, dir, proc);
        write_curves();
        if (!final) rotation.added(step);
      });
      examples::note_checkpoint(dir);
      return dir;
    };

    const bool tty = ::isatty(2);
    const long log_every = a.log_every ? a.log_every : (tty ? 1 : std::max(1L, opts.steps / 100));
    const auto start = std::chrono::steady_clock::now();
    const long first = trainer.step();
    double avg_loss = 0;
    long avg_n = 0;
    examples::doing("training");
    examples::watch_ranks(*world, "vitmae-pretrain");
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
