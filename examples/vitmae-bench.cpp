// SPDX-License-Identifier: Apache-2.0
// vitmae-bench: vit-mae-base speed against the machine's own yardstick, its single-precision FMA
// peak measured in the same run with the same threads (independent FMA chains on the widest
// vector ISA this build uses); OpenBLAS's 2048^3 sgemm is printed beside it for information.
#include <vitmae/cli/inference_flags.hpp>
#include <vitmae/models/flops.hpp>

#include <immintrin.h>
#include <sys/resource.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <cblas.h>
#include <vitmae/train.hpp>

#if defined(__AVX512BF16__)
#define VITMAE_BENCH_BF16 1
#else
#define VITMAE_BENCH_BF16 0
#endif
#if defined(__AVX512VNNI__)
#define VITMAE_BENCH_VNNI 1
#else
#define VITMAE_BENCH_VNNI 0
#endif

extern "C" void openblas_set_num_threads(int);

namespace {

struct Args : vitmae::cli::InferenceArgs {
  int runs = 5;
  bool json_only = false, load = true, train = true, pack = true;
  std::string save_dir, dtypes = "all", backend;
};

vitmae::cli::CommandLine command_line(Args& a) {
  vitmae::cli::CommandLine cl(
      "vitmae-bench",
      "usage: vitmae-bench [--threads N] [--runs N] [--json] [--model DIR] [--no-load] [--no-train]\n"
      "                    [--backend onednn|eigen] [--save-model DIR]\n"
      "                    [--dtype float32|bfloat16|int8|all]\n"
      "                    [--no-pack]\n"
      "Prints JSON lines, then (without --json) a summary. Times, after a warm-up, the median of N\n"
      "runs of pretrain_b1, features_b1 and pretrain_b8 on vit-mae-base (HF defaults, the library's\n"
      "random init, or --model DIR); efficiency = achieved GFLOP/s / the machine's fp32 FMA peak,\n"
      "measured first with the same threads (OpenBLAS's 2048^3 sgemm is printed beside it, for\n"
      "information; bfloat16 and int8 rows against the bf16 and VNNI dot-product peaks). Then\n"
      "training steps (forward, backward, AdamW; counted as 3x the forward's FLOPs): train_b8 on\n"
      "vit-mae-base and train_small_b64 on the bundled model's shape, and fine-tuning steps of\n"
      "ViTForImageClassification: finetune_b8 (vit-base shape, 1000 labels) and\n"
      "finetune_fmnist_b64 (examples/fashion-mnist/vit-28.json), the time from_pretrained takes on a\n"
      "saved copy of the model, and peak RSS. The inference rows time a copy of the model made ready\n"
      "by vitmae::pack_for_inference, as vitmae-run, vitmae-embed and vitmae-reconstruct run it\n"
      "(weights packed once for oneDNN; int8: the float weights released; bfloat16:\n"
      "vitmae::to_bfloat16); with bfloat16 rows, also train_b8_bf16 and finetune_b8_bf16 (--bf16).\n"
      "The *_int8 and *_bf16 rows carry cosine_to_float32: the cosine of their output (pretrain:\n"
      "logits; features: last_hidden_state) to float32's on the same inputs.\n");
  vitmae::cli::add_inference_flags(cl, a,
                                   {"the ViTMAEForPreTraining checkpoint to time (default: vit-mae-base, HF's\n"
                                    "defaults, the library's random init)",
                                    {}});
  cl.section("Flags");
  cl.integer("--runs", "N", a.runs, 1, 100000,
             "timed runs a row, after a warm-up (default " + std::to_string(a.runs) + ")");
  cl.toggle("--json", a.json_only, true, "only the JSON lines (default: off, a summary after them)");
  vitmae::cli::choice(cl, "--dtype", "T", a.dtypes, {"float32", "bfloat16", "int8", "all"},
                      "the inference rows in float32, in bfloat16 (rows *_bf16; skipped, saying so,\n"
                      "on a CPU without bf16 products), in int8 (rows *_int8: Linear layers and the\n"
                      "patch projection quantised, the same FLOPs counted), or all (default all)");
  vitmae::cli::choice(cl, "--backend", "B", a.backend, {"onednn", "eigen"},
                      "onednn or eigen: where float products run (default oneDNN when the build has\nit, else Eigen)");
  cl.toggle("--no-pack", a.pack, false, "time the model as loaded, not packed for inference (default: off)");
  cl.toggle("--no-train", a.train, false, "skip the training and fine-tuning steps (default: off)");
  cl.toggle("--no-load", a.load, false, "skip timing from_pretrained (default: off)");
  cl.text("--save-model", "DIR", a.save_dir,
          "write the model it would time (HF layout) to DIR and stop, for the ONNX\n"
          "Runtime comparison of examples/bench, on the same weights (default: none)");
  return cl;
}

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

struct Timing {
  double median_ms = 0, min_ms = 0;
};

template <class F>
Timing time_runs(F&& f, int runs) {
  f();  // warm-up
  std::vector<double> ms;
  for (int r = 0; r < runs; ++r) {
    const double t = now();
    f();
    ms.push_back(1e3 * (now() - t));
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front()};
}

/// Runs body(sink) on `threads` OpenMP threads at once (each adds its result to its `sink`, so that
/// nothing is optimised away); returns the seconds taken and the threads the region really had.
template <class F>
std::pair<double, int> on_every_thread(int threads, F&& body) {
  float sink = 0;
  int ran = 1;
  (void)threads;  // used by the OpenMP clause only
  const double t = now();
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) reduction(+ : sink)
#endif
  {
#ifdef _OPENMP
#pragma omp single
    ran = omp_get_num_threads();
#endif
    body(sink);
  }
  const double dt = now() - t;
  if (sink == 1.2345f) std::printf(" ");
  return {dt, ran};
}

