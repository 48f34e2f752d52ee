// SPDX-License-Identifier: Apache-2.0
// Summing gradients over the ranks while the backward goes on (PyTorch DDP's gradient buckets):
// a bucket is one encoder or decoder layer, started as soon as every thread's slice has been
// through that layer's backward (LayerStackCache::layer_done); its large tensors are summed where
// they lie, its small ones packed into one buffer. Without the hooks (no overlap),
// finish() sums every parameter after the backward; the sums are the same either way, element by
// element in the same order (threads' slices first, in slice order, then the ranks in rank
// order): overlapping changes when, not what.
#pragma once

#include <algorithm>
#include <cstddef>
#include <deque>
#include <mutex>
#include <unordered_set>
#include <vector>

#include "vitmae/parameter.hpp"
#include "vitmae/train/world.hpp"

namespace vitmae::train {

/// A micro-batch's sum over ranks. To overlap it with the backward: begin() before it,
/// layer_done() from each slice's thread after each layer (the same layers in the same order on
/// every slice), poll() from the main thread (the only one that calls MPI) whenever it can, and
/// add_twins leaves out the layers already added (twin_added). In any case finish() after the
/// backward sums what no layer held, waits for every sum and is ready for the next micro-batch.
template <class S>
class OverlappedSum {
 public:
  explicit OverlappedSum(World& world) : world_(world) {}

  void begin(int slices) {
    slices_ = slices;
    next_.assign(static_cast<std::size_t>(slices), 0);
  }

  /// Slice t is through a layer whose gradients (its own twin's) are `layer`. The last slice
  /// to get there adds the twins into slice 0's (the gradients themselves), in slice order.
  template <class Layer>
  void layer_done(int t, Layer& layer) {
    std::vector<Parameter<S>> params;
    layer.visit_parameters("", [&](Parameter<S> p) { params.push_back(std::move(p)); });
    std::unique_lock<std::mutex> lock(mutex_);
    const std::size_t k = next_[static_cast<std::size_t>(t)]++;
    while (layers_.size() <= k) layers_.emplace_back();
    Bucket& b = layers_[k];  // a deque's elements stay where they are as it grows
    b.slices.resize(static_cast<std::size_t>(slices_));
    b.slices[static_cast<std::size_t>(t)] = std::move(params);
    if (++b.arrived < slices_) return;
    lock.unlock();
    auto& into = b.slices[0];
    for (std::size_t j = 0; j < into.size(); ++j)
      for (int s = 1; s < slices_; ++s) into[j].values() += b.slices[static_cast<std::size_t>(s)][j].values();
    lock.lock();
    for (const auto& p : into) twin_added_.insert(p.data);
    b.complete = true;
  }

  /// Main thread: starts the complete layers' sums in layer order (the same on every rank) and
  /// lets the started ones advance.
  void poll() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      while (started_ < layers_.size() && layers_[started_].complete) start(layers_[started_++].slices[0]);
    }
    world_.progress();
  }

  /// Whether the twins of the parameter at `data` (the gradients') were added already.
  bool twin_added(const S* data) const { return twin_added_.count(data) != 0; }

  /// After the backward (every slice done, the other twins added): sums the trainable
  /// parameters no layer held, waits for every sum and puts the results in place.
  template <class M>
  void finish(M& grads) {
    poll();
    std::vector<Parameter<S>> rest;
    for (const Parameter<S>& p : parameter_list(grads))
      if (p.trainable() && !twin_added(p.data)) rest.push_back(p);
    start(rest);
    world_.finish_sums();
    for (std::size_t i = 0; i < used_; ++i) {
      const Packed& b = packed_[i];
      std::size_t at = 0;
      for (const auto& p : b.params)
        std::copy_n(b.values.data() + at, p.size, p.data), at += static_cast<std::size_t>(p.size);
    }
    layers_.clear();  // the packed buffers stay, for the next micro-batch
    started_ = 0;
    twin_added_.clear();
    used_ = 0;
  }

 private:
  struct Bucket {
    std::vector<std::vector<Parameter<S>>> slices;
    int arrived = 0;
    bool complete = false;
  };
  struct Packed {
    std::vector<Parameter<S>> params;
    std::vector<S> values;  // kept between micro-batches
  };

  /// Starts the sums of `all`: a large tensor where it lies, the small ones packed into one buffer
  /// (copied back by finish()).
  void start(const std::vector<Parameter<S>>& all) {
    std::vector<Parameter<S>> params;  // the small ones
    for (const auto& p : all)
      if (static_cast<std::size_t>(p.size) * sizeof(S) >= kInPlaceBytes)
        world_.start_sum(p.data, static_cast<std::size_t>(p.size));
      else params.push_back(p);
    if (params.empty()) return;
    if (packed_.size() <= used_) packed_.emplace_back();
    Packed& b = packed_[used_++];
    b.params = params;
    std::size_t n = 0;
    for (const auto& p : params) n += static_cast<std::size_t>(p.size);
    b.values.resize(n);
    std::size_t at = 0;
    for (const auto& p : params)
      std::copy_n(p.data, p.size, b.values.data() + at), at += static_cast<std::size_t>(p.size);
    world_.start_sum(b.values.data(), n);
  }

  // A tensor of at least this size is summed where it lies: an operation of its own costs less
  // than copying it into a buffer and back (2 ranks summing the bundled model's 12.6 MB of
  // gradients, a layer at a time: 4.2-5.3 ms a sum against 5.5-7.1 ms with every tensor packed).
  static constexpr std::size_t kInPlaceBytes = 32 * 1024;
  World& world_;
  int slices_ = 1;
  std::vector<std::size_t> next_;
  std::deque<Bucket> layers_;
  std::size_t started_ = 0;
  std::unordered_set<const S*> twin_added_;
  std::deque<Packed> packed_;
  std::size_t used_ = 0;
  std::mutex mutex_;
};

}  // namespace vitmae::train
