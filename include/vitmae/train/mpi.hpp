// SPDX-License-Identifier: Apache-2.0
// The MPI world of a data-parallel run (train/world.hpp): Open MPI or MPICH, under mpirun,
// mpiexec or Slurm's srun. Not part of vitmae/train.hpp: include it and link MPI
// (CMake: find_package(MPI COMPONENTS CXX), target MPI::MPI_CXX).
//
// The gradient sum is a reduce-scatter then an all-gather, as a ring all-reduce is, but with a
// fixed order: rank r receives the r-th piece of every other rank's buffer (MPI_Ialltoallv; its
// own stays in place), adds them in rank order, and every rank collects the sums
// (MPI_Iallgatherv). Each rank sends and
// receives 2 (N-1)/N of the buffer, as with MPI_Allreduce's bandwidth-optimal algorithms, and
// the result does not depend on how MPI would have grouped the additions. Nonblocking, so that a
// trainer sums a layer's gradients while the backward goes on (train/overlap.hpp); each of the
// two steps has its own communicator, where every rank starts them in the same order.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <cstdlib>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "vitmae/train/world.hpp"

namespace vitmae::train {

class MpiWorld : public World {
 public:
  /// The world of `comm`; MPI must be initialised and stays so.
  explicit MpiWorld(MPI_Comm comm) : comm_(comm) {
    query();
    MPI_Comm_dup(comm_, &scatter_comm_);
    MPI_Comm_dup(comm_, &gather_comm_);
  }

  /// Initialises MPI (threads: funneled; only the main thread calls MPI) when this process was
  /// started by an MPI launcher (mpirun, mpiexec, srun), and finalises it when the world goes;
  /// nullptr otherwise, so that a program run by hand never touches MPI.
  static std::shared_ptr<MpiWorld> if_launched(int* argc, char*** argv) {
    for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK", "MPI_LOCALNRANKS"})
      if (std::getenv(v)) {
        int provided = 0;
        MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
        auto w = std::shared_ptr<MpiWorld>(new MpiWorld(MPI_COMM_WORLD));
        w->owns_mpi_ = true;
        // OpenMP's threads compute while the main thread alone calls MPI: MPI_THREAD_FUNNELED.
        detail::require(provided >= MPI_THREAD_FUNNELED, "MPI provides thread level ", provided, " (MPI_THREAD_SINGLE); "
                        "vitmae's threads need MPI_THREAD_FUNNELED (", MPI_THREAD_FUNNELED, ")");
        return w;
      }
    return nullptr;
  }

  ~MpiWorld() override {
    MPI_Comm_free(&scatter_comm_);
    MPI_Comm_free(&gather_comm_);
    if (owns_mpi_) MPI_Finalize();
  }
  MpiWorld(const MpiWorld&) = delete;
  MpiWorld& operator=(const MpiWorld&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void start_sum(float* data, std::size_t n) override { start(data, n, MPI_FLOAT); }
  void start_sum(double* data, std::size_t n) override { start(data, n, MPI_DOUBLE); }

  void progress() override {
    bool gathering_in_order = true;  // the all-gathers start in the sums' order
    for (std::size_t i = 0; i < active_; ++i) {
      Op& op = ops_[i];
      int done = 0;
      if (op.phase == 1 && gathering_in_order) {
        MPI_Test(&op.request, &done, MPI_STATUS_IGNORE);
        if (done) gather(op);
      }
      if (op.phase == 1) gathering_in_order = false;
      if (op.phase == 2) {
        MPI_Test(&op.request, &done, MPI_STATUS_IGNORE);
        if (done) op.phase = 3;
      }
    }
  }

  void finish_sums() override {
    for (std::size_t i = 0; i < active_; ++i)
      if (ops_[i].phase == 1) {
        MPI_Wait(&ops_[i].request, MPI_STATUS_IGNORE);
        gather(ops_[i]);
      }
    for (std::size_t i = 0; i < active_; ++i)
      if (ops_[i].phase == 2) MPI_Wait(&ops_[i].request, MPI_STATUS_IGNORE);
    active_ = 0;  // the ops and their buffers are kept for the next sums (no allocation, no page faults)
  }

  std::vector<double> all_gather(const std::vector<double>& mine) override {
    std::vector<double> all(mine.size() * static_cast<std::size_t>(size_));
    MPI_Allgather(mine.data(), static_cast<int>(mine.size()), MPI_DOUBLE, all.data(), static_cast<int>(mine.size()), MPI_DOUBLE,
                  comm_);
    return all;
  }

  RankError first_error(const std::string& error, int code) override {
    const int mine = error.empty() ? size_ : rank_;
    int first = size_;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm_);
    if (first == size_) return {};
    RankError e;
    e.rank = first;
    int head[2] = {code, static_cast<int>(error.size())};
    MPI_Bcast(head, 2, MPI_INT, first, comm_);
    e.code = head[0];
    e.what = rank_ == first ? error : std::string(static_cast<std::size_t>(head[1]), '\0');
    MPI_Bcast(e.what.data(), head[1], MPI_CHAR, first, comm_);
    return e;
  }

