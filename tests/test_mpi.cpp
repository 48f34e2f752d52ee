// SPDX-License-Identifier: Apache-2.0
// Data parallelism over MPI (vitmae/train/world.hpp, mpi.hpp): vitmae-pretrain and
// vitmae-finetune under `mpirun -np 2` and `-np 3` against one process, resuming under MPI,
// errors on one rank, and a rank killed. Built when CMake found MPI (tests/CMakeLists.txt says
// otherwise).
#include <doctest/doctest.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>

#include "program_util.hpp"
#include "test_util.hpp"
#include "vitmae/io/image8.hpp"
#include "vitmae/train.hpp"

#if defined(VITMAE_MPIEXEC) && defined(VITMAE_PRETRAIN_EXE) && defined(VITMAE_FINETUNE_EXE)
namespace {
namespace mpi_test {

using test::Run;

// Every rank on this machine, more ranks than cores allowed; a hung job fails after 120 s.
Run mpirun(int ranks, const std::string& exe, const std::string& args) {
  return test::run_program("timeout 120 " + std::string(VITMAE_MPIEXEC) + " --allow-run-as-root --oversubscribe -np " +
                               std::to_string(ranks) + " " + exe,
                           args);
}
Run alone(const std::string& exe, const std::string& args) { return test::run_program(exe, args); }

/// The loss column of a loss.csv (step,loss,lr,grad_norm,seconds).
std::vector<double> losses(const std::string& csv) {
  std::vector<double> out;
  std::istringstream in(csv);
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) out.push_back(std::stod(line.substr(line.find(',') + 1)));
  return out;
}

/// Everything of a loss.csv but its last column (the step's seconds).
std::string without_seconds(const std::string& csv) {
  std::istringstream in(csv);
  std::string out;
  for (std::string line; std::getline(in, line);) out += line.substr(0, line.rfind(',')) + "\n";
  return out;
}

struct PretrainSetup {
  std::string dir, common;
};

// The tiny MAE at 32x32, five photos, batch 5 (uneven slices for 2 and 3 ranks), 2 micro-batches a step.
PretrainSetup pretrain_setup(const std::string& name) {
  PretrainSetup s{test::tmp_dir(name), ""};
  std::string list;
  for (const char* f : {"coffee.png", "rocket.jpg", "camera.png", "chelsea.png", "astronaut.png"})
    list += test::data("images/") + f + "\n";
  vitmae::io::write_file_atomic(s.dir + "/list.txt", list);
  s.common = "--data " + s.dir + "/list.txt --config " + test::data("hf/tiny/config.json") +
             " --batch 5 --accum 2 --lr 2e-3 --seed 3 --steps 4 --save-every 2 ";
  return s;
}

void same_files(const std::string& a, const std::string& b) {
  for (const char* f : {"model.safetensors", "optimizer.safetensors"}) {
    INFO(a, " vs ", b, ": ", f);
    CHECK(test::slurp(a + "/" + f) == test::slurp(b + "/" + f));
  }
}

/// The process id of rank `rank` of the running mpirun job whose command line holds `marker`
/// (its environment has OMPI_COMM_WORLD_RANK=rank; mpirun's and the shell's have none); 0 if none.
long rank_pid(int rank, const std::string& marker) {
  const std::string var = std::string("OMPI_COMM_WORLD_RANK=") + std::to_string(rank) + '\0';
  std::error_code ec;
  for (std::filesystem::directory_iterator it("/proc", ec), end; !ec && it != end; it.increment(ec)) {
    const std::string n = it->path().filename().string();
    if (n.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string cmd = test::slurp(it->path().string() + "/cmdline"),
                      env = '\0' + test::slurp(it->path().string() + "/environ");
    if (cmd.find(marker) != std::string::npos && env.find('\0' + var) != std::string::npos) return std::stol(n);
  }
  return 0;
}

/// Waits (up to 100 s) until `ready()`, then kills rank `rank` of the job marked `marker` with SIGKILL; its pid, 0 if
/// not found.
template <class F>
long kill_rank_when(int rank, const std::string& marker, F&& ready) {
  for (int i = 0; i < 10000 && !ready(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const long pid = rank_pid(rank, marker);
  if (pid > 0) ::kill(static_cast<pid_t>(pid), SIGKILL);
  return pid;
}

/// The lines of `text` that hold `what`.
std::vector<std::string> lines_with(const std::string& text, const std::string& what) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.find(what) != std::string::npos) out.push_back(line);
  return out;
}

}  // namespace mpi_test
}  // namespace

