// SPDX-License-Identifier: Apache-2.0
// Float weights packed for oneDNN's matmul, for inference (pack_for_inference). dnnl_sgemm packs
// its operands again on every call, which costs the most where the model spends its time at batch
// 1 (50 tokens x 768 x 2304: 0.55-0.75 of the FMA peak); oneDNN's matmul on weights packed once in
// the layout it asks for reaches 0.9-0.97 (and ONNX Runtime packs its weights once too).
//
// A packed weight is cut into column blocks when it is packed, one per thread available then;
// each block is one single-threaded matmul, so the result does not depend on the number of threads
// that later run it. The blocks replace the float weight (the same bytes, in oneDNN's order):
// unpacking gives back the exact weight.
#pragma once

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "vitmae/detail/parallel.hpp"
#include "vitmae/error.hpp"
#include "vitmae/tensor.hpp"

#ifdef VITMAE_WITH_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace vitmae {
namespace detail {

#ifdef VITMAE_WITH_ONEDNN
/// oneDNN matmul primitives y (m, n) = x (m, k) W_block + bias, W_block packed,
/// one per shape, created on first use (0.1-1 ms) and kept. Each runs on the calling thread with
/// that thread's scratchpad, so threads may run the same primitive at once.
class PackedMatmuls {
 public:
  struct Entry {
    dnnl::matmul::primitive_desc pd;
    dnnl::matmul primitive;
  };
  static PackedMatmuls& instance() {
    static PackedMatmuls cache;
    return cache;
  }
  const dnnl::engine& engine() const { return engine_; }

  /// The layout oneDNN wants for a (k, n) weight block (here the same for every number of
  /// tokens; a product whose primitive wants another computes on the unpacked block).
  dnnl::memory::desc weight_layout(Index n, Index k) { return get(64, n, k, false)->pd.weights_desc(); }

  /// The primitive for `m` tokens, weights in the layout it picks (oneDNN's reference code runs
  /// blocked weights given to it explicitly, 1000 times slower).
  /// @throws dnnl::error when oneDNN has none.
  std::shared_ptr<const Entry> get(Index m, Index n, Index k, bool bias) {
    const Key key{m, n, k, bias};
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      const auto it = entries_.find(key);
      if (it != entries_.end()) return it->second;
    }
    auto entry = create(m, n, k, bias);
    const std::lock_guard<std::mutex> lock(mutex_);
    if (entries_.size() >= 1024) entries_.clear();  // many shapes seen once (image sizes): start over
    return entries_.emplace(key, std::move(entry)).first->second;
  }

 private:
  using Key = std::tuple<Index, Index, Index, bool>;
  PackedMatmuls() : engine_(dnnl::engine::kind::cpu, 0) {}

  std::shared_ptr<const Entry> create(Index m, Index n, Index k, bool bias) const {
    using dims = dnnl::memory::dims;
    using dt = dnnl::memory::data_type;
    const dnnl::memory::desc x({m, k}, dt::f32, dims{k, 1});
    const dnnl::memory::desc weights({k, n}, dt::f32, dnnl::memory::format_tag::any);
    const dnnl::memory::desc y({m, n}, dt::f32, dims{n, 1});
    const dnnl::memory::desc b = bias ? dnnl::memory::desc({1, n}, dt::f32, dims{n, 1}) : dnnl::memory::desc();
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const OneOpenMPThread one;  // the primitive plans for the one thread that runs it
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(x, weights, b, y), attr, engine_);
    return std::make_shared<const Entry>(Entry{pd, dnnl::matmul(pd)});
  }

  dnnl::engine engine_;
  std::mutex mutex_;
  std::map<Key, std::shared_ptr<const Entry>> entries_;
};
#endif

/// A float weight (out, in) in oneDNN's packed layout, cut into column blocks.
struct PackedWeight {
  Index out = 0, in = 0;
#ifdef VITMAE_WITH_ONEDNN
  struct Block {
    Index c0 = 0, n = 0;
    dnnl::memory memory;  // the block's (in, n) weight, oneDNN's layout; shared (read-only) by copies
  };
  std::vector<Block> blocks;
#endif

  bool empty() const { return out == 0; }

