// SPDX-License-Identifier: Apache-2.0
// Products. With oneDNN (VITMAE_WITH_ONEDNN, defined by the CMake target when Debian's
// libdnnl-dev is found) every float product of the Linear layers and the patch projection goes
// through dnnl_sgemm, oneDNN's own kernels dispatched at run time (AVX2, AVX-512, AMX); double
// stays on Eigen. Each column block (detail/parallel.hpp's split_columns) is one single-threaded
// product; with oneDNN its elements have the bits of the whole product, so the result does not
// depend on the number of threads (Eigen's blocking depends on the block's width: its last bits
// may). The backend switch (Backend, set_product_backend) is public API, reached through vitmae.hpp.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#ifdef VITMAE_WITH_ONEDNN
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl.hpp>
#endif

#include "vitmae/detail/bf16.hpp"
#include "vitmae/detail/parallel.hpp"
#include "vitmae/error.hpp"
#include "vitmae/tensor.hpp"

namespace vitmae {

/// Where the float products of Linear layers and the patch projection run.
enum class Backend { eigen, onednn };

/// True when the library was built with oneDNN (VITMAE_WITH_ONEDNN).
constexpr bool onednn_available() {
#ifdef VITMAE_WITH_ONEDNN
  return true;
#else
  return false;
#endif
}

namespace detail {
inline Backend& backend_setting() {
  // oneDNN when available, unless the environment says VITMAE_BACKEND=eigen.
  static Backend b = [] {
    const char* env = std::getenv("VITMAE_BACKEND");
    return onednn_available() && !(env && std::strcmp(env, "eigen") == 0) ? Backend::onednn : Backend::eigen;
  }();
  return b;
}
}  // namespace detail

/// The backend of the float products (double always runs on Eigen).
inline Backend product_backend() { return detail::backend_setting(); }

/// Chooses the backend of the float products; not thread-safe against products running.
/// @throws vitmae::Error for Backend::onednn in a build without oneDNN.
inline void set_product_backend(Backend b) {
  if (b == Backend::onednn && !onednn_available())
    throw Error("set_product_backend: this build of vitmae has no oneDNN (install libdnnl-dev and reconfigure)");
  detail::backend_setting() = b;
}

inline const char* backend_name(Backend b) { return b == Backend::onednn ? "onednn" : "eigen"; }

/// Why bfloat16 products cannot run here, or nullptr when they can: oneDNN in the build, the
/// products set to oneDNN, and a CPU with AVX512_BF16 or AMX (oneDNN's effective ISA, which
/// DNNL_MAX_CPU_ISA may lower; elsewhere oneDNN only emulates them, slower than float32).
inline const char* bfloat16_unavailable() {
#ifdef VITMAE_WITH_ONEDNN
  static const bool cpu = [] {
    const unsigned isa = static_cast<unsigned>(dnnl_get_effective_cpu_isa());
    const unsigned bf16 = static_cast<unsigned>(dnnl_cpu_isa_avx512_core_bf16);
    return (isa & bf16) == bf16;  // (the ISAs are bit sets: AMX includes AVX512_BF16)
  }();
  if (product_backend() != Backend::onednn) return "the products are set to Eigen (VITMAE_BACKEND=eigen)";
  if (!cpu) return "this CPU has no bfloat16 products (AVX512_BF16 or AMX)";
  return nullptr;
#else
  return "this build of vitmae has no oneDNN (install libdnnl-dev and reconfigure)";
#endif
}

/// True when bfloat16 products can run here (bfloat16_unavailable() has no reason against):
/// to_bfloat16, load_for_inference(..., Precision::bfloat16) and BFloat16Products need them.
inline bool bfloat16_supported() { return bfloat16_unavailable() == nullptr; }

namespace detail {
/// Throws unless bfloat16 products can run here, naming `who` and why not.
inline void require_bfloat16(const char* who) {
  if (const char* why = bfloat16_unavailable()) throw Error(std::string(who) + ": " + why);
}
inline std::atomic<int>& bf16_product_scopes() {
  static std::atomic<int> n{0};
  return n;
}
}  // namespace detail

/// Mixed precision for training, as torch.autocast("cpu", dtype=torch.bfloat16) runs a Linear
/// layer's forward and backward and torch.matmul: while one of these lives (anywhere in the
/// process), every float product of a Linear layer or the patch projection whose weight is not
/// packed (the training forward, dX = dY W and dW += dYᵀ X), and attention's two products per head
/// and their backward (SelfAttention::bf16_training_heads, in a forward that keeps the
/// probabilities), rounds both operands to bfloat16 (to nearest even) and sums in float32 through
/// oneDNN's bf16 matmul (a small head product: dnnl_sgemm on the rounded values); its output, the
/// gradients' sums and every other operation (softmax included) stay float32. Packed models
/// (inference) are not affected. TrainOptions::bf16 (--bf16) holds one during each step. The switch
/// is process-wide: a float32 product of an unpacked model running on another thread meanwhile is
/// bf16 too.
/// @throws vitmae::Error (when `on`) where bfloat16 products cannot run (bfloat16_unavailable()).
class BFloat16Products {
 public:
  explicit BFloat16Products(bool on = true) : on_(on) {
    if (on_) detail::require_bfloat16("BFloat16Products");
    if (on_) ++detail::bf16_product_scopes();
  }
  ~BFloat16Products() {
    if (on_) --detail::bf16_product_scopes();
  }
  BFloat16Products(const BFloat16Products&) = delete;
  BFloat16Products& operator=(const BFloat16Products&) = delete;