/// The machine's single-precision peak with `threads` threads: each thread runs independent FMA
/// chains (more than latency x FMA ports, so the units never wait) on the widest vector ISA this
/// build was compiled for. GFLOP/s, counting a fused multiply-add as 2.
double fma_peak_gflops(int threads, int runs, const char** isa) {
#if defined(__AVX512F__)
  using V = __m512;
  constexpr int lanes = 16, chains = 16;
  auto set1 = [](float x) { return _mm512_set1_ps(x); };
  auto fma = [](V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); };
  auto sum = [](V a) { return _mm512_reduce_add_ps(a); };
  *isa = "avx512";
#elif defined(__AVX2__) && defined(__FMA__)
  using V = __m256;
  constexpr int lanes = 8, chains = 12;
  auto set1 = [](float x) { return _mm256_set1_ps(x); };
  auto fma = [](V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); };
  auto sum = [](V a) {
    alignas(32) float t[8];
    _mm256_store_ps(t, a);
    return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
  };
  *isa = "avx2-fma";
#else
  using V = float;
  constexpr int lanes = 1, chains = 8;
  auto set1 = [](float x) { return x; };
  auto fma = [](V a, V b, V c) { return a * b + c; };
  auto sum = [](V a) { return a; };
  *isa = "scalar";
#endif
  const long iters = 30000000;  // ~0.1 s a run on a 2020s core
  double best = 0;
  for (int r = 0; r < std::max(runs, 5); ++r) {
    const auto [dt, ran] = on_every_thread(threads, [&](float& sink) {
      V acc[chains];
      const V m = set1(0.9999999f), c = set1(1e-7f);
      for (int i = 0; i < chains; ++i) acc[i] = set1(static_cast<float>(i));
      for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 16
        for (int i = 0; i < chains; ++i) acc[i] = fma(acc[i], m, c);
      }
      for (int i = 0; i < chains; ++i) sink += sum(acc[i]);
    });
    best = std::max(best, 2.0 * lanes * chains * static_cast<double>(iters) * ran / dt / 1e9);
  }
  return best;
}

