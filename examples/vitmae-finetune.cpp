// SPDX-License-Identifier: Apache-2.0
// vitmae-finetune: fine-tunes a ViTForImageClassification (from an MAE or ViT checkpoint, or from
// scratch) on labelled images with MAE's recipe, evaluating on a validation set as it goes.
#include "common.hpp"

#include <vitmae/train.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

namespace {

constexpr const char* kUsage =
    "usage: vitmae-finetune --train SRC --val SRC --out DIR (--init PATH | --config FILE)\n"
    "                       [--steps N | --epochs N] [--batch N] [--accum N] [--base-lr X] [--min-lr X]\n"
    "                       [--warmup-steps N] [--weight-decay X] [--layer-decay X] [--label-smoothing X]\n"
    "                       [--clip-grad X] [--labels-per-class N] [--crop-scale-min X] [--no-flip]\n"
    "                       [--eval-every N] [--seed N] [--threads N]\n"
    "Fine-tunes a ViT classifier with MAE's recipe (AdamW, layer-wise lr decay, label smoothing,\n"
    "warm-up then cosine) and writes DIR/final (an HF ViTForImageClassification folder),\n"
    "DIR/metrics.csv, DIR/per_class.csv and DIR/confusion.csv.\n"
    "  --train SRC           (required) labelled training images: a folder root/<class>/<images>\n"
    "                        (torchvision's ImageFolder), a list file of 'path label' lines, or\n"
    "                        fashion-mnist:DIR:SPLIT (IDX files of Debian's dataset-fashion-mnist,\n"
    "                        DIR /usr/share/datasets/fashion-mnist, SPLIT train or t10k)\n"
    "  --val SRC             (required) labelled validation images, the same forms; its classes must\n"
    "                        be among the training set's\n"
    "  --out DIR             (required) the output folder, created with its parents\n"
    "  --init PATH           an MAE checkpoint (its encoder; the decoder is dropped) or a ViT\n"
    "                        classifier to start from; the classes are the training set's\n"
    "  --config FILE         instead of --init: a config.json (ViT or ViTMAE) for a model drawn at\n"
    "                        random (HF ViT's init) and trained from scratch\n"
    "  --steps N             optimiser steps (default: 10 epochs)\n"
    "  --epochs N            passes over the training set instead of --steps\n"
    "  --batch N             images per micro-batch (default 64)\n"
    "  --accum N             micro-batches per optimiser step (default 1)\n"
    "  --base-lr X           MAE's blr: the peak rate is X * batch * accum / 256 (default 1e-3)\n"
    "  --min-lr X            the rate the cosine ends at (default 1e-6)\n"
    "  --warmup-steps N      linear warm-up from 0 (default: 5% of the steps)\n"
    "  --weight-decay X      AdamW's, on weights only (default 0.05)\n"
    "  --layer-decay X       lr x X^(layers+1-layer_id); 1 turns it off (default 0.75)\n"
    "  --label-smoothing X   cross-entropy's (default 0.1)\n"
    "  --clip-grad X         max gradient norm, 0 none (default 0)\n"
    "  --labels-per-class N  train on a seeded subset of N images per class (default: all)\n"
    "  --crop-scale-min X    random resized crop's smallest area fraction (default 0.2); 1 turns the\n"
    "                        crop off\n"
    "  --no-flip             no horizontal flips (default: flip with probability 1/2)\n"
    "  --eval-every N        steps between validations (default: one epoch)\n"
    "  --seed N              decides the subset, the batches, the augmentation and a fresh\n"
    "                        classifier (default 0)\n"
    "  --threads N           threads over each batch (default: all cores)\n"
    "  -h, --help            print this text and exit\n";

struct Args {
  std::string train, val, out, init, config;
  long steps = 0, epochs = 0, labels_per_class = 0, eval_every = 0, warmup = -1;
  vitmae::train::FineTuneOptions o;
  double crop_scale_min = 0.2;
  bool flip = true;
};

Args parse(int argc, char** argv) {
  using examples::to_double;
  using examples::to_int;
  using examples::value;
  Args a;
  a.o.threads = vitmae::available_threads();
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    if (s == "--train") a.train = value(argc, argv, i);
    else if (s == "--val") a.val = value(argc, argv, i);
    else if (s == "--out") a.out = value(argc, argv, i);
    else if (s == "--init") a.init = value(argc, argv, i);
    else if (s == "--config") a.config = value(argc, argv, i);
    else if (s == "--steps") a.steps = static_cast<long>(to_int(s, value(argc, argv, i), 1, 1L << 40));
    else if (s == "--epochs") a.epochs = static_cast<long>(to_int(s, value(argc, argv, i), 1, 1000000));
    else if (s == "--batch") a.o.batch = static_cast<int>(to_int(s, value(argc, argv, i), 1, 65536));
    else if (s == "--accum") a.o.accum = static_cast<int>(to_int(s, value(argc, argv, i), 1, 65536));
    else if (s == "--base-lr") a.o.base_lr = to_double(s, value(argc, argv, i));
    else if (s == "--min-lr") a.o.min_lr = to_double(s, value(argc, argv, i));
    else if (s == "--warmup-steps") a.warmup = static_cast<long>(to_int(s, value(argc, argv, i), 0, 1L << 40));
    else if (s == "--weight-decay") a.o.weight_decay = to_double(s, value(argc, argv, i));
    else if (s == "--layer-decay") a.o.layer_decay = to_double(s, value(argc, argv, i));
    else if (s == "--label-smoothing") a.o.label_smoothing = to_double(s, value(argc, argv, i));
    else if (s == "--clip-grad") a.o.clip_grad = to_double(s, value(argc, argv, i));
    else if (s == "--labels-per-class") a.labels_per_class = static_cast<long>(to_int(s, value(argc, argv, i), 1, 1L << 40));
    else if (s == "--crop-scale-min") a.crop_scale_min = to_double(s, value(argc, argv, i));
    else if (s == "--no-flip") a.flip = false;
    else if (s == "--eval-every") a.eval_every = static_cast<long>(to_int(s, value(argc, argv, i), 1, 1L << 40));
    else if (s == "--seed") a.o.seed = static_cast<std::uint64_t>(to_int(s, value(argc, argv, i), 0, INT64_MAX));
    else if (s == "--threads") a.o.threads = static_cast<int>(to_int(s, value(argc, argv, i), 1, 1024));
    else if (s == "-h" || s == "--help") {
      std::cout << kUsage;
      std::exit(0);
    } else throw examples::UsageError("unknown argument '" + s + "'");
  }
  if (a.train.empty() || a.val.empty() || a.out.empty()) throw examples::UsageError("--train, --val and --out are required");
  if (a.init.empty() == a.config.empty()) throw examples::UsageError("give --init PATH or --config FILE (one of them)");
  if (a.steps && a.epochs) throw examples::UsageError("give --steps or --epochs, not both");
  if (!(a.o.base_lr > 0)) throw examples::UsageError("--base-lr must be positive");
  if (!(a.o.layer_decay > 0 && a.o.layer_decay <= 1)) throw examples::UsageError("--layer-decay must be in (0, 1]");
  if (!(a.o.label_smoothing >= 0 && a.o.label_smoothing < 1)) throw examples::UsageError("--label-smoothing must be in [0, 1)");
  if (!(a.crop_scale_min > 0 && a.crop_scale_min <= 1)) throw examples::UsageError("--crop-scale-min must be in (0, 1]");
  return a;
}