 private:
  bool on_;
};

namespace detail {
/// True while a BFloat16Products lives.
inline bool bf16_products() { return bf16_product_scopes().load(std::memory_order_relaxed) > 0; }

/// `rows` rows of `cols` values, `ld` apart, rounded to bfloat16 into `out` (rows x cols, packed).
inline void round_rows_to_bf16(const float* a, Index rows, Index cols, Index ld, std::vector<std::uint16_t>& out) {
  out.resize(static_cast<size_t>(rows * cols));
  for (Index r = 0; r < rows; ++r) round_to_bf16(a + r * ld, cols, out.data() + r * cols);
}

/// Weights rounded to bfloat16 once per training step. While a RoundedWeightsOnce lives, a bf16
/// product whose operand B is a weight (gemm_nt's and gemm_nn's `weight`: a Linear layer's or the
/// patch projection's) takes its rounded copy from here, made by the first product of the step
/// that needs it: a step multiplies each weight in the forward and again in the backward
/// (dX = dY W), once per batch slice (thread), and rounding it every time cost 340 M values a
/// step on vit-mae-base. The copy has the bits a fresh rounding has. The trainer holds one during
/// a step's forwards and backwards, in which the weights do not change, and every new one starts a
/// new generation: an entry of an earlier one is rounded again (in place, its buffer kept from
/// step to step, unless a product still reads it) before it is used. The buffers are freed when
/// the last RoundedWeightsUser (a bf16 trainer) is gone. The cache is process-wide: a Linear
/// product under BFloat16Products on another thread, outside any trainer, while a trainer's step
/// runs (a hand-written loop beside a Trainer) also takes cached copies, so its weights must not
/// change during that step; trainers themselves are safe together (each step a new generation).
class RoundedWeights {
 public:
  using Rounded = std::vector<std::uint16_t>;
  static RoundedWeights& instance() {
    static RoundedWeights cache;
    return cache;
  }
  bool active() const { return scopes_.load(std::memory_order_relaxed) > 0; }
  /// The rows x cols values at w, `ld` apart, rounded (rows x cols, packed), of this generation.
  std::shared_ptr<const Rounded> get(const float* w, Index rows, Index cols, Index ld) {
    std::shared_ptr<Entry> e;
    std::uint64_t generation;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      generation = generation_;
      std::shared_ptr<Entry>& slot = entries_[Key{w, rows, cols, ld}];
      // An entry claimed by an earlier generation that a product still reads is left to it; the
      // threads of this generation share the one they claim.
      if (!slot || (slot->claimed != generation && slot.use_count() > 1)) slot = std::make_shared<Entry>();
      slot->claimed = generation;
      e = slot;
    }
    const std::lock_guard<std::mutex> lock(e->mutex);
    if (e->generation != generation) {
      round_rows_to_bf16(w, rows, cols, ld, e->values);
      e->generation = generation;
    }
    return std::shared_ptr<const Rounded>(e, &e->values);
  }
  void begin() {
    const std::lock_guard<std::mutex> lock(mutex_);
    ++generation_;
    ++scopes_;
    // Entries no product claimed in the last step (another thread count's column blocks, a
    // weight freed or moved) are dropped; products still holding one keep it alive.
    for (auto it = entries_.begin(); it != entries_.end();)
      it = it->second->claimed + 1 < generation_ ? entries_.erase(it) : std::next(it);
  }
  void end() { --scopes_; }
  void add_user() {
    const std::lock_guard<std::mutex> lock(mutex_);
    ++users_;
  }
  void remove_user() {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (--users_ == 0) entries_.clear();  // (products still running keep theirs alive)
  }