/// The same for the CPU's bfloat16 dot products (AVX512_BF16's vdpbf16ps: 32 bf16 pairs into 16
/// float lanes, 64 FLOP) and its int8 ones (AVX512_VNNI's vpdpbusd: 64 uint8 x int8 products
/// into 16 int32 lanes, 128 OP), when this build targets them; 0 otherwise. GFLOP/s or GOP/s.
/// One run of `Chains` independent chains on each thread.
template <int Chains>
double dot_peak_run(bool bf16, int threads) {
  const long iters = 20000000;
  const auto [dt, ran] = on_every_thread(threads, [&](float& sink) {
    (void)sink, (void)iters, (void)bf16;
#if VITMAE_BENCH_BF16
    if (bf16) {
      __m512 acc[Chains];
      const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3380);  // 1, ~6e-8
      for (int i = 0; i < Chains; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
      for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 16
        for (int i = 0; i < Chains; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
      }
      for (int i = 0; i < Chains; ++i) sink += _mm512_reduce_add_ps(acc[i]);
    }
#endif
#if VITMAE_BENCH_VNNI
    if (!bf16) {
      __m512i acc[Chains];
      const __m512i a = _mm512_set1_epi8(1), b = _mm512_set1_epi8(2);
      for (int i = 0; i < Chains; ++i) acc[i] = _mm512_set1_epi32(i);
      for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 16
        for (int i = 0; i < Chains; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
      }
      for (int i = 0; i < Chains; ++i) sink += static_cast<float>(_mm512_reduce_add_epi32(acc[i]));
    }
#endif
  });
  return (bf16 ? 64.0 : 128.0) * Chains * static_cast<double>(iters) * ran / dt / 1e9;
}
/// The best of several chain counts: the fastest differs by CPU (on the Zen 5 EPYC, 12 int8
/// chains run at 1.9x the speed of 16, which 8 bf16 chains do not fill).
double dot_peak(bool bf16, int threads, int runs) {
  double best = 0;
  for (int r = 0; r < std::max(runs, 3) && (bf16 ? VITMAE_BENCH_BF16 : VITMAE_BENCH_VNNI); ++r)
    best = std::max(
        {best, dot_peak_run<8>(bf16, threads), dot_peak_run<12>(bf16, threads), dot_peak_run<16>(bf16, threads)});
  return best;
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      return colon == std::string::npos ? line : line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  return "unknown";
}

long peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024;
}

/// pixel_values [batch, channels, size, size] drawn from N(0, 1) by `rng`.
vitmae::Tensor<float> random_pixels(int batch, vitmae::Index channels, vitmae::Index size, std::mt19937_64& rng) {
  vitmae::Tensor<float> t({batch, channels, size, size});
  vitmae::NormalGenerator<std::mt19937_64> g(rng);
  for (auto& x : t.data) x = static_cast<float>(g());
  return t;
}

/// The rows of a model's per-sample output matrices, one after the other.
std::vector<float> flatten(const std::vector<vitmae::Matrix<float>>& out) {
  std::vector<float> v;
  for (const auto& m : out) v.insert(v.end(), m.data(), m.data() + m.size());
  return v;
}