TEST_CASE("mpirun -np 2 vitmae-pretrain: the bits of one process of 2 threads, also resumed under MPI") {
  using namespace mpi_test;
  const PretrainSetup s = pretrain_setup("mpi_pretrain2");
  const Run one = alone(VITMAE_PRETRAIN_EXE, s.common + "--threads 2 --out " + s.dir + "/one");
  INFO(one.err);
  REQUIRE(one.status == 0);
  const Run two = mpirun(2, VITMAE_PRETRAIN_EXE, s.common + "--threads 1 --out " + s.dir + "/two");
  INFO(two.err);
  REQUIRE(two.status == 0);
  // Rank 0 alone reports: one header, one line a step, one summary.
  CHECK(two.err.find("1 threads on each of 2 ranks") != std::string::npos);
  CHECK(std::count(two.out.begin(), two.out.end(), '\n') == 1);
  CHECK(two.out.find("trained 4 steps (40 images)") != std::string::npos);
  same_files(s.dir + "/one/final", s.dir + "/two/final");
  same_files(s.dir + "/one/checkpoint-2", s.dir + "/two/checkpoint-2");
  CHECK(without_seconds(test::slurp(s.dir + "/one/loss.csv")) == without_seconds(test::slurp(s.dir + "/two/loss.csv")));
  const auto state = vitmae::io::read_json_file(s.dir + "/two/final/trainer_state.json");
  CHECK(state["world_size"] == 2);
  CHECK(state["threads"] == 1);
  // The sums started layer by layer during the backward (the default) or after it: the same bits.
  CHECK(two.err.find(messages::pretrain::kOverlapNote) != std::string::npos);
  const Run after = mpirun(2, VITMAE_PRETRAIN_EXE, s.common + "--threads 1 --no-overlap --out " + s.dir + "/after");
  INFO(after.err);
  REQUIRE(after.status == 0);
  CHECK(after.err.find(messages::pretrain::kOverlapNote) == std::string::npos);
  same_files(s.dir + "/one/final", s.dir + "/after/final");
  // 2 ranks of 2 threads: each rank adds its own two slices first, so not the bits of 1 process of
  // 4 threads, but the same bits run after run, overlapped or not.
  const Run x = mpirun(2, VITMAE_PRETRAIN_EXE, s.common + "--threads 2 --out " + s.dir + "/x");
  const Run y = mpirun(2, VITMAE_PRETRAIN_EXE, s.common + "--threads 2 --no-overlap --out " + s.dir + "/y");
  REQUIRE(x.status == 0);
  REQUIRE(y.status == 0);
  same_files(s.dir + "/x/final", s.dir + "/y/final");
  const auto lx = losses(test::slurp(s.dir + "/x/loss.csv")), l1 = losses(test::slurp(s.dir + "/one/loss.csv"));
  REQUIRE(lx.size() == l1.size());
  for (size_t i = 0; i < lx.size(); ++i) CHECK(lx[i] == doctest::Approx(l1[i]).epsilon(1e-5));

  // Resumed from step 2 with 2 ranks: the uninterrupted run's bits.
  const Run resumed =
      mpirun(2, VITMAE_PRETRAIN_EXE,
             s.common + "--threads 1 --out " + s.dir + "/resumed --resume " + s.dir + "/two/checkpoint-2");
  INFO(resumed.err);
  REQUIRE(resumed.status == 0);
  CHECK(resumed.out.find("trained 2 steps") != std::string::npos);
  same_files(s.dir + "/one/final", s.dir + "/resumed/final");
  // The 2-rank checkpoint resumed by one process of 2 threads (the same order of sums): the same bits.
  const Run back = alone(VITMAE_PRETRAIN_EXE,
                         s.common + "--threads 2 --out " + s.dir + "/back --resume " + s.dir + "/two/checkpoint-2");
  INFO(back.err);
  REQUIRE(back.status == 0);
  same_files(s.dir + "/one/final", s.dir + "/back/final");
  // ... but one process of 1 thread would add in another order: still refused, as without MPI.
  const Run other = alone(VITMAE_PRETRAIN_EXE,
                          s.common + "--threads 1 --out " + s.dir + "/other --resume " + s.dir + "/one/checkpoint-2");
  CHECK_SAYS(other, 2, messages::pretrain::kResumeCheckpointDiffers);
  CHECK(other.err.find("threads 2") != std::string::npos);
}