 private:
  struct Entry {
    std::uint64_t claimed = 0;     // the last generation that asked for it (guarded by mutex_)
    std::mutex mutex;              // guards generation and values
    std::uint64_t generation = 0;  // the generation values were rounded in (0: none yet)
    Rounded values;
  };
  using Key = std::tuple<const float*, Index, Index, Index>;
  std::mutex mutex_;
  std::map<Key, std::shared_ptr<Entry>> entries_;
  std::uint64_t generation_ = 0;
  int users_ = 0;
  std::atomic<int> scopes_{0};
};

/// While alive (when `on`), weights are rounded to bfloat16 once (RoundedWeights): one step.
class RoundedWeightsOnce {
 public:
  explicit RoundedWeightsOnce(bool on) : on_(on) {
    if (on_) RoundedWeights::instance().begin();
  }
  ~RoundedWeightsOnce() {
    if (on_) RoundedWeights::instance().end();
  }
  RoundedWeightsOnce(const RoundedWeightsOnce&) = delete;
  RoundedWeightsOnce& operator=(const RoundedWeightsOnce&) = delete;

 private:
  bool on_;
};

/// Keeps RoundedWeights' buffers from step to step while alive (when `on`): a bf16 trainer's.
class RoundedWeightsUser {
 public:
  explicit RoundedWeightsUser(bool on = false) : on_(on) {
    if (on_) RoundedWeights::instance().add_user();
  }
  RoundedWeightsUser(const RoundedWeightsUser& o) : RoundedWeightsUser(o.on_) {}
  RoundedWeightsUser& operator=(const RoundedWeightsUser& o) {
    if (o.on_ && !on_) RoundedWeights::instance().add_user();
    if (on_ && !o.on_) RoundedWeights::instance().remove_user();
    on_ = o.on_;
    return *this;
  }
  ~RoundedWeightsUser() {
    if (on_) RoundedWeights::instance().remove_user();
  }