  /// Packs w, one block per thread available now (columns in multiples of 64 where it splits).
  /// @throws vitmae::Error when this build has no oneDNN or oneDNN cannot pack.
  static PackedWeight of(const Matrix<float>& w) {
    PackedWeight p;
#ifdef VITMAE_WITH_ONEDNN
    try {
      p.out = w.rows(), p.in = w.cols();
      const Index threads = w.rows() >= 128 ? available_threads() : 1;
      const Index step = ((w.rows() + threads - 1) / threads + 63) / 64 * 64;
      PackedMatmuls& cache = PackedMatmuls::instance();
      dnnl::stream stream(cache.engine());
      for (Index c0 = 0; c0 < w.rows(); c0 += step) {
        Block b;
        b.c0 = c0, b.n = std::min(step, w.rows() - c0);
        // The block's rows of w are its (in, n) weight with strides (1, in).
        const dnnl::memory::desc plain({p.in, b.n}, dnnl::memory::data_type::f32, dnnl::memory::dims{1, p.in});
        dnnl::memory source(plain, cache.engine(), const_cast<float*>(w.data() + c0 * w.cols()));
        b.memory = dnnl::memory(cache.weight_layout(b.n, p.in), cache.engine());
        const OneOpenMPThread one;
        dnnl::reorder(source, b.memory).execute(stream, source, b.memory);
        stream.wait();
        p.blocks.push_back(std::move(b));
      }
      return p;
    } catch (const dnnl::error& e) {
      throw Error(std::string("pack_for_inference: oneDNN cannot pack a ") + std::to_string(w.rows()) + " x " +
                  std::to_string(w.cols()) + " weight: " + e.what());
    }
#else
    (void)w;
    throw Error("pack_for_inference: this build of vitmae has no oneDNN (install libdnnl-dev and reconfigure)");
#endif
  }

#ifdef VITMAE_WITH_ONEDNN
  /// Rows [b.c0, b.c0 + b.n) of the weight, the same values.
  Matrix<float> unpacked_block(const Block& b) const {
    Matrix<float> w(b.n, in);
    PackedMatmuls& cache = PackedMatmuls::instance();
    dnnl::stream stream(cache.engine());
    const dnnl::memory::desc plain({in, b.n}, dnnl::memory::data_type::f32, dnnl::memory::dims{1, in});
    dnnl::memory target(plain, cache.engine(), w.data());
    dnnl::memory source = b.memory;  // (a handle: the packed block itself)
    const OneOpenMPThread one;
    dnnl::reorder(source, target).execute(stream, source, target);
    stream.wait();
    return w;
  }
#endif

  /// The weight (out, in) again, the same values.
  Matrix<float> unpacked() const {
    Matrix<float> w(out, in);
#ifdef VITMAE_WITH_ONEDNN
    for (const Block& b : blocks) w.middleRows(b.c0, b.n) = unpacked_block(b);
#endif
    return w;
  }
};

/// y = x wᵀ + b with w packed (b: (out) or empty; y resized to (T, out) only when its shape differs).
inline void gemm_nt_packed(const Matrix<float>& x, const PackedWeight& w, const RowVector<float>& b, Matrix<float>& y) {
  require(x.cols() == w.in, "packed product: input has ", x.cols(), " features, expected ", w.in);
  y.resize(x.rows(), w.out);
#ifdef VITMAE_WITH_ONEDNN
  if (x.rows() == 0) return;
  const Index blocks = static_cast<Index>(w.blocks.size());
  const int threads = product_flops(x.rows(), w.out, w.in) >= 4e6 ? available_threads() : 1;
  bool failed = false;
  auto run = [&](const PackedWeight::Block& block) {
    try {
      PackedMatmuls& cache = PackedMatmuls::instance();
      // oneDNN's brgemm kernels write a dense (tokens, n) block (a strided one gets its plain
      // sgemm): a block computed apart, then copied into its columns of y.
      const bool whole = blocks == 1;
      const auto entry = cache.get(x.rows(), block.n, w.in, b.size() != 0);
      if (entry->pd.weights_desc() != block.memory.get_desc()) {  // not the layout packed: the plain block
        const Matrix<float> plain = w.unpacked_block(block);
        const RowVector<float> bias = b.size() != 0 ? RowVector<float>(b.segment(block.c0, block.n)) : RowVector<float>();
        Matrix<float> part;
        gemm_nt(x, plain, bias, part);
        y.middleCols(block.c0, block.n) = part;
        return;
      }
      thread_local dnnl::stream stream(cache.engine());
      thread_local std::vector<char> scratch;
      thread_local Matrix<float> part;
      if (!whole) part.resize(x.rows(), block.n);
      const dnnl::memory::desc scratch_desc = entry->pd.scratchpad_desc();
      if (scratch.size() < scratch_desc.get_size()) scratch.resize(scratch_desc.get_size());
      std::unordered_map<int, dnnl::memory> args{
          {DNNL_ARG_SRC, dnnl::memory(entry->pd.src_desc(), cache.engine(), const_cast<float*>(x.data()))},
          {DNNL_ARG_WEIGHTS, block.memory},
          {DNNL_ARG_DST, dnnl::memory(entry->pd.dst_desc(), cache.engine(), whole ? y.data() : part.data())},
          {DNNL_ARG_SCRATCHPAD, dnnl::memory(scratch_desc, cache.engine(), scratch.data())}};
      if (b.size() != 0)
        args.emplace(DNNL_ARG_BIAS,
                     dnnl::memory(entry->pd.bias_desc(), cache.engine(), const_cast<float*>(b.data() + block.c0)));
      const OneOpenMPThread one;
      entry->primitive.execute(stream, args);
      stream.wait();
      if (!whole) y.middleCols(block.c0, block.n) = part;
    } catch (const std::exception&) {  // (no exception may leave an OpenMP region)
#ifdef _OPENMP
#pragma omp atomic write
#endif
      failed = true;
    }
  };
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && blocks > 1)
#endif
  for (Index i = 0; i < blocks; ++i) run(w.blocks[static_cast<size_t>(i)]);
  (void)threads;
  require(!failed, "packed product: oneDNN failed on ", x.rows(), " x ", w.in, " x ", w.out);
#else
  (void)b;
  throw Error("packed product: this build of vitmae has no oneDNN");
#endif
}

}  // namespace detail
}  // namespace vitmae
