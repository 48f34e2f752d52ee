// SPDX-License-Identifier: Apache-2.0
// Training checkpoints: a folder in HF's layout (config.json, model.safetensors,
// preprocessor_config.json) plus optimizer.safetensors (the AdamW moments, `exp_avg.<name>` and
// `exp_avg_sq.<name>`, flat), trainer_state.json and loss.csv. Written atomically: a temporary
// folder renamed into place, so a reader never sees half of one.
#pragma once

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include "vitmae/images/image_processor.hpp"
#include "vitmae/io/file.hpp"
#include "vitmae/io/safetensors.hpp"
#include "vitmae/train/finetune.hpp"
#include "vitmae/train/trainer.hpp"

namespace vitmae::train {

/// The history as CSV: step,loss,lr,grad_norm,seconds.
inline std::string loss_csv(const std::vector<StepRecord>& history) {
  std::ostringstream s;
  s.precision(9);
  s << "step,loss,lr,grad_norm,seconds\n";
  for (const auto& h : history)
    s << h.step << ',' << h.loss << ',' << h.lr << ',' << h.grad_norm << ',' << h.seconds << '\n';
  return s.str();
}

/// Writes `dir` atomically: config.json, model.safetensors (the model's precision),
/// preprocessor_config.json, optimizer.safetensors, trainer_state.json, loss.csv, and `extra`
/// files (name, contents). An existing folder of that name is replaced only once the new one is
/// complete. T: a TrainingLoop whose model has save_pretrained (pre-training, fine-tuning).
template <class T>
void save_checkpoint(const T& trainer, const std::string& dir, const ImageProcessor& proc,
                     const std::vector<std::pair<std::string, std::string>>& extra = {}) {
  using M = typename T::Model;
  using S = typename M::scalar_type;
  io::write_folder_atomic(dir, [&](const std::string& tmp) {
    trainer.model().save_pretrained(tmp);
    proc.save(io::join_path(tmp, "preprocessor_config.json"));
    io::SafetensorsWriter w;
    w.set_metadata("format", "pt");
    const io::DType dt = io::dtype_of<S>();
    const auto& adam = trainer.optimizer();
    for (const char* prefix : {"exp_avg.", "exp_avg_sq."}) {
      const M& moments = std::string(prefix) == "exp_avg." ? adam.exp_avg() : adam.exp_avg_sq();
      moments.visit_parameters("", [&](const Parameter<const S>& p) {
        if (p.trainable()) w.add(prefix + p.name, p.data, {static_cast<std::int64_t>(p.size)}, dt);
      });
    }
    w.save(io::join_path(tmp, "optimizer.safetensors"));
    io::write_file_atomic(io::join_path(tmp, "trainer_state.json"), trainer.state_json().dump(2) + "\n");
    io::write_file_atomic(io::join_path(tmp, "loss.csv"), loss_csv(trainer.history()));
    for (const auto& [name, contents] : extra) io::write_file_atomic(io::join_path(tmp, name), contents);
  });
}

/// A run's OUT/checkpoint-STEP folders, the newest `keep` kept: added(step) records a checkpoint
/// just written and removes the oldest beyond `keep`. With `adopt_existing`, the checkpoints
/// already in OUT (the earlier part of a resumed run) count too, oldest first by step.
class CheckpointRotation {
 public:
  CheckpointRotation(std::string out, long keep, bool adopt_existing = false) : out_(std::move(out)), keep_(keep) {
    if (!adopt_existing) return;
    std::error_code ec;
    for (std::filesystem::directory_iterator it(out_, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string n = it->path().filename().string();
      if (n.rfind("checkpoint-", 0) == 0 && n.size() > 11 && n.size() < 30 &&
          n.find_first_not_of("0123456789", 11) == std::string::npos)
        steps_.push_back(std::stol(n.substr(11)));
    }
    std::sort(steps_.begin(), steps_.end());
  }

  std::string dir(long step) const { return io::join_path(out_, "checkpoint-" + std::to_string(step)); }

  void added(long step) {
    steps_.erase(std::remove(steps_.begin(), steps_.end(), step), steps_.end());
    steps_.push_back(step);
    while (static_cast<long>(steps_.size()) > keep_) {
      std::error_code ec;
      std::filesystem::remove_all(dir(steps_.front()), ec);
      steps_.erase(steps_.begin());
    }
  }

 private:
  std::string out_;
  long keep_;
  std::vector<long> steps_;  // oldest first
};

/// Restores weights, optimiser moments, step and loss history from a checkpoint written by
/// save_checkpoint. The run's options must agree with the checkpoint's on everything that
/// decides the result: batch, accum, steps (the schedule), seed (the data and masks) and threads
/// (the summation order of the gradient; unless the number of ranks changes too): each
/// difference is refused with a RequestError naming both values.
/// T: a TrainingLoop whose model has save_pretrained (pre-training, fine-tuning).
template <class T>
void resume(T& trainer, const std::string& dir) {
  using M = typename T::Model;
  using S = typename M::scalar_type;
  const auto& opts = trainer.options();
  const std::string state_path = io::join_path(dir, "trainer_state.json");
  const nlohmann::json st = io::read_json_file(state_path);
  auto get_long = [&](const char* k) {
    detail::require(st.contains(k) && st[k].is_number_integer(), state_path, ": '", k, "' must be an integer");
    return st[k].get<long>();
  };
  const long step = get_long("step");
  for (const char* key : {"batch", "accum", "steps", "seed", "threads"}) get_long(key);  // required, integers
  // Every option the state records (batch, accum, steps, seed, threads, rates, warm-up, decays,
  // betas, clipping...) must be the same; a key an older checkpoint lacks is not checked. The
  // number of ranks may change (train/world.hpp), and with it the threads per rank: the data and
  // masks stay the same, the gradient's summation order changes (N ranks of 1 thread and 1
  // process of N threads add in the same order).
  const nlohmann::json mine_all = trainer.state_json();
  const bool same_world = st.value("world_size", 1) == mine_all.value("world_size", 1);
  for (const auto& [key, mine] : mine_all.items()) {
    if (key == "step" || key == "history" || key == "history_columns" || key == "world_size" || key == "args" ||
        !st.contains(key))
      continue;
    if (key == "threads" && !same_world) continue;
    if (st[key] != mine)
      throw RequestError(detail::concat("vitmae: ", state_path, ": the checkpoint was trained with ", key, " ",
                                        st[key].dump(), ", this run asks for ", mine.dump(),
                                        "; a resumed run must keep it"));
  }
  if (step < 0 || step > opts.steps)
    throw RequestError(
        detail::concat("vitmae: ", state_path, ": step ", step, " is beyond this run's ", opts.steps, " steps"));
  M loaded = M::from_pretrained(dir);
  if (loaded.config().to_json() != trainer.model().config().to_json())
    throw RequestError(detail::concat("vitmae: ", dir, "/config.json: the checkpoint's model differs from this run's"));
  const io::SafetensorsFile opt(io::join_path(dir, "optimizer.safetensors"));
  auto& adam = trainer.optimizer();
  for (const char* prefix : {"exp_avg.", "exp_avg_sq."}) {
    M& moments = std::string(prefix) == "exp_avg." ? adam.exp_avg() : adam.exp_avg_sq();
    moments.visit_parameters("", [&](const Parameter<S>& p) {
      if (!p.trainable()) return;
      const std::string key = prefix + p.name;
      detail::require(opt.contains(key), opt.path(), ": missing tensor '", key, "'");
      detail::require(opt.info(key).numel() == p.size, opt.path(), ": tensor '", key, "' has ", opt.info(key).numel(),
                      " elements, expected ", p.size);
      opt.read(key, p.data);
    });
  }
  std::vector<StepRecord> history;
  if (st.contains("history") && st["history"].is_array())
    for (const auto& h : st["history"])
      if (h.is_array() && h.size() == 5)
        history.push_back(
            {h[0].get<long>(), h[1].get<double>(), h[2].get<double>(), h[3].get<double>(), h[4].get<double>()});
  trainer.restore(std::move(loaded), step, std::move(history));
}

}  // namespace vitmae::train