TEST_CASE("mpirun -np 2 vitmae-pretrain --bf16: the bits of one process of 2 threads, not float32's") {
  using namespace mpi_test;
  if (!vitmae::bfloat16_supported()) {
    MESSAGE("skipped: no bfloat16 products here (oneDNN and AVX512_BF16 or AMX)");
    return;
  }
  const PretrainSetup s = pretrain_setup("mpi_pretrain_bf16");
  const Run one = alone(VITMAE_PRETRAIN_EXE, s.common + "--bf16 --threads 2 --out " + s.dir + "/one");
  INFO(one.err);
  REQUIRE(one.status == 0);
  const Run two = mpirun(2, VITMAE_PRETRAIN_EXE, s.common + "--bf16 --threads 1 --out " + s.dir + "/two");
  INFO(two.err);
  REQUIRE(two.status == 0);
  same_files(s.dir + "/one/final", s.dir + "/two/final");
  const Run f32 = alone(VITMAE_PRETRAIN_EXE, s.common + "--threads 2 --out " + s.dir + "/f32");
  REQUIRE(f32.status == 0);
  CHECK(test::slurp(s.dir + "/one/final/model.safetensors") != test::slurp(s.dir + "/f32/final/model.safetensors"));
  const auto state = vitmae::io::read_json_file(s.dir + "/two/final/trainer_state.json");
  CHECK(state["bf16"] == true);
  CHECK(state["world_size"] == 2);
}

TEST_CASE("mpirun -np 3 vitmae-pretrain (slices of 1, 2 and 2 images): one process's loss curve, resumed by 2 ranks") {
  using namespace mpi_test;
  const PretrainSetup s = pretrain_setup("mpi_pretrain3");
  const Run three = mpirun(3, VITMAE_PRETRAIN_EXE, s.common + "--threads 1 --out " + s.dir + "/three");
  INFO(three.err);
  REQUIRE(three.status == 0);
  const Run one = alone(VITMAE_PRETRAIN_EXE, s.common + "--threads 1 --out " + s.dir + "/one");
  REQUIRE(one.status == 0);
  const auto a = losses(test::slurp(s.dir + "/three/loss.csv")), b = losses(test::slurp(s.dir + "/one/loss.csv"));
  REQUIRE(a.size() == 4);
  REQUIRE(b.size() == 4);
  for (size_t i = 0; i < a.size(); ++i) CHECK(a[i] == doctest::Approx(b[i]).epsilon(1e-5));  // summation order only
  // One process of 3 threads adds in the 3 ranks' order: the same bits.
  const Run threads3 = alone(VITMAE_PRETRAIN_EXE, s.common + "--threads 3 --out " + s.dir + "/threads3");
  REQUIRE(threads3.status == 0);
  same_files(s.dir + "/three/final", s.dir + "/threads3/final");
  // Resumed with another number of ranks (the global batch kept): the same data and masks, the
  // sums in another order; the run completes and its curve stays within float tolerance.
  const Run two = mpirun(2, VITMAE_PRETRAIN_EXE,
                         s.common + "--threads 1 --out " + s.dir + "/two --resume " + s.dir + "/three/checkpoint-2");
  INFO(two.err);
  REQUIRE(two.status == 0);
  const auto c = losses(test::slurp(s.dir + "/two/loss.csv"));
  REQUIRE(c.size() == 4);
  for (size_t i = 0; i < c.size(); ++i) CHECK(c[i] == doctest::Approx(a[i]).epsilon(1e-5));
  CHECK(vitmae::io::read_json_file(s.dir + "/two/final/trainer_state.json")["world_size"] == 2);
  // More ranks than images in a batch: refused on every rank, reported once.
  const Run many =
      mpirun(3, VITMAE_PRETRAIN_EXE,
             s.common.substr(0, s.common.find("--batch")) + "--config " + test::data("hf/tiny/config.json") +
                 " --batch 2 --steps 1 --threads 1 --out " + s.dir + "/many");
  CHECK_SAYS(many, 1, messages::pretrain::kBatchTooSmallForRanks);
}