 private:
  bool on_;
};

#ifdef VITMAE_WITH_ONEDNN
/// The CPU engine every oneDNN primitive of vitmae is made for and runs on.
inline const dnnl::engine& cpu_engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

/// oneDNN primitives kept by key (a shape): created on first use (0.1-1 ms) and shared by the
/// threads. Many keys seen once (image sizes) start it over at 1024.
template <class Key, class Entry>
class PrimitiveCache {
 public:
  /// The entry of `key`, made by create() (a shared_ptr<const Entry>) the first time.
  template <class Create>
  std::shared_ptr<const Entry> get(const Key& key, Create&& create) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      const auto it = entries_.find(key);
      if (it != entries_.end()) return it->second;
    }
    std::shared_ptr<const Entry> entry = create();
    const std::lock_guard<std::mutex> lock(mutex_);
    if (entries_.size() >= 1024) entries_.clear();
    return entries_.emplace(key, std::move(entry)).first->second;
  }

 private:
  std::mutex mutex_;
  std::map<Key, std::shared_ptr<const Entry>> entries_;
};

/// Runs `primitive` (made by `pd` with a user scratchpad) on the calling thread alone, with that
/// thread's stream and scratchpad, and waits for it.
/// @throws dnnl::error as the primitive.
inline void run_on_this_thread(const dnnl::primitive& primitive, const dnnl::primitive_desc_base& pd,
                               std::unordered_map<int, dnnl::memory> args) {
  thread_local dnnl::stream stream(cpu_engine());
  thread_local std::vector<char> scratch;
  const dnnl::memory::desc scratch_desc = pd.scratchpad_desc();
  if (scratch.size() < scratch_desc.get_size()) scratch.resize(scratch_desc.get_size());
  args.emplace(DNNL_ARG_SCRATCHPAD, dnnl::memory(scratch_desc, cpu_engine(), scratch.data()));
  const OneOpenMPThread one;
  primitive.execute(stream, args);
  stream.wait();
}

/// Copies `from` into `to` (each in its own layout: packing or unpacking a weight) through
/// oneDNN's reorder, on the calling thread alone, and waits for it.
/// @throws dnnl::error as the reorder.
inline void reorder_on_this_thread(dnnl::memory from, dnnl::memory to) {
  dnnl::stream stream(cpu_engine());
  const OneOpenMPThread one;
  dnnl::reorder(from, to).execute(stream, from, to);
  stream.wait();
}

/// gemm_bf16_rounded's way without a bf16 primitive: dnnl_sgemm on the rounded values widened.
inline bool gemm_rounded_sgemm(char ta, char tb, Index m, Index n, Index k, const std::uint16_t* a16, Index lda,
                               const std::uint16_t* b16, Index ldb, float beta, float* c, Index ldc) {
  try {
    thread_local std::vector<float> af, bf;
    const bool at = ta == 'T' || ta == 't', bt = tb == 'T' || tb == 't';
    auto widen = [](const std::uint16_t* x, Index rows, Index cols, Index ld, std::vector<float>& out) {
      out.resize(static_cast<size_t>(rows * cols));
      for (Index r = 0; r < rows; ++r)
        for (Index j = 0; j < cols; ++j) out[static_cast<size_t>(r * cols + j)] = bf16_to_float(x[r * ld + j]);
    };
    const Index a_cols = at ? m : k, b_cols = bt ? k : n;
    widen(a16, at ? k : m, a_cols, lda, af);
    widen(b16, bt ? n : k, b_cols, ldb, bf);
    const OneOpenMPThread one;
    return dnnl_sgemm(ta, tb, m, n, k, 1.f, af.data(), a_cols, bf.data(), b_cols, beta, c, ldc) == dnnl_success;
  } catch (...) {  // (bad_alloc: no exception may leave the caller's OpenMP region)
    return false;
  }
}

