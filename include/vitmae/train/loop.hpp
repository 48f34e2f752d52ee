// SPDX-License-Identifier: Apache-2.0
// The one training loop: pre-training (train/trainer.hpp), fine-tuning (train/finetune.hpp) and
// any other job run on TrainingLoop<Job>. Per optimiser step it takes `accum` micro-batches (the
// data-parallel side, train/data_parallel.hpp, splits each over threads and MPI ranks and sums
// their gradients in a fixed order), averages and optionally clips the gradients, refuses a
// non-finite loss or gradient norm on every rank before touching the weights, and takes an AdamW
// step at the scheduled rate (MAE's: linear warm-up, then half-cosine), scaled per parameter if
// the job asks. It keeps the history that checkpoints (train/checkpoint.hpp) save and resume.
//
// A job supplies only what differs (deriving from JobBase<Options>, which holds `opts` and
// gives the last two their defaults):
//   using Model, Options (TrainOptions or a struct derived from it), Batch, Backward;
//   static constexpr const char* name;                       // names the job in errors
//   void check_model(const Model&) const;                    // what the job cannot train
//   void check(const Batch&, Index b0, Index b1, Index batch, bool alone) const;  // its shape
//   S compute(Backward&, const Model&, const Batch&, Model& grads, long micro, Index b0) const;
//   double lr_scale(const Model&, const Parameter<S>&) const; // 1 for every parameter, or a decay
//   void add_state(nlohmann::json&) const;                   // job options trainer_state.json records
//
// Reproducible: a step is a function of the model, the optimiser state and its batches, so the
// same threads (and ranks) give the same bits, and resuming at step s continues bit for bit.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "vitmae/error.hpp"
#include "vitmae/train/backward.hpp"
#include "vitmae/train/data_parallel.hpp"
#include "vitmae/train/grads.hpp"
#include "vitmae/train/optimizer.hpp"
#include "vitmae/train/world.hpp"
#include "vitmae/weights/checkpoint.hpp"

namespace vitmae::train {

/// The recipe every training job shares. Its defaults are MAE's pre-training recipe; a job's
/// Options (FineTuneOptions) may set others.
struct TrainOptions {
  long steps = 1000;           // optimiser steps in the whole run (the schedule's length)
  int batch = 64;              // images per micro-batch
  int accum = 1;               // micro-batches per optimiser step (gradient accumulation)
  double base_lr = 1.5e-4;     // lr = base_lr * batch * accum / 256 (MAE's rule) ...
  double lr = 0;               // ... unless this absolute peak learning rate is positive
  double min_lr = 0;           // cosine floor
  long warmup_steps = -1;      // linear warm-up; -1: 5% of steps (MAE: 40 of 800 epochs)
  double weight_decay = 0.05;  // AdamW's decoupled decay (on weights only: optimizer.hpp)
  double beta1 = 0.9, beta2 = 0.95;
  double clip_grad = 0;  // max gradient norm; 0: no clipping (MAE's default)
  std::uint64_t seed = 0;
  int threads = 1;    // threads over the batch in forward/backward
  bool bf16 = false;  // mixed precision: the Linear, patch-projection and attention products of the
                      // forward and backward in bfloat16 with float32 sums (BFloat16Products), the
                      // rest float32

  double peak_lr() const { return lr > 0 ? lr : base_lr * batch * accum / 256.0; }
  long warmup() const { return warmup_steps >= 0 ? warmup_steps : steps / 20; }