TEST_CASE(
    "a damaged image is refused by every rank before anything is written, an error on one rank mid-run ends every "
    "rank") {
  using namespace mpi_test;
  const std::string dir = test::tmp_dir("mpi_faults");
  const std::vector<std::string> good = {"coffee.png", "rocket.jpg", "camera.png", "chelsea.png", "astronaut.png"};
  std::string list;
  for (const auto& f : good) list += test::data("images/") + f + "\n";
  vitmae::io::write_file_atomic(dir + "/list.txt", list + test::data("images/truncated.jpg") + "\n");
  const std::string common = "--data " + dir + "/list.txt --config " + test::data("hf/tiny/config.json") +
                             " --batch 2 --lr 2e-3 --seed 3 --steps 6 --save-every 1 --threads 1 ";
  // Every rank decodes every image at the start: the damaged one is named once (the lowest rank's
  // report), and the run ends before it writes anything.
  const Run bad = mpirun(2, VITMAE_PRETRAIN_EXE, common + "--out " + dir + "/run");
  INFO(bad.err);
  CHECK(bad.status == 1);
  const auto named = lines_with(bad.err, messages::pretrain::kCannotDecode);
  REQUIRE(named.size() == 1);
  CHECK(named[0].find(test::data("images/truncated.jpg")) != std::string::npos);
  CHECK(named[0].find("(rank 0 of 2)") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir + "/run"));
  // The image repaired (another photo in its place), the run goes through.
  vitmae::io::write_file_atomic(dir + "/list.txt", list + test::data("images/coffee.png") + "\n");
  const Run fine = mpirun(2, VITMAE_PRETRAIN_EXE, common + "--out " + dir + "/run");
  INFO(fine.err);
  CHECK(fine.status == 0);
  CHECK(fine.out.find("trained 6 steps") != std::string::npos);

  // Rank 0 cannot write (OUT/loss.csv is a folder, as a full disk would fail it): every rank
  // ends, the checkpoint written before stays complete, and resuming from it finishes.
  std::filesystem::create_directories(dir + "/blocked/loss.csv/x");
  const Run blocked = mpirun(2, VITMAE_PRETRAIN_EXE, common + "--out " + dir + "/blocked");
  INFO(blocked.err);
  CHECK(blocked.status == 1);
  CHECK(blocked.err.find("loss.csv") != std::string::npos);
  CHECK(blocked.err.find("(rank 0 of 2)") != std::string::npos);
  const auto ckpt = vitmae::ForPreTraining<float>::from_pretrained(dir + "/blocked/checkpoint-1");
  CHECK(vitmae::io::read_json_file(dir + "/blocked/checkpoint-1/trainer_state.json")["step"] == 1);
  std::filesystem::remove_all(dir + "/blocked/loss.csv");
  const Run again =
      mpirun(2, VITMAE_PRETRAIN_EXE, common + "--out " + dir + "/blocked --resume " + dir + "/blocked/checkpoint-1");
  INFO(again.err);
  CHECK(again.status == 0);
  CHECK(again.out.find("trained 5 steps") != std::string::npos);
}

