// SPDX-License-Identifier: Apache-2.0
// vitmae-classify: a ViTForImageClassification checkpoint on images: the top-k classes with
// their probabilities (softmax of the logits), named by the checkpoint's id2label.
#include <vitmae/cli/program.hpp>

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

namespace {

constexpr const char* kUsage =
    "usage: vitmae-classify --model DIR [--top K] [--json] [--batch N] [--threads N] IMAGE [IMAGE ...]\n"
    "Runs a ViTForImageClassification checkpoint on images and prints each one's top-K classes with\n"
    "their probabilities (the softmax of the logits; the sigmoid for multi-label checkpoints and one\n"
    "label, as HF's pipeline), named by the checkpoint's id2label.\n"
    "  --model DIR    (required) a ViT classification folder (config.json model_type \"vit\"), such as\n"
    "                 vitmae-convert --num-labels or a fine-tuning run writes\n"
    "  IMAGE          (required, one or more; a shell glob works) an image file (PNG, JPEG, BMP, ...),\n"
    "                 preprocessed by the folder's preprocessor_config.json (HF ViTImageProcessor's\n"
    "                 defaults without one)\n"
    "  --image PATH   the same as IMAGE, repeatable (default: none)\n"
    "  --top K        how many classes per image (default 5, at most the number of labels)\n"
    "  --json         one JSON line per image, in input order:\n"
    "                 {\"image\": PATH, \"top\": [{\"index\": 3, \"label\": \"Dress\", \"prob\": 0.91}, ...]}\n"
    "                 (default: a readable table)\n"
    "  --batch N      images per forward (default 8)\n"
    "  --threads N    threads for the products (default: all cores)\n"
    "  -h, --help     print this text and exit\n";

}  // namespace

int main(int argc, char** argv) {
  return vitmae::cli::run_main("vitmae-classify", kUsage, [&] {
    std::string model_dir;
    std::vector<std::string> images;
    long top = 5, batch = 8;
    bool json = false;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--model") model_dir = vitmae::cli::value(argc, argv, i);
      else if (a == "--image") images.push_back(vitmae::cli::value(argc, argv, i));
      else if (a == "--top") top = static_cast<long>(vitmae::cli::to_int(a, vitmae::cli::value(argc, argv, i), 1, 1000000));
      else if (a == "--batch") batch = static_cast<long>(vitmae::cli::to_int(a, vitmae::cli::value(argc, argv, i), 1, 4096));
      else if (a == "--json") json = true;
      else if (a == "--threads") vitmae::cli::set_threads(static_cast<int>(vitmae::cli::to_int(a, vitmae::cli::value(argc, argv, i), 1, 1024)));
      else if (a == "-h" || a == "--help") {
        std::cout << kUsage;
        return;
      } else if (!a.empty() && a[0] != '-') {
        images.push_back(a);  // an image path (vitmae-classify --model m *.png)
      } else throw vitmae::cli::UsageError("unknown argument '" + a + "'");
    }
    if (model_dir.empty() || images.empty()) throw vitmae::cli::UsageError("--model and at least one image are required");

    using namespace vitmae;
    vitmae::cli::doing("loading the classifier " + model_dir);
    const std::string type = checkpoint_model_type(model_dir);
    detail::require(type == "vit", model_dir, ": model_type is '", type,
                    "', not a ViT classifier; make one from an MAE checkpoint with vitmae-convert --num-labels N");
    auto model = ViTForImageClassification<float>::from_pretrained(model_dir);
    vitmae::cli::apply_dtype(model, "float32");  // weights packed once for oneDNN's products
    const auto& config = model.config();
    detail::require(config.num_labels() > 0, model_dir, ": the checkpoint has no classifier (num_labels 0)");
    const auto proc = ImageProcessor::for_checkpoint(model_dir, config.mae_config());
    const long K = std::min<long>(top, static_cast<long>(config.num_labels()));
    // HF's image-classification pipeline: sigmoid for multi-label checkpoints and one label, else softmax.
    const bool sigmoid = config.problem_type == "multi_label_classification" || config.num_labels() == 1;
    std::vector<std::string> lines;  // printed once every image has been classified
    for (size_t start = 0; start < images.size(); start += static_cast<size_t>(batch)) {
      const size_t n = std::min(images.size() - start, static_cast<size_t>(batch));
      std::vector<io::Image8> imgs;
      for (size_t k = 0; k < n; ++k) {
        vitmae::cli::doing("reading " + images[start + k]);
        imgs.push_back(io::load_image(images[start + k], static_cast<int>(config.num_channels)));
      }
      vitmae::cli::doing("classifying images " + std::to_string(start + 1) + " to " + std::to_string(start + n));
      const Tensor<float> px = proc.preprocess<float>(imgs);
      ForwardOptions opts;
      opts.interpolate_pos_encoding = px.size(2) != config.image_size || px.size(3) != config.image_size;
      const auto out = model.forward(px, nullptr, opts);
      for (size_t k = 0; k < n; ++k) {
        const RowVector<double> logits = out.logits.row(static_cast<Index>(k)).cast<double>();
        RowVector<double> prob;
        if (sigmoid) {
          prob = (1.0 / (1.0 + (-logits.array()).exp())).matrix();
        } else {
          const RowVector<double> p = (logits.array() - logits.maxCoeff()).exp().matrix();
          prob = p / p.sum();
        }
        std::vector<Index> order(static_cast<size_t>(prob.size()));
        std::iota(order.begin(), order.end(), Index(0));
        std::stable_sort(order.begin(), order.end(), [&](Index a, Index b) { return prob(a) > prob(b); });
        if (json) {
          nlohmann::json j;
          j["image"] = images[start + k];
          j["top"] = nlohmann::json::array();
          for (long t = 0; t < K; ++t) {
            const Index c = order[static_cast<size_t>(t)];
            j["top"].push_back({{"index", c}, {"label", config.id2label[static_cast<size_t>(c)]}, {"prob", prob(c)}});
          }
          lines.push_back(j.dump());
        } else {
          std::string s = images[start + k] + "\n";
          for (long t = 0; t < K; ++t) {
            const Index c = order[static_cast<size_t>(t)];
            char buf[64];
            std::snprintf(buf, sizeof buf, "  %6.2f%%  %3ld  ", 100.0 * prob(c), static_cast<long>(c));
            s += buf + config.id2label[static_cast<size_t>(c)] + "\n";
          }
          lines.push_back(s);
        }
      }
    }
    for (const std::string& l : lines) std::cout << l << (json ? "\n" : "");
  });
}
