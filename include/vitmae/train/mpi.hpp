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
//
// A rank whose process ends without MPI_Finalize (killed, crashed) is seen by watch_ranks() on
// every other rank of its machine at once: Open MPI 4.1 has no notice of it for the survivors (no
// error comes back from its calls; they wait, or print a line per failed transfer), only mpirun's
// ending of the job a moment later.
#pragma once

#include <fcntl.h>
#include <mpi.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "vitmae/train/world.hpp"

namespace vitmae::train {

/// Open MPI's own diagnostics (its opal_output stream 0, which it writes to the file descriptor
/// OPAL_OUTPUT_STDERR_FD names, stderr by default) through a pipe to stderr, line by line, less
/// the lines of its shared-memory transport about a transfer from a process that is gone
/// ("[host:pid] Read -1, expected 294912, errno = 3", process_vm_readv's ESRCH): one for each
/// transfer the dead rank had started, dozens, where watch_ranks says it in one line. Set up
/// before MPI_Init, which reads the variable.
class OutputFilter {
 public:
  OutputFilter() {
    int p[2];
    if (::pipe(p) != 0) return;
    read_fd_ = p[0], write_fd_ = p[1];
    ::setenv("OPAL_OUTPUT_STDERR_FD", std::to_string(write_fd_).c_str(), 1);
    thread_ = std::thread([fd = read_fd_] {
      std::string pending;
      char buf[4096];
      for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        pending.append(buf, static_cast<std::size_t>(n));
        for (std::size_t end; (end = pending.find('\n')) != std::string::npos; pending.erase(0, end + 1))
          pass(pending.substr(0, end + 1));
      }
      if (!pending.empty()) pass(pending);
    });
  }
  ~OutputFilter() {
    if (write_fd_ < 0) return;
    // The pipe's write end replaced by /dev/null (where Open MPI, if still writing, writes from
    // now on): the reader sees the end, passes on what is left and returns.
    const int null = ::open("/dev/null", O_WRONLY);
    if (null >= 0 && ::dup2(null, write_fd_) >= 0) {
      thread_.join();
    } else {
      thread_.detach();
    }
    if (null >= 0) ::close(null);
    ::close(read_fd_);
  }
  OutputFilter(const OutputFilter&) = delete;
  OutputFilter& operator=(const OutputFilter&) = delete;

 private:
  static void pass(const std::string& line) {
    if (line.find("Read -1, expected ") != std::string::npos && line.find(", errno = 3") != std::string::npos) return;
    for (std::size_t at = 0; at < line.size();) {
      const ssize_t n = ::write(2, line.data() + at, line.size() - at);
      if (n <= 0 && errno != EINTR) return;
      if (n > 0) at += static_cast<std::size_t>(n);
    }
  }
  int read_fd_ = -1, write_fd_ = -1;
  std::thread thread_;
};

/// How another rank's process ended, as /proc showed it when watch_ranks() saw it go.
struct LostRank {
  int rank = -1;
  long pid = 0;
  int signal = 0;           // the signal that ended it (9: SIGKILL); 0 when it exited, or when unknown
  int exit_status = -1;     // its exit status when it exited; -1 when killed, or when unknown
  int lowest_watcher = -1;  // the lowest rank that watches it (the other ranks on its machine)
};

class MpiWorld : public World {
 public:
  /// The world of `comm`; MPI must be initialised and stays so. A collective operation.
  explicit MpiWorld(MPI_Comm comm) : comm_(comm) {
    query();
    MPI_Comm_dup(comm_, &scatter_comm_);
    MPI_Comm_dup(comm_, &gather_comm_);
    // Every rank's process id and machine (boot id and pid namespace), for watch_ranks().
    const long long mine[2] = {static_cast<long long>(::getpid()), static_cast<long long>(machine_key())};
    std::vector<long long> all(2 * static_cast<std::size_t>(size_));
    MPI_Allgather(mine, 2, MPI_LONG_LONG, all.data(), 2, MPI_LONG_LONG, comm_);
    for (int r = 0; r < size_; ++r) {
      pids_.push_back(static_cast<long>(all[2 * static_cast<std::size_t>(r)]));
      same_machine_.push_back(all[2 * static_cast<std::size_t>(r) + 1] == mine[1]);
    }
  }