double cosine(const std::vector<float>& x, const std::vector<float>& y) {
  if (x.size() != y.size()) throw std::runtime_error("vitmae-bench: cosine of outputs of different sizes");
  double xy = 0, xx = 0, yy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    xy += double(x[i]) * y[i];
    xx += double(x[i]) * x[i];
    yy += double(y[i]) * y[i];
  }
  return xy / std::sqrt(xx * yy);
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  vitmae::cli::CommandLine cl = command_line(a);
  return vitmae::cli::run_main("vitmae-bench", cl.head().c_str(), [&] {
    cl.parse(argc, argv);
    if (!a.backend.empty())
      vitmae::set_product_backend(a.backend == "onednn" ? vitmae::Backend::onednn : vitmae::Backend::eigen);
    const int threads = a.threads > 0 ? a.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    vitmae::cli::set_threads(threads);
    openblas_set_num_threads(threads);

    // The yardstick: the FMA peak; OpenBLAS's sgemm for information.
    const char* isa = "";
    const double yard_gflops = fma_peak_gflops(threads, a.runs, &isa);
    const std::string cpu = cpu_model();
    std::printf(
        "{\"workload\": \"fma_peak\", \"threads\": %d, \"isa\": \"%s\", \"GFLOPs\": %.1f, \"cpu\": \"%s\", "
        "\"backend\": \"%s\"}\n",
        threads, isa, yard_gflops, cpu.c_str(), vitmae::backend_name(vitmae::product_backend()));
    const double bf16_gflops = dot_peak(true, threads, a.runs), int8_gops = dot_peak(false, threads, a.runs);
    if (bf16_gflops > 0)
      std::printf("{\"workload\": \"bf16_peak\", \"threads\": %d, \"isa\": \"avx512_bf16\", \"GFLOPs\": %.1f}\n",
                  threads, bf16_gflops);
    if (int8_gops > 0)
      std::printf("{\"workload\": \"int8_peak\", \"threads\": %d, \"isa\": \"avx512_vnni\", \"GOPs\": %.1f}\n", threads,
                  int8_gops);
    const int n = 2048;
    std::vector<float> A(static_cast<size_t>(n) * n, 0.5f), B(A.size(), 0.25f), C(A.size());
    const Timing ty = time_runs(
        [&] {
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.f, A.data(), n, B.data(), n, 0.f, C.data(),
                      n);
        },
        a.runs);
    const double blas_gflops = 2.0 * n * n * n / 1e9 / (ty.median_ms / 1e3);
    std::printf(
        "{\"workload\": \"openblas_sgemm_2048\", \"threads\": %d, \"median_ms\": %.3f, \"min_ms\": %.3f, \"GFLOP\": "
        "%.3f, "
        "\"GFLOPs\": %.1f, \"efficiency\": %.3f}\n",
        threads, ty.median_ms, ty.min_ms, 2.0 * n * n * n / 1e9, blas_gflops, blas_gflops / yard_gflops);

    vitmae::ForPreTraining<float> model = [&] {
      if (!a.model.empty()) return vitmae::ForPreTraining<float>::from_pretrained(a.model);
      vitmae::ForPreTraining<float> m{vitmae::Config{}};
      std::mt19937_64 rng(0);
      m.init_weights(rng);
      return m;
    }();
    const vitmae::Config& c = model.config();
    if (!a.save_dir.empty()) {
      model.save_pretrained(a.save_dir);
      std::printf("wrote %s\n", a.save_dir.c_str());
      return;
    }
    std::vector<std::string> summary;
    const char* dtype = "float32";
    double peak = yard_gflops;  // the row's yardstick: the fp32, bf16 or int8 peak
    // The rows that follow are in `type` ("float32", "bfloat16" or "int8"), against its peak (a
    // multiple of the fp32 one where this build cannot measure it).
    auto rows_in = [&](const char* type) {
      dtype = type;
      peak = std::string(type) == "bfloat16" ? (bf16_gflops > 0 ? bf16_gflops : 2 * yard_gflops)
             : std::string(type) == "int8"   ? (int8_gops > 0 ? int8_gops : 4 * yard_gflops)
                                             : yard_gflops;
    };
    const char* no_bf16 = vitmae::bfloat16_unavailable();
    // A row: `flop` per run; `images` a run, for images/s (training rows); `cos`, when not NaN, the
    // cosine of a lower precision's output to float32's on the same inputs.
    auto report = [&](const std::string& name, const Timing& t, double flop, int images = 0, double cos = NAN) {
      const double gflop = flop / 1e9, gflops = gflop / (t.median_ms / 1e3), per_s = images / (t.median_ms / 1e3);
      char line[256];
      std::snprintf(line, sizeof line, "# %-16s %10.1f ms %8.1f GFLOP/s  efficiency %.2f", name.c_str(), t.median_ms,
                    gflops, gflops / peak);
      char cos_text[64] = "";
      if (!std::isnan(cos)) std::snprintf(cos_text, sizeof cos_text, "  cosine to float32 %.6f", cos);
      summary.push_back(line +
                        (images ? "  " + std::to_string(static_cast<int>(per_s + 0.5)) + " images/s" : std::string()) +
                        cos_text);
      std::printf(
          "{\"workload\": \"%s\", \"threads\": %d, \"dtype\": \"%s\", \"backend\": \"%s\", \"median_ms\": %.3f, "
          "\"min_ms\": %.3f, \"GFLOP\": %.3f, \"GFLOPs\": %.1f, \"efficiency\": %.3f",
          name.c_str(), threads, dtype, vitmae::backend_name(vitmae::product_backend()), t.median_ms, t.min_ms, gflop,
          gflops, gflops / peak);
      if (images) std::printf(", \"images_per_s\": %.1f", per_s);
      if (!std::isnan(cos)) std::printf(", \"cosine_to_float32\": %.7f", cos);
      std::printf("}\n");
      std::fflush(stdout);
    };
    // The inference rows in float32, then (copies) in bfloat16 and int8: the same GFLOP counted. A
    // row's output (pretrain: logits; features: last_hidden_state) on its inputs, computed once more
    // after the timed runs: float32's is the reference of the others' cosine_to_float32 (with --dtype
    // int8, float32's comes from the model as loaded, untimed).
    auto inputs = [&](int batch) {
      std::mt19937_64 prng(1), rng(2);
      return std::make_pair(random_pixels(batch, c.num_channels, c.image_size, prng),
                            vitmae::ops::uniform_noise<float>(batch, c.num_patches(), rng));
    };
    vitmae::ForwardOptions features;
    features.mask_ratio = 0.0;
    auto output = [&](const vitmae::ForPreTraining<float>& m, const std::string& name) {
      const auto in = inputs(name == "pretrain_b8" ? 8 : 1);
      return name == "features_b1" ? flatten(m.vit.forward(in.first, in.second, features).last_hidden_state)
                                   : flatten(m.forward(in.first, in.second).logits);
    };
    std::map<std::string, std::vector<float>> reference;
    auto inference_rows = [&](const vitmae::ForPreTraining<float>& m, const std::string& suffix) {
      auto row = [&](const std::string& name, const Timing& t, double flop) {
        const std::vector<float> out = output(m, name);
        if (suffix.empty()) reference[name] = out;
        if (!reference.count(name)) reference[name] = output(model, name);
        report(name + suffix, t, flop, 0, suffix.empty() ? NAN : cosine(out, reference[name]));
      };
      for (int batch : {1, 8}) {
        const auto in = inputs(batch);
        const vitmae::Tensor<float>& px = in.first;
        const vitmae::Matrix<float>& noise = in.second;
        float sink = 0;
        const Timing t = time_runs([&] { sink += m.forward(px, noise).loss; }, a.runs);
        row(batch == 1 ? "pretrain_b1" : "pretrain_b8", t, vitmae::forward_flops(c, true, c.mask_ratio) * batch);
        if (batch == 1) {
          const Timing tf =
              time_runs([&] { sink += m.vit.forward(px, noise, features).last_hidden_state[0](0, 0); }, a.runs);
          row("features_b1", tf, vitmae::forward_flops(c, false, 0.0));
        }
        if (sink == 12345.f) std::printf(" ");
      }
    };
    if (a.dtypes == "float32" || a.dtypes == "all") {
      if (!a.pack) inference_rows(model, "");
      else {
        vitmae::ForPreTraining<float> p = model;
        vitmae::pack_for_inference(p);
        inference_rows(p, "");
      }
    }
    if (a.dtypes == "bfloat16" || a.dtypes == "all") {
      if (no_bf16) {
        std::printf("# no bfloat16 rows: %s\n", no_bf16);
      } else {
        vitmae::ForPreTraining<float> h = model;
        vitmae::to_bfloat16(h);
        rows_in("bfloat16");
        inference_rows(h, "_bf16");
      }
    }
    if (a.dtypes == "int8" || a.dtypes == "all") {
      vitmae::ForPreTraining<float> q = model;
      vitmae::quantize_int8(q);
      if (a.pack) vitmae::pack_for_inference(q);
      rows_in("int8");
      inference_rows(q, "_int8");
    }
    if (a.train) {
      // One optimiser step = forward + backward + AdamW on a fixed batch (threads over the batch).
      // --bf16 (rows *_bf16): the products in bfloat16, against the bf16 peak.
      const bool bf16_rows = (a.dtypes == "bfloat16" || a.dtypes == "all") && !no_bf16;
      auto train_case = [&](const std::string& name, const vitmae::ForPreTraining<float>& m, int batch,
                            bool bf16 = false) {
        vitmae::train::TrainOptions o;
        o.batch = batch;
        o.steps = 1000000;
        o.threads = threads;
        o.bf16 = bf16;
        rows_in(bf16 ? "bfloat16" : "float32");
        vitmae::train::Trainer<float> trainer(m, o);
        const vitmae::Config& mc = m.config();
        std::mt19937_64 rng(3);
        const vitmae::Tensor<float> px = random_pixels(batch, mc.num_channels, mc.image_size, rng);
        const Timing t = time_runs([&] { trainer.train_step([&] { return px; }); }, a.runs);
        report(name, t, 3 * vitmae::forward_flops(mc, true, mc.mask_ratio) * batch, batch);
      };
      train_case("train_b8", model, 8);
      if (bf16_rows) train_case("train_b8_bf16", model, 8, true);
      vitmae::ForPreTraining<float> small(vitmae::load_config(VITMAE_SMALL_CONFIG));
      std::mt19937_64 rng(0);
      small.init_weights(rng);
      train_case("train_small_b64", small, 64);
      // Fine-tuning steps (forward, backward, layer-decayed AdamW) of ViTForImageClassification:
      // vit-base-shaped with ImageNet's 1000 labels at batch 8, and the Fashion-MNIST ViT
      // (examples/fashion-mnist) at its batch, 64.
      auto finetune_case = [&](const std::string& name, const vitmae::ViTConfig& vc, int batch, bool bf16 = false) {
        vitmae::ViTForImageClassification<float> clf(vc);
        std::mt19937_64 rng(4);
        clf.init_weights(rng);
        vitmae::train::FineTuneOptions o;
        o.batch = batch;
        o.steps = 1000000;
        o.threads = threads;
        o.bf16 = bf16;
        rows_in(bf16 ? "bfloat16" : "float32");
        vitmae::train::ClassifierTrainer<float> trainer(std::move(clf), o);
        vitmae::train::LabelledBatch<float> b{random_pixels(batch, vc.num_channels, vc.image_size, rng), {}};
        for (int i = 0; i < batch; ++i) b.labels.push_back(i % vc.num_labels());
        const Timing t = time_runs([&] { trainer.train_step([&] { return b; }); }, a.runs);
        report(name, t, 3 * vitmae::forward_flops(vc) * batch, batch);
      };
      const vitmae::ViTConfig vit_base = vitmae::ViTConfig::from_mae(c, vitmae::ViTConfig::default_labels(1000));
      finetune_case("finetune_b8", vit_base, 8);
      if (bf16_rows) finetune_case("finetune_b8_bf16", vit_base, 8, true);
      const nlohmann::json fj = vitmae::io::read_json_file(VITMAE_FMNIST_CONFIG, "config file");
      vitmae::ViTConfig fc = vitmae::ViTConfig::from_json(fj, VITMAE_FMNIST_CONFIG);
      fc.id2label = vitmae::ViTConfig::default_labels(10);
      finetune_case("finetune_fmnist_b64", fc, 64);
    }
    if (a.load) {
      const std::string dir = "/tmp/vitmae-bench-checkpoint-" + std::to_string(static_cast<long>(::getpid()));
      model.save_pretrained(dir);
      const Timing tl =
          time_runs([&] { const auto m = vitmae::ForPreTraining<float>::from_pretrained(dir); }, std::min(a.runs, 3));
      const double file_mb = static_cast<double>(std::filesystem::file_size(dir + "/model.safetensors")) / 1e6;
      std::printf(
          "{\"workload\": \"from_pretrained\", \"threads\": %d, \"median_ms\": %.3f, \"min_ms\": %.3f, \"file_MB\": "
          "%.1f}\n",
          threads, tl.median_ms, tl.min_ms, file_mb);
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
    std::printf("{\"peak_rss_MB\": %ld}\n", peak_rss_mb());
    if (!a.json_only) {
      std::printf(
          "# %s, %d threads, products: %s\n"
          "# fp32 FMA peak (%s) %.1f GFLOP/s; OpenBLAS sgemm 2048^3 %.1f GFLOP/s (efficiency %.2f)\n",
          cpu.c_str(), threads, vitmae::backend_name(vitmae::product_backend()), isa, yard_gflops, blas_gflops,
          blas_gflops / yard_gflops);
      for (const auto& l : summary) std::printf("%s\n", l.c_str());
    }
  });
}
