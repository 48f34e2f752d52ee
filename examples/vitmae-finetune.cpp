// SPDX-License-Identifier: Apache-2.0
// vitmae-finetune: fine-tunes a ViTForImageClassification (from an MAE or ViT checkpoint, or from
// scratch) on labelled images with MAE's recipe, evaluating on a validation set as it goes.

#include <vitmae/cli/ranks.hpp>
#include <vitmae/cli/train_flags.hpp>
#include <vitmae/train.hpp>

#include <chrono>
#include <cstdio>
#include <iomanip>
#include <optional>
#include <string>
#include <vector>

namespace cli = vitmae::cli;

namespace {

struct Args : cli::TrainArgs {
  std::string val, probe_features = "cls";
  long labels_per_class = 0, eval_every = 0, holdout = 0;
  bool linear_probe = false, relabel = false;
  vitmae::train::FineTuneOptions o;  // MAE's fine-tuning recipe by default
};

cli::CommandLine command_line(Args& a) {
  using R = cli::CommandLine::OnResume;
  cli::CommandLine cl(
      "vitmae-finetune",
      "usage: vitmae-finetune --data SRC (--val SRC | --holdout N) --out DIR (--init PATH | --config FILE)\n"
      "                       [--steps N | --epochs N] [--batch N] [--base-lr X] [flags below]\n"
      "       vitmae-finetune --resume OUT/checkpoint-STEP [flags below]\n"
      "Fine-tunes a ViT classifier with MAE's recipe (AdamW, layer-wise lr decay, label smoothing,\n"
      "warm-up then cosine) and writes DIR/final (an HF ViTForImageClassification folder),\n"
      "DIR/metrics.csv (a row a step), DIR/loss.svg and DIR/accuracy.svg (the curves), and\n"
      "DIR/per_class.csv, DIR/confusion.csv and DIR/confusion.svg (of the last validation).\n"
      "With --linear-probe, the encoder stays frozen: its features of every image are computed once,\n"
      "normalised with the training set's mean and variance, and a linear head is trained on them\n"
      "(AdamW, warm-up then cosine, no weight decay, no label smoothing, no augmentation).\n");
  cli::add_shared_flags(cl, a, a.o,
                        "(required unless --resume) labelled training images: a folder\n"
                        "root/<class>/<images> (torchvision's ImageFolder), a list file of\n"
                        "'path<TAB>label' (or 'path label') lines, whole-number labels being class\n"
                        "indices, or fashion-mnist:DIR:SPLIT (IDX files of Debian's\n"
                        "dataset-fashion-mnist, DIR /usr/share/datasets/fashion-mnist, SPLIT\n"
                        "train or t10k)",
                        "10 epochs; linear probe: 90 epochs");
  cl.section("Fine-tuning only");
  cl.path("--val", "SRC", a.val,
          "labelled validation images, the same forms; its classes must be among the\n"
          "training set's (required, or --holdout)");
  cl.integer("--holdout", "N", a.holdout, 1, 1L << 40,
             "instead of --val: hold N images of every class out of the training set\n"
             "(seeded) and validate on them, so that choices are not made on a test set\n(default: none)");
  cl.integer("--labels-per-class", "N", a.labels_per_class, 1, 1L << 40,
             "train on a seeded subset of N images per class (default: all)");
  cl.number(
      "--layer-decay", "X", a.o.layer_decay, [](double x) { return x > 0 && x <= 1; }, "in (0, 1]",
      "lr x X^(layers+1-layer_id); 1 turns it off (default 0.75)");
  cl.number(
      "--label-smoothing", "X", a.o.label_smoothing, [](double x) { return x >= 0 && x < 1; }, "in [0, 1)",
      "cross-entropy's (default 0.1)");
  cl.toggle("--relabel", a.relabel, true,
            "with --init from a classifier whose id2label lacks a class of the data: draw\n"
            "a fresh classifier for the data's classes (default: off, such a run is refused;\n"
            "the classes it has keep their rows and names)",
            cli::CommandLine::OnResume::never);
  cl.integer("--eval-every", "N", a.eval_every, 1, 1L << 40, "steps between validations (default: one epoch)", R::free);
  cl.toggle("--linear-probe", a.linear_probe, true,
            "train a linear head on the frozen encoder's features (MAE's linear\n"
            "probing; batch 256 and no weight decay unless given); with cls features\n"
            "DIR/final is a ViTForImageClassification whose classifier holds the head\n"
            "with the normalisation folded in (default: off)");
  cl.text("--probe-features", "F", a.probe_features,
          "cls (the CLS token after the final layernorm), mean (the mean patch token)\n"
          "or pixels (the preprocessed pixels: logistic regression on raw pixels, a\n"
          "baseline; the model only sets the image size) (default cls)");
  return cl;
}

void parse(int argc, char** argv, cli::CommandLine& cl, Args& a, int world_size) {
  using cli::UsageError;
  cli::parse_training_flags(argc, argv, cl, a, world_size);
  if (a.val.empty() == !a.holdout) throw UsageError("give --val SRC or --holdout N (one of them)");
  if (a.probe_features != "cls" && a.probe_features != "mean" && a.probe_features != "pixels")
    throw UsageError("--probe-features must be cls, mean or pixels, got '" + a.probe_features + "'");
  if (a.probe_features != "cls" && !a.linear_probe) throw UsageError("--probe-features needs --linear-probe");
  if (a.linear_probe)
    for (const char* f :
         {"--accum", "--layer-decay", "--label-smoothing", "--clip-grad", "--scale-min", "--no-flip", "--vflip",
          "--transpose", "--channel-shuffle", "--shorter-side", "--save-every", "--keep", "--workers", "--no-overlap"})
      if (cl.given(f))
        throw UsageError(std::string(f) +
                         " is for fine-tuning; a linear probe trains on fixed features (no accumulation, "
                         "layer decay, label smoothing, clipping, augmentation or checkpoints)");
  if (a.relabel && a.init.empty()) throw UsageError("--relabel goes with --init (a classifier to start from)");
  if (!a.init.empty() + !a.config.empty() + !a.resume.empty() != 1)
    throw UsageError("give --init PATH, --config FILE or --resume DIR (one of them)");
  if (a.linear_probe && !a.resume.empty())
    throw UsageError("--resume continues fine-tuning; a linear probe is not resumed");
}

}  // namespace