  /// MPI_Abort: Open MPI's mpirun then ends every process of the job.
  [[noreturn]] void abort(int code) override {
    MPI_Abort(comm_, code);
    std::_Exit(code);
  }

 private:
  void query() {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }

  /// A started sum: phase 1 the all-to-all (MPI_Ialltoallv), 2 the all-gather, 3 done.
  struct Op {
    void* data = nullptr;
    MPI_Datatype type = MPI_FLOAT;
    // valid until the op completes, as MPI requires; scounts: counts without this rank's own piece
    std::vector<int> counts, displs, scounts, rcounts, rdispls;
    std::vector<char> in;  // the other ranks' pieces of this rank's part, in rank order
    MPI_Request request = MPI_REQUEST_NULL;
    int phase = 1;
  };

  template <class S>
  void start(S* data, std::size_t n, MPI_Datatype type) {
    if (size_ == 1) return;
    // Pieces of at most 2^28 elements keep MPI's int counts and displacements in range.
    const std::size_t most = std::size_t(1) << 28;
    for (std::size_t at = 0; at < n; at += most) start_piece(data + at, std::min(most, n - at), type);
  }

  template <class S>
  void start_piece(S* data, std::size_t n, MPI_Datatype type) {
    const std::size_t N = static_cast<std::size_t>(size_);
    if (active_ == ops_.size()) ops_.emplace_back();
    Op& op = ops_[active_++];
    op.phase = 1;
    op.data = data;
    op.type = type;
    op.counts.resize(N);
    op.displs.resize(N);
    for (std::size_t r = 0; r < N; ++r) {
      op.displs[r] = static_cast<int>(n * r / N);
      op.counts[r] = static_cast<int>(n * (r + 1) / N) - op.displs[r];
    }
    // This rank's own piece stays where it is (add_pieces reads it there): nothing is sent to
    // itself, and the other ranks' pieces of its part go to slots 0 .. N-2, in rank order.
    const std::size_t me = static_cast<std::size_t>(rank_);
    const int mine = op.counts[me];
    const std::size_t bytes = static_cast<std::size_t>(mine) * (N - 1) * sizeof(S);
    if (op.in.size() < bytes) op.in.resize(bytes);  // never shrunk: the next sums reuse it without allocating
    op.scounts = op.counts;
    op.scounts[me] = 0;
    op.rcounts.assign(N, mine);
    op.rcounts[me] = 0;
    op.rdispls.resize(N);
    for (std::size_t r = 0; r < N; ++r) op.rdispls[r] = r == me ? 0 : static_cast<int>(r < me ? r : r - 1) * mine;
    MPI_Ialltoallv(data, op.scounts.data(), op.displs.data(), type, op.in.data(), op.rcounts.data(), op.rdispls.data(), type,
                   scatter_comm_, &op.request);
  }

  /// Phase 1 done: this rank's part summed in rank order, its all-gather started.
  void gather(Op& op) {
    if (op.type == MPI_FLOAT) add_pieces(static_cast<float*>(op.data), op);
    else add_pieces(static_cast<double*>(op.data), op);
    MPI_Iallgatherv(MPI_IN_PLACE, 0, op.type, op.data, op.counts.data(), op.displs.data(), op.type, gather_comm_, &op.request);
    op.phase = 2;
  }

  template <class S>
  void add_pieces(S* data, Op& op) {
    const std::size_t me = static_cast<std::size_t>(rank_), N = static_cast<std::size_t>(size_);
    const std::size_t m = static_cast<std::size_t>(op.counts[me]);
    S* in = reinterpret_cast<S*>(op.in.data());
    S* out = data + op.displs[me];  // this rank's own piece, left in place by the all-to-all
    // out = ((p0 + p1) + p2) + ... element by element: the pieces before this rank's (slots
    // 0 .. me-1) into slot 0, then this rank's (IEEE addition is commutative: acc + p has the bits
    // of p + acc, NaN payloads aside), then the rest (slots me .. N-2).
    for (std::size_t r = 1; r < me; ++r)
      for (std::size_t i = 0; i < m; ++i) in[i] += in[r * m + i];
    if (me > 0)
      for (std::size_t i = 0; i < m; ++i) out[i] += in[i];
    for (std::size_t slot = me; slot + 1 < N; ++slot)
      for (std::size_t i = 0; i < m; ++i) out[i] += in[slot * m + i];
  }

  MPI_Comm comm_, scatter_comm_ = MPI_COMM_NULL, gather_comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::deque<Op> ops_;  // the first active_ are started
  std::size_t active_ = 0;
  bool owns_mpi_ = false;
};

}  // namespace vitmae::train