  /// Initialises MPI (threads: funneled; only the main thread calls MPI) when this process was
  /// started by an MPI launcher (mpirun, mpiexec, srun), and finalises it when the world goes;
  /// nullptr otherwise, so that a program run by hand never touches MPI.
  static std::shared_ptr<MpiWorld> if_launched(int* argc, char*** argv) {
    for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK", "MPI_LOCALNRANKS"})
      if (std::getenv(v)) {
        std::unique_ptr<OutputFilter> filter;
        if (std::getenv("OMPI_COMM_WORLD_SIZE") && !std::getenv("OPAL_OUTPUT_STDERR_FD"))
          filter = std::make_unique<OutputFilter>();
        int provided = 0;
        MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
        auto w = std::shared_ptr<MpiWorld>(new MpiWorld(MPI_COMM_WORLD));
        w->owns_mpi_ = true;
        w->filter_ = std::move(filter);
        // OpenMP's threads compute while the main thread alone calls MPI: MPI_THREAD_FUNNELED.
        detail::require(provided >= MPI_THREAD_FUNNELED, "MPI provides thread level ", provided,
                        " (MPI_THREAD_SINGLE); "
                        "vitmae's threads need MPI_THREAD_FUNNELED (",
                        MPI_THREAD_FUNNELED, ")");
        return w;
      }
    return nullptr;
  }

  ~MpiWorld() override {
    stop_watching();  // before MPI_Finalize, where the ranks may end in any order
    MPI_Comm_free(&scatter_comm_);
    MPI_Comm_free(&gather_comm_);
    if (owns_mpi_) MPI_Finalize();
    filter_.reset();  // after it: what Open MPI printed until then is passed on
  }
  MpiWorld(const MpiWorld&) = delete;
  MpiWorld& operator=(const MpiWorld&) = delete;

