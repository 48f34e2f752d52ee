// SPDX-License-Identifier: Apache-2.0
// The pre-training loop of the MAE recipe: per step, `accum` micro-batches (seeded noise, one
// forward_backward each, threads over the batch), optional gradient-norm clipping, AdamW at the
// scheduled learning rate. Checkpoints (train/checkpoint.hpp) are folders in HF's layout plus the
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

#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "vitmae/train/backward.hpp"
#include "vitmae/train/data_parallel.hpp"
#include "vitmae/train/optimizer.hpp"
#include "vitmae/train/world.hpp"

namespace vitmae::train {

struct TrainOptions {
  long steps = 1000;            // optimiser steps in the whole run (the schedule's length)
  int batch = 64;               // images per micro-batch
  int accum = 1;                // micro-batches per optimiser step (gradient accumulation)
  double base_lr = 1.5e-4;      // lr = base_lr * batch * accum / 256 (MAE's rule) ...
  double lr = 0;                // ... unless this absolute peak learning rate is positive
  double min_lr = 0;            // cosine floor
  long warmup_steps = -1;       // linear warm-up; -1: 5% of steps (MAE: 40 of 800 epochs)
  double weight_decay = 0.05;
  double beta1 = 0.9, beta2 = 0.95;
  double clip_grad = 0;         // max gradient norm; 0: no clipping (MAE's default)
  std::uint64_t seed = 0;
  int threads = 1;              // threads over the batch in forward/backward

  double peak_lr() const { return lr > 0 ? lr : base_lr * batch * accum / 256.0; }
  long warmup() const { return warmup_steps >= 0 ? warmup_steps : steps / 20; }
};

struct StepRecord {
  long step = 0;        // 1-based: the number of optimiser steps done
  double loss = 0, lr = 0, grad_norm = 0, seconds = 0;
};

/// A run's history as trainer_state.json holds it: [[step, loss, lr, grad_norm, seconds], ...].
inline nlohmann::json history_json(const std::vector<StepRecord>& history) {
  nlohmann::json hist = nlohmann::json::array();
  for (const auto& h : history) hist.push_back({h.step, h.loss, h.lr, h.grad_norm, h.seconds});
  return hist;
}

/// trainer_state.json: the step, the options that decide the result (train/checkpoint.hpp's
/// resume checks each), the number of ranks and the history. Options: TrainOptions or
/// FineTuneOptions.
template <class Options>
nlohmann::json trainer_state_json(long step, const Options& o, long warmup_steps, const std::vector<StepRecord>& history,
                                  int world_size = 1) {
  return {{"step", step},
          {"steps", o.steps},
          {"batch", o.batch},
          {"accum", o.accum},
          {"peak_lr", o.peak_lr()},
          {"min_lr", o.min_lr},
          {"warmup_steps", warmup_steps},
          {"weight_decay", o.weight_decay},
          {"betas", {o.beta1, o.beta2}},
          {"clip_grad", o.clip_grad},
          {"seed", o.seed},
          {"threads", o.threads},
          {"world_size", world_size},
          {"history_columns", {"step", "loss", "lr", "grad_norm", "seconds"}},
          {"history", history_json(history)}};
}

template <class S>
class Trainer {
 public:
  using Model = ForPreTraining<S>;

  /// `world`: the ranks of a data-parallel run (nullptr: this process alone).
  Trainer(ForPreTraining<S> model, TrainOptions o, std::shared_ptr<World> world = nullptr)
      : model_(std::move(model)), opts_(o), grads_(zero_grads_like(model_)),
        adam_(model_, AdamWOptions{o.beta1, o.beta2, 1e-8, o.weight_decay}), dp_(std::move(world), o.batch, "Trainer") {
    const Config& cfg = model_.config();
    detail::require(o.steps > 0, "Trainer: steps must be positive, got ", o.steps);
    detail::require(o.batch > 0 && o.accum > 0, "Trainer: batch and accum must be positive");
    detail::require(cfg.hidden_dropout_prob == 0 && cfg.attention_probs_dropout_prob == 0,
                    "Trainer: dropout is not implemented in training (config.json has hidden_dropout_prob ",
                    cfg.hidden_dropout_prob, ", attention_probs_dropout_prob ", cfg.attention_probs_dropout_prob,
                    "; MAE and HF's defaults are 0): set them to 0");
    set_overlap(true);
  }

