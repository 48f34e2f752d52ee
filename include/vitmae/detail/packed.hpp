// SPDX-License-Identifier: Apache-2.0
// Float weights packed for oneDNN's matmul, for inference (pack_for_inference). dnnl_sgemm packs
// its operands again on every call, which costs the most where the model spends its time at batch
// 1 (50 tokens x 768 x 2304: 0.55-0.75 of the FMA peak); oneDNN's matmul on weights packed once in
// the layout it asks for reaches 0.9-0.97 (and ONNX Runtime packs its weights once too).
//
// The packed weight replaces the float weight (the same bytes, in oneDNN's order): unpacking
// gives back the exact weight. A bfloat16 weight (to_bfloat16) holds the weight rounded to
// bfloat16 (to nearest even, as torch's .to(torch.bfloat16)), half the bytes; its products round
// their input the same way and accumulate in float32 (oneDNN's bf16 matmul: AVX512_BF16, AMX),
// as torch.autocast("cpu", dtype=torch.bfloat16) runs a Linear layer. A product splits its rows (tokens) across
// threads, each range one single-threaded matmul on the whole packed weight, writing its rows of the output in place.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "vitmae/detail/gemm.hpp"
#include "vitmae/error.hpp"
#include "vitmae/tensor.hpp"

#ifdef VITMAE_WITH_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace vitmae {

namespace detail {

#ifdef VITMAE_WITH_ONEDNN
/// oneDNN matmul primitives y (m, n) = x (m, k) W + bias, W packed (x and W float32, or both
/// bfloat16 with y and bias float32),
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
  const dnnl::engine& engine() const { return cpu_engine(); }

  /// The layout oneDNN wants for a (k, n) weight (here the same for every number of tokens; a
  /// product whose primitive wants another computes on the unpacked weight).
  dnnl::memory::desc weight_layout(Index n, Index k, bool bf16) {
    return get(64, n, k, false, bf16)->pd.weights_desc();
  }

  /// The primitive for `m` tokens, weights in the layout it picks (oneDNN's reference code runs
  /// blocked weights given to it explicitly, 1000 times slower).
  /// @throws dnnl::error when oneDNN has none.
  std::shared_ptr<const Entry> get(Index m, Index n, Index k, bool bias, bool bf16) {
    return entries_.get({m, n, k, bias, bf16}, [&] { return create(m, n, k, bias, bf16); });
  }

 private:
  using Key = std::tuple<Index, Index, Index, bool, bool>;
  PackedMatmuls() = default;

  std::shared_ptr<const Entry> create(Index m, Index n, Index k, bool bias, bool bf16) const {
    using dims = dnnl::memory::dims;
    using dt = dnnl::memory::data_type;
    const dt in = bf16 ? dt::bf16 : dt::f32;
    const dnnl::memory::desc x({m, k}, in, dims{k, 1});
    const dnnl::memory::desc weights({k, n}, in, dnnl::memory::format_tag::any);
    const dnnl::memory::desc y({m, n}, dt::f32, dims{n, 1});
    const dnnl::memory::desc b = bias ? dnnl::memory::desc({1, n}, dt::f32, dims{n, 1}) : dnnl::memory::desc();
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const OneOpenMPThread one;  // the primitive plans for the one thread that runs it
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(x, weights, b, y), attr, cpu_engine());
    return std::make_shared<const Entry>(Entry{pd, dnnl::matmul(pd)});
  }

  PrimitiveCache<Key, Entry> entries_;
};
#endif

/// A float weight (out, in) in oneDNN's packed layout, as float32 or rounded to bfloat16.
struct PackedWeight {
  Index out = 0, in = 0;
  bool bf16 = false;  // the values are bfloat16 (std::uint16_t), the products bf16 x bf16 -> float32
#ifdef VITMAE_WITH_ONEDNN
  dnnl::memory memory;                     // the (in, out) weight in oneDNN's layout; shared (read-only) by copies
  std::shared_ptr<Matrix<float>> storage;  // memory's bytes when they are the float weight's own
  // When the layout stores each `panel` output columns contiguously (AVX-512: 64 columns of all
  // `padded_in` rows, in blocks of `row_block` rows; bf16 with each row block stored as pairs of
  // rows, `pair` 2, element (k, c) of a block at (k / 2) 2 panel + 2 c + k % 2), a range of whole
  // panels is itself a packed weight.
  Index panel = 0, padded_in = 0, row_block = 0, pair = 1;
#endif

  bool empty() const { return out == 0; }

