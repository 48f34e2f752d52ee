// SPDX-License-Identifier: Apache-2.0
// One training forward and backward: the composition of the modules' own forward (with a cache)
// and backward (for_pre_training.hpp and below). Nothing here restates forward math. Gradients
// go into a twin of the model (llm.c style), so they carry the HF names.
#pragma once

#include <algorithm>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "vitmae/detail/parallel.hpp"
#include "vitmae/models/for_pre_training.hpp"
#include "vitmae/models/vit_for_image_classification.hpp"
#include "vitmae/parameter.hpp"
#include "vitmae/train/grads.hpp"
#include "vitmae/train/overlap.hpp"

namespace vitmae::train {

/// One training forward and backward of ViTMAEForPreTraining on (pixel_values, noise). Adds every
/// trainable parameter's gradient into `grads`; returns the loss. dpixels, when given, receives
/// d loss / d pixel_values (B, C*H*W). loss_denominator, when positive, replaces this batch's
/// count of masked patches: a slice of a larger batch then returns its share of that batch's
/// loss and gradients. `cache`, when given, keeps the activations' buffers between calls.
template <class S>
S forward_backward(const ForPreTraining<S>& m, const Tensor<S>& pixel_values, const Matrix<S>& noise,
                   ForPreTraining<S>& grads, typename ForPreTraining<S>::Cache::Gradient* dpixels = nullptr,
                   typename ForPreTraining<S>::scalar_type loss_denominator = S(0), const ForwardOptions& opts = {},
                   typename ForPreTraining<S>::Cache* cache = nullptr) {
  typename ForPreTraining<S>::Cache local;
  typename ForPreTraining<S>::Cache& c = cache ? *cache : local;
  const S loss = m.forward(pixel_values, noise, opts, c);
  m.backward(c, grads, dpixels, loss_denominator);
  return loss_denominator > S(0) ? c.num / loss_denominator : loss;
}

/// One training forward and backward of ViTForImageClassification on (pixel_values, labels):
/// adds every parameter's gradient of the loss (HF's problem_type rules, cross-entropy with
/// torch's label_smoothing) into `grads`; returns the loss. dpixels as above. `dloss_scale`
/// scales the gradients (a slice of a larger batch passes its share of the batch).
template <class S>
S forward_backward(const ViTForImageClassification<S>& m, const Tensor<S>& pixel_values, const Labels<S>& labels,
                   ViTForImageClassification<S>& grads,
                   typename ViTForImageClassification<S>::Cache::Gradient* dpixels = nullptr,
                   double label_smoothing = 0.0, const ForwardOptions& opts = {},
                   typename ViTForImageClassification<S>::Cache* cache = nullptr, S dloss_scale = S(1)) {
  typename ViTForImageClassification<S>::Cache local;
  typename ViTForImageClassification<S>::Cache& c = cache ? *cache : local;
  const S loss = m.forward(pixel_values, opts, c, &labels, label_smoothing);
  m.backward(c, grads, dpixels, dloss_scale);
  return loss;
}

/// A batch split into contiguous slices, one per thread, for any model M (with scalar_type,
/// Cache and visit_parameters): slice 0 adds into `grads` itself, slice t > 0 into its own
/// gradient twin; the twins are then added into `grads` in slice order (element by element, the
/// elements split over threads). The result depends on the thread count (summation order) but
/// not on scheduling: the same threads give the same bits. Keeps its twins and caches between
/// calls, so a training loop allocates them once.
template <class M>
class BatchSlices {
 public:
  using S = typename M::scalar_type;