  ForPreTraining<S>& model() { return model_; }
  const ForPreTraining<S>& model() const { return model_; }
  const TrainOptions& options() const { return opts_; }
  long step() const { return step_; }
  const std::vector<StepRecord>& history() const { return history_; }
  AdamW<ForPreTraining<S>>& optimizer() { return adam_; }
  const AdamW<ForPreTraining<S>>& optimizer() const { return adam_; }

  /// The world, the time spent summing over ranks (train/data_parallel.hpp).
  const DataParallel<S>& data_parallel() const { return dp_; }
  /// The images [first, second) of every micro-batch that this rank computes.
  std::pair<Index, Index> slice() const { return dp_.slice(opts_.batch); }
  /// Sums over ranks during the backward, a layer at a time (the default), or after it.
  void set_overlap(bool on) { parallel_.set_overlap(dp_.set_overlap(on)); }

  /// The learning rate of step `s` (0-based).
  double learning_rate(long s) const { return mae_learning_rate(s, opts_.warmup(), opts_.steps, opts_.peak_lr(), opts_.min_lr); }

  /// The noise of micro-step `micro` (B, L), uniform in [0, 1) as torch.rand.
  Matrix<S> noise(long micro) const {
    auto rng = seeded_rng(opts_.seed, 0x4E4F495345000000ull + static_cast<std::uint64_t>(micro));  // "NOISE"
    const Index L = model_.config().num_patches();
    return ops::uniform_noise<S>(opts_.batch, L, rng);
  }

  /// One optimiser step over `accum` micro-batches from next_batch() (this rank's slice of
  /// each, slice()). Returns its record. With several ranks, an error on any rank (a damaged
  /// image, a non-finite loss) is thrown on every rank as AgreedError, before the update.
  StepRecord train_step(const std::function<Tensor<S>()>& next_batch) {
    const auto t0 = std::chrono::steady_clock::now();
    zero_parameters(grads_);
    const Index b0 = slice().first, b1 = slice().second;  // (lambdas below capture them: not a structured binding)
    double loss = 0;
    for (int a = 0; a < opts_.accum; ++a) {
      Tensor<S> pixels;
      loss += static_cast<double>(dp_.micro_batch(
          a, grads_,
          [&] {
            pixels = next_batch();
            detail::require(pixels.dim() == 4 && pixels.size(0) == b1 - b0, "Trainer: a batch must hold ", b1 - b0, " images",
                            dp_.alone() ? "" : " (this rank's slice)", ", got ", detail::shape_str(pixels.shape));
          },
          [&] {
            const Matrix<S> noise_rows = noise(step_ * opts_.accum + a).middleRows(b0, b1 - b0);
            return parallel_.run(model_, pixels, noise_rows, grads_, opts_.threads, {}, opts_.batch);
          }));
    }
    loss /= opts_.accum;
    const double norm = finish_gradients(grads_, opts_.accum, opts_.clip_grad);  // mean, norm, clipping
    const double lr = learning_rate(step_);
    // Every rank has the same loss: all refuse a non-finite one together, before the update.
    together(dp_.world(), [&] {
      detail::require(std::isfinite(loss), "Trainer: the loss became ", loss, " at step ", step_ + 1,
                      " (learning rate too high? try a lower --base-lr or --clip-grad)");
    });
    adam_.step(model_, grads_, lr);
    ++step_;
    StepRecord r{step_, loss, lr, norm, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()};
    history_.push_back(r);
    return r;
  }

  /// Puts a checkpoint's state back (train/checkpoint.hpp reads it): weights, step, history;
  /// the optimiser's moments are restored through optimizer().
  void restore(ForPreTraining<S> model, long step, std::vector<StepRecord> history) {
    model_ = std::move(model);
    adam_.set_step_count(step);
    step_ = step;
    history_ = std::move(history);
  }

  nlohmann::json state_json() const { return trainer_state_json(step_, opts_, opts_.warmup(), history_, dp_.world().size()); }

 private:

  ForPreTraining<S> model_;
  TrainOptions opts_;
  ForPreTraining<S> grads_;
  AdamW<ForPreTraining<S>> adam_;
  ParallelBackward<S> parallel_;
  DataParallel<S> dp_;
  long step_ = 0;
  std::vector<StepRecord> history_;
};

}  // namespace vitmae::train
