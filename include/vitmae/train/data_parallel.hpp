// SPDX-License-Identifier: Apache-2.0
// A trainer's data-parallel side (TrainingLoop, train/loop.hpp): its world (train/world.hpp), the
// sums over ranks (train/overlap.hpp: overlapped with the backward, or after it) and the time
// they took. With one process it adds nothing to a step.
#pragma once

#include <chrono>
#include <memory>
#include <utility>

#include "vitmae/error.hpp"
#include "vitmae/train/backward.hpp"
#include "vitmae/train/grads.hpp"
#include "vitmae/train/overlap.hpp"
#include "vitmae/train/world.hpp"

namespace vitmae::train {

template <class S>
class DataParallel {
 public:
  /// `world` nullptr: this process alone. `trainer` names the caller in the error for a `batch`
  /// too small to give every rank an image.
  DataParallel(std::shared_ptr<World> world, Index batch, const char* trainer)
      : world_(world ? std::move(world) : single_process()), sum_(alone() ? nullptr : new OverlappedSum<S>(*world_)) {
    const int ranks = world_->size();  // (a batch of none is the trainer's own error)
    detail::require(batch <= 0 || batch >= ranks, trainer, ": a batch of ", batch, " images cannot be split over ",
                    ranks, " ranks: give each rank at least one (--batch ", ranks, " or more)");
  }

  World& world() const { return *world_; }
  bool alone() const { return world_->size() == 1; }
  /// The images [first, second) of every micro-batch of `batch` that this rank computes.
  std::pair<Index, Index> slice(Index batch) const { return rank_slice(world_->rank(), world_->size(), batch); }

  /// Seconds this process spent summing gradients over the ranks, all steps; with overlap, only
  /// the part that the backward did not hide.
  double reduce_seconds() const { return reduce_seconds_; }
  /// Whether the sums start during the backward, a layer at a time (the default with several
  /// ranks), or after it: the same bits either way.
  bool overlaps() const { return overlaps_; }
  /// Returns what the trainer's ParallelBackward must be given (set_overlap): the sum, to start
  /// layer by layer, or nullptr.
  OverlappedSum<S>* set_overlap(bool on) {
    overlaps_ = on && sum_;
    return overlaps_ ? sum_.get() : nullptr;
  }

  /// Micro-batch `a` of a step on this rank: load() on every rank, its errors agreed (no rank
  /// starts summing before every rank has its images), then compute(), this rank's share of the
  /// loss, whose gradients go into `grads`; they are summed over the ranks in rank order (rank 0
  /// adds into the sum of the micro-batches so far, the others into zeros: the order of
  /// BatchSlices's threads). Returns the micro-batch's loss, the shares added in rank order.
  template <class M, class Load, class Compute>
  S micro_batch(int a, M& grads, Load&& load, Compute&& compute) {
    if (a > 0 && world_->rank() > 0) zero_parameters(grads);
    together(*world_, std::forward<Load>(load));
    const S part = compute();
    settle_parameters(grads);  // (what no product wrote of gradients marked zero: train/grads.hpp)
    if (alone()) return part;
    const auto t0 = std::chrono::steady_clock::now();
    sum_->finish(grads);  // everything, or what the overlapped layers left
    reduce_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    S total = 0;
    for (double v : world_->all_gather({static_cast<double>(part)})) total += static_cast<S>(v);
    return total;
  }

 private:
  std::shared_ptr<World> world_;
  std::unique_ptr<OverlappedSum<S>> sum_;  // with several ranks
  bool overlaps_ = false;
  double reduce_seconds_ = 0;
};

}  // namespace vitmae::train
