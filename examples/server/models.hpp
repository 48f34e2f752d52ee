// SPDX-License-Identifier: Apache-2.0
// vitmae-server's models: a checkpoint folder loaded once for inference as what it holds (a
// ViTMAE with its decoder, a ViTMAE encoder, or a ViT classifier) with its image processor, and
// the forward of each route on a batch of images, as the library's own API runs it.
#pragma once

#include <vitmae/cli/program.hpp>
#include <vitmae/images/pipelines.hpp>
#include <vitmae/images/visualize.hpp>
#include <vitmae/vitmae.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace vitmae_server {

enum class Route { embeddings, classify, reconstruct };

inline const char* route_path(Route r) {
  switch (r) {
    case Route::embeddings:
      return "/v1/embeddings";
    case Route::classify:
      return "/v1/classify";
    default:
      return "/v1/reconstruct";
  }
}

/// One image of a request, decoded and preprocessed for its model.
struct Upload {
  vitmae::io::Image8 resized;    // the 8-bit image the processor feeds the model
  vitmae::Matrix<float> pixels;  // its pixel_values (C, H*W)
};

/// What one forward gives back for one image.
struct ImageResult {
  vitmae::RowVector<float> cls, mean;  // /v1/embeddings: CLS and the mean of the patch tokens
  vitmae::RowVector<float> logits;     // /v1/classify
  vitmae::Matrix<float> patch_logits;  // /v1/reconstruct: the decoder's (L, p*p*C)
  vitmae::RowVector<float> mask;       // /v1/reconstruct: (L), 1 hidden
};

/// What images must share to run in one forward (besides their model).
struct BatchKey {
  Route route = Route::embeddings;
  double mask_ratio = 0;  // the forward's mask ratio (0 for embeddings and classification)
  bool operator==(const BatchKey& o) const { return route == o.route && mask_ratio == o.mask_ratio; }
};

class ServedModel {
 public:
  std::string name, path, dtype;
  std::string kind;  // "mae" (encoder and decoder), "mae-encoder" or "classifier"

  /// Loads the folder `dir` for inference in `dtype` ("float32", "bfloat16" or "int8").
  /// @throws vitmae::Error naming the folder when it holds no model vitmae reads.
  static std::unique_ptr<ServedModel> load(const std::string& name, const std::string& dir, const std::string& dtype) {
    auto m = std::make_unique<ServedModel>();
    m->name = name;
    m->path = dir;
    m->dtype = dtype;
    const vitmae::Precision precision = vitmae::cli::precision_of(dtype);
    if (vitmae::checkpoint_model_type(dir) == "vit") {
      m->kind = "classifier";
      m->classifier_.emplace(vitmae::ViTForImageClassification<float>::from_pretrained(dir));
      vitmae::cli::apply_dtype(*m->classifier_, dtype);
      vitmae::detail::require(m->classifier_->config().num_labels() > 0, dir,
                              ": the checkpoint has no classifier (num_labels 0)");
      m->config_ = m->classifier_->config().mae_config();
      m->config_json_ = m->classifier_->config().to_json();
    } else {
      const vitmae::Config config = vitmae::checkpoint_config(dir, "");
      const auto weights = vitmae::open_pretrained_weights(dir);
      if (vitmae::ForPreTraining<float>::has_decoder(*weights)) {
        m->kind = "mae";
        m->mae_.emplace(vitmae::load_for_inference<vitmae::ForPreTraining<float>>(config, *weights, precision));
      } else {
        m->kind = "mae-encoder";
        m->encoder_.emplace(vitmae::load_for_inference<vitmae::Model<float>>(config, *weights, precision));
      }
      m->config_ = config;
      m->config_json_ = config.to_json(m->kind == "mae" ? "ViTMAEForPreTraining" : "ViTMAEModel");
    }
    m->proc_ = vitmae::ImageProcessor::for_checkpoint(dir, m->config_);
    m->no_resize_ = m->proc_;
    m->no_resize_.do_resize = false;
    return m;
  }

  bool serves(Route r) const {
    switch (r) {
      case Route::embeddings:
        return kind != "classifier";
      case Route::classify:
        return kind == "classifier";
      default:
        return kind == "mae";
    }
  }

  const vitmae::Config& config() const { return config_; }

  /// GET /v1/models's entry.
  nlohmann::json describe() const {
    nlohmann::json routes = nlohmann::json::array();
    for (Route r : {Route::embeddings, Route::classify, Route::reconstruct})
      if (serves(r)) routes.push_back(route_path(r));
    return {{"name", name},
            {"kind", kind},
            {"path", path},
            {"dtype", dtype},
            {"routes", routes},
            {"image_size", config_.image_size},
            {"patch_size", config_.patch_size},
            {"num_channels", config_.num_channels},
            {"hidden_size", config_.hidden_size},
            {"mask_ratio", kind == "mae" ? config_.mask_ratio : 0.0},
            {"num_labels", classifier_ ? classifier_->config().num_labels() : 0},
            {"config", config_json_},
            {"preprocessor", proc_.to_json()}};
  }

