// SPDX-License-Identifier: Apache-2.0
// The training programs' ranks (vitmae/train/world.hpp): MPI's when the program was built with
// MPI (VITMAE_WITH_MPI) and started by mpirun, mpiexec or srun; else this process alone.
// Errors: one every rank agreed on (vitmae::train::together) is printed by rank 0 and ends
// every rank with its code; a usage error of the arguments (the same on every rank) likewise;
// any other error, which only its rank saw, is printed by that rank and ends the job
// (MPI_Abort), so that no rank waits for it forever. (A rank killed while training:
// train/run.hpp's watch_ranks.)
#pragma once

#include "vitmae/cli/program.hpp"

#include "vitmae/train/world.hpp"
#ifdef VITMAE_WITH_MPI
#include "vitmae/train/mpi.hpp"
#endif

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <memory>
#include <string>

namespace vitmae::cli {

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
    std::cerr << program << ": started by srun as " << n << " tasks that MPI does not connect; use " << pmi_hint
              << "\n";
    std::exit(2);
  }
  return vitmae::train::single_process();
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

}  // namespace vitmae::cli