TEST_CASE(
    "a rank killed (SIGKILL) mid-run: one line names it, the last checkpoint stays and resumes, killed before a "
    "checkpoint, no empty folder") {
  using namespace mpi_test;
  const PretrainSetup s = pretrain_setup("mpi_killed");
  const std::string common = s.common.substr(0, s.common.find("--steps")) + "--threads 1 --steps 120 ";
  // Rank 0, the one that writes, killed once its second checkpoint is on disk (it may be writing the third).
  Run killed;
  std::thread job([&] { killed = mpirun(2, VITMAE_PRETRAIN_EXE, common + "--save-every 3 --out " + s.dir + "/run"); });
  const long pid =
      kill_rank_when(0, s.dir + "/run", [&] { return vitmae::io::dir_exists(s.dir + "/run/checkpoint-6"); });
  job.join();
  REQUIRE(pid > 0);
  INFO(killed.err);
  CHECK(killed.status != 0);
  CHECK(killed.out.find("trained") == std::string::npos);  // it did not finish
  CHECK(lines_with(killed.err, "Read -1").empty());        // Open MPI's shared memory, reading from the dead rank
  // One line from vitmae-pretrain (the survivor's), naming the rank and the last complete checkpoint.
  const auto said = lines_with(killed.err, "rank 0 of 2");
  REQUIRE(said.size() == 1);
  CHECK(said[0].rfind("vitmae-pretrain: rank 0 of 2 ", 0) == 0);
  const std::string tag = messages::pretrain::kLastCheckpoint,
                    last =
                        said[0].substr(said[0].find(tag) + tag.size(),
                                       said[0].rfind(messages::pretrain::kIsComplete) - said[0].find(tag) - tag.size());
  INFO(last);
  REQUIRE(said[0].find(tag) != std::string::npos);
  CHECK(last.rfind(s.dir + "/run/checkpoint-", 0) == 0);
  // What is in OUT: whole checkpoints and the curves; a write cut short stays a temporary
  // (.checkpoint-N.tmp-PID, loss.csv.tmp.PID), never taken for what it was to become.
  for (const auto& e : std::filesystem::directory_iterator(s.dir + "/run")) {
    const std::string n = e.path().filename().string();
    if (n[0] == '.' || n.find(".tmp.") != std::string::npos) continue;
    INFO(n);
    CHECK((n == "metrics.csv" || n == "loss.csv" || n == "loss.svg" || n.rfind("checkpoint-", 0) == 0));
    if (n.rfind("checkpoint-", 0) == 0) CHECK(vitmae::io::file_exists(e.path().string() + "/trainer_state.json"));
  }
  // Resumed from it (with a stale temporary folder of the killed write planted in OUT: removed, never
  // taken for a checkpoint), the run finishes.
  const std::string stale = s.dir + "/run/.checkpoint-9999.tmp-" + std::to_string(pid);
  std::filesystem::create_directories(stale);
  const Run resumed =
      mpirun(2, VITMAE_PRETRAIN_EXE, common + "--save-every 100 --keep 1 --out " + s.dir + "/run --resume " + last);
  INFO(resumed.err);
  CHECK(resumed.status == 0);
  CHECK(resumed.out.find("trained ") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(stale));
  for (const auto& e : std::filesystem::directory_iterator(s.dir + "/run"))
    CHECK(e.path().filename().string().find(".tmp") == std::string::npos);
  CHECK(vitmae::io::file_exists(s.dir + "/run/final/model.safetensors"));

  // Rank 1 killed before the run wrote a checkpoint (only at the end, of a run far too long to
  // finish first): no empty folder, and nothing in OUT but the log of the steps done
  // (metrics.csv, a row a step), if any.
  Run early;
  std::thread job2([&] {
    early = mpirun(2, VITMAE_PRETRAIN_EXE, common + "--steps 1000000 --save-every 0 --out " + s.dir + "/early");
  });
  const auto t0 = std::chrono::steady_clock::now();
  const long pid1 = kill_rank_when(1, s.dir + "/early", [&] {
    return rank_pid(1, s.dir + "/early") > 0 && std::chrono::steady_clock::now() - t0 > std::chrono::seconds(2);
  });
  if (pid1 == 0)  // not found: end the job rather than wait for a million steps
    for (int r : {0, 1})
      if (const long p = rank_pid(r, s.dir + "/early")) ::kill(static_cast<pid_t>(p), SIGKILL);
  job2.join();
  CHECK(pid1 > 0);
  INFO(early.err);
  CHECK(early.status != 0);
  CHECK(lines_with(early.err, "Read -1").empty());
  CHECK(lines_with(early.err, "rank 1 of 2").size() <= 1);
  if (std::filesystem::exists(s.dir + "/early"))
    for (const auto& e : std::filesystem::directory_iterator(s.dir + "/early"))
      CHECK(e.path().filename() == "metrics.csv");
}

