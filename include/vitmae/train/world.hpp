// SPDX-License-Identifier: Apache-2.0
// The processes of a data-parallel run (torch.distributed's process group, reduced to what the
// trainers need). One process is rank 0 of a world of 1 and pays nothing; train/mpi.hpp has the
// MPI world. Every rank computes a contiguous slice of each batch; the gradients are summed in
// rank order, ((g0 + g1) + g2) + ..., element by element: the order in which one process adds
// its threads' slices (BatchSlices), so N ranks of 1 thread give the bits of 1 process of N
// threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <new>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "vitmae/error.hpp"
#include "vitmae/parameter.hpp"
#include "vitmae/tensor.hpp"

namespace vitmae::train {

/// An error raised on one rank and agreed on by all (World::agree): every rank throws it, so
/// every rank ends; rank 0 reports it.
class AgreedError : public Error {
 public:
  AgreedError(const std::string& what, int rank, int code) : Error(what), rank_(rank), code_(code) {}
  /// The rank it happened on.
  int rank() const { return rank_; }
  /// The code that rank gave the error (together()'s `code_of`; a program's exit status).
  int code() const { return code_; }

 private:
  int rank_, code_;
};

/// The lowest failing rank's error, as World::first_error returns it (rank -1: none failed).
struct RankError {
  int rank = -1;
  int code = 0;
  std::string what;
};

class World {
 public:
  virtual ~World() = default;
  virtual int rank() const { return 0; }
  virtual int size() const { return 1; }
  /// data := the element-wise sum of every rank's data, added in rank order, on every rank.
  virtual void sum_in_rank_order(float*, std::size_t) {}
  virtual void sum_in_rank_order(double*, std::size_t) {}
  /// Starts sum_in_rank_order(data, n) and returns at once where the world can (MPI's
  /// nonblocking collectives): `data` must stay untouched until finish_sums(). Every rank starts
  /// the same sums in the same order. Here: the sum, done now.
  virtual void start_sum(float* data, std::size_t n) { sum_in_rank_order(data, n); }
  virtual void start_sum(double* data, std::size_t n) { sum_in_rank_order(data, n); }
  /// Lets started sums advance (MPI moves nonblocking collectives only inside its calls).
  virtual void progress() {}
  /// Waits for every started sum.
  virtual void finish_sums() {}
  /// Every rank's `mine` (the same length on each), concatenated in rank order, on every rank.
  virtual std::vector<double> all_gather(const std::vector<double>& mine) { return mine; }
  /// The lowest rank whose `error` is not empty, with its code and message; rank -1 when no
  /// rank's is.
  virtual RankError first_error(const std::string& error, int code) {
    return error.empty() ? RankError{} : RankError{0, code, error};
  }
  /// Ends every process of the run with exit code `code`: for an error only one rank saw,
  /// outside any agreement, where the others would wait for it forever.
  [[noreturn]] virtual void abort(int code) { std::exit(code); }
};

/// One process.
inline std::shared_ptr<World> single_process() { return std::make_shared<World>(); }

/// The samples [first, second) of a batch of `batch` that `rank` of `size` computes: contiguous
/// slices in rank order, as BatchSlices splits a batch over threads.
inline std::pair<Index, Index> rank_slice(int rank, int size, Index batch) {
  return {batch * rank / size, batch * (rank + 1) / size};
}

/// Runs f() on every rank, then agrees: when it threw on any rank, every rank throws
/// AgreedError with the lowest failing rank's message ("... (rank r of N)") and the code
/// code_of(exception) gave there (default 1). With one rank, f's exception passes through
/// unchanged. Every rank must call it at the same point (it is a collective operation).
template <class F>
void together(World& world, F&& f, const std::function<int(const std::exception&)>& code_of = {}) {
  if (world.size() == 1) return static_cast<void>(f());
  std::string error;
  int code = 1;
  try {
    f();
  } catch (const AgreedError& e) {  // already agreed inside f: every rank has it
    throw;
  } catch (const std::bad_alloc&) {
    error = "vitmae: out of memory";
  } catch (const std::exception& e) {
    error = e.what();
    if (error.empty()) error = "vitmae: an error without a message";
    if (code_of) code = code_of(e);
  }
  const RankError first = world.first_error(error, code);
  if (first.rank >= 0)
    throw AgreedError(first.what + " (rank " + std::to_string(first.rank) + " of " + std::to_string(world.size()) + ")",
                      first.rank, first.code);
}

/// The trainable parameters of `grads` summed over the ranks in rank order (World::
/// sum_in_rank_order): a parameter of at least `in_place` elements where it is, the smaller ones
/// packed together in pieces of at most `piece` elements (no copy of the model is made).
template <class M>
void sum_gradients(World& world, M& grads, std::size_t piece = std::size_t(1) << 24, std::size_t in_place = std::size_t(1) << 16) {
  if (world.size() == 1) return;
  using S = typename M::scalar_type;
  std::vector<S> buf;
  std::vector<std::pair<S*, std::size_t>> pending;  // spans of parameters packed into buf
  auto flush = [&] {
    if (buf.empty()) return;
    world.sum_in_rank_order(buf.data(), buf.size());
    std::size_t at = 0;
    for (auto& [p, n] : pending) std::copy_n(buf.data() + at, n, p), at += n;
    buf.clear(), pending.clear();
  };
  for (const Parameter<S>& p : parameter_list(grads)) {
    if (!p.trainable()) continue;
    const auto size = static_cast<std::size_t>(p.size);
    if (size >= in_place) {
      world.sum_in_rank_order(p.data, size);
      continue;
    }
    for (std::size_t done = 0; done < size;) {
      const std::size_t n = std::min(size - done, piece - buf.size());
      buf.insert(buf.end(), p.data + done, p.data + done + n);
      pending.emplace_back(p.data + done, n);
      done += n;
      if (buf.size() == piece) flush();
    }
  }
  flush();
}

/// A 64-bit digest of every parameter's bytes (FNV-1a over the bytes), to check that the
/// ranks start from the same weights.
template <class M>
std::uint64_t weights_digest(const M& m) {
  std::uint64_t h = 1469598103934665603ull;
  m.visit_parameters("", [&](const Parameter<const typename M::scalar_type>& p) {
    const auto* bytes = reinterpret_cast<const unsigned char*>(p.data);
    const std::size_t n = static_cast<std::size_t>(p.size) * sizeof(*p.data);
    for (std::size_t i = 0; i < n; ++i) h = (h ^ bytes[i]) * 1099511628211ull;
  });
  return h;
}

/// Throws (on every rank) unless every rank's model has rank 0's weights.
template <class M>
void require_same_weights(World& world, const M& m, const std::string& what) {
  if (world.size() == 1) return;
  const std::uint64_t mine = weights_digest(m);
  // Two exact halves: a double holds 32-bit integers exactly.
  const auto all = world.all_gather({static_cast<double>(mine >> 32), static_cast<double>(mine & 0xffffffffu)});
  for (int r = 1; r < world.size(); ++r)
    detail::require(all[2 * r] == all[0] && all[2 * r + 1] == all[1], "rank ", r, " starts from other weights than rank 0 (",
                    what, "): every rank must read the same files");
}

}  // namespace vitmae::train