  /// Packs w (as bfloat16 when `bfloat16`), in w's own storage where the layout is float32 with
  /// no padding (no memory allocated, none touched for the first time); w is left empty.
  /// @throws vitmae::Error when this build has no oneDNN or oneDNN cannot pack it.
  static PackedWeight of(Matrix<float>&& w, bool bfloat16 = false) {
    PackedWeight p;
    p.bf16 = bfloat16;
#ifdef VITMAE_WITH_ONEDNN
    try {
      p.out = w.rows(), p.in = w.cols();
      PackedMatmuls& cache = PackedMatmuls::instance();
      const dnnl::memory::desc layout = cache.weight_layout(w.rows(), w.cols(), p.bf16);
      const dnnl_memory_desc_t& d = layout.data;
      const auto& b = d.format_desc.blocking;
      const Index pair = p.bf16 && b.inner_nblks == 3 ? b.inner_blks[2] : 1;
      const Index row_block = b.inner_blks[0] * pair, panel = b.inner_blks[1];
      if (d.format_kind == dnnl_blocked && panel_layout(layout, p.bf16, row_block, panel, d.padded_dims[0], pair)) {
        p.panel = panel, p.padded_in = d.padded_dims[0], p.row_block = row_block, p.pair = pair;
        if (!p.bf16 && layout.get_size() == static_cast<size_t>(w.size()) * sizeof(float)) {  // in place
          std::vector<std::vector<float>> scratch(static_cast<size_t>(available_threads()),
                                                  std::vector<float>(static_cast<size_t>(p.panel * p.in)));
          p.storage = std::make_shared<Matrix<float>>(std::move(w));
          p.memory = dnnl::memory(layout, cache.engine(), p.storage->data());
          p.pack_in_place(scratch);
        } else {
          p.memory = dnnl::memory(layout, cache.engine());
          p.pack_panels(w.data());
        }
      } else {  // another layout: oneDNN's reorder (w's rows are the (in, out) weight, strides (1, in))
        p.memory = dnnl::memory(layout, cache.engine());
        reorder_on_this_thread(dnnl::memory(plain_desc(w.cols(), w.rows()), cache.engine(), w.data()), p.memory);
      }
      w = Matrix<float>();
      return p;
    } catch (const dnnl::error& e) {
      if (p.storage && w.size() == 0) w = std::move(*p.storage);  // (moved before oneDNN failed; not yet packed)
      throw Error(std::string("pack_for_inference: oneDNN cannot pack a ") + std::to_string(p.out) + " x " +
                  std::to_string(p.in) + (p.bf16 ? " bfloat16" : "") + " weight: " + e.what());
    }
#else
    (void)w;
    throw Error("pack_for_inference: this build of vitmae has no oneDNN (install libdnnl-dev and reconfigure)");
#endif
  }