TEST_CASE("mpirun -np 2 vitmae-finetune: the bits and metrics of one process of 2 threads") {
  using namespace mpi_test;
  const std::string dir = test::tmp_dir("mpi_finetune");
  test::write_dark_light_folders(dir, 9, 3);
  vitmae::io::write_file_atomic(dir + "/config.json",
                                R"({"model_type": "vit", "hidden_size": 16, "num_hidden_layers": 1,
    "num_attention_heads": 2, "intermediate_size": 32, "image_size": 8, "patch_size": 4, "num_channels": 3})");
  const std::string common = "--train " + dir + "/train --val " + dir +
                             "/val --steps 6 --batch 7 --accum 2 --base-lr 0.05 "
                             "--eval-every 3 --save-every 3 ";
  const std::string config = "--config " + dir + "/config.json ";
  const Run one = alone(VITMAE_FINETUNE_EXE, common + config + "--threads 2 --out " + dir + "/one");
  INFO(one.err);
  REQUIRE(one.status == 0);
  const Run two = mpirun(2, VITMAE_FINETUNE_EXE, common + config + "--threads 1 --out " + dir + "/two");
  INFO(two.err);
  REQUIRE(two.status == 0);
  CHECK(two.err.find("on each of 2 ranks") != std::string::npos);
  CHECK(test::slurp(dir + "/one/final/model.safetensors") == test::slurp(dir + "/two/final/model.safetensors"));
  same_files(dir + "/one/checkpoint-3", dir + "/two/checkpoint-3");
  auto no_speed = [](const std::string& csv) {  // metrics.csv without its images_per_s column
    std::istringstream in(csv);
    std::string out;
    for (std::string line; std::getline(in, line);) {
      size_t c = 0;
      for (int k = 0; k < 5; ++k) c = line.find(',', c) + 1;
      out += line.substr(0, c) + line.substr(line.find(',', c)) + "\n";
    }
    return out;
  };
  CHECK(no_speed(test::slurp(dir + "/one/metrics.csv")) == no_speed(test::slurp(dir + "/two/metrics.csv")));
  CHECK(test::slurp(dir + "/one/confusion.csv") == test::slurp(dir + "/two/confusion.csv"));
  // Resumed under MPI from its checkpoint: the same bits.
  const Run resumed = mpirun(2, VITMAE_FINETUNE_EXE,
                             common + "--threads 1 --out " + dir + "/resumed --resume " + dir + "/two/checkpoint-3");
  INFO(resumed.err);
  REQUIRE(resumed.status == 0);
  CHECK(test::slurp(dir + "/one/final/model.safetensors") == test::slurp(dir + "/resumed/final/model.safetensors"));
  // The linear probe is one process's work.
  const Run probe =
      mpirun(2, VITMAE_FINETUNE_EXE,
             "--train " + dir + "/train --val " + dir + "/val " + config + "--linear-probe --out " + dir + "/probe");
  CHECK_SAYS(probe, 2, messages::finetune::kProbeInOneProcess);
  CHECK_FALSE(vitmae::io::file_exists(dir + "/probe"));
}
#endif
