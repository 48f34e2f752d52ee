// SPDX-License-Identifier: Apache-2.0
// The MPI world of a data-parallel run (train/world.hpp): Open MPI or MPICH, under mpirun,
// mpiexec or Slurm's srun. Not part of vitmae/train.hpp: include it and link MPI
// (CMake: find_package(MPI COMPONENTS CXX), target MPI::MPI_CXX).
//
// The gradient sum is a reduce-scatter then an all-gather, as a ring all-reduce is, but with a
// fixed order: rank r receives the r-th piece of every rank's buffer (MPI_Alltoallv), adds them
// in rank order, and every rank collects the sums (MPI_Allgatherv). Each rank sends and
// receives 2 (N-1)/N of the buffer, as with MPI_Allreduce's bandwidth-optimal algorithms, and
// the result does not depend on how MPI would have grouped the additions.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "vitmae/train/world.hpp"

namespace vitmae::train {

class MpiWorld : public World {
 public:
  /// The world of `comm`; MPI must be initialised and stays so.
  explicit MpiWorld(MPI_Comm comm) : comm_(comm) { query(); }

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
        return w;
      }
    return nullptr;
  }

  ~MpiWorld() override {
    if (owns_mpi_) MPI_Finalize();
  }
  MpiWorld(const MpiWorld&) = delete;
  MpiWorld& operator=(const MpiWorld&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void sum_in_rank_order(float* data, std::size_t n) override { sum(data, n, MPI_FLOAT); }
  void sum_in_rank_order(double* data, std::size_t n) override { sum(data, n, MPI_DOUBLE); }

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

  template <class S>
  void sum(S* data, std::size_t n, MPI_Datatype type) {
    if (size_ == 1 || n == 0) return;
    const std::size_t N = static_cast<std::size_t>(size_);
    // Pieces of at most 2^28 elements keep MPI's int counts and displacements in range.
    const std::size_t most = std::size_t(1) << 28;
    for (std::size_t at = 0; at < n; at += most) {
      const std::size_t m = std::min(most, n - at);
      S* x = data + at;
      std::vector<int> counts(N), displs(N);
      for (std::size_t r = 0; r < N; ++r) {
        displs[r] = static_cast<int>(m * r / N);
        counts[r] = static_cast<int>(m * (r + 1) / N) - displs[r];
      }
      const std::size_t me = static_cast<std::size_t>(rank_);
      const int mine = counts[me];
      // Every rank's piece `me`, in rank order.
      recv_.resize(static_cast<std::size_t>(mine) * N * sizeof(S));
      S* in = reinterpret_cast<S*>(recv_.data());
      std::vector<int> rcounts(N, mine), rdispls(N);
      for (std::size_t r = 0; r < N; ++r) rdispls[r] = static_cast<int>(r) * mine;
      MPI_Alltoallv(x, counts.data(), displs.data(), type, in, rcounts.data(), rdispls.data(), type, comm_);
      S* out = x + displs[me];
      std::copy_n(in, mine, out);
      for (std::size_t r = 1; r < N; ++r) {
        const S* piece = in + r * static_cast<std::size_t>(mine);
        for (int i = 0; i < mine; ++i) out[i] += piece[i];
      }
      MPI_Allgatherv(MPI_IN_PLACE, 0, type, x, counts.data(), displs.data(), type, comm_);
    }
  }

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  bool owns_mpi_ = false;
  std::vector<char> recv_;
};

}  // namespace vitmae::train