/// A labelled set from SRC: a folder, a list file, or fashion-mnist:DIR:SPLIT.
vitmae::train::LabelledDataset open_set(const std::string& src) {
  using vitmae::train::LabelledDataset;
  const std::string fm = "fashion-mnist:";
  if (src.rfind(fm, 0) == 0) {
    const size_t colon = src.rfind(':');
    if (colon <= fm.size()) throw examples::UsageError("expected fashion-mnist:DIR:SPLIT, got '" + src + "'");
    return LabelledDataset::fashion_mnist(src.substr(fm.size(), colon - fm.size()), src.substr(colon + 1));
  }
  if (vitmae::io::dir_exists(src)) return LabelledDataset::image_folder(src);
  return LabelledDataset::list_file(src);
}

std::string fixed(double v, int digits) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", digits, v);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  return examples::run_main("vitmae-finetune", kUsage, [&] {
    using namespace vitmae;
    using namespace vitmae::train;
    Args a = parse(argc, argv);
    examples::set_threads(a.o.threads);
    examples::doing("reading the training set " + a.train);
    LabelledDataset train = open_set(a.train);
    examples::doing("reading the validation set " + a.val);
    LabelledDataset val = open_set(a.val);
    val.use_classes_of(train.classes);
    detail::require(train.classes.size() >= 2, a.train, ": ", train.classes.size(),
                    " class; classification needs at least 2 (HF would treat 1 label as regression)");
    if (a.labels_per_class) train = train.per_class_subset(static_cast<size_t>(a.labels_per_class), a.o.seed);

    examples::doing("building the model");
    std::vector<std::string> notes;
    std::string proc_from = a.init.empty() ? a.config : a.init;
    ViTForImageClassification<float> model = [&] {
      if (!a.init.empty()) {
        ClassifierLoadOptions lo;
        lo.labels = train.classes;
        lo.seed = a.o.seed;
        return ViTForImageClassification<float>::from_pretrained(a.init, lo, &notes);
      }
      const nlohmann::json j = io::read_json_file(a.config, "config file");
      const bool mae = j.value("model_type", std::string()) == "vit_mae";
      ViTConfig c = mae ? ViTConfig::from_mae(Config::from_json(j, a.config), train.classes) : ViTConfig::from_json(j, a.config);
      c.id2label = train.classes;
      c.validate(a.config);
      ViTForImageClassification<float> m(c);
      auto rng = seeded_rng(a.o.seed, 0x494E495400000000ull);  // "INIT"
      m.init_weights(rng);
      return m;
    }();
    for (const std::string& n : notes) std::cerr << "vitmae-finetune: " << n << "\n";
    model.vit.config.problem_type = "single_label_classification";  // class labels, whatever the checkpoint said
    const ViTConfig& cfg = model.config();
    train.set_channels(static_cast<int>(cfg.num_channels));
    const ImageProcessor proc = ImageProcessor::for_checkpoint(proc_from, cfg.mae_config());

    const long per_step = static_cast<long>(a.o.batch) * a.o.accum;
    const long epoch_steps = std::max<long>(1, (static_cast<long>(train.size()) + per_step - 1) / per_step);
    a.o.steps = a.steps ? a.steps : (a.epochs ? a.epochs : 10) * epoch_steps;
    a.o.warmup_steps = a.warmup >= 0 ? a.warmup : a.o.steps / 20;
    const long eval_every = a.eval_every ? a.eval_every : epoch_steps;
    AugmentOptions aug;
    aug.scale_min = a.crop_scale_min;
    aug.random_crop = a.crop_scale_min < 1;
    aug.hflip = a.flip;
    io::make_dirs(a.out);
    for (const char* f : {"metrics.csv", "per_class.csv", "confusion.csv"})  // an earlier run's, never mixed with this one's
      std::remove(io::join_path(a.out, f).c_str());

    ClassifierTrainer<float> trainer(std::move(model), a.o);
    DataLoader<float, LabelledDataset> loader(train, proc, aug, a.o.batch, a.o.seed, 0);  // built on the training threads
    std::cerr << "vitmae-finetune: " << train.size() << " training images in " << train.classes.size() << " classes, "
              << val.size() << " validation images; " << a.o.steps << " steps of " << per_step << " images (" << epoch_steps
              << " per epoch), peak lr " << a.o.peak_lr() << ", " << a.o.threads << " threads\n";
    std::string csv = "step,epoch,loss,lr,grad_norm,images_per_s,val_top1,val_top5,val_loss\n";
    Evaluation last;
    const auto t_start = std::chrono::steady_clock::now();
    double window_loss = 0;
    long window = 0;
    while (trainer.step() < a.o.steps) {
      examples::doing("training step " + std::to_string(trainer.step() + 1));
      const StepRecord r = trainer.train_step([&] {
        const long k = loader.batches_taken();
        LabelledBatch<float> b{loader.next(), loader.labels_of(k)};
        return b;
      });
      window_loss += r.loss, ++window;
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
      const double ips = static_cast<double>(r.step * per_step) / std::max(elapsed, 1e-9);
      const bool evaluate_now = r.step % eval_every == 0 || r.step == a.o.steps;
      std::string row = std::to_string(r.step) + "," + fixed(static_cast<double>(r.step) / epoch_steps, 3) + "," + fixed(r.loss, 6) +
                        "," + fixed(r.lr, 9) + "," + fixed(r.grad_norm, 6) + "," + fixed(ips, 2) + ",";
      if (r.step % 10 == 0 || evaluate_now) {
        const double eta = elapsed / r.step * (a.o.steps - r.step);
        std::fprintf(stderr, "step %ld/%ld  loss %.4f  lr %.3g  %.1f img/s  ETA %ldm%02lds\n", r.step, a.o.steps,
                     window_loss / window, r.lr, ips, static_cast<long>(eta) / 60, static_cast<long>(eta) % 60);
        window_loss = 0, window = 0;
      }
      if (evaluate_now) {
        examples::doing("evaluating on " + a.val);
        last = evaluate(trainer.model(), val, proc, a.o.batch);
        std::fprintf(stderr, "epoch %.2f (step %ld): validation top-1 %.2f%%  top-5 %.2f%%  loss %.4f\n",
                     static_cast<double>(r.step) / epoch_steps, r.step, 100 * last.top1, 100 * last.top5, last.loss);
        row += fixed(last.top1, 6) + "," + fixed(last.top5, 6) + "," + fixed(last.loss, 6);
      } else {
        row += ",,";
      }
      csv += row + "\n";
      io::write_file_atomic(io::join_path(a.out, "metrics.csv"), csv);
    }
    examples::doing("writing " + a.out + "/final");
    io::write_folder_atomic(io::join_path(a.out, "final"), [&](const std::string& tmp) {
      trainer.model().save_pretrained(tmp);
      io::write_file_atomic(io::join_path(tmp, "preprocessor_config.json"), proc.to_json().dump(2) + "\n");
    });
    std::string per_class = "class,label,count,accuracy\n", confusion = "true\\predicted";
    for (const std::string& c : train.classes) confusion += ",\"" + c + "\"";
    confusion += "\n";
    const std::vector<double> acc = last.per_class();
    for (size_t c = 0; c < train.classes.size(); ++c) {
      long n = 0;
      for (long v : last.confusion[c]) n += v;
      per_class += std::to_string(c) + ",\"" + train.classes[c] + "\"," + std::to_string(n) + "," + fixed(acc[c], 6) + "\n";
      confusion += "\"" + train.classes[c] + "\"";
      for (long v : last.confusion[c]) confusion += "," + std::to_string(v);
      confusion += "\n";
    }
    io::write_file_atomic(io::join_path(a.out, "per_class.csv"), per_class);
    io::write_file_atomic(io::join_path(a.out, "confusion.csv"), confusion);
    std::printf("validation top-1 %.2f%%  top-5 %.2f%%  (%ld images); wrote %s/final, metrics.csv, per_class.csv, confusion.csv\n",
                100 * last.top1, 100 * last.top5, last.count, a.out.c_str());
  });
}