  /// The weight (out, in) again, the same values (a bfloat16 weight's, widened).
  Matrix<float> unpacked() const {
    Matrix<float> w(out, in);
#ifdef VITMAE_WITH_ONEDNN
    if (empty()) return w;
    if (panel > 0) {
      unpack_panels(w.data());
      return w;
    }
    reorder_on_this_thread(memory, dnnl::memory(plain_desc(in, out), PackedMatmuls::instance().engine(), w.data()));
#endif
    return w;
  }

#ifdef VITMAE_WITH_ONEDNN
  static dnnl::memory::desc plain_desc(Index in, Index out) {
    return dnnl::memory::desc({in, out}, dnnl::memory::data_type::f32, dnnl::memory::dims{1, in});
  }
  /// True when `layout` stores each `panel` columns of all `padded_in` rows contiguously, in
  /// blocks of `row_block` rows (bf16: of row_block / pair pairs of rows), the layout a range of
  /// whole panels of a packed weight has.
  static bool panel_layout(const dnnl::memory::desc& layout, bool bf16, Index row_block, Index panel, Index padded_in,
                           Index pair) {
    const dnnl_memory_desc_t& d = layout.data;
    const auto& b = d.format_desc.blocking;
    const bool blocks = bf16 ? b.inner_nblks == 3 && b.inner_idxs[2] == 0 && b.inner_blks[2] == pair && pair == 2
                             : b.inner_nblks == 2 && pair == 1;
    return d.format_kind == dnnl_blocked && blocks && d.data_type == (bf16 ? dnnl_bf16 : dnnl_f32) && d.offset0 == 0 &&
           d.padded_dims[0] == padded_in && b.inner_idxs[0] == 0 && b.inner_idxs[1] == 1 &&
           b.inner_blks[0] * pair == row_block && b.inner_blks[1] == panel && b.strides[0] == row_block * panel &&
           b.strides[1] == padded_in * panel;
  }
  /// Where element (k, c) of a row block (k < row_block) is, from the block's start: row k's
  /// column c, or with pairs of rows (bf16), (k / 2) 2 panel + 2 c + k % 2.
  Index in_block(Index k, Index c) const { return pair == 1 ? k * panel + c : (k >> 1) * 2 * panel + 2 * c + (k & 1); }
  /// Packs the float weight held in `storage` where it is (float32): without padding, panel i is
  /// rows [i panel, (i + 1) panel) of the weight, the same bytes, so each is copied out (into the
  /// running thread's `scratch`, allocated before anything moved) and packed back.
  void pack_in_place(std::vector<std::vector<float>>& scratch) {
    float* data = storage->data();
    const Index panels = out / panel;
    const int threads = static_cast<int>(scratch.size());
    (void)threads;
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
#endif
    for (Index i = 0; i < panels; ++i) {
#ifdef _OPENMP
      std::vector<float>& rows = scratch[static_cast<size_t>(omp_get_thread_num())];
#else
      std::vector<float>& rows = scratch[0];
#endif
      const Index c0 = i * panel;
      std::copy(data + c0 * in, data + (c0 + panel) * in, rows.begin());
      pack_panel(rows.data(), panel, data + c0 * in);
    }
  }
  /// Packs every panel of w (out, in) into the (allocated) packed memory.
  void pack_panels(const float* w) const {
    auto pack_all = [&](auto* packed) {
      parallel_for(static_cast<size_t>((out + panel - 1) / panel), [&](size_t i) {
        const Index c0 = static_cast<Index>(i) * panel;
        pack_panel(w + c0 * in, std::min(panel, out - c0), packed + c0 * padded_in);
      });
    };
    if (bf16) pack_all(static_cast<std::uint16_t*>(memory.get_data_handle()));
    else pack_all(static_cast<float*>(memory.get_data_handle()));
  }
  /// One panel: `cols` rows of w (`in` floats each, from `rows`) into dst, the panel's
  /// (padded_in, panel) values in blocks of row_block rows, each element at in_block (bf16:
  /// rounded to nearest even). Padding is written 0. (oneDNN's reorder transposes slowly: 15 ms for a 768 x 3072
  /// weight.)
  template <class T>
  void pack_panel(const float* rows, Index cols, T* dst) const {
    auto put = [](T& to, float v) {
      if constexpr (std::is_same_v<T, float>) to = v;
      else to = float_to_bf16(v);
    };
    for (Index k0 = 0; k0 < padded_in; k0 += row_block) {
      T* tile = dst + k0 * panel;
      const Index n = std::max<Index>(0, std::min(row_block, in - k0));  // rows of w left in this block
      for (Index c = 0; c < panel; ++c) {
        const float* row = c < cols ? rows + c * in + k0 : nullptr;
        for (Index k = 0; k < row_block; ++k) put(tile[in_block(k, c)], row && k < n ? row[k] : 0.f);
      }
    }
  }
  /// The inverse of pack_panels: the packed values back into w (out, in).
  void unpack_panels(float* w) const {
    const void* data = memory.get_data_handle();
    const auto* f32 = static_cast<const float*>(data);
    const auto* b16 = static_cast<const std::uint16_t*>(data);
    parallel_for(static_cast<size_t>((out + panel - 1) / panel), [&](size_t i) {
      const Index c0 = static_cast<Index>(i) * panel, cols = std::min(panel, out - c0);
      for (Index k0 = 0; k0 < in; k0 += row_block) {
        const Index n = std::min(row_block, in - k0), tile = c0 * padded_in + k0 * panel;
        for (Index c = 0; c < cols; ++c) {
          float* row = w + (c0 + c) * in + k0;
          for (Index k = 0; k < n; ++k)
            row[k] = bf16 ? bf16_to_float(b16[tile + in_block(k, c)]) : f32[tile + in_block(k, c)];
        }
      }
    });
  }
#endif
};

/// x rounded to bfloat16 into out (x's shape, row-major), the rows split over the threads.
inline void round_rows_to_bf16_split(const Matrix<float>& x, std::vector<std::uint16_t>& out) {
  out.resize(static_cast<size_t>(x.size()));
  std::uint16_t* o = out.data();  // (the calling thread's, for the workers)
  split_rows(x.rows(), static_cast<double>(x.size()),
             [&](Index r0, Index n) { round_to_bf16(x.data() + r0 * x.cols(), n * x.cols(), o + r0 * x.cols()); });
}

