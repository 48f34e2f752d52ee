// SPDX-License-Identifier: Apache-2.0
// vitmae-evaluate: scores a ViTForImageClassification folder on a labelled set (the sets
// vitmae-finetune reads): top-1, top-5, loss, per-class accuracy and the confusion matrix.
#include <vitmae/cli/program.hpp>
#include <vitmae/cli/train_flags.hpp>

#include <vitmae/train.hpp>

#include <nlohmann/json.hpp>

#include <iostream>
#include <string>

namespace {

struct Args {
  std::string model, data, out;
  int batch = 64, threads = 0;  // 0 threads: every core
  bool json = false, skip_bad_images = false;
};

vitmae::cli::CommandLine command_line(Args& a) {
  vitmae::cli::CommandLine cl(
      "vitmae-evaluate",
      "usage: vitmae-evaluate --model DIR --data SRC [--json] [--batch N] [--threads N] [--out DIR] "
      "[--skip-bad-images]\n"
      "Scores a ViTForImageClassification folder on labelled images (each image resized and\n"
      "normalised by the folder's preprocessor_config.json, no augmentation) and prints one line, such as\n"
      "  top-1 92.40%  top-5 99.90%  loss 0.2886  (1000 images, 10 classes)\n"
      "(top-5 only with more than 5 classes). The set's classes are matched to the model's id2label\n"
      "by name; a class the model lacks is an error naming it.\n");
  cl.section("Flags");
  cl.text("--model", "DIR", a.model,
          "(required) a ViT classification folder (config.json model_type \"vit\"), such as\nvitmae-finetune writes "
          "(OUT/final)");
  cl.text("--data", "SRC", a.data,
          "(required) labelled images, as vitmae-finetune's --data: a folder\n"
          "root/<class>/<images> (ImageFolder), a list file of 'path label' lines, or\n"
          "fashion-mnist:DIR:SPLIT");
  cl.toggle("--json", a.json, true,
            "print one JSON object instead: top1, top5 (more than 5 classes), loss, count,\n"
            "labels, per_class {label: accuracy}, confusion [true][predicted] (default: the line)");
  cl.text("--out", "DIR", a.out,
          "also write DIR/per_class.csv, DIR/confusion.csv and DIR/confusion.svg, the\nfolder created with its parents "
          "(default: none)");
  cl.toggle("--skip-bad-images", a.skip_bad_images, true,
            "leave out the images that cannot be decoded, listing them, and score the rest\n"
            "(default: off, a damaged image ends the run naming it, before any scoring)");
  cl.integer("--batch", "N", a.batch, 1, 65536, "images per forward (default " + std::to_string(a.batch) + ")");
  cl.integer("--threads", "N", a.threads, 1, 1024, "threads for decoding and the products (default: all cores)");
  return cl;
}

void parse(int argc, char** argv, vitmae::cli::CommandLine& cl, Args& a) {
  cl.parse(argc, argv);
  if (a.model.empty() || a.data.empty()) throw vitmae::cli::UsageError("--model and --data are required");
  if (!a.out.empty() && vitmae::io::file_exists(a.out))
    throw vitmae::cli::UsageError("--out " + a.out + ": is a file, expected a folder");
}

/// The classifier of `dir`. @throws vitmae::Error when it is not a ViT classifier.
vitmae::ViTForImageClassification<float> load_classifier(const std::string& dir) {
  vitmae::cli::doing("loading the classifier " + dir);
  const std::string type = vitmae::checkpoint_model_type(dir);
  vitmae::detail::require(type == "vit", dir, ": model_type is '", type,
                          "', not a ViT classifier (vitmae-finetune writes one)");
  auto model = vitmae::ViTForImageClassification<float>::from_pretrained(dir);
  vitmae::detail::require(model.num_labels() > 0, dir, ": the checkpoint has no classifier (num_labels 0)");
  vitmae::pack_for_inference(model);  // inference only: the weights packed once for the products
  return model;
}

/// The set named by a.data, its classes those of the model's rows, every image decoded once.
vitmae::train::LabelledDataset open_set(const Args& a, const vitmae::ViTConfig& config) {
  vitmae::cli::doing("reading the labelled set " + a.data);
  vitmae::train::LabelledDataset set = vitmae::train::LabelledDataset::open(a.data);
  set.use_classes_of(config.id2label, a.data, "the model's");
  set.set_channels(static_cast<int>(config.num_channels));
  vitmae::train::check_images(set, a.skip_bad_images, a.threads > 0 ? a.threads : vitmae::available_threads(),
                              "vitmae-evaluate", a.data, [](const std::string& s) { std::cerr << s; });
  return set;
}

/// --json: the measures, per-class accuracy by label and the confusion matrix.
std::string to_json(const vitmae::train::Evaluation& e, const std::vector<std::string>& labels) {
  nlohmann::ordered_json j;
  j["top1"] = e.top1;
  if (e.has_top5()) j["top5"] = e.top5;
  j["loss"] = e.loss;
  j["count"] = e.count;
  j["labels"] = labels;
  const std::vector<double> acc = e.per_class();
  j["per_class"] = nlohmann::ordered_json::object();
  for (size_t c = 0; c < labels.size(); ++c) j["per_class"][labels[c]] = acc[c];  // NaN (no image) dumps as null
  j["confusion"] = e.confusion;
  return j.dump();
}

void write_outputs(const std::string& out, const vitmae::train::Evaluation& e, const std::vector<std::string>& labels) {
  using vitmae::io::join_path;
  vitmae::io::make_dirs(out);
  vitmae::io::write_file_atomic(join_path(out, "per_class.csv"), e.per_class_csv(labels));
  vitmae::io::write_file_atomic(join_path(out, "confusion.csv"), e.confusion_csv(labels));
  vitmae::io::write_file_atomic(join_path(out, "confusion.svg"), vitmae::train::confusion_svg(e.confusion, labels));
}

}  // namespace

int main(int argc, char** argv) {
  Args usage_args;
  const std::string usage = command_line(usage_args).head();
  return vitmae::cli::run_main("vitmae-evaluate", usage.c_str(), [&] {
    Args a;
    vitmae::cli::CommandLine cl = command_line(a);
    parse(argc, argv, cl, a);
    vitmae::cli::set_threads(a.threads);
    const auto model = load_classifier(a.model);
    const auto proc = vitmae::ImageProcessor::for_checkpoint(a.model, model.config().mae_config());
    const vitmae::train::LabelledDataset set = open_set(a, model.config());
    vitmae::cli::doing("scoring " + std::to_string(set.size()) + " images of " + a.data);
    const vitmae::train::Evaluation e = vitmae::train::evaluate(model, set, proc, a.batch);
    if (!a.out.empty()) write_outputs(a.out, e, set.classes);
    if (a.json) std::cout << to_json(e, set.classes) << "\n";
    else std::cout << e.summary() << "  (" << e.count << " images, " << set.classes.size() << " classes)\n";
  });
}
