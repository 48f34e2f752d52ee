// SPDX-License-Identifier: Apache-2.0
// vitmae-pretrain: MAE self-supervised pre-training on a folder of images, with MAE's recipe
// (random resized crop + flip, AdamW betas 0.9/0.95, weight decay 0.05, lr = base_lr*batch/256,
// warm-up then cosine). Writes HF-layout checkpoints that vitmae-reconstruct, vitmae-embed and
// transformers load, plus the run's metrics and loss curve (vitmae/train/run.hpp).

#include <vitmae/cli/ranks.hpp>
#include <vitmae/cli/train_flags.hpp>
#include <vitmae/train.hpp>

#include <algorithm>
#include <iostream>
#include <optional>
#include <string>

namespace cli = vitmae::cli;

namespace {

struct Args : cli::TrainArgs {
  std::string preset;
  double mask_ratio = -1;
  vitmae::train::TrainOptions train;  // MAE's pre-training recipe by default
};

cli::CommandLine command_line(Args& a) {
  using R = cli::CommandLine::OnResume;
  cli::CommandLine cl("vitmae-pretrain",
                      "usage: vitmae-pretrain --data SRC --out DIR (--config FILE | --preset NAME | --init DIR)\n"
                      "                       [--steps N | --epochs N] [--batch B] [--lr X] [flags below]\n"
                      "       vitmae-pretrain --resume OUT/checkpoint-STEP [flags below]\n"
                      "MAE self-supervised pre-training of a ViTMAEForPreTraining on unlabelled images. Writes\n"
                      "HF-layout checkpoints (config.json, model.safetensors, preprocessor_config.json, with\n"
                      "optimizer.safetensors, trainer_state.json, metrics.csv, each written atomically) every\n"
                      "--save-every steps and OUT/final, and the run's logs: OUT/metrics.csv (a row a step),\n"
                      "OUT/loss.csv and OUT/loss.svg.\n");
  cli::add_shared_flags(cl, a, a.train,
                        "(required unless --resume) a folder of images (searched recursively), a\n"
                        "text file listing image paths, one a line, or fashion-mnist:DIR:SPLIT\n"
                        "(the IDX files of Debian's dataset-fashion-mnist, DIR\n"
                        "/usr/share/datasets/fashion-mnist, SPLIT train or t10k; labels unused)",
                        "1000");
  cl.section("Pre-training only");
  cl.text("--preset", "NAME", a.preset,
          "instead of --config: train from scratch mae-vit-base, mae-vit-large or\nmae-vit-huge (default: none)",
          R::never);
  cl.number(
      "--mask-ratio", "R", a.mask_ratio, [](double x) { return x > 0 && x < 1; }, "in (0, 1)",
      "fraction of patches hidden (default: the config's, 0.75 in HF's)");
  return cl;
}

void parse(int argc, char** argv, cli::CommandLine& cl, Args& a, int world_size) {
  using cli::UsageError;
  cli::parse_training_flags(argc, argv, cl, a, world_size);
  // (With --resume the checkpoint's model is the run's; a --config given too must describe it.)
  if (!a.config.empty() + !a.preset.empty() + !a.init.empty() > 1)
    throw UsageError("give one of --config, --preset, --init");
  if (a.config.empty() && a.preset.empty() && a.init.empty() && a.resume.empty())
    throw UsageError("give the model: --config, --preset, --init or --resume");
  if (!a.preset.empty()) cli::check_preset(a.preset);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace vitmae::train;
  const auto world = cli::launch_world("vitmae-pretrain", &argc, &argv);
  Args usage_args;
  const std::string usage = command_line(usage_args).head();
  return cli::run_ranks("vitmae-pretrain", usage.c_str(), *world, [&] {
    Args a;
    cli::CommandLine cl = command_line(a);
    together(*world, [&] { parse(argc, argv, cl, a, world->size()); });  // reads the checkpoint: on every rank
    cli::set_threads(a.threads);
    a.train.threads = a.threads > 0 ? a.threads : vitmae::available_threads();

    // The model: a config or preset initialised as MAE does, or a checkpoint's weights.
    const std::string source = !a.init.empty() ? a.init : a.resume;
    const bool drawn =
        !a.config.empty() || !a.preset.empty();  // (with --resume too: it must describe the checkpoint's model)
    std::optional<vitmae::ForPreTraining<float>> model;
    vitmae::ImageProcessor proc;
    together(*world, [&] {
      const vitmae::Config c = !drawn             ? vitmae::Config()
                               : a.config.empty() ? vitmae::Config::preset(a.preset)
                                                  : vitmae::load_config(a.config);
      cli::doing(drawn ? "allocating the model of " + (a.config.empty() ? "preset " + a.preset : a.config) + " (" +
                             cli::model_size(c, true) + ")"
                       : "loading the model " + source);
      model.emplace(pretraining_model<float>(drawn ? "" : source, c, a.train.seed, a.mask_ratio));
      proc = pretraining_processor(source,
                                   model->config());  // the checkpoint's, else MAE's (ImageNet statistics, bicubic)
    });

    // Unlabelled images, or a labelled set whose labels pre-training ignores: every image decoded
    // once before anything is written.
    auto train_on = [&](auto images) {
      cli::doing("checking the images of " + a.data);
      together(*world, [&] {
        check_images(images, a.skip_bad_images, std::max(a.workers, a.train.threads), "vitmae-pretrain", a.data,
                     [&](const std::string& l) {
                       if (world->rank() == 0) std::cerr << l;
                     });
      });
      together(*world, [&] {  // every rank must see the same images, or the batches would differ
        require_same_on_ranks(*world, a.data + ": the number of images", static_cast<double>(images.size()));
        require_same_on_ranks(*world, "the preprocessing (preprocessor_config.json)", proc.to_json().dump());
      });
      a.train.steps = cli::run_steps(a, a.train, images.size(), 1000);
      cli::doing("allocating the trainer (gradients and AdamW moments: 3 more copies of the model)");
      std::optional<Trainer<float>> made;
      together(*world, [&] { made.emplace(std::move(*model), a.train, world); });
      Trainer<float>& trainer = *made;
      trainer.set_overlap(a.overlap);
      trainer.set_run_args(cl.recorded());
      TrainingRun<Trainer<float>> run(trainer, cli::run_settings(a, a.train, "vitmae-pretrain", images.size()), proc);
      cli::doing("loading the checkpoint " + a.resume);
      run.start(source);  // a refused resume: vitmae::RequestError, exit 2
      if (a.mask_ratio > 0) trainer.model().config().mask_ratio = a.mask_ratio;
      const auto& o = trainer.options();
      long params = 0;
      trainer.model().visit_parameters("", [&](const vitmae::Parameter<const float>& p) {
        params += p.trainable() ? static_cast<long>(p.size) : 0;
      });
      run.say(vitmae::detail::concat("vitmae-pretrain: ", images.size(), " images, ", params, " trainable parameters, ",
                                     proc.width, "x", proc.height, " patch ", trainer.model().config().patch_size,
                                     ", steps ", o.steps, " from ", trainer.step(), ", batch ", o.batch, " x ", o.accum,
                                     ", peak lr ", o.peak_lr(), ", warm-up ", o.warmup(), ", ", o.threads, " threads",
                                     cli::on_ranks(*world), "\n"));
      AugmentOptions aug = a.aug;
      aug.random_crop = aug.scale_min < 1;
      DataLoader<float, decltype(images)> loader(std::move(images), proc, aug, o.batch, o.seed, a.workers,
                                                 2 + a.workers, trainer.step() * o.accum, trainer.slice());
      cli::doing("training");
      run.run([&] { return loader.next(); });
      run.finish();
    };
    const int channels = static_cast<int>(model->config().num_channels);
    const int shorter = a.shorter_side >= 0 ? a.shorter_side : 4 * static_cast<int>(std::max(proc.height, proc.width));
    cli::doing("reading the images of " + a.data);
    if (LabelledDataset::is_fashion_mnist_spec(a.data)) {
      std::optional<LabelledDataset> idx;
      together(*world, [&] { idx = LabelledDataset::open(a.data); });
      idx->set_channels(channels);
      idx->set_shorter_side(shorter);
      train_on(std::move(*idx));
    } else {
      std::optional<ImageDataset> images;
      together(*world, [&] { images = ImageDataset::open(a.data, channels, shorter); });
      train_on(std::move(*images));
    }
  });
}
