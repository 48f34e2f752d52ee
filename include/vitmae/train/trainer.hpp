// SPDX-License-Identifier: Apache-2.0
// The pre-training loop of the MAE recipe: per step, `accum` micro-batches (seeded noise, one
// forward_backward each, threads over the batch), optional gradient-norm clipping, AdamW at the
// scheduled learning rate. Checkpoints are folders in HF's layout plus the optimiser state and
// trainer_state.json, made atomically (a temporary folder renamed into place).
//
// Reproducible: step s's noise is drawn from a generator seeded by (seed, micro-step) and its
// images are batches s*accum .. of the DataLoader (a function of (seed, batch index)), so the same
// seed and thread count give the same weights, and resuming at step s continues bit for bit.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include "vitmae/image_processor.hpp"
#include "vitmae/io/atomic_file.hpp"
#include "vitmae/io/json_file.hpp"
#include "vitmae/io/safetensors.hpp"
#include "vitmae/train/backward.hpp"
#include "vitmae/train/data.hpp"
#include "vitmae/train/optimizer.hpp"

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

template <class S>
class Trainer {
 public:
  Trainer(ForPreTraining<S> model, TrainOptions o)
      : model_(std::move(model)), opts_(o), grads_(zero_grads_like(model_)),
        adam_(model_, AdamWOptions{o.beta1, o.beta2, 1e-8, o.weight_decay}) {
    detail::require(o.steps > 0, "Trainer: steps must be positive, got ", o.steps);
    detail::require(o.batch > 0 && o.accum > 0, "Trainer: batch and accum must be positive");
    detail::require(model_.config.hidden_dropout_prob == 0 && model_.config.attention_probs_dropout_prob == 0,
                    "Trainer: dropout is not implemented in training (config.json has hidden_dropout_prob ",
                    model_.config.hidden_dropout_prob, ", attention_probs_dropout_prob ", model_.config.attention_probs_dropout_prob,
                    "; MAE and HF's defaults are 0): set them to 0");
  }

  ForPreTraining<S>& model() { return model_; }
  const TrainOptions& options() const { return opts_; }
  long step() const { return step_; }
  const std::vector<StepRecord>& history() const { return history_; }
  AdamW<S>& optimizer() { return adam_; }

  /// The learning rate of step `s` (0-based).
  double learning_rate(long s) const { return mae_learning_rate(s, opts_.warmup(), opts_.steps, opts_.peak_lr(), opts_.min_lr); }

  /// The noise of micro-step `micro` (B, L), uniform in [0, 1) as torch.rand.
  Matrix<S> noise(long micro) const {
    auto rng = seeded_rng(opts_.seed, 0x4E4F495345000000ull + static_cast<std::uint64_t>(micro));  // "NOISE"
    const Index L = (model_.config.image_size / model_.config.patch_size) * (model_.config.image_size / model_.config.patch_size);
    return ops::uniform_noise<S>(opts_.batch, L, rng);
  }

  /// One optimiser step over `accum` micro-batches from next_batch(). Returns its record.
  StepRecord train_step(const std::function<Tensor<S>()>& next_batch) {
    const auto t0 = std::chrono::steady_clock::now();
    grads_.visit_parameters("", [](const std::string&, auto& t, const std::vector<Index>&) { t.setZero(); });
    double loss = 0;
    for (int a = 0; a < opts_.accum; ++a) {
      const Tensor<S> pixels = next_batch();
      detail::require(pixels.dim() == 4 && pixels.size(0) == opts_.batch, "Trainer: a batch must hold ", opts_.batch, " images, got ",
                      detail::shape_str(pixels.shape));
      loss += static_cast<double>(parallel_.run(model_, pixels, noise(step_ * opts_.accum + a), grads_, opts_.threads));
    }
    loss /= opts_.accum;
    double sq = 0;
    const S inv_accum = S(1) / static_cast<S>(opts_.accum);
    grads_.visit_parameters("", [&](const std::string& n, auto& t, const std::vector<Index>&) {
      if (!trainable(n)) return;
      if (opts_.accum > 1) t *= inv_accum;
      sq += static_cast<double>(t.squaredNorm());
    });
    const double norm = std::sqrt(sq);
    if (opts_.clip_grad > 0) {  // torch.nn.utils.clip_grad_norm_
      const double coef = opts_.clip_grad / (norm + 1e-6);
      if (coef < 1)
        grads_.visit_parameters("", [&](const std::string&, auto& t, const std::vector<Index>&) { t *= static_cast<S>(coef); });
    }
    const double lr = learning_rate(step_);
    adam_.step(model_, grads_, lr);
    ++step_;
    StepRecord r{step_, loss, lr, norm, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()};
    detail::require(std::isfinite(loss), "Trainer: the loss became ", loss, " at step ", step_,
                    " (learning rate too high? try a lower --base-lr or --clip-grad)");
    history_.push_back(r);
    return r;
  }