  /// @throws vitmae::Error naming `who` and the option that is out of range.
  void validate(const char* who) const {
    detail::require(steps > 0, who, ": steps must be positive, got ", steps);
    detail::require(batch > 0 && accum > 0, who, ": batch and accum must be positive, got ", batch, " and ", accum);
    detail::require(threads > 0, who, ": threads must be positive, got ", threads);
    for (auto [opt, v] : {std::pair<const char*, double>{"base_lr", base_lr},
                          {"lr", lr},
                          {"min_lr", min_lr},
                          {"weight_decay", weight_decay},
                          {"clip_grad", clip_grad}})
      detail::require(std::isfinite(v) && v >= 0, who, ": ", opt, " must be a finite number >= 0, got ", v);
    detail::require(peak_lr() > 0, who, ": the peak learning rate must be positive (base_lr ", base_lr, ", lr ", lr,
                    ")");
    for (auto [opt, v] : {std::pair<const char*, double>{"beta1", beta1}, {"beta2", beta2}})
      detail::require(v >= 0 && v < 1, who, ": ", opt, " must be in [0, 1), got ", v);
    detail::require(warmup_steps >= -1, who, ": warmup_steps must be >= 0 (or -1: 5% of the steps), got ",
                    warmup_steps);
    if (bf16) detail::require_bfloat16((std::string(who) + ": bf16").c_str());
  }
};

struct StepRecord {
  long step = 0;  // 1-based: the number of optimiser steps done
  double loss = 0, lr = 0, grad_norm = 0, seconds = 0;
};

/// A run's history as trainer_state.json holds it: [[step, loss, lr, grad_norm, seconds], ...].
inline nlohmann::json history_json(const std::vector<StepRecord>& history) {
  nlohmann::json hist = nlohmann::json::array();
  for (const auto& h : history) hist.push_back({h.step, h.loss, h.lr, h.grad_norm, h.seconds});
  return hist;
}

/// trainer_state.json: the step, the options that decide the result (train/checkpoint.hpp's
/// resume checks each), the number of ranks and the history.
inline nlohmann::json trainer_state_json(long step, const TrainOptions& o, const std::vector<StepRecord>& history,
                                         int world_size = 1) {
  return {{"step", step},
          {"steps", o.steps},
          {"batch", o.batch},
          {"accum", o.accum},
          {"peak_lr", o.peak_lr()},
          {"min_lr", o.min_lr},
          {"warmup_steps", o.warmup()},
          {"weight_decay", o.weight_decay},
          {"betas", {o.beta1, o.beta2}},
          {"clip_grad", o.clip_grad},
          {"seed", o.seed},
          {"threads", o.threads},
          {"bf16", o.bf16},
          {"world_size", world_size},
          {"history_columns", {"step", "loss", "lr", "grad_norm", "seconds"}},
          {"history", history_json(history)}};
}

/// The transformer jobs' check: dropout is not implemented in training.
/// @throws vitmae::Error naming `who` and the config's values.
template <class Config>
void require_no_dropout(const Config& c, const char* who) {
  detail::require(c.hidden_dropout_prob == 0 && c.attention_probs_dropout_prob == 0, who,
                  ": dropout is not implemented in training (config.json has hidden_dropout_prob ",
                  c.hidden_dropout_prob, ", attention_probs_dropout_prob ", c.attention_probs_dropout_prob,
                  "; MAE and HF's defaults are 0): set them to 0");
}

/// Refuses, before anything is built or written, a checkpoint a training run cannot start
/// from: int8 weights (vitmae-convert --dtype int8) are for inference only.
/// @throws vitmae::Error naming the file, the tensor and the way back to float weights.
inline void require_trainable_weights(const std::string& path) {
  const std::shared_ptr<io::TensorSource> w = open_pretrained_weights(path);
  for (const std::string& n : w->names())
    detail::require(!w->is_int8(n), w->where(), ": tensor '", n,
                    "' is int8: an int8 checkpoint is for inference only; training starts ",
                    "from float weights (vitmae-convert --input ", path,
                    " --out DIR --dtype float32 gives them back, at int8's precision)");
}

/// What a job has unless it says otherwise: its options (`opts`), one lr for every parameter,
/// nothing more in trainer_state.json.
template <class Opts>
struct JobBase {
  using Options = Opts;
  Options opts;

  explicit JobBase(const Options& o) : opts(o) {}
  template <class Model, class P>
  double lr_scale(const Model&, const P&) const {
    return 1.0;
  }
  void add_state(nlohmann::json&) const {}
};

template <class Job>
class TrainingLoop {
 public:
  using Model = typename Job::Model;
  using Options = typename Job::Options;
  using Batch = typename Job::Batch;
  using S = typename Model::scalar_type;

  /// `world`: the ranks of a data-parallel run (nullptr: this process alone).
  /// @throws vitmae::Error on options out of range or a model the job cannot train (dropout).
  TrainingLoop(Model model, Options o, std::shared_ptr<World> world = nullptr)
      : opts_(checked(std::move(o))),
        job_(opts_),
        model_(std::move(model)),
        grads_(zero_grads_like(model_)),
        adam_(model_, AdamWOptions{opts_.beta1, opts_.beta2, 1e-8, opts_.weight_decay}),
        dp_(std::move(world), opts_.batch, Job::name) {
    job_.check_model(model_);
    set_overlap(true);
  }

  Model& model() { return model_; }
  const Model& model() const { return model_; }
  const Options& options() const { return opts_; }
  const Job& job() const { return job_; }
  long step() const { return step_; }
  const std::vector<StepRecord>& history() const { return history_; }
  AdamW<Model>& optimizer() { return adam_; }
  const AdamW<Model>& optimizer() const { return adam_; }

