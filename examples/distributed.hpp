// SPDX-License-Identifier: Apache-2.0
// The training programs' ranks (vitmae/train/world.hpp): MPI's when the program was built with
// MPI (VITMAE_WITH_MPI) and started by mpirun, mpiexec or srun; else this process alone.
// Errors: one every rank agreed on (vitmae::train::together) is printed by rank 0 and ends
// every rank with its code; a usage error of the arguments (the same on every rank) likewise;
// any other error, which only its rank saw, is printed by that rank and ends the job
// (MPI_Abort), so that no rank waits for it forever. A rank that is killed (or crashes) while
// training is named in one line by the lowest other rank of its machine, with the last complete
// checkpoint, and every other rank of its machine ends at once (watch_ranks).
#pragma once

#include "common.hpp"

#include <vitmae/train/world.hpp>
#ifdef VITMAE_WITH_MPI
#include <vitmae/train/mpi.hpp>
#endif

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>

namespace examples {

/// The ranks of this run. Started by an MPI launcher without MPI built in, the program refuses
/// (each process would train the whole run alone and overwrite the others' files).
inline std::shared_ptr<vitmae::train::World> launch_world(const char* program, int* argc, char*** argv) {
#ifdef VITMAE_WITH_MPI
  try {
    if (auto w = vitmae::train::MpiWorld::if_launched(argc, argv)) return w;
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    std::exit(1);
  }
  const char* pmi_hint = "srun --mpi=pmix (or pmi2), or mpirun";
#else
  (void)argc, (void)argv;
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"})
    if (const char* n = std::getenv(v); n && std::string(n) != "1") {
      std::cerr << program << ": started as " << n << " MPI processes, but built without MPI (apt-get install "
                << "libopenmpi-dev openmpi-bin, then build again); run it without mpirun\n";
      std::exit(2);
    }
  const char* pmi_hint = "a build with MPI (apt-get install libopenmpi-dev openmpi-bin) and mpirun or srun --mpi=pmix";
#endif
  // srun's tasks without MPI's process management would each train alone into the same --out.
  if (const char* n = std::getenv("SLURM_STEP_NUM_TASKS"); n && std::atoi(n) > 1) {
    std::cerr << program << ": started by srun as " << n << " tasks that MPI does not connect; use " << pmi_hint << "\n";
    std::exit(2);
  }
  return vitmae::train::single_process();
}

namespace detail {
struct LastCheckpoint {
  std::mutex mutex;
  std::string dir;
};
inline LastCheckpoint& last_checkpoint() {
  static LastCheckpoint c;
  return c;
}
}  // namespace detail

/// Records `dir` as the run's last complete checkpoint (every rank, once they agree it was
/// written), for the line watch_ranks prints when a rank is lost.
inline void note_checkpoint(const std::string& dir) {
  std::lock_guard<std::mutex> lock(detail::last_checkpoint().mutex);
  detail::last_checkpoint().dir = dir;
}

/// From here on, a rank of this machine whose process ends before the run does (killed, crashed)
/// ends the others of its machine at once, the lowest of them printing one line that names it
/// and the last checkpoint (note_checkpoint), instead of Open MPI's lines about every transfer
/// it can no longer make. The line says "was killed by signal N" when /proc still showed how the
/// process ended (its parent, Open MPI's daemon, usually collects it first), else "ended without
/// finishing"; one seen to exit with a status (MPI_Abort, after printing why) ends them silently.
/// Nothing with one process, nor without MPI.
inline void watch_ranks(vitmae::train::World& world, const char* program) {
#ifdef VITMAE_WITH_MPI
  auto* mpi = dynamic_cast<vitmae::train::MpiWorld*>(&world);
  if (!mpi || world.size() == 1) return;
  mpi->watch_ranks([program, me = world.rank(), size = world.size()](const vitmae::train::LostRank& lost) {
    if (lost.exit_status < 0 && me == lost.lowest_watcher) {
      std::string dir;
      {
        std::lock_guard<std::mutex> lock(detail::last_checkpoint().mutex);
        dir = detail::last_checkpoint().dir;
      }
      const std::string how = lost.signal ? "was killed by signal " + std::to_string(lost.signal) + " (" + strsignal(lost.signal) + ")"
                                          : std::string("ended without finishing");
      const std::string then = dir.empty() ? "no checkpoint was written" : "the last checkpoint, " + dir + ", is complete";
      std::fprintf(stderr, "%s: rank %d of %d %s; %s\n", program, lost.rank, size, how.c_str(), then.c_str());
      std::fflush(stderr);
    }
    std::_Exit(1);
  });
#else
  (void)world, (void)program;
#endif
}

/// A program's exit code for an error: 2 for a usage error, 1 otherwise.
inline int exit_code_of(const std::exception& e) {
  return dynamic_cast<const UsageError*>(&e) || dynamic_cast<const vitmae::RequestError*>(&e) ? 2 : 1;
}

/// Runs f on every rank and agrees on its errors (vitmae::train::together), a usage error
/// keeping its exit code 2.
template <class F>
void together(vitmae::train::World& world, F&& f) {
  vitmae::train::together(world, std::forward<F>(f), exit_code_of);
}

/// run_main for every rank of `world` (see the top).
template <class F>
int run_ranks(const char* program, const char* usage, vitmae::train::World& world, F&& body) {
  if (world.size() == 1) return run_main(program, usage, std::forward<F>(body));
  std::exception_ptr error;
  try {
    body();
    return 0;
  } catch (...) {
    error = std::current_exception();
  }
  const bool root = world.rank() == 0;
  auto report = [&] { return run_main(program, usage, [&] { std::rethrow_exception(error); }); };
  try {
    std::rethrow_exception(error);
  } catch (const vitmae::train::AgreedError& e) {
    if (root) std::cerr << e.what() << "\n";
    return e.code();
  } catch (const UsageError&) {
    return root ? report() : 2;
  } catch (...) {
    std::cerr << program << ": rank " << world.rank() << " of " << world.size() << ": ";
    world.abort(report());
  }
  return 1;
}

}  // namespace examples