  // ------------------------------------------------------------ checkpoints

  /// Writes `dir` atomically: config.json, model.safetensors (the model's precision),
  /// preprocessor_config.json, optimizer.safetensors, trainer_state.json, loss.csv. An existing
  /// folder of that name is replaced only once the new one is complete.
  void save_checkpoint(const std::string& dir, const ImageProcessor& proc) {
    namespace fs = std::filesystem;
    const fs::path final_dir(dir);
    const fs::path parent = final_dir.has_parent_path() ? final_dir.parent_path() : fs::path(".");
    std::error_code ec;
    fs::create_directories(parent, ec);
    detail::require(!ec, parent.string(), ": cannot create folder: ", ec.message());
    const std::string pid = std::to_string(static_cast<long>(::getpid()));
    const fs::path tmp = parent / ("." + final_dir.filename().string() + ".tmp-" + pid);
    fs::remove_all(tmp, ec);
    try {
      model_.save_pretrained(tmp.string());
      proc.save((tmp / "preprocessor_config.json").string());
      io::SafetensorsWriter w;
      w.set_metadata("format", "pt");
      const io::DType dt = std::is_same_v<S, double> ? io::DType::F64 : io::DType::F32;
      for (auto& [name, m] : adam_.exp_avg()) w.add("exp_avg." + name, m.data(), {static_cast<std::int64_t>(m.size())}, dt);
      for (auto& [name, v] : adam_.exp_avg_sq()) w.add("exp_avg_sq." + name, v.data(), {static_cast<std::int64_t>(v.size())}, dt);
      w.save((tmp / "optimizer.safetensors").string());
      io::write_file_atomic((tmp / "trainer_state.json").string(), state_json().dump(2) + "\n");
      io::write_file_atomic((tmp / "loss.csv").string(), loss_csv());
    } catch (...) {
      fs::remove_all(tmp, ec);
      throw;
    }
    const fs::path old = parent / ("." + final_dir.filename().string() + ".old-" + pid);
    if (fs::exists(final_dir)) {
      fs::rename(final_dir, old, ec);
      detail::require(!ec, dir, ": cannot move the previous checkpoint aside: ", ec.message());
    }
    fs::rename(tmp, final_dir, ec);
    detail::require(!ec, dir, ": cannot rename the new checkpoint into place: ", ec.message());
    fs::remove_all(old, ec);
  }

  /// Restores weights, optimiser moments, step and loss history from a checkpoint written by
  /// save_checkpoint. The run's options must agree on batch and accum (checked).
  void resume(const std::string& dir) {
    const std::string state_path = io::join_path(dir, "trainer_state.json");
    const nlohmann::json st = io::read_json_file(state_path);
    auto get_long = [&](const char* k) {
      detail::require(st.contains(k) && st[k].is_number_integer(), state_path, ": '", k, "' must be an integer");
      return st[k].get<long>();
    };
    const long batch = get_long("batch"), accum = get_long("accum"), step = get_long("step");
    detail::require(batch == opts_.batch && accum == opts_.accum, state_path, ": the checkpoint was trained with batch ", batch,
                    " and accum ", accum, ", this run asks for ", opts_.batch, " and ", opts_.accum);
    detail::require(step >= 0 && step <= opts_.steps, state_path, ": step ", step, " is beyond this run's ", opts_.steps, " steps");
    ForPreTraining<S> loaded = ForPreTraining<S>::from_pretrained(dir);
    detail::require(loaded.config.to_json() == model_.config.to_json(), dir,
                    "/config.json: the checkpoint's model differs from this run's --config/--preset");
    model_ = std::move(loaded);
    const io::SafetensorsFile opt(io::join_path(dir, "optimizer.safetensors"));
    for (auto* moments : {&adam_.exp_avg(), &adam_.exp_avg_sq()}) {
      const std::string prefix = moments == &adam_.exp_avg() ? "exp_avg." : "exp_avg_sq.";
      for (auto& [name, m] : *moments) {
        const std::string key = prefix + name;
        detail::require(opt.contains(key), opt.path(), ": missing tensor '", key, "'");
        detail::require(opt.info(key).numel() == m.size(), opt.path(), ": tensor '", key, "' has ", opt.info(key).numel(),
                        " elements, expected ", m.size());
        opt.read(key, m.data());
      }
    }
    adam_.set_step_count(step);
    step_ = step;
    history_.clear();
    if (st.contains("history") && st["history"].is_array())
      for (const auto& h : st["history"])
        if (h.is_array() && h.size() == 5)
          history_.push_back({h[0].get<long>(), h[1].get<double>(), h[2].get<double>(), h[3].get<double>(), h[4].get<double>()});
  }

