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
#include <memory>
#include <new>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "vitmae/error.hpp"
#include "vitmae/parameter.hpp"
#include "vitmae/tensor.hpp"

namespace vitmae::train {

/// An error raised on one rank and agreed on by all (together(), World::first_error): every
/// rank throws it, so every rank ends; rank 0 reports it.
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
  /// Starts data := the element-wise sum of every rank's data, added in rank order, on every
  /// rank, and returns at once where the world can (MPI's nonblocking collectives): `data` must
  /// stay untouched until finish_sums(). Every rank starts the same sums in the same order.
  /// Here (one rank): nothing to add.
  virtual void start_sum(float*, std::size_t) {}
  virtual void start_sum(double*, std::size_t) {}
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
/// code_of(exception) gave there (default 2 for a RequestError, else 1). With one rank, f's exception passes through
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
    code = code_of ? code_of(e) : dynamic_cast<const RequestError*>(&e) ? 2 : 1;
  }
  const RankError first = world.first_error(error, code);
  if (first.rank >= 0)
    throw AgreedError(first.what + " (rank " + std::to_string(first.rank) + " of " + std::to_string(world.size()) + ")",
                      first.rank, first.code);
}

/// 64-bit FNV-1a of n bytes, continuing from h.
inline std::uint64_t fnv1a(const void* data, std::size_t n, std::uint64_t h = 1469598103934665603ull) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < n; ++i) h = (h ^ bytes[i]) * 1099511628211ull;
  return h;
}

/// Throws on every rank (a collective: call it inside together()) unless every rank's `value`
/// is rank 0's: the ranks must read the same files. `what` names the value; `show` prints both.
inline void require_same_on_ranks(World& world, const std::string& what, double value, bool show = true) {
  if (world.size() == 1) return;
  const auto all = world.all_gather({value});
  for (int r = 1; r < world.size(); ++r)
    if (all[static_cast<std::size_t>(r)] != all[0]) {
      std::ostringstream s;
      s << "vitmae: " << what << " differs between rank " << r;
      if (show) s << " (" << all[static_cast<std::size_t>(r)] << ") and rank 0 (" << all[0] << ")";
      else s << " and rank 0";
      throw Error(s.str() + ": every rank must read the same files");
    }
}

/// The same for bytes, compared through 52 bits of their FNV-1a digest (a double holds them exactly).
inline void require_same_on_ranks(World& world, const std::string& what, std::uint64_t digest) {
  require_same_on_ranks(world, what, static_cast<double>(digest >> 12), false);
}
inline void require_same_on_ranks(World& world, const std::string& what, const std::string& text) {
  require_same_on_ranks(world, what, fnv1a(text.data(), text.size()));
}

/// Throws (on every rank) unless every rank's model has rank 0's weights, every byte of them.
template <class M>
void require_same_weights(World& world, const M& m, const std::string& what) {
  if (world.size() == 1) return;
  std::uint64_t h = fnv1a(nullptr, 0);
  m.visit_parameters("", [&](const Parameter<const typename M::scalar_type>& p) {
    h = fnv1a(p.data, static_cast<std::size_t>(p.size) * sizeof(*p.data), h);
  });
  require_same_on_ranks(world, "the starting weights (" + what + ")", h);
}

}  // namespace vitmae::train