  /// Watches the other ranks of this machine (Linux pidfd_open, 5.3+; ranks on other machines
  /// are not watched) from a thread of its own until this world is destroyed: when one's process
  /// ends before, `lost` is called on that thread at once, with how it ended. Open MPI gives the
  /// survivors no error: their calls wait for the gone rank (or fail inside its transports, see
  /// OutputFilter) until mpirun ends them. `lost` typically prints one line and ends the process
  /// (std::_Exit); it must not call MPI. Returns false (and watches nothing) where pidfd_open is
  /// missing.
  bool watch_ranks(std::function<void(const LostRank&)> lost) {
    stop_watching();
    for (int r = 0; r < size_; ++r) {
      if (r == rank_ || !same_machine_[static_cast<std::size_t>(r)]) continue;
#ifdef SYS_pidfd_open
      const int fd =
          static_cast<int>(::syscall(SYS_pidfd_open, static_cast<pid_t>(pids_[static_cast<std::size_t>(r)]), 0));
#else
      const int fd = -1;
#endif
      if (fd < 0) {
        close_watched();
        return false;
      }
      watched_.push_back({fd, POLLIN, 0});
      watched_ranks_.push_back(r);
    }
    lost_ = std::move(lost);
    if (watched_.empty()) return true;
    int stop[2];
    if (::pipe(stop) != 0) {
      close_watched();
      return false;
    }
    stop_fd_ = stop[1];
    std::vector<pollfd> fds = watched_;
    fds.push_back({stop[0], POLLIN, 0});
    watcher_ = std::thread([this, fds]() mutable {
      for (;;) {
        if (::poll(fds.data(), fds.size(), -1) < 0) continue;  // EINTR
        if (fds.back().revents) break;                         // stop_watching()
        if (report_lost(fds, fds.size() - 1)) break;
      }
      ::close(fds.back().fd);
    });
    return true;
  }

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
    MPI_Allgather(mine.data(), static_cast<int>(mine.size()), MPI_DOUBLE, all.data(), static_cast<int>(mine.size()),
                  MPI_DOUBLE, comm_);
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
    stop_watching();  // the others are ended now: no news
    MPI_Abort(comm_, code);
    std::_Exit(code);
  }

 private:
  void query() {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }

  /// Calls lost_ for the first of fds[0, n) that has ended; true then.
  bool report_lost(const std::vector<pollfd>& fds, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i)
      if (fds[i].revents) {
        lost_(lost_rank(watched_ranks_[i]));
        return true;
      }
    return false;
  }

  void stop_watching() {
    if (watcher_.joinable()) {
      const char byte = 0;
      if (::write(stop_fd_, &byte, 1) == 1) watcher_.join();
      else watcher_.detach();
      ::close(stop_fd_);
    }
    close_watched();
  }

  void close_watched() {
    for (const pollfd& p : watched_) ::close(p.fd);
    watched_.clear();
    watched_ranks_.clear();
  }

  /// This machine as seen by its processes: the kernel's boot id and this pid namespace, hashed
  /// (two ranks see each other's process ids only when both are the same).
  static std::uint64_t machine_key() {
    std::ifstream in("/proc/sys/kernel/random/boot_id");
    std::string id;
    std::getline(in, id);
    struct stat ns {};
    if (::stat("/proc/self/ns/pid", &ns) == 0) id += ":" + std::to_string(static_cast<unsigned long long>(ns.st_ino));
    return fnv1a(id.data(), id.size()) >> 1;  // a positive long long
  }

  /// How rank r's process ended: /proc/PID/stat's state and exit_code (field 52) while it is a
  /// zombie, before its parent (Open MPI's daemon) collects it; unknown after.
  LostRank lost_rank(int r) const {
    LostRank l;
    l.rank = r;
    l.pid = pids_[static_cast<std::size_t>(r)];
    for (int w = 0; w < size_ && l.lowest_watcher < 0; ++w)
      if (w != r && same_machine_[static_cast<std::size_t>(w)]) l.lowest_watcher = w;
    std::ifstream in("/proc/" + std::to_string(l.pid) + "/stat");
    std::string stat;
    std::getline(in, stat);
    const std::size_t paren = stat.rfind(')');
    if (paren == std::string::npos) return l;
    std::istringstream fields(stat.substr(paren + 1));
    std::vector<std::string> f;  // fields 3 (state) .. 52 (exit_code)
    for (std::string x; fields >> x;) f.push_back(x);
    if (f.size() < 50 || f[0] != "Z") return l;
    const int status = std::atoi(f[49].c_str());
    if ((status & 0x7f) != 0) l.signal = status & 0x7f;  // WIFSIGNALED / WTERMSIG
    else l.exit_status = (status >> 8) & 0xff;
    return l;
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
    MPI_Ialltoallv(data, op.scounts.data(), op.displs.data(), type, op.in.data(), op.rcounts.data(), op.rdispls.data(),
                   type, scatter_comm_, &op.request);
  }

  /// Phase 1 done: this rank's part summed in rank order, its all-gather started.
  void gather(Op& op) {
    if (op.type == MPI_FLOAT) add_pieces(static_cast<float*>(op.data), op);
    else add_pieces(static_cast<double*>(op.data), op);
    MPI_Iallgatherv(MPI_IN_PLACE, 0, op.type, op.data, op.counts.data(), op.displs.data(), op.type, gather_comm_,
                    &op.request);
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
  std::unique_ptr<OutputFilter> filter_;  // if_launched() under Open MPI
  std::vector<long> pids_;                // every rank's process id
  std::vector<bool> same_machine_;        // every rank's: on this machine
  std::vector<pollfd> watched_;           // watch_ranks(): the other ranks of this machine (pidfds)
  std::vector<int> watched_ranks_;        // their ranks
  std::function<void(const LostRank&)> lost_;
  std::thread watcher_;  // polls watched_ while this rank computes
  int stop_fd_ = -1;     // a byte there stops the watcher
};

}  // namespace vitmae::train