/// C = op(A) op(B) + beta C (beta 0 or 1) on operands already rounded to bfloat16 (row-major,
/// lda and ldb apart), with float32 sums, on the calling thread: oneDNN's bf16 matmul on the
/// strided operands, one primitive per shape kept. Where oneDNN has none, dnnl_sgemm on the
/// values widened (the same products, summed in float32). Returns false only when that fails too.
inline bool gemm_bf16_rounded(char ta, char tb, Index m, Index n, Index k, const std::uint16_t* a16, Index lda,
                              const std::uint16_t* b16, Index ldb, float beta, float* c, Index ldc) {
  const bool at = ta == 'T' || ta == 't', bt = tb == 'T' || tb == 't';
  using Key = std::tuple<Index, Index, Index, bool, bool, Index, Index, Index, bool>;
  struct Entry {
    dnnl::matmul::primitive_desc pd;
    dnnl::matmul primitive;
    bool reference = false;  // oneDNN's reference code: dnnl_sgemm on the widened values instead
  };
  static PrimitiveCache<Key, Entry> entries;
  const dnnl::engine& engine = cpu_engine();
  try {
    using dims = dnnl::memory::dims;
    using dt = dnnl::memory::data_type;
    const dnnl::memory::desc src({m, k}, dt::bf16, at ? dims{1, lda} : dims{lda, 1});
    const dnnl::memory::desc weights({k, n}, dt::bf16, bt ? dims{1, ldb} : dims{ldb, 1});
    const dnnl::memory::desc dst({m, n}, dt::f32, dims{ldc, 1});
    const auto entry = entries.get(Key{m, n, k, at, bt, lda, ldb, ldc, beta != 0.f}, [&] {
      dnnl::primitive_attr attr;
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      if (beta != 0.f) {
        dnnl::post_ops po;
        po.append_sum(beta);
        attr.set_post_ops(po);
      }
      const OneOpenMPThread one;
      dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, weights, dst), attr, engine);
      const bool reference = std::string(pd.impl_info_str()).rfind("ref", 0) == 0;  // (slow: not used)
      return std::make_shared<const Entry>(Entry{pd, reference ? dnnl::matmul() : dnnl::matmul(pd), reference});
    });
    if (entry->reference) return gemm_rounded_sgemm(ta, tb, m, n, k, a16, lda, b16, ldb, beta, c, ldc);
    run_on_this_thread(entry->primitive, entry->pd,
                       {{DNNL_ARG_SRC, dnnl::memory(src, engine, const_cast<std::uint16_t*>(a16))},
                        {DNNL_ARG_WEIGHTS, dnnl::memory(weights, engine, const_cast<std::uint16_t*>(b16))},
                        {DNNL_ARG_DST, dnnl::memory(dst, engine, c)}});
    return true;
  } catch (const dnnl::error&) {
    return gemm_rounded_sgemm(ta, tb, m, n, k, a16, lda, b16, ldb, beta, c, ldc);
  } catch (...) {  // (bad_alloc: no exception may leave the caller's OpenMP region)
    return false;
  }
}

/// C = op(A) op(B) + beta C (beta 0 or 1) with A and B rounded to bfloat16 and float32 sums, on
/// the calling thread (gemm_bf16_rounded). `b_weight`: B is a weight, rounded once per step while
/// a RoundedWeightsOnce lives.
inline bool gemm_bf16(char ta, char tb, Index m, Index n, Index k, const float* a, Index lda, const float* b, Index ldb,
                      float beta, float* c, Index ldc, bool b_weight = false) {
  thread_local std::vector<std::uint16_t> a16, b16_own;
  const bool at = ta == 'T' || ta == 't', bt = tb == 'T' || tb == 't';
  // The operands as stored: A (m, k) or, transposed, (k, m); B (k, n) or (n, k); packed tightly.
  const Index a_cols = at ? m : k, b_cols = bt ? k : n;
  try {
    round_rows_to_bf16(a, at ? k : m, a_cols, lda, a16);
  } catch (...) {  // (bad_alloc: no exception may leave the caller's OpenMP region)
    return false;
  }
  std::shared_ptr<const std::vector<std::uint16_t>> b16_kept;
  try {
    if (b_weight && RoundedWeights::instance().active())
      b16_kept = RoundedWeights::instance().get(b, bt ? n : k, b_cols, ldb);
  } catch (...) {  // (bad_alloc: rounded here instead)
  }
  try {
    if (!b16_kept) round_rows_to_bf16(b, bt ? n : k, b_cols, ldb, b16_own);
  } catch (...) {
    return false;
  }
  const std::uint16_t* b16 = b16_kept ? b16_kept->data() : b16_own.data();
  return gemm_bf16_rounded(ta, tb, m, n, k, a16.data(), a_cols, b16, b_cols, beta, c, ldc);
}
#endif