  /// job(b0, b1, grads, cache) runs samples [b0, b1) into grads and returns its share of the
  /// loss; run returns the sum of the shares. An exception in any slice is rethrown (the first
  /// slice's first) after every slice has finished.
  template <class Job>
  S run(const M& m, Index batch, int threads, M& grads, Job&& job) {
    const int n = static_cast<int>(std::max<Index>(1, std::min<Index>(threads, batch)));
    caches_.resize(static_cast<size_t>(n));
    if (overlap_) overlap_->begin(n);
    for (int t = 0; t < n; ++t) {  // each layer's gradients to the overlapped sum, as they are done
      if (!overlap_) {
        caches_[static_cast<size_t>(t)].on_layer_done(nullptr);
        continue;
      }
      caches_[static_cast<size_t>(t)].on_layer_done([this, t](auto& layer) {
        settle_parameters(layer);  // (what it hands over is read as it stands)
        overlap_->layer_done(t, layer);
        if (t == 0) overlap_->poll();  // slice 0 runs on the main thread, the one that calls MPI
      });
    }
    if (n == 1) return job(Index(0), batch, grads, caches_[0]);  // (the trainer settles `grads` after it)
    if (static_cast<int>(twins_.size()) != n - 1) twins_.assign(static_cast<size_t>(n - 1), zero_grads_like(m));
    std::vector<S> losses(static_cast<size_t>(n), S(0));
    std::vector<std::string> errors(static_cast<size_t>(n));
#if defined(_OPENMP)
#pragma omp parallel for num_threads(n) schedule(static, 1)
#endif
    for (int t = 0; t < n; ++t) {
      try {
        M& g = t == 0 ? grads : twins_[static_cast<size_t>(t - 1)];
        std::optional<DeferredZeros<M>> zeros;  // (a twin starts at zero: its first products overwrite it)
        if (t > 0) zeros.emplace(g);
        losses[static_cast<size_t>(t)] = job(batch * t / n, batch * (t + 1) / n, g, caches_[static_cast<size_t>(t)]);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(t)] = e.what();
      }
    }
    settle_parameters(grads);  // (the trainer's gradients may start pending: train/loop.hpp)
    for (const auto& e : errors)
      if (!e.empty()) throw Error(e);
    add_twins(grads);
    S loss = 0;
    for (int t = 0; t < n; ++t) loss += losses[static_cast<size_t>(t)];
    return loss;
  }

  /// Overlapped sums over ranks (train/overlap.hpp): run() hands every slice's layers to it as
  /// they are done and leaves out of add_twins the layers it added. nullptr: none.
  void set_overlap(OverlappedSum<S>* overlap) { overlap_ = overlap; }

 private:
  /// grads[i] += twin_1[i] + twin_2[i] + ..., in that order for every element.
  void add_twins(M& grads) {
    const auto out = parameter_list(grads);
    std::vector<std::vector<Parameter<S>>> in;
    for (M& t : twins_) in.push_back(parameter_list(t));
    detail::parallel_for(out.size(), [&](size_t p) {
      if (overlap_ && overlap_->twin_added(out[p].data)) return;
      for (const auto& twin : in) out[p].values() += twin[p].values();
    });
  }

  std::vector<M> twins_;
  std::vector<typename M::Cache> caches_;
  OverlappedSum<S>* overlap_ = nullptr;
};

/// Images [b0, b1) of pixel_values [B, C, H, W].
template <class S>
Tensor<S> batch_slice(const Tensor<S>& pixel_values, Index b0, Index b1) {
  const Index per_image = pixel_values.numel() / std::max<Index>(pixel_values.size(0), 1);
  Tensor<S> part(std::vector<Index>{b1 - b0, pixel_values.size(1), pixel_values.size(2), pixel_values.size(3)});
  std::copy_n(pixel_values.ptr() + b0 * per_image, (b1 - b0) * per_image, part.ptr());
  return part;
}

/// ViTMAEForPreTraining's forward_backward over BatchSlices: each slice's loss and gradients are
/// its share of the whole batch's (divided by the batch's count of masked patches).
template <class S>
class ParallelBackward {
 public:
  using Model = ForPreTraining<S>;

  /// `loss_batch`, when positive: pixel_values is a slice of a batch of that many images (a
  /// rank's, train/world.hpp), and the loss and gradients are its share of that batch's.
  void set_overlap(OverlappedSum<S>* overlap) { slices_.set_overlap(overlap); }

