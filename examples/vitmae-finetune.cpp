// SPDX-License-Identifier: Apache-2.0
// vitmae-finetune: fine-tunes a ViTForImageClassification (from an MAE or ViT checkpoint, or from
// scratch) on labelled images with MAE's recipe, evaluating on a validation set as it goes.
#include "common.hpp"
#include "distributed.hpp"
#include "train_cli.hpp"

#include <vitmae/train.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

namespace {

struct Args : examples::TrainArgs {
  std::string val, probe_features = "cls";
  long labels_per_class = 0, eval_every = 0, holdout = 0;
  bool linear_probe = false, relabel = false;
  vitmae::train::FineTuneOptions o;  // MAE's fine-tuning recipe by default
};

examples::CommandLine command_line(Args& a) {
  using R = examples::CommandLine::OnResume;
  examples::CommandLine cl("vitmae-finetune",
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
  examples::add_shared_flags(cl, a, a.o,
                             "(required unless --resume) labelled training images: a folder\n"
                             "root/<class>/<images> (torchvision's ImageFolder), a list file of\n"
                             "'path<TAB>label' (or 'path label') lines, whole-number labels being class\n"
                             "indices, or fashion-mnist:DIR:SPLIT (IDX files of Debian's\n"
                             "dataset-fashion-mnist, DIR /usr/share/datasets/fashion-mnist, SPLIT\n"
                             "train or t10k)",
                             "10 epochs; linear probe: 90 epochs");
  cl.section("Fine-tuning only");
  cl.text("--val", "SRC", a.val,
          "labelled validation images, the same forms; its classes must be among the\n"
          "training set's (required, or --holdout)");
  cl.integer("--holdout", "N", a.holdout, 1, 1L << 40,
             "instead of --val: hold N images of every class out of the training set\n"
             "(seeded) and validate on them, so that choices are not made on a test set\n(default: none)");
  cl.integer("--labels-per-class", "N", a.labels_per_class, 1, 1L << 40,
             "train on a seeded subset of N images per class (default: all)");
  cl.number("--layer-decay", "X", a.o.layer_decay, [](double x) { return x > 0 && x <= 1; }, "in (0, 1]",
            "lr x X^(layers+1-layer_id); 1 turns it off (default 0.75)");
  cl.number("--label-smoothing", "X", a.o.label_smoothing, [](double x) { return x >= 0 && x < 1; }, "in [0, 1)",
            "cross-entropy's (default 0.1)");
  cl.toggle("--relabel", a.relabel, true,
            "with --init from a classifier whose id2label lacks a class of the data: draw\n"
            "a fresh classifier for the data's classes (default: off, such a run is refused;\n"
            "the classes it has keep their rows and names)",
            examples::CommandLine::OnResume::never);
  cl.integer("--eval-every", "N", a.eval_every, 1, 1L << 40, "steps between validations (default: one epoch)", R::free);
  cl.toggle("--linear-probe", a.linear_probe, true,
            "train a linear head on the frozen encoder's features (MAE's linear\n"
            "probing; batch 256 and no weight decay unless given); with cls features\n"
            "DIR/final is a ViTForImageClassification whose classifier holds the head\n"
            "with the normalisation folded in (default: off)");
  cl.text("--probe-features", "F", a.probe_features,
          "cls (the CLS token after the final layernorm, default), mean (the mean\n"
          "patch token) or pixels (the preprocessed pixels: logistic regression on raw\n"
          "pixels, a baseline; the model only sets the image size)");
  return cl;
}

void parse(int argc, char** argv, examples::CommandLine& cl, Args& a, int world_size) {
  using examples::UsageError;
  cl.parse(argc, argv);
  examples::resume_flags(cl, a, world_size);
  if (a.data.empty() || a.out.empty()) throw UsageError("--data and --out are required (or --resume DIR)");
  if (a.val.empty() == !a.holdout) throw UsageError("give --val SRC or --holdout N (one of them)");
  if (a.probe_features != "cls" && a.probe_features != "mean" && a.probe_features != "pixels")
    throw UsageError("--probe-features must be cls, mean or pixels, got '" + a.probe_features + "'");
  if (a.probe_features != "cls" && !a.linear_probe) throw UsageError("--probe-features needs --linear-probe");
  if (a.linear_probe)
    for (const char* f : {"--accum", "--layer-decay", "--label-smoothing", "--clip-grad", "--scale-min", "--no-flip", "--vflip",
                          "--transpose", "--channel-shuffle", "--save-every", "--keep", "--workers", "--no-overlap"})
      if (cl.given(f))
        throw UsageError(std::string(f) + " is for fine-tuning; a linear probe trains on fixed features (no accumulation, "
                         "layer decay, label smoothing, clipping, augmentation or checkpoints)");
  if (cl.given("--shorter-side")) throw UsageError("--shorter-side is not yet in vitmae-finetune (pre-training only)");
  if (a.relabel && a.init.empty()) throw UsageError("--relabel goes with --init (a classifier to start from)");
  if (!a.init.empty() + !a.config.empty() + !a.resume.empty() != 1)
    throw UsageError("give --init PATH, --config FILE or --resume DIR (one of them)");
  if (a.linear_probe && !a.resume.empty()) throw UsageError("--resume continues fine-tuning; a linear probe is not resumed");
  if (a.steps && a.epochs) throw UsageError("give --steps or --epochs, not both");
}

std::string fixed(double v, int digits) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", digits, v);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  const auto world = examples::launch_world("vitmae-finetune", &argc, &argv);
  const bool root = world->rank() == 0;  // rank 0 alone prints, evaluates and writes
  Args usage_args;
  const std::string usage = command_line(usage_args).head();
  return examples::run_ranks("vitmae-finetune", usage.c_str(), *world, [&] {
    using namespace vitmae;
    using namespace vitmae::train;
    Args a;
    examples::CommandLine cl = command_line(a);
    examples::together(*world, [&] { parse(argc, argv, cl, a, world->size()); });  // reads the checkpoint: on every rank
    a.o.threads = a.threads > 0 ? a.threads : available_threads();
    if (a.linear_probe && world->size() > 1)
      throw examples::UsageError("vitmae-finetune: --linear-probe runs in one process (its features are computed once): run it "
                                 "without mpirun", false);
    examples::set_threads(a.o.threads);
    const auto line = [&](const std::string& l) {
      if (root) std::cerr << l;
    };
    LabelledDataset train, val;
    std::vector<std::string> notes;
    std::optional<ViTForImageClassification<float>> built;
    examples::together(*world, [&] {  // the same files on every rank, checked together
    examples::doing("reading the training set " + a.data);
    train = LabelledDataset::open(a.data);
    examples::check_images(train, a.skip_bad_images, a.o.threads, "vitmae-finetune", a.data, line);  // before anything is written
    detail::require(train.classes.size() >= 2, a.data, ": ", train.classes.size(),
                    " class; classification needs at least 2 (HF would treat 1 label as regression)");
    if (a.holdout) {  // a seeded N per class out of the training set (seed stream independent of --seed's subset)
      std::vector<size_t> count(train.classes.size(), 0);
      for (std::int64_t y : train.labels()) ++count[static_cast<size_t>(y)];
      for (size_t c = 0; c < count.size(); ++c)
        detail::require(count[c] == 0 || count[c] > static_cast<size_t>(a.holdout), a.data, ": class '", train.classes[c], "' has ", count[c],
                        " images: --holdout ", a.holdout, " would leave none to train on");
      std::vector<size_t> rest;
      val = train.per_class_subset(static_cast<size_t>(a.holdout), a.o.seed ^ seed_streams::holdout, &rest);
      train = train.select(rest);
    } else {
      examples::doing("reading the validation set " + a.val);
      val = LabelledDataset::open(a.val);
      examples::check_images(val, a.skip_bad_images, a.o.threads, "vitmae-finetune", a.val, line);
    }
    if (a.labels_per_class)
      train = train.per_class_subset(static_cast<size_t>(a.labels_per_class), a.o.seed, nullptr,
                                     "--labels-per-class " + std::to_string(a.labels_per_class));
    // A classifier to start from keeps its rows' names: the data's classes map to them.
    bool fresh_head = false;
    const std::string from = a.init.empty() ? a.resume : a.init;
    if (!from.empty()) require_trainable_weights(from);
    const std::vector<std::string> rows =
        from.empty() ? train.classes : classes_for_fine_tuning(from, train, a.relabel && a.resume.empty(), &fresh_head);
    const char* whose = rows == train.classes ? "the training set's" : "the checkpoint's";
    if (rows != train.classes) train.use_classes_of(rows, a.data, whose);
    val.use_classes_of(rows, a.holdout ? a.data : a.val, whose);

    examples::doing("building the model");
    built.emplace([&] {
      if (!a.resume.empty()) {
        auto m = ViTForImageClassification<float>::from_pretrained(a.resume);
        detail::require(m.config().id2label == train.classes, a.resume, "/config.json: the checkpoint's classes differ from the training set's");
        return m;
      }
      if (!a.init.empty()) {
        ClassifierLoadOptions lo;
        lo.labels = train.classes;
        lo.seed = a.o.seed;
        const size_t said = notes.size();
        auto m = ViTForImageClassification<float>::from_pretrained(a.init, lo, &notes);
        if (fresh_head) {  // --relabel: the checkpoint's rows belong to other classes (the same draw as from_pretrained's)
          std::mt19937_64 rng(a.o.seed);
          init_weights(m.classifier, m.config().initializer_range, rng, InitScheme::vit);
          const std::string why = "--relabel: " + a.init + "'s classifier is for other classes: drawn afresh for the " +
                                  std::to_string(train.classes.size()) + " classes of " + a.data;
          if (notes.size() > said && notes.back().find("classifier.weight") != std::string::npos)
            notes.back() = why;  // from_pretrained drew it for another size already: one line about it
          else
            notes.push_back(why);
        }
        return m;
      }
      const nlohmann::json j = io::read_json_file(a.config, "config file");
      const bool mae = j.value("model_type", std::string()) == "vit_mae";
      ViTConfig c = mae ? ViTConfig::from_mae(Config::from_json(j, a.config), train.classes) : ViTConfig::from_json(j, a.config);
      c.id2label = train.classes;
      c.validate(a.config);
      ViTForImageClassification<float> m(c);
      auto rng = seeded_rng(a.o.seed, seed_streams::init_vit);
      m.init_weights(rng);
      return m;
    }());
    });
    const std::string val_name = a.holdout ? std::to_string(a.holdout) + " held-out images per class" : a.val;
    const std::string proc_from = !a.init.empty() ? a.init : !a.resume.empty() ? a.resume : a.config;
    ViTForImageClassification<float> model = std::move(*built);
    built.reset();
    if (root)
      for (const std::string& n : notes) std::cerr << "vitmae-finetune: " << n << "\n";
    model.vit.config.problem_type = "single_label_classification";  // class labels, whatever the checkpoint said
    const ViTConfig& cfg = model.config();
    train.set_channels(static_cast<int>(cfg.num_channels));
    val.set_channels(static_cast<int>(cfg.num_channels));

    ImageProcessor proc;
    examples::together(*world, [&] { proc = ImageProcessor::for_checkpoint(proc_from, cfg.mae_config()); });
    examples::together(*world, [&] {  // collectives only: after what may fail on one rank
      // Every rank must see the same images and preprocess them alike, or the batches would differ.
      vitmae::train::require_same_on_ranks(*world, a.data + ": the number of training images", static_cast<double>(train.size()));
      vitmae::train::require_same_on_ranks(*world, "the preprocessing (preprocessor_config.json)", proc.to_json().dump());
    });
    // What decides the batches besides the trainer's options: a resumed run must keep it too.
    const nlohmann::json data_state = {{"train", a.data},           {"holdout", a.holdout},
                                       {"labels_per_class", a.labels_per_class}, {"train_images", train.size()},
                                       {"crop_scale_min", a.aug.scale_min},     {"flip", a.aug.hflip}};

    // The outputs, opened only once the run's inputs are all checked (a refused run leaves an
    // earlier run's files alone). metrics.csv grows a row a step (appended and flushed: a log,
    // readable while the run goes on); a resumed run starts from the checkpoint's rows. OUT is
    // created with the first row, so that a run that ends before leaves no empty folder.
    const std::string metrics_path = io::join_path(a.out, "metrics.csv");
    std::string metrics_text = "step,epoch,loss,lr,grad_norm,images_per_s,val_top1,val_top5,val_loss\n";
    std::ofstream metrics;
    std::vector<StepRecord> curve;  // loss.svg
    Series accuracy{"validation top-1 (%)", "#d62728", {}};  // accuracy.svg
    auto open_outputs = [&] {
      io::require_can_create(a.out);
      io::remove_stale_temporaries(a.out);  // what a killed run's atomic writes left
      for (const char* f : {"metrics.csv", "per_class.csv", "confusion.csv", "confusion.svg", "loss.svg", "accuracy.svg"})
        std::remove(io::join_path(a.out, f).c_str());  // an earlier run's, never mixed with this one's
      std::error_code ec;
      std::filesystem::remove_all(io::join_path(a.out, "final"), ec);
      if (!a.resume.empty()) {
        const auto bytes = io::read_file_bytes(io::join_path(a.resume, "metrics.csv"), "checkpoint metrics");
        metrics_text.assign(bytes.begin(), bytes.end());
        std::istringstream in(metrics_text);  // step,epoch,loss,lr,grad_norm,images_per_s,val_top1,...
        std::string line;
        std::getline(in, line);
        while (std::getline(in, line)) {
          std::vector<std::string> f;
          std::istringstream cells(line);
          for (std::string c; std::getline(cells, c, ',');) f.push_back(c);
          if (f.size() < 5) continue;
          curve.push_back({std::stol(f[0]), std::stod(f[2]), std::stod(f[3]), std::stod(f[4]), 0});
          if (f.size() >= 7 && !f[6].empty()) accuracy.points.emplace_back(std::stod(f[1]), 100 * std::stod(f[6]));
        }
      }
    };
    auto metrics_row = [&](long step, double epoch, double loss, double lr, double grad_norm, double ips, const Evaluation* e) {
      curve.push_back({step, loss, lr, grad_norm, 0});
      std::string row = std::to_string(step) + "," + fixed(epoch, 3) + "," + fixed(loss, 6) + "," + fixed(lr, 9) + "," +
                        fixed(grad_norm, 6) + "," + fixed(ips, 2) + ",";
      row += e ? fixed(e->top1, 6) + "," + (e->has_top5() ? fixed(e->top5, 6) : std::string()) + "," + fixed(e->loss, 6) + "\n"
               : std::string(",,\n");
      metrics_text += row;
      if (!metrics.is_open()) {
        io::make_dirs(a.out);
        metrics.open(metrics_path);
        metrics << metrics_text << std::flush;
        detail::require(metrics.good(), metrics_path, ": cannot be written");
      } else {
        metrics << row << std::flush;
        detail::require(metrics.good(), metrics_path, ": write failed");
      }
    };
    auto write_curves = [&] {
      io::make_dirs(a.out);
      io::write_file_atomic(io::join_path(a.out, "loss.svg"), loss_curve_svg(curve));
      io::write_file_atomic(io::join_path(a.out, "accuracy.svg"),
                            line_chart_svg({accuracy}, "validation top-1 (%) on " + val_name, "epoch"));
    };
    auto report = [&](const Evaluation& e, double epoch, long step, bool print = true) {  // rank 0
      accuracy.points.emplace_back(epoch, 100 * e.top1);
      write_curves();
      if (!print) return;
      std::fprintf(stderr, "epoch %.2f (step %ld): validation %s\n", epoch, step, e.summary().c_str());
    };
    Evaluation last;
    bool wrote_final = true;
    const auto t_start = std::chrono::steady_clock::now();

    // The one loop of both kinds of run: a step, the progress line (images/s of training only, an
    // ETA that adds the evaluations to come), validation every `eval_every` steps, a metrics row a
    // step, checkpoints (`save`, rank 0). `evaluate_model` scores the trainer's model (rank 0).
    const auto train_all = [&](auto& trainer, auto&& next_batch, long per_step, long epoch_steps, long eval_every, auto&& evaluate_model,
                               auto&& save) {
      const long steps = trainer.options().steps;
      const bool tty = ::isatty(2);  // a terminal: the progress line is redrawn in place, as vitmae-pretrain's
      const long log_every = a.log_every ? a.log_every : (tty ? 1 : std::max(1L, steps / 100));
      const long first_step = trainer.step();
      double window_loss = 0, train_seconds = 0, eval_seconds = 0;
      long window = 0, evaluations = 0;
      while (trainer.step() < steps) {
        examples::doing("training step " + std::to_string(trainer.step() + 1));
        const StepRecord r = trainer.train_step(next_batch);
        window_loss += r.loss, ++window;
        train_seconds += r.seconds;
        const long done = r.step - first_step;
        const double ips = static_cast<double>(done * per_step) / std::max(train_seconds, 1e-9);
        const bool evaluate_now = r.step % eval_every == 0 || r.step == steps;
        if (root && (r.step % log_every == 0 || evaluate_now)) {
          const long evals_left = (steps / eval_every - r.step / eval_every) + (steps % eval_every ? 1 : 0);
          const double eta = train_seconds / static_cast<double>(done) * static_cast<double>(steps - r.step) +
                             (evaluations ? eval_seconds / static_cast<double>(evaluations) : 0.0) * static_cast<double>(evals_left);
          std::fprintf(stderr, "%sstep %ld/%ld  loss %.4f  lr %.3g  %.1f img/s  ETA %ldm%02lds%s", tty ? "\r" : "", r.step, steps,
                       window_loss / window, r.lr, ips, static_cast<long>(eta) / 60, static_cast<long>(eta) % 60,
                       tty && !evaluate_now ? "   " : "\n");
          window_loss = 0, window = 0;
        }
        const double epoch = static_cast<double>(r.step) / static_cast<double>(epoch_steps);
        examples::together(*world, [&] {  // rank 0 evaluates and writes; every rank learns how that went
          if (!root) return;
          if (evaluate_now) {
            examples::doing("evaluating on " + val_name);
            const auto e0 = std::chrono::steady_clock::now();
            last = evaluate_model(trainer.model());
            eval_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - e0).count(), ++evaluations;
            report(last, epoch, r.step);
          }
          metrics_row(r.step, epoch, r.loss, r.lr, r.grad_norm, ips, evaluate_now ? &last : nullptr);
          if (a.save_every > 0 && r.step % a.save_every == 0 && r.step != steps) save(r.step);
        });
        if (!a.linear_probe && a.save_every > 0 && r.step % a.save_every == 0 && r.step != steps)  // written: every rank knows it now
          examples::note_checkpoint(io::join_path(a.out, "checkpoint-" + std::to_string(r.step)));
      }
      examples::together(*world, [&] {
        if (root && last.count == 0) last = evaluate_model(trainer.model());  // resumed at the last step
      });
    };

    if (a.linear_probe) {
      const ProbeFeatures kind = probe_features_from(a.probe_features);
      ProbeOptions po;  // MAE's linear probe: no weight decay unless asked, batch 256
      po.batch = cl.given("--batch") ? a.o.batch : 256;
      po.lr = a.o.lr > 0 ? a.o.lr : a.o.base_lr * po.batch / 256.0;
      po.min_lr = a.o.min_lr;
      po.seed = a.o.seed;
      po.warmup_steps = a.o.warmup_steps;
      po.weight_decay = cl.given("--weight-decay") ? a.o.weight_decay : 0.0;
      const long per_epoch = examples::epoch_steps(po, train.size());
      po.steps = examples::run_steps(a, po, train.size(), 90 * per_epoch);
      const auto features = [&](const LabelledDataset& set, const std::string& name) {
        const std::string what = "computing the " + a.probe_features + " features of " + name;
        examples::doing(what);
        return extract_features(model.vit, set, proc, kind, po.batch, examples::progress_lines("vitmae-finetune: " + what, line));
      };
      const Matrix<float> X = features(train, a.data), V = features(val, val_name);
      const double t_features = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
      std::cerr << "vitmae-finetune: linear probe on " << X.cols() << " " << a.probe_features << " features of " << train.size()
                << " training images in " << train.classes.size() << " classes (computed in " << fixed(t_features, 1) << " s), "
                << val.size() << " validation images; " << po.steps << " steps of " << po.batch << " (" << per_epoch
                << " an epoch), peak lr " << po.peak_lr() << "\n";
      open_outputs();
      LinearProbe<float> initial = LinearProbe<float>::initial(X, static_cast<Index>(train.classes.size()), po.seed);
      const Matrix<float> Xn = initial.normalise(X);
      TrainingLoop<LinearProbing<float>> probe(std::move(initial), po);
      FeatureBatches<float> batches(Xn, train.labels(), po.batch, po.seed);
      train_all(
          probe, [&] { return batches.next(); }, po.batch, per_epoch, a.eval_every ? a.eval_every : per_epoch,
          [&](const LinearProbe<float>& p) { return Evaluation::of(p.logits(V), val.labels()); }, [](long) {});
      if (kind == ProbeFeatures::cls) {
        model.classifier = probe.model().folded();
      } else {  // a ViTForImageClassification takes the CLS token: keep the head on its own
        wrote_final = false;
        probe.model().save(io::join_path(a.out, "probe.safetensors"));
        std::cerr << "vitmae-finetune: --probe-features " << a.probe_features << ": no " << a.out
                  << "/final (a ViTForImageClassification classifies the CLS token); the head and its normalisation are in " << a.out
                  << "/probe.safetensors\n";
      }
    } else {
      const long per_step = static_cast<long>(a.o.batch) * a.o.accum;
      const long epoch_steps = examples::epoch_steps(a.o, train.size());
      a.o.steps = examples::run_steps(a, a.o, train.size(), 10 * epoch_steps);
      const long eval_every = a.eval_every ? a.eval_every : epoch_steps;
      AugmentOptions aug = a.aug;
      aug.random_crop = aug.scale_min < 1;

      std::optional<ClassifierTrainer<float>> made;
      examples::together(*world, [&] { made.emplace(std::move(model), a.o, world); });
      ClassifierTrainer<float>& trainer = *made;
      trainer.set_overlap(a.overlap);
      trainer.set_run_args(cl.recorded());
      examples::together(*world, [&] {
      if (!a.resume.empty()) {
        examples::doing("loading the checkpoint " + a.resume);
        vitmae::train::resume(trainer, a.resume);
        const std::string data_path = io::join_path(a.resume, "data.json");
        const nlohmann::json theirs = io::read_json_file(data_path, "checkpoint data");
        for (const auto& [key, mine] : data_state.items())
          if (!theirs.contains(key) || theirs[key] != mine)
            throw RequestError(detail::concat("vitmae: ", data_path, ": the checkpoint was trained with ", key, " ",
                                              theirs.contains(key) ? theirs[key].dump() : std::string("(none)"), ", this run asks for ",
                                              mine.dump(), "; a resumed run must keep it"));
      }
      });
      examples::together(*world, [&] {  // a collective: not after something that may fail on one rank only
        vitmae::train::require_same_weights(*world, trainer.model(), a.resume.empty() ? proc_from : a.resume);
      });
      examples::together(*world, [&] {
        if (root) open_outputs();
      });
      // Batches built on the training threads, from where the checkpoint stopped (this rank's slice).
      DataLoader<float, LabelledDataset> loader(train, proc, aug, a.o.batch, a.o.seed, a.workers, a.workers ? 2 + a.workers : 1,
                                                trainer.step() * a.o.accum,
                                                trainer.slice());
      std::optional<CheckpointRotation> rotation;  // the resumed run's earlier checkpoints count for --keep
      if (root) rotation.emplace(a.out, a.keep, !a.resume.empty());
      auto save = [&](long step) {  // rank 0
        save_checkpoint(trainer, rotation->dir(step), proc, {{"metrics.csv", metrics_text}, {"data.json", data_state.dump(2) + "\n"}});
        rotation->added(step);
      };
      if (root && !a.resume.empty())
        std::cerr << "vitmae-finetune: resuming from step " << trainer.step() << " of " << a.o.steps << " (" << a.resume << ")\n";
      if (root)
        std::cerr << "vitmae-finetune: " << train.size() << " training images in " << train.classes.size() << " classes, "
                << val.size() << " validation images; " << a.o.steps << " steps of " << per_step << " images (" << epoch_steps
                << " per epoch), peak lr " << a.o.peak_lr() << ", " << a.o.threads << " threads"
                << (world->size() > 1 ? " on each of " + std::to_string(world->size()) + " ranks" : std::string()) << "\n";
      if (!a.resume.empty()) examples::note_checkpoint(a.resume);
      examples::watch_ranks(*world, "vitmae-finetune");
      train_all(
          trainer,
          [&] {
            const long k = loader.batches_taken();
            return LabelledBatch<float>{loader.next(), loader.labels_of(k)};
          },
          per_step, epoch_steps, eval_every, [&](const ViTForImageClassification<float>& m) { return evaluate(m, val, proc, a.o.batch); },
          save);
      model = std::move(trainer.model());
    }
    examples::together(*world, [&] {  // rank 0 writes the results; every rank learns how that went
    if (!root) return;
    if (wrote_final) {
      examples::doing("writing " + a.out + "/final");
      io::write_folder_atomic(io::join_path(a.out, "final"), [&](const std::string& tmp) {
        model.save_pretrained(tmp);
        io::write_file_atomic(io::join_path(tmp, "preprocessor_config.json"), proc.to_json().dump(2) + "\n");
      });
    }
    io::make_dirs(a.out);
    io::write_file_atomic(io::join_path(a.out, "per_class.csv"), last.per_class_csv(train.classes));
    io::write_file_atomic(io::join_path(a.out, "confusion.csv"), last.confusion_csv(train.classes));
    io::write_file_atomic(io::join_path(a.out, "confusion.svg"), confusion_svg(last.confusion, train.classes));
    write_curves();
    std::printf("validation %s  (%ld images); wrote %s%s/metrics.csv, per_class.csv, confusion.csv (and .svg), loss.svg, "
                "accuracy.svg\n",
                last.summary().c_str(), last.count, wrote_final ? (a.out + "/final, ").c_str() : "", a.out.c_str());
    });
  });
}
