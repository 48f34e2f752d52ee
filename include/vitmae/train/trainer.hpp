// SPDX-License-Identifier: Apache-2.0
// The pre-training job of the MAE recipe on the one training loop (train/loop.hpp): per
// micro-batch, seeded masking noise and one forward_backward of ViTMAEForPreTraining, threads
// over the batch. Checkpoints (train/checkpoint.hpp) are folders in HF's layout plus the
// optimiser state and trainer_state.json.
//
// Reproducible: step s's noise is drawn from a generator seeded by (seed, micro-step) and its
// images are batches s*accum .. of the DataLoader (a function of (seed, batch index)), so the same
// seed and thread count give the same weights, and resuming at step s continues bit for bit.
//
// Data parallel (train/world.hpp): with a World of N ranks, each rank computes the contiguous
// slice rank_slice(rank, N, batch) of every micro-batch (next_batch returns those images only)
// and the gradients are summed in rank order after each micro-batch; every rank then takes the
// same AdamW step. N ranks of 1 thread give the bits of 1 process of N threads.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>

#include "vitmae/images/image_processor.hpp"
#include "vitmae/io/checkpoint.hpp"
#include "vitmae/random.hpp"
#include "vitmae/train/backward.hpp"
#include "vitmae/train/loop.hpp"

namespace vitmae::train {

/// The masking noise of micro-step `micro` of a run seeded `seed`: (batch, L), uniform in
/// [0, 1) as torch.rand.
template <class S>
Matrix<S> mae_noise(std::uint64_t seed, long micro, Index batch, Index L) {
  auto rng = seeded_rng(seed, seed_streams::noise + static_cast<std::uint64_t>(micro));
  return ops::uniform_noise<S>(batch, L, rng);
}

/// MAE pre-training as a TrainingLoop job: the batch is this rank's slice of the images.
template <class S>
struct MaePretraining : JobBase<TrainOptions> {
  using Model = ForPreTraining<S>;
  using Batch = Tensor<S>;
  using Backward = ParallelBackward<S>;
  static constexpr const char* name = "Trainer";

  using JobBase::JobBase;

  void check_model(const Model& m) const { require_no_dropout(m.config(), name); }
  void check(const Batch& pixels, Index b0, Index b1, Index, bool alone) const {
    detail::require(pixels.dim() == 4 && pixels.size(0) == b1 - b0, name, ": a batch must hold ", b1 - b0, " images",
                    alone ? "" : " (this rank's slice)", ", got ", detail::shape_str(pixels.shape));
  }
  S compute(Backward& backward, const Model& m, const Batch& pixels, Model& grads, long micro, Index b0) const {
    const Matrix<S> noise_rows =
        mae_noise<S>(opts.seed, micro, opts.batch, m.config().num_patches()).middleRows(b0, pixels.size(0));
    return backward.run(m, pixels, noise_rows, grads, opts.threads, {}, opts.batch);
  }
};

/// The preprocessing of a pre-training run from `source` (a checkpoint, or empty): its
/// preprocessor_config.json when it has one, else MAE's: ImageNet's mean and std (one channel:
/// 0.45 and 0.225), bicubic resampling, at the model's image size.
inline ImageProcessor pretraining_processor(const std::string& source, const Config& c) {
  if (!source.empty() && io::file_exists(io::join_path(io::checkpoint_folder(source), "preprocessor_config.json")))
    return ImageProcessor::for_checkpoint(source, c);
  ImageProcessor p;
  p.height = p.width = c.image_size;
  p.resample = 3;
  p.image_mean = {0.485, 0.456, 0.406};
  p.image_std = {0.229, 0.224, 0.225};
  if (c.num_channels != 3) p.image_mean = {0.45}, p.image_std = {0.225};
  return p;
}

/// The model a pre-training run starts from: the checkpoint `source` (refused when its weights
/// are int8: require_trainable_weights), or, with `source` empty, `config` initialised as MAE's
/// initialize_weights does, from `seed` (seed stream init_mae). `mask_ratio` above 0 replaces the
/// config's.
template <class S>
ForPreTraining<S> pretraining_model(const std::string& source, const Config& config, std::uint64_t seed,
                                    double mask_ratio = -1) {
  std::optional<ForPreTraining<S>> m;
  if (source.empty()) {
    m.emplace(config);
    auto rng = seeded_rng(seed, seed_streams::init_mae);
    m->init_weights(rng);
  } else {
    require_trainable_weights(source);
    m.emplace(ForPreTraining<S>::from_pretrained(source));
  }
  if (mask_ratio > 0) m->config().mask_ratio = mask_ratio;
  return std::move(*m);
}

/// The pre-training loop: Trainer<S>(model, options, world).train_step(next_batch).
template <class S>
using Trainer = TrainingLoop<MaePretraining<S>>;

}  // namespace vitmae::train