  /// A decoded image as the model takes it: its channels converted (as PIL would), resized and
  /// normalised by the checkpoint's processor.
  Upload prepare(const vitmae::io::Image8& decoded) const {
    Upload u;
    u.resized = proc_.resize(vitmae::io::to_channels(decoded, static_cast<int>(config_.num_channels)));
    u.pixels = proc_.to_pixel_values<float>(u.resized);
    return u;
  }

  /// Patches per image at the processor's output size.
  vitmae::Index num_patches() const {
    return (static_cast<vitmae::Index>(proc_.height) / config_.patch_size) *
           (static_cast<vitmae::Index>(proc_.width) / config_.patch_size);
  }

  /// One forward over `images` (prepared by this model, all of one size) with `noise` (one row
  /// per image, the masking's). Per image, the same numbers as the library's API gives for that
  /// image alone with that noise, up to the products' rounding at another batch size.
  std::vector<ImageResult> run(const BatchKey& key, const std::vector<const Upload*>& images,
                               const vitmae::Matrix<float>& noise) const {
    const vitmae::Index B = static_cast<vitmae::Index>(images.size());
    const vitmae::Index C = images[0]->pixels.rows(), H = images[0]->resized.height, W = images[0]->resized.width;
    vitmae::Tensor<float> pixels({B, C, H, W});
    for (vitmae::Index b = 0; b < B; ++b) {
      const vitmae::Matrix<float>& p = images[static_cast<size_t>(b)]->pixels;
      std::copy(p.data(), p.data() + p.size(), pixels.data.begin() + b * p.size());
    }
    vitmae::ForwardOptions opts;
    opts.interpolate_pos_encoding = H != config_.image_size || W != config_.image_size;
    std::vector<ImageResult> out(images.size());
    if (key.route == Route::classify) {
      const vitmae::Matrix<float> logits = classifier_->forward(pixels, nullptr, opts).logits;
      for (vitmae::Index b = 0; b < B; ++b) out[static_cast<size_t>(b)].logits = logits.row(b);
    } else if (key.route == Route::embeddings) {
      opts.mask_ratio = 0.0;
      const vitmae::Model<float>& encoder = mae_ ? mae_->vit : *encoder_;
      const vitmae::ImageFeatures<float> f =
          vitmae::pool_features(encoder.forward(pixels, noise, opts).last_hidden_state);
      for (vitmae::Index b = 0; b < B; ++b) {
        out[static_cast<size_t>(b)].cls = f.cls.row(b);
        out[static_cast<size_t>(b)].mean = f.mean.row(b);
      }
    } else {
      opts.mask_ratio = key.mask_ratio;
      auto r = mae_->forward(pixels, noise, opts);
      for (vitmae::Index b = 0; b < B; ++b) {
        out[static_cast<size_t>(b)].patch_logits = std::move(r.logits[static_cast<size_t>(b)]);
        out[static_cast<size_t>(b)].mask = r.mask.row(b);
      }
    }
    return out;
  }

  /// /v1/reconstruct's figures for one image: the masked-patch loss (the model's, in its
  /// normalised pixel space), the mean-fill baseline's, and the panel original | masked |
  /// reconstruction | reconstruction + visible as vitmae-reconstruct draws it.
  struct Reconstruction {
    double loss = 0, mean_fill_loss = 0;
    vitmae::io::Image8 panel;
  };
  Reconstruction reconstruction(const Upload& u, const ImageResult& r) const {
    const vitmae::Index H = u.resized.height, W = u.resized.width;
    const auto [num, den] = mae_->loss_terms(u.pixels, H, W, r.patch_logits, r.mask);
    Reconstruction out;
    out.loss = static_cast<double>(num / den);
    out.mean_fill_loss = static_cast<double>(vitmae::mean_fill_loss(*mae_, u.pixels, H, W, r.mask));
    vitmae::PanelLayout layout;
    layout.scale = vitmae::PanelLayout::scale_for(static_cast<int>(H), static_cast<int>(W));
    out.panel = vitmae::make_panel(
        {vitmae::reconstruction_images(*mae_, no_resize_, u.resized, u.pixels, r.patch_logits, r.mask)}, layout);
    return out;
  }

  /// /v1/classify's top classes of each row of `logits`.
  std::vector<std::vector<vitmae::ClassScore>> top_classes(const vitmae::Matrix<float>& logits, long top_k) const {
    return vitmae::top_classes(classifier_->config(), logits, top_k);
  }

 private:
  std::optional<vitmae::ForPreTraining<float>> mae_;
  std::optional<vitmae::Model<float>> encoder_;
  std::optional<vitmae::ViTForImageClassification<float>> classifier_;
  vitmae::Config config_;
  nlohmann::json config_json_;
  vitmae::ImageProcessor proc_, no_resize_;
};

}  // namespace vitmae_server