/// y = x wᵀ + b with w packed (b: (out) or empty; y resized to (T, out) only when its shape
/// differs). Split across the available threads, each part one single-threaded matmul: by rows
/// (tokens) when each thread gets 128 or more, each range written in place; else (batch 1's 50
/// tokens) by whole panels of columns, each read from inside the packed weight and copied into
/// its columns of y (oneDNN's fast kernels write dense outputs only). oneDNN computes an element
/// the same way whatever the part, so the result does not depend on the number of threads (tested).
inline void gemm_nt_packed(const Matrix<float>& x, const PackedWeight& w, const RowVector<float>& b, Matrix<float>& y) {
  require(x.cols() == w.in, "packed product: input has ", x.cols(), " features, expected ", w.in);
  y.resize(x.rows(), w.out);
#ifdef VITMAE_WITH_ONEDNN
  if (x.rows() == 0) return;
  const Index threads =
      std::min<Index>(x.rows(), product_flops(x.rows(), w.out, w.in) >= 4e6 ? available_threads() : 1);
  const Index panels = w.panel > 0 ? (w.out + w.panel - 1) / w.panel : 0;
  const bool by_columns = threads > 1 && x.rows() / threads < 128 && panels >= threads;
  // A bfloat16 weight multiplies x rounded to bfloat16, rounded once here for every part (rows
  // split over the threads: on one, the others waited for it).
  thread_local std::vector<std::uint16_t> x16_own;
  if (w.bf16) round_rows_to_bf16_split(x, x16_own);
  const std::uint16_t* x16 = x16_own.data();  // (the calling thread's, read by the workers)
  bool failed = false;
  // Rows [r0, r0 + rows) times columns [c0, c0 + n) (the whole width, or whole panels).
  auto run = [&](Index r0, Index rows, Index c0, Index n) {
    try {
      PackedMatmuls& cache = PackedMatmuls::instance();
      const auto entry = cache.get(rows, n, w.in, b.size() != 0, w.bf16);
      const bool whole = n == w.out;
      const dnnl::memory::desc layout = entry->pd.weights_desc();
      // The whole weight in the layout packed, or whole panels of it (a range of panels in the
      // same panel layout); anything else: the plain weight.
      const bool fits = whole ? layout == w.memory.get_desc()
                              : PackedWeight::panel_layout(layout, w.bf16, w.row_block, w.panel, w.padded_in, w.pair);
      if (!fits) {  // (bf16: the same rounded values, multiplied in float32)
        Matrix<float> part, xs = x.middleRows(r0, rows);
        if (w.bf16) xs = xs.unaryExpr([](float v) { return bf16_rounded(v); });
        gemm_nt(xs, Matrix<float>(w.unpacked().middleRows(c0, n)),
                b.size() != 0 ? RowVector<float>(b.segment(c0, n)) : RowVector<float>(), part);
        y.block(r0, c0, rows, n) = part;
        return;
      }
      thread_local Matrix<float> part;
      if (!whole) part.resize(rows, n);
      std::unordered_map<int, dnnl::memory> args{
          {DNNL_ARG_SRC,
           w.bf16 ? dnnl::memory(entry->pd.src_desc(), cache.engine(), const_cast<std::uint16_t*>(x16 + r0 * x.cols()))
                  : dnnl::memory(entry->pd.src_desc(), cache.engine(), const_cast<float*>(x.data() + r0 * x.cols()))},
          {DNNL_ARG_WEIGHTS,
           whole ? w.memory
                 : dnnl::memory(
                       layout, cache.engine(),
                       static_cast<char*>(w.memory.get_data_handle()) +
                           c0 * w.padded_in * static_cast<Index>(w.bf16 ? sizeof(std::uint16_t) : sizeof(float)))},
          {DNNL_ARG_DST,
           dnnl::memory(entry->pd.dst_desc(), cache.engine(), whole ? y.data() + r0 * y.cols() : part.data())}};
      if (b.size() != 0)
        args.emplace(DNNL_ARG_BIAS,
                     dnnl::memory(entry->pd.bias_desc(), cache.engine(), const_cast<float*>(b.data() + c0)));
      run_on_this_thread(entry->primitive, entry->pd, std::move(args));
      if (!whole) y.block(r0, c0, rows, n) = part;
    } catch (const std::exception&) {  // (no exception may leave an OpenMP region)
#ifdef _OPENMP
#pragma omp atomic write
#endif
      failed = true;
    }
  };
#ifdef _OPENMP
#pragma omp parallel for num_threads(static_cast <int>(threads)) schedule(static, 1) if (threads > 1)
#endif
  for (Index t = 0; t < threads; ++t) {
    if (by_columns) {
      const Index c0 = panels * t / threads * w.panel, c1 = std::min(w.out, panels * (t + 1) / threads * w.panel);
      if (c1 > c0) run(0, x.rows(), c0, c1 - c0);
    } else {
      const Index r0 = x.rows() * t / threads, r1 = x.rows() * (t + 1) / threads;
      if (r1 > r0) run(r0, r1 - r0, 0, w.out);
    }
  }
  require(!failed, "packed product: oneDNN failed on ", x.rows(), " x ", w.in, " x ", w.out);
#else
  (void)b;
  throw Error("packed product: this build of vitmae has no oneDNN");
#endif
}

}  // namespace detail
}  // namespace vitmae