  S run(const Model& m, const Tensor<S>& pixel_values, const Matrix<S>& noise, Model& grads, int threads,
        const ForwardOptions& opts = {}, Index loss_batch = 0) {
    const Index B = pixel_values.size(0), L = noise.cols();
    detail::require(pixel_values.dim() == 4 && noise.rows() == B, "forward_backward: pixel_values has ", B,
                    " images but noise has ", noise.rows(), " rows");
    const double mask_ratio = opts.mask_ratio ? *opts.mask_ratio : m.config().mask_ratio;
    const S den = static_cast<S>((loss_batch > 0 ? loss_batch : B) * (L - ops::num_kept(L, mask_ratio)));
    return slices_.run(m, B, threads, grads, [&](Index b0, Index b1, Model& g, typename Model::Cache& c) {
      if (b0 == 0 && b1 == B)
        return forward_backward(m, pixel_values, noise, g, static_cast<Matrix<S>*>(nullptr), den, opts, &c);
      return forward_backward(m, batch_slice(pixel_values, b0, b1), Matrix<S>(noise.middleRows(b0, b1 - b0)), g,
                              static_cast<Matrix<S>*>(nullptr), den, opts, &c);
    });
  }

 private:
  BatchSlices<Model> slices_;
};

/// ViTForImageClassification's forward_backward over BatchSlices: each slice's loss and
/// gradients are scaled to its share of the batch's mean (the labels it counts: cross-entropy
/// leaves out -100, the other losses count every sample), so the sum is the whole batch's.
template <class S>
class ParallelClassifierBackward {
 public:
  using Model = ViTForImageClassification<S>;

  /// `first`: pixel_values holds the samples [first, first + its batch) of the batch `labels`
  /// describes (a rank's slice, train/world.hpp); the loss and gradients are then its share of
  /// that batch's.
  void set_overlap(OverlappedSum<S>* overlap) { slices_.set_overlap(overlap); }

  S run(const Model& m, const Tensor<S>& pixel_values, const Labels<S>& labels, Model& grads, int threads,
        double label_smoothing = 0.0, const ForwardOptions& opts = {}, Index first = 0) {
    const Index P = pixel_values.size(0), B = labels.batch();
    detail::require(pixel_values.dim() == 4 && first >= 0 && first + P <= B, "forward_backward: pixel_values has ", P,
                    " images from ", first, " but there are ", B, " labels");
    const bool counts_labels =
        labels.integer && m.loss_of(label_smoothing).resolved(true) == "single_label_classification";
    auto counted = [&](Index b0, Index b1) {  // samples [b0, b1) of the labels' batch
      if (!counts_labels) return b1 - b0;
      Index n = 0;
      for (Index b = b0; b < b1; ++b) n += labels.classes[static_cast<size_t>(b)] != kIgnoreIndex;
      return n;
    };
    const Index total = counted(0, B);
    return slices_.run(m, P, threads, grads, [&](Index s0, Index s1, Model& g, typename Model::Cache& c) {
      const Index b0 = first + s0, b1 = first + s1;
      if (b0 == 0 && b1 == B) return forward_backward(m, pixel_values, labels, g, nullptr, label_smoothing, opts, &c);
      const Index n = counted(b0, b1);
      // A slice that skips its backward still reports its layers (nothing added), so that an
      // overlapped sum over ranks (train/overlap.hpp) starts the same sums on every rank.
      auto skipped = [&](S loss) {
        if (c.vit.encoder.layer_done)
          for (size_t i = g.vit.encoder.layer.size(); i-- > 0;) c.vit.encoder.layer_done(g.vit.encoder.layer[i]);
        return loss;
      };
      if (total == 0) return skipped(std::numeric_limits<S>::quiet_NaN());  // 0/0, as one thread (and torch) gives
      if (n == 0) return skipped(S(0));                                     // nothing of this slice counts
      Labels<S> part = labels;
      if (labels.integer) part.classes.assign(labels.classes.begin() + b0, labels.classes.begin() + b1);
      else part.targets = labels.targets.middleRows(b0, b1 - b0);
      const S share = static_cast<S>(n) / static_cast<S>(total);
      return share *
             forward_backward(m, batch_slice(pixel_values, s0, s1), part, g, nullptr, label_smoothing, opts, &c, share);
    });
  }

 private:
  BatchSlices<Model> slices_;
};

}  // namespace vitmae::train
