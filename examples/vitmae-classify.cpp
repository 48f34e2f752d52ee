// SPDX-License-Identifier: Apache-2.0
// vitmae-classify: a ViTForImageClassification checkpoint on images: the top-k classes with
// their probabilities (softmax of the logits), named by the checkpoint's id2label.
#include <vitmae/cli/inference_flags.hpp>
#include <vitmae/images/pipelines.hpp>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

namespace {

struct Args : vitmae::cli::InferenceArgs {
  std::vector<std::string> images;
  long top = 5;
  bool json = false;
};

vitmae::cli::CommandLine command_line(Args& a) {
  vitmae::cli::CommandLine cl(
      "vitmae-classify",
      "usage: vitmae-classify --model DIR [--top K] [--json] [--batch N] [--threads N]\n"
      "                       [--dtype float32|bfloat16|int8] IMAGE [IMAGE ...]\n"
      "Runs a ViTForImageClassification checkpoint on images and prints each one's top-K classes with\n"
      "their probabilities (the softmax of the logits; the sigmoid for multi-label checkpoints and one\n"
      "label, as HF's pipeline), named by the checkpoint's id2label.\n"
      "Arguments:\n"
      "  IMAGE               (required, one or more; a shell glob works) an image file (PNG, JPEG,\n"
      "                      BMP, ...), preprocessed by the folder's preprocessor_config.json (HF\n"
      "                      ViTImageProcessor's defaults without one)\n");
  vitmae::cli::add_inference_flags(
      cl, a,
      {"(required) a ViT classification folder (config.json model_type \"vit\"),\n"
       "such as vitmae-finetune writes (OUT/final) or vitmae-convert makes of an MAE checkpoint",
       {"float32", "bfloat16", "int8"},
       true});
  cl.section("Flags");
  cl.list("--image", "PATH", a.images, "the same as IMAGE, repeatable (default: none)");
  cl.positional(a.images);
  cl.integer("--top", "K", a.top, 1, 1000000, "how many classes per image (default 5, at most the number of labels)");
  cl.toggle("--json", a.json, true,
            "one JSON line per image, in input order:\n"
            "{\"image\": PATH, \"top\": [{\"index\": 3, \"label\": \"Dress\", \"prob\": 0.91}, ...]}\n"
            "(default: a readable table)");
  return cl;
}

/// The classifier of `dir` in `dtype`, its weights packed once for oneDNN's products.
/// @throws vitmae::Error when it is not a ViT classifier.
vitmae::ViTForImageClassification<float> load_classifier(const std::string& dir, const std::string& dtype) {
  vitmae::cli::doing("loading the classifier " + dir);
  const std::string type = vitmae::checkpoint_model_type(dir);
  vitmae::detail::require(
      type == "vit", dir, ": model_type is '", type,
      "', not a ViT classifier; make one from an MAE checkpoint with vitmae-convert --num-labels N");
  auto model = vitmae::ViTForImageClassification<float>::from_pretrained(dir);
  vitmae::cli::apply_dtype(model, dtype);
  vitmae::detail::require(model.config().num_labels() > 0, dir, ": the checkpoint has no classifier (num_labels 0)");
  return model;
}

/// One image's lines: a JSON object, or its name and a row per class.
std::string describe(const std::string& image, const std::vector<vitmae::ClassScore>& top, bool json) {
  if (json) {
    nlohmann::json j{{"image", image}, {"top", nlohmann::json::array()}};
    for (const vitmae::ClassScore& c : top)
      j["top"].push_back({{"index", c.index}, {"label", c.label}, {"prob", c.score}});
    return j.dump() + "\n";
  }
  std::string s = image + "\n";
  for (const vitmae::ClassScore& c : top) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "  %6.2f%%  %3ld  ", 100.0 * c.score, static_cast<long>(c.index));
    s += buf + c.label + "\n";
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  vitmae::cli::CommandLine cl = command_line(a);
  return vitmae::cli::run_main("vitmae-classify", cl.head().c_str(), [&] {
    cl.parse(argc, argv);
    a.dtype = vitmae::cli::usable_dtype("vitmae-classify", a.dtype);
    if (a.model.empty() || a.images.empty())
      throw vitmae::cli::UsageError("--model and at least one image are required");
    vitmae::cli::set_threads(a.threads);
    const auto model = load_classifier(a.model, a.dtype);
    const auto proc = vitmae::ImageProcessor::for_checkpoint(a.model, model.config().mae_config());
    const auto tops = vitmae::classify_images(model, proc, a.images, a.top, a.batch, [](size_t begin, size_t end) {
      vitmae::cli::doing("classifying images " + std::to_string(begin + 1) + " to " + std::to_string(end));
    });
    for (size_t i = 0; i < a.images.size(); ++i)
      std::cout << describe(a.images[i], tops[i], a.json);  // once all are classified
  });
}