  nlohmann::json state_json() const {
    nlohmann::json hist = nlohmann::json::array();
    for (const auto& h : history_) hist.push_back({h.step, h.loss, h.lr, h.grad_norm, h.seconds});
    return {{"step", step_},
            {"steps", opts_.steps},
            {"batch", opts_.batch},
            {"accum", opts_.accum},
            {"peak_lr", opts_.peak_lr()},
            {"min_lr", opts_.min_lr},
            {"warmup_steps", opts_.warmup()},
            {"weight_decay", opts_.weight_decay},
            {"betas", {opts_.beta1, opts_.beta2}},
            {"clip_grad", opts_.clip_grad},
            {"seed", opts_.seed},
            {"threads", opts_.threads},
            {"history_columns", {"step", "loss", "lr", "grad_norm", "seconds"}},
            {"history", hist}};
  }

  std::string loss_csv() const {
    std::ostringstream s;
    s.precision(9);
    s << "step,loss,lr,grad_norm,seconds\n";
    for (const auto& h : history_) s << h.step << ',' << h.loss << ',' << h.lr << ',' << h.grad_norm << ',' << h.seconds << '\n';
    return s.str();
  }

 private:
  ForPreTraining<S> model_;
  TrainOptions opts_;
  ForPreTraining<S> grads_;
  AdamW<S> adam_;
  ParallelBackward<S> parallel_;
  long step_ = 0;
  std::vector<StepRecord> history_;
};

/// The loss curve as a standalone SVG: loss against step (and, when `window` > 1, its moving
/// average), with the axes' ranges labelled.
inline std::string loss_curve_svg(const std::vector<StepRecord>& h, int window = 0) {
  const double W = 720, H = 400, ml = 70, mr = 20, mt = 30, mb = 50;
  std::ostringstream s;
  s.precision(6);
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H << "\" viewBox=\"0 0 " << W << ' ' << H
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  if (h.empty()) {
    s << "<text x=\"" << W / 2 << "\" y=\"" << H / 2 << "\" text-anchor=\"middle\">no steps yet</text>\n</svg>\n";
    return s.str();
  }
  if (window <= 0) window = static_cast<int>(std::max<size_t>(1, h.size() / 50));
  std::vector<double> avg(h.size());
  double acc = 0;
  for (size_t i = 0; i < h.size(); ++i) {
    acc += h[i].loss;
    if (i >= static_cast<size_t>(window)) acc -= h[i - static_cast<size_t>(window)].loss;
    avg[i] = acc / static_cast<double>(std::min(i + 1, static_cast<size_t>(window)));
  }
  double lo = h[0].loss, hi = h[0].loss;
  for (const auto& r : h) lo = std::min(lo, r.loss), hi = std::max(hi, r.loss);
  if (hi <= lo) hi = lo + 1;
  const double s0 = static_cast<double>(h.front().step), s1 = static_cast<double>(std::max(h.back().step, h.front().step + 1));
  auto X = [&](double st) { return ml + (st - s0) / (s1 - s0) * (W - ml - mr); };
  auto Y = [&](double v) { return mt + (hi - v) / (hi - lo) * (H - mt - mb); };
  s << "<line x1=\"" << ml << "\" y1=\"" << H - mb << "\" x2=\"" << W - mr << "\" y2=\"" << H - mb << "\" stroke=\"black\"/>\n";
  s << "<line x1=\"" << ml << "\" y1=\"" << mt << "\" x2=\"" << ml << "\" y2=\"" << H - mb << "\" stroke=\"black\"/>\n";
  auto poly = [&](auto value, const char* colour, double width) {
    s << "<polyline fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"" << width << "\" points=\"";
    for (size_t i = 0; i < h.size(); ++i) s << X(static_cast<double>(h[i].step)) << ',' << Y(value(i)) << ' ';
    s << "\"/>\n";
  };
  poly([&](size_t i) { return h[i].loss; }, "#9ecae1", 1);
  if (window > 1) poly([&](size_t i) { return avg[i]; }, "#08519c", 2);
  s << "<text x=\"" << ml - 6 << "\" y=\"" << mt + 4 << "\" text-anchor=\"end\">" << hi << "</text>\n";
  s << "<text x=\"" << ml - 6 << "\" y=\"" << H - mb << "\" text-anchor=\"end\">" << lo << "</text>\n";
  s << "<text x=\"" << ml << "\" y=\"" << H - mb + 18 << "\" text-anchor=\"middle\">" << h.front().step << "</text>\n";
  s << "<text x=\"" << W - mr << "\" y=\"" << H - mb + 18 << "\" text-anchor=\"middle\">" << h.back().step << "</text>\n";
  s << "<text x=\"" << (ml + W - mr) / 2 << "\" y=\"" << H - 12 << "\" text-anchor=\"middle\">step</text>\n";
  s << "<text x=\"" << (ml + W - mr) / 2 << "\" y=\"18\" text-anchor=\"middle\">training loss (light: per step; dark: moving average of "
    << window << ")</text>\n</svg>\n";
  return s.str();
}

}  // namespace vitmae::train