int main(int argc, char** argv) {
  using namespace vitmae;
  using namespace vitmae::train;
  const auto world = cli::launch_world("vitmae-finetune", &argc, &argv);
  const bool root = world->rank() == 0;  // rank 0 alone prints, evaluates and writes
  Args usage_args;
  const std::string usage = command_line(usage_args).head();
  return cli::run_ranks("vitmae-finetune", usage.c_str(), *world, [&] {
    Args a;
    cli::CommandLine cl = command_line(a);
    together(*world, [&] { parse(argc, argv, cl, a, world->size()); });  // reads the checkpoint: on every rank
    a.o.threads = a.threads > 0 ? a.threads : available_threads();
    if (a.linear_probe && world->size() > 1)
      throw cli::UsageError(
          "vitmae-finetune: --linear-probe runs in one process (its features are computed once): run it without mpirun",
          false);
    cli::set_threads(a.o.threads);
    const auto say = [&](const std::string& l) {
      if (root) std::cerr << l;
    };

    // The data, checked before anything is written, and the classifier, whose rows name the classes.
    LabelledDataset train, val;
    std::vector<std::string> notes;
    std::optional<ViTForImageClassification<float>> built;
    together(*world, [&] {  // the same files on every rank, checked together
      cli::doing("reading the training set " + a.data);
      train = LabelledDataset::open(a.data);
      check_images(train, a.skip_bad_images, a.o.threads, "vitmae-finetune", a.data, say);
      detail::require(train.classes.size() >= 2, a.data, ": ", train.classes.size(),
                      " class; classification needs at least 2 (HF would treat 1 label as regression)");
      if (a.holdout) {
        val = train.hold_out(static_cast<size_t>(a.holdout), a.o.seed, "--holdout " + std::to_string(a.holdout));
      } else {
        cli::doing("reading the validation set " + a.val);
        val = LabelledDataset::open(a.val);
        check_images(val, a.skip_bad_images, a.o.threads, "vitmae-finetune", a.val, say);
      }
      if (a.labels_per_class)
        train = train.per_class_subset(static_cast<size_t>(a.labels_per_class), a.o.seed, nullptr,
                                       "--labels-per-class " + std::to_string(a.labels_per_class));
      cli::doing("building the model");
      const std::vector<std::string> before = train.classes;
      built.emplace(fine_tuning_classifier<float>({a.resume, a.init, a.config, a.relabel, a.o.seed}, train, &notes));
      val.use_classes_of(train.classes, a.holdout ? a.data : a.val,
                         train.classes == before ? "the training set's" : "the checkpoint's");
    });
    ViTForImageClassification<float> model = std::move(*built);
    built.reset();
    for (const std::string& n : notes) say("vitmae-finetune: " + n + "\n");
    train.set_channels(static_cast<int>(model.config().num_channels));
    val.set_channels(static_cast<int>(model.config().num_channels));
    const std::string proc_from = !a.init.empty() ? a.init : !a.resume.empty() ? a.resume : a.config;
    ImageProcessor proc;
    together(*world, [&] { proc = ImageProcessor::for_checkpoint(proc_from, model.config().mae_config()); });
    together(*world, [&] {  // collectives only: after what may fail on one rank
      require_same_on_ranks(*world, a.data + ": the number of training images", static_cast<double>(train.size()));
      require_same_on_ranks(*world, "the preprocessing (preprocessor_config.json)", proc.to_json().dump());
    });
    RunSettings rs = cli::run_settings(a, a.o, "vitmae-finetune", train.size());
    rs.eval_every = a.eval_every, rs.classes = train.classes, rs.final = RunSettings::Final::model;
    rs.eval_name = a.holdout ? std::to_string(a.holdout) + " held-out images per class" : a.val;
    bool wrote_final = true;
    Evaluation last;

    if (a.linear_probe) {  // MAE's linear probe: batch 256 and no weight decay unless given
      ProbeOptions po;
      po.batch = cl.given("--batch") ? a.o.batch : 256;
      po.lr = a.o.lr > 0 ? a.o.lr : a.o.base_lr * po.batch / 256.0;
      po.min_lr = a.o.min_lr, po.seed = a.o.seed, po.warmup_steps = a.o.warmup_steps;
      po.weight_decay = cl.given("--weight-decay") ? a.o.weight_decay : 0.0;
      rs.epoch_steps = cli::epoch_steps(po, train.size());
      po.steps = cli::run_steps(a, po, train.size(), 90 * rs.epoch_steps);
      const ProbeFeatures kind = probe_features_from(a.probe_features);
      const auto t0 = std::chrono::steady_clock::now();
      const auto features = [&](const LabelledDataset& set, const std::string& name) {
        const std::string what = "computing the " + a.probe_features + " features of " + name;
        cli::doing(what);
        return extract_features(model.vit, set, proc, kind, po.batch, progress_lines("vitmae-finetune: " + what, say));
      };
      const Matrix<float> X = features(train, a.data), V = features(val, rs.eval_name);
      say(detail::concat("vitmae-finetune: linear probe on ", X.cols(), " ", a.probe_features, " features of ",
                         train.size(), " training images in ", train.classes.size(), " classes (computed in ",
                         std::fixed, std::setprecision(1),
                         std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), " s), ",
                         val.size(), " validation images; ", po.steps, " steps of ", po.batch, " (", rs.epoch_steps,
                         " an epoch), peak lr ", std::defaultfloat, po.peak_lr(), "\n"));
      ProbeTraining<float> probe(X, train.labels(), static_cast<Index>(train.classes.size()), po);
      rs.save_every = 0, wrote_final = kind == ProbeFeatures::cls;  // a ViTForImageClassification takes the CLS token
      if (!wrote_final) rs.final = RunSettings::Final::none;
      TrainingRun<TrainingLoop<LinearProbing<float>>> run(
          probe.loop, rs, proc, [&](const LinearProbe<float>& p) { return Evaluation::of(p.logits(V), val.labels()); });
      last = run.run([&] { return probe.next(); });
      if (wrote_final) model.classifier = probe.loop.model().folded();  // the normalisation folded in
      else {
        probe.loop.model().save(io::join_path(a.out, "probe.safetensors"));
        say("vitmae-finetune: --probe-features " + a.probe_features + ": no " + a.out +
            "/final (a ViTForImageClassification classifies the CLS token); the head and its normalisation are in " +
            a.out + "/probe.safetensors\n");
      }
      run.finish([&](const std::string& folder) { model.save_pretrained(folder); });
    } else {
      a.o.steps = cli::run_steps(a, a.o, train.size(), 10 * rs.epoch_steps);
      train.set_shorter_side(a.shorter_side >= 0 ? a.shorter_side
                                                 : 4 * static_cast<int>(std::max(proc.height, proc.width)));
      std::optional<ClassifierTrainer<float>> made;
      together(*world, [&] { made.emplace(std::move(model), a.o, world); });
      ClassifierTrainer<float>& trainer = *made;
      trainer.set_overlap(a.overlap);
      trainer.set_run_args(cl.recorded());
      TrainingRun<ClassifierTrainer<float>> run(trainer, rs, proc, [&](const ViTForImageClassification<float>& m) {
        return evaluate(m, val, proc, a.o.batch);
      });
      cli::doing("loading the checkpoint " + a.resume);
      run.start(proc_from);  // a refused resume: vitmae::RequestError, exit 2
      say(detail::concat("vitmae-finetune: ", train.size(), " training images in ", train.classes.size(), " classes, ",
                         val.size(), " validation images; ", a.o.steps, " steps of ", a.o.batch * a.o.accum,
                         " images (", rs.epoch_steps, " per epoch), peak lr ", a.o.peak_lr(), ", ", a.o.threads,
                         " threads", cli::on_ranks(*world), "\n"));
      AugmentOptions aug = a.aug;
      aug.random_crop = aug.scale_min < 1;
      // Batches built on the training threads, from where the checkpoint stopped (this rank's slice).
      DataLoader<float, LabelledDataset> loader(train, proc, aug, a.o.batch, a.o.seed, a.workers,
                                                a.workers ? 2 + a.workers : 1, trainer.step() * a.o.accum,
                                                trainer.slice());
      cli::doing("training");
      last = run.run([&] {
        const long k = loader.batches_taken();
        return LabelledBatch<float>{loader.next(), loader.labels_of(k)};
      });
      run.finish();
    }
    if (root)
      std::printf(
          "validation %s  (%ld images); wrote %s%s/metrics.csv, per_class.csv, confusion.csv (and .svg), loss.svg, "
          "accuracy.svg\n",
          last.summary().c_str(), last.count, wrote_final ? (a.out + "/final, ").c_str() : "", a.out.c_str());
  });
}