inline double product_flops(Index m, Index n, Index k) {
  return 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
}

/// C = op(A) op(B) + beta C, row-major, through oneDNN's sgemm on the calling thread alone.
/// Returns false (nothing done) when the product is not for oneDNN: double, the Eigen backend,
/// an empty dimension, or oneDNN failing (then Eigen computes it: callers run inside OpenMP
/// regions, which an exception must not leave).
/// With `bf16_scope` false, float32 even while a BFloat16Products lives; `b_weight`: B is a
/// weight (gemm_bf16).
template <class Scalar>
bool onednn_gemm(char ta, char tb, Index m, Index n, Index k, const Scalar* a, Index lda, const Scalar* b, Index ldb,
                 float beta, Scalar* c, Index ldc, bool bf16_scope = true, bool b_weight = false) {
#ifdef VITMAE_WITH_ONEDNN
  if constexpr (std::is_same_v<Scalar, float>) {
    if (m <= 0 || n <= 0 || k <= 0 || product_backend() != Backend::onednn) return false;
    if (bf16_scope && bf16_products()) return gemm_bf16(ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc, b_weight);
    const OneOpenMPThread one;
    return dnnl_sgemm(ta, tb, m, n, k, 1.f, a, lda, b, ldb, beta, c, ldc) == dnnl_success;
  }
#endif
  (void)ta, (void)tb, (void)m, (void)n, (void)k, (void)a, (void)lda, (void)b, (void)ldb, (void)beta, (void)c, (void)ldc,
      (void)bf16_scope, (void)b_weight;
  return false;
}

/// y = x wᵀ + b (x: (T, in), w: (out, in), b: (out) or empty for none; y resized to (T, out)
/// only when its shape differs). Each column block starts from the bias and accumulates the
/// product: one pass fewer than a product (which zeroes its output) and a bias add. `weight`: w
/// is a layer's weight (RoundedWeights), not a temporary.
template <class Scalar>
void gemm_nt(const Matrix<Scalar>& x, const Matrix<Scalar>& w, const RowVector<Scalar>& b, Matrix<Scalar>& y,
             bool weight = false) {
  y.resize(x.rows(), w.rows());
  split_columns(w.rows(), product_flops(x.rows(), w.rows(), x.cols()), [&](Index c0, Index n) {
    if (b.size() != 0) y.middleCols(c0, n).rowwise() = b.segment(c0, n);
    if (onednn_gemm('N', 'T', x.rows(), n, x.cols(), x.data(), x.cols(), w.data() + c0 * w.cols(), w.cols(),
                    b.size() != 0 ? 1.f : 0.f, y.data() + c0, y.cols(), true, weight))
      return;
    if (b.size() == 0) {
      y.middleCols(c0, n).noalias() = x * w.middleRows(c0, n).transpose();
      return;
    }
    y.middleCols(c0, n).noalias() += x * w.middleRows(c0, n).transpose();
  });
}

/// y = a b, or y += a b when `accumulate` (a: (T, k), b: (k, n); y (T, n)). `weight`: b is a
/// layer's weight (RoundedWeights).
template <class Scalar>
void gemm_nn(const Matrix<Scalar>& a, const Matrix<Scalar>& b, Matrix<Scalar>& y, bool accumulate,
             bool weight = false) {
  if (!accumulate) y.resize(a.rows(), b.cols());
  split_columns(b.cols(), product_flops(a.rows(), b.cols(), a.cols()), [&](Index c0, Index n) {
    if (onednn_gemm('N', 'N', a.rows(), n, a.cols(), a.data(), a.cols(), b.data() + c0, b.cols(),
                    accumulate ? 1.f : 0.f, y.data() + c0, y.cols(), true, weight))
      return;
    if (accumulate) y.middleCols(c0, n).noalias() += a * b.middleCols(c0, n);
    else y.middleCols(c0, n).noalias() = a * b.middleCols(c0, n);
  });
}