  /// The world, the time spent summing over ranks (train/data_parallel.hpp).
  const DataParallel<S>& data_parallel() const { return dp_; }
  /// The images [first, second) of every micro-batch that this rank computes.
  std::pair<Index, Index> slice() const { return dp_.slice(opts_.batch); }
  /// Sums over ranks during the backward, a layer at a time (the default), or after it.
  void set_overlap(bool on) { backward_.set_overlap(dp_.set_overlap(on)); }

  /// The learning rate of step `s` (0-based), before the job's per-parameter scale.
  double learning_rate(long s) const {
    return mae_learning_rate(s, opts_.warmup(), opts_.steps, opts_.peak_lr(), opts_.min_lr);
  }

  /// One optimiser step over `accum` micro-batches from next_batch() (this rank's slice of
  /// each, slice()). Returns its record. With several ranks, an error on any rank (a damaged
  /// image, a non-finite loss) is thrown on every rank as AgreedError, before the update.
  StepRecord train_step(const std::function<Batch()>& next_batch) {
    const auto t0 = std::chrono::steady_clock::now();
    const BFloat16Products bf16(opts_.bf16);               // (the products of this step's forwards and backwards)
    const detail::RoundedWeightsOnce rounded(opts_.bf16);  // (each weight rounded once in the step)
    // The gradients start at zero; the weights' are only marked so (their first products
    // overwrite them) and settled after each micro-batch's backward (DataParallel::micro_batch).
    const DeferredZeros<Model> zeros(grads_);
    const Index b0 = slice().first, b1 = slice().second;  // (lambdas below capture them: not a structured binding)
    double loss = 0;
    for (int a = 0; a < opts_.accum; ++a) {
      Batch batch;
      loss += static_cast<double>(dp_.micro_batch(
          a, grads_, [&] { batch = next_batch(), job_.check(batch, b0, b1, opts_.batch, dp_.alone()); },
          [&] { return job_.compute(backward_, model_, batch, grads_, step_ * opts_.accum + a, b0); }));
    }
    loss /= opts_.accum;
    const double norm = finish_gradients(grads_, opts_.accum, opts_.clip_grad);  // mean, norm, clipping
    // Every rank has the same loss and norm: all refuse a non-finite one together, before the
    // update, so that the weights and the optimiser's moments stay those of the last good step.
    together(dp_.world(), [&] {
      detail::require(std::isfinite(loss) && std::isfinite(norm), Job::name, ": the loss became ", loss,
                      " (gradient norm ", norm, ") at step ", step_ + 1,
                      " (learning rate too high? try a lower --base-lr or --clip-grad)");
    });
    const double lr = learning_rate(step_);
    adam_.step(model_, grads_, lr, [&](const Parameter<S>& p) { return job_.lr_scale(model_, p); });
    ++step_;
    StepRecord r{step_, loss, lr, norm, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()};
    history_.push_back(r);
    return r;
  }

  /// Puts a checkpoint's state back (train/checkpoint.hpp reads it): weights, step, history;
  /// the optimiser's moments are restored through optimizer().
  void restore(Model model, long step, std::vector<StepRecord> history) {
    model_ = std::move(model);
    adam_.set_step_count(step);
    step_ = step;
    history_ = std::move(history);
  }

  /// What trainer_state.json records besides the options: the command line a program was
  /// started with ("args"), for a resume that gives none (train/checkpoint.hpp ignores it).
  void set_run_args(nlohmann::json args) { run_args_ = std::move(args); }
  const nlohmann::json& run_args() const { return run_args_; }

  nlohmann::json state_json() const {
    nlohmann::json j = trainer_state_json(step_, opts_, history_, dp_.world().size());
    job_.add_state(j);
    if (!run_args_.is_null()) j["args"] = run_args_;
    return j;
  }

 private:
  static Options checked(Options o) {
    detail::require(!o.bf16 || std::is_same_v<S, float>, Job::name, ": bf16 products are for float models");
    o.validate(Job::name);
    return o;
  }

  Options opts_;
  Job job_;
  Model model_;
  Model grads_;
  AdamW<Model> adam_;
  typename Job::Backward backward_;
  DataParallel<S> dp_;
  long step_ = 0;
  std::vector<StepRecord> history_;
  nlohmann::json run_args_;
  detail::RoundedWeightsUser rounded_{opts_.bf16};  // (bf16: the weights' rounded copies kept between steps)
};

}  // namespace vitmae::train