/// Gradient buffers that are zero in meaning but not yet in memory. A training step's gradients
/// start at zero and a weight's gradient is first written by one product, dW += dYᵀ X: adding it
/// to zeros read back from memory made that product 1.5x slower at 200 tokens (768 x 768 x 200:
/// 2.4 MB read and written for 0.24 GFLOP) and the zeroing itself wrote every gradient once more.
/// So the trainer marks the weights' gradients pending (train/grads.hpp: zero_parameters_deferred)
/// and gemm_tn_add overwrites a pending one instead of adding to it; whatever no product wrote is
/// zeroed before anything reads it (settle). Keyed by the buffer's address, process-wide.
class PendingZeros {
 public:
  static PendingZeros& instance() {
    static PendingZeros pending;
    return pending;
  }
  /// `bytes` at `data` are zero in meaning from now on, until taken or settled. Where the table
  /// cannot grow (bad_alloc), they are zeroed now instead.
  void add(void* data, size_t bytes) noexcept {
    try {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (entries_.insert_or_assign(data, bytes).second) count_.fetch_add(1, std::memory_order_relaxed);
      return;
    } catch (...) {
    }
    std::memset(data, 0, bytes);
  }
  /// True (and forgotten) when the `bytes` at `data` are pending: their first writer overwrites
  /// them. An entry of another size at that address (not one of this buffer) is dropped.
  bool take(const void* data, size_t bytes) {
    if (count_.load(std::memory_order_relaxed) == 0) return false;
    const std::lock_guard<std::mutex> lock(mutex_);
    const auto it = entries_.find(const_cast<void*>(data));
    if (it == entries_.end()) return false;
    const bool same = it->second == bytes;
    entries_.erase(it);
    count_.fetch_sub(1, std::memory_order_relaxed);
    return same;
  }
  /// Zeroes the `bytes` at `data` if they are still pending (no product wrote them), and forgets them.
  void settle(void* data, size_t bytes) noexcept {
    if (take(data, bytes)) std::memset(data, 0, bytes);  // (all bits zero: 0.0 in float and double)
  }
  /// How many buffers are pending (none between training steps).
  size_t size() const { return count_.load(std::memory_order_relaxed); }

 private:
  std::mutex mutex_;
  std::unordered_map<void*, size_t> entries_;
  std::atomic<size_t> count_{0};
};

/// y += aᵀ b (a: (T, m), b: (T, n), y: (m, n)): the weight gradient dyᵀ x, rows split. When y
/// is pending zero (PendingZeros), y = aᵀ b: y is not read.
template <class Scalar>
void gemm_tn_add(const Matrix<Scalar>& a, const Matrix<Scalar>& b, Matrix<Scalar>& y) {
  const bool overwrite = PendingZeros::instance().take(y.data(), sizeof(Scalar) * static_cast<size_t>(y.size()));
  split_columns(a.cols(), product_flops(a.cols(), b.cols(), a.rows()), [&](Index r0, Index n) {
    if (onednn_gemm('T', 'N', n, b.cols(), a.rows(), a.data() + r0, a.cols(), b.data(), b.cols(), overwrite ? 0.f : 1.f,
                    y.data() + r0 * y.cols(), y.cols()))
      return;
    if (overwrite) y.middleRows(r0, n).noalias() = a.middleCols(r0, n).transpose() * b;
    else y.middleRows(r0, n).noalias() += a.middleCols(r0, n).transpose() * b;
  });
}

}  // namespace detail
}  // namespace vitmae
