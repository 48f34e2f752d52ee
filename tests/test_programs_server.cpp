// SPDX-License-Identifier: Apache-2.0
// vitmae-server, started on an ephemeral loopback port: every route's results against the
// library's own calls on the same images, its metrics, batching of concurrent requests, bad
// requests (each with its status and a one-line JSON error, the server serving on), the API key,
// and SIGTERM finishing the requests in flight.
#ifdef VITMAE_SERVER_EXE

#include <doctest/doctest.h>
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "program_util.hpp"
#include "vitmae/images/pipelines.hpp"
#include "vitmae/images/visualize.hpp"
#include "vitmae/vitmae.hpp"

extern char** environ;

namespace {

/// vitmae-server started with `args` (and --port 0): its port from the first line it prints;
/// stopped with SIGTERM when destroyed (stop() says how it exited).
class ServerProcess {
 public:
  explicit ServerProcess(std::vector<std::string> args) {
    args.insert(args.begin(), {VITMAE_SERVER_EXE, "--port", "0"});
    log_ = test::tmp_dir("server_" + std::to_string(++count())) + "/stderr.txt";
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    posix_spawn_file_actions_addopen(&fa, 2, log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    REQUIRE(posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), environ) == 0);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    std::string line;
    pollfd p{fds[0], POLLIN, 0};
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (line.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
      if (poll(&p, 1, 200) <= 0) continue;
      char c[256];
      const ssize_t n = read(fds[0], c, sizeof c);
      if (n <= 0) break;
      line.append(c, static_cast<size_t>(n));
    }
    out_fd_ = fds[0];
    std::smatch m;
    INFO("first line: " << line << " stderr: " << test::slurp(log_));
    REQUIRE(std::regex_search(line, m, std::regex("^listening on http://127\\.0\\.0\\.1:([0-9]+)\n")));
    port_ = std::stoi(m[1]);
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;
  ~ServerProcess() { stop(); }

  int port() const { return port_; }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(120);
    return c;
  }
  std::string log() const { return test::slurp(log_); }

  /// Sends SIGTERM and waits: the exit status (-1 when killed by a signal).
  int stop() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int st = 0;
      waitpid(pid_, &st, 0);
      status_ = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
      pid_ = -1;
      close(out_fd_);
    }
    return status_;
  }

 private:
  static int& count() {
    static int n = 0;
    return n;
  }
  pid_t pid_ = -1;
  int port_ = 0, out_fd_ = -1, status_ = -1;
  std::string log_;
};

std::string base64_decode(const std::string& s) {
  std::string out;
  int val = 0, bits = -8;
  for (unsigned char ch : s) {
    int v;
    if (ch >= 'A' && ch <= 'Z') v = ch - 'A';
    else if (ch >= 'a' && ch <= 'z') v = ch - 'a' + 26;
    else if (ch >= '0' && ch <= '9') v = ch - '0' + 52;
    else if (ch == '+') v = 62;
    else if (ch == '/') v = 63;
    else break;
    val = (val << 6) + v;
    bits += 6;
    if (bits >= 0) {
      out += static_cast<char>((val >> bits) & 0xFF);
      bits -= 8;
    }
  }
  return out;
}

vitmae::io::Image8 decode_png(const std::string& bytes) {
  return vitmae::io::decode_image(std::vector<unsigned char>(bytes.begin(), bytes.end()), "the server's PNG");
}

const std::string kPhoto = std::string(VITMAE_BUNDLED_MODEL) + "/../data/chelsea.png";
const std::string kDress = std::string(VITMAE_FASHION_MNIST_EXAMPLE) + "/images/3-dress.png";
const std::string kBag = std::string(VITMAE_FASHION_MNIST_EXAMPLE) + "/images/8-bag.png";

httplib::MultipartFormDataItems form(const std::vector<std::string>& paths) {
  httplib::MultipartFormDataItems items;
  for (const std::string& p : paths) items.push_back({"image", test::slurp(p), p, "image/png"});
  return items;
}

/// A response's body is one line of JSON {"error": "..."}: the message.
std::string error_of(const httplib::Result& r) {
  REQUIRE(r);
  INFO("body: " << r->body);
  CHECK(r->get_header_value("Content-Type") == "application/json");
  CHECK(r->body.find('\n') == r->body.size() - 1);
  const auto j = nlohmann::json::parse(r->body);
  REQUIRE(j.contains("error"));
  CHECK(j.size() == 1);
  return j["error"].get<std::string>();
}

double max_abs_diff(const std::vector<float>& a, const vitmae::RowVector<float>& b) {
  REQUIRE(static_cast<vitmae::Index>(a.size()) == b.size());
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i)
    d = std::max(d, std::abs(static_cast<double>(a[i]) - static_cast<double>(b(static_cast<vitmae::Index>(i)))));
  return d;
}

}  // namespace

TEST_CASE("vitmae-server: every route gives the library's own numbers for the same images") {
  ServerProcess server({"--batch-wait-ms", "1"});  // the bundled models
  httplib::Client cli = server.client();

  auto health = cli.Get("/health");
  REQUIRE(health);
  CHECK(health->status == 200);
  CHECK(nlohmann::json::parse(health->body) == nlohmann::json{{"status", "ok"}});

  auto models = cli.Get("/v1/models");
  REQUIRE(models);
  const auto list = nlohmann::json::parse(models->body)["models"];
  REQUIRE(list.size() == 3);
  CHECK(list[0]["name"] == "photo-mae");
  CHECK(list[0]["kind"] == "mae");
  CHECK(list[0]["routes"] == nlohmann::json{"/v1/embeddings", "/v1/reconstruct"});
  CHECK(list[0]["config"]["hidden_size"] == 192);
  CHECK(list[2]["name"] == "fashion-mnist-classifier");
  CHECK(list[2]["kind"] == "classifier");
  CHECK(list[2]["num_labels"] == 10);

  SUBCASE("embeddings: vitmae::image_features, the pipeline vitmae-embed runs") {
    auto model = vitmae::load_for_inference<vitmae::ViTMAEModel<float>>(VITMAE_BUNDLED_MODEL);
    model.config.mask_ratio = 0;
    const auto proc = vitmae::ImageProcessor::for_checkpoint(VITMAE_BUNDLED_MODEL, model.config);
    const std::vector<std::string> paths{kPhoto, kDress};  // a grey image becomes RGB as PIL converts it
    // vitmae-embed, built with the server's flags, on the same two images in one forward.
    const std::string dir = test::tmp_dir("server_embed");
    const test::Run e = test::run_program(VITMAE_EMBED_EXE, std::string("--model ") + VITMAE_BUNDLED_MODEL +
                                                                " --image " + kPhoto + " --image " + kDress +
                                                                " --seed 7 --batch 2 --out " + dir + "/f.safetensors");
    REQUIRE(e.status == 0);
    const vitmae::io::SafetensorsFile program(dir + "/f.safetensors");
    for (const char* pooling : {"cls", "mean"}) {
      auto r = cli.Post(std::string("/v1/embeddings?model=photo-mae&seed=7&pooling=") + pooling, form(paths));
      REQUIRE(r);
      REQUIRE(r->status == 200);
      const auto j = nlohmann::json::parse(r->body);
      CHECK(j["model"] == "photo-mae");
      CHECK(j["pooling"] == pooling);
      REQUIRE(j["data"].size() == 2);
      // vitmae-embed's forward of the same two images: the same bits. The library's, in this
      // test binary (built -O1: its float rounding differs), two at once and each alone: 1e-5.
      const auto cli_rows = program.get<float>(pooling).data;
      std::mt19937_64 rng(7);
      const auto both = vitmae::image_features(model, proc, paths, 2, rng);
      std::mt19937_64 rng1(7);
      const auto alone = vitmae::image_features(model, proc, paths, 1, rng1);
      for (size_t i = 0; i < 2; ++i) {
        const auto e = j["data"][i]["embedding"].get<std::vector<float>>();
        const auto b = static_cast<vitmae::Index>(i);
        const size_t D = e.size();
        CHECK(std::vector<float>(cli_rows.begin() + static_cast<long>(i * D),
                                 cli_rows.begin() + static_cast<long>((i + 1) * D)) == e);
        const vitmae::RowVector<float> same = std::string(pooling) == "cls" ? both.cls.row(b) : both.mean.row(b);
        const vitmae::RowVector<float> one = std::string(pooling) == "cls" ? alone.cls.row(b) : alone.mean.row(b);
        CHECK(j["data"][i]["index"] == i);
        CHECK(max_abs_diff(e, same) < 1e-5);
        CHECK(max_abs_diff(e, one) < 1e-5);
      }
    }
  }

  SUBCASE("classify: vitmae::classify_images, as vitmae-classify --json") {
    const std::string dir = std::string(VITMAE_FASHION_MNIST_EXAMPLE) + "/classifier";
    auto model = vitmae::ViTForImageClassification<float>::from_pretrained(dir);
    vitmae::pack_for_inference(model);
    const auto proc = vitmae::ImageProcessor::for_checkpoint(dir, model.config().mae_config());
    const auto expected = vitmae::classify_images(model, proc, {kDress, kBag}, 3, 1);
    auto r = cli.Post("/v1/classify?top_k=3", form({kDress, kBag}));  // the only classifier: no ?model=
    REQUIRE(r);
    REQUIRE(r->status == 200);
    const auto j = nlohmann::json::parse(r->body);
    CHECK(j["model"] == "fashion-mnist-classifier");
    REQUIRE(j["data"].size() == 2);
    for (size_t i = 0; i < 2; ++i) {
      const auto& top = j["data"][i]["top"];
      REQUIRE(top.size() == 3);
      for (size_t k = 0; k < 3; ++k) {
        CHECK(top[k]["index"] == expected[i][k].index);
        CHECK(top[k]["label"] == expected[i][k].label);
        CHECK(top[k]["prob"].get<double>() == doctest::Approx(expected[i][k].score).epsilon(1e-5));
      }
    }
    CHECK(j["data"][0]["top"][0]["label"] == "Dress");
    CHECK(j["data"][1]["top"][0]["label"] == "Bag");
  }

  SUBCASE("reconstruct: the loss, mask and panel of ViTMAEForPreTraining's forward, as vitmae-reconstruct") {
    const auto model = vitmae::load_for_inference<vitmae::ViTMAEForPreTraining<float>>(VITMAE_BUNDLED_MODEL);
    const auto proc = vitmae::ImageProcessor::for_checkpoint(VITMAE_BUNDLED_MODEL, model.config());
    vitmae::ImageProcessor no_resize = proc;
    no_resize.do_resize = false;
    const vitmae::io::Image8 resized = proc.resize(vitmae::io::load_image(kPhoto, 3));
    const vitmae::Tensor<float> pixels = no_resize.preprocess<float>({resized});
    std::mt19937_64 rng(5);
    vitmae::ForwardOptions opts;
    opts.mask_ratio = 0.6;
    const auto out = model.forward(pixels, rng, opts);
    vitmae::PanelLayout layout;
    layout.scale = vitmae::PanelLayout::scale_for(64, 64);
    const vitmae::io::Image8 panel =
        vitmae::make_panel({vitmae::reconstruction_images(model, no_resize, resized, vitmae::image_of(pixels, 0),
                                                          out.logits[0], vitmae::RowVector<float>(out.mask.row(0)))},
                           layout);

    auto r =
        cli.Post("/v1/reconstruct?model=photo-mae&mask_ratio=0.6&seed=5&format=json", test::slurp(kPhoto), "image/png");
    REQUIRE(r);
    REQUIRE(r->status == 200);
    const auto j = nlohmann::json::parse(r->body);
    CHECK(j["loss"].get<double>() == doctest::Approx(static_cast<double>(out.loss)).epsilon(1e-6));
    CHECK(j["mean_fill_loss"].get<double>() > j["loss"].get<double>());
    CHECK(j["mask_ratio"] == 0.6);
    CHECK(j["grid"] == nlohmann::json{8, 8});
    const auto mask = j["mask"].get<std::vector<int>>();
    REQUIRE(mask.size() == 64);
    int hidden = 0;
    for (size_t l = 0; l < 64; ++l) {
      CHECK(mask[l] == static_cast<int>(out.mask(0, static_cast<vitmae::Index>(l))));
      hidden += mask[l];
    }
    CHECK(hidden == 64 - 25);  // len_keep = int(64 * 0.4)
    const vitmae::io::Image8 got = decode_png(base64_decode(j["panel_png"].get<std::string>()));
    CHECK(got.width == panel.width);
    CHECK(got.height == panel.height);
    CHECK(got.data == panel.data);

    // format=png (the default): the same PNG, the figures in headers.
    auto png = cli.Post("/v1/reconstruct?model=photo-mae&mask_ratio=0.6&seed=5", test::slurp(kPhoto), "image/png");
    REQUIRE(png);
    CHECK(png->get_header_value("Content-Type") == "image/png");
    CHECK(png->body == base64_decode(j["panel_png"].get<std::string>()));
    CHECK(std::stod(png->get_header_value("X-Vitmae-Loss")) == doctest::Approx(j["loss"].get<double>()).epsilon(1e-5));
    std::string mask_text;
    for (int m : mask) mask_text += m ? '1' : '0';
    CHECK(png->get_header_value("X-Vitmae-Mask") == mask_text);

    // A given mask comes back as it was given.
    std::string given(64, '1');
    for (size_t l = 0; l < 64; l += 3) given[l] = '0';
    auto g = cli.Post("/v1/reconstruct?model=photo-mae&format=json&mask=" + given, test::slurp(kPhoto), "image/png");
    REQUIRE(g);
    REQUIRE(g->status == 200);
    std::string back;
    for (int m : nlohmann::json::parse(g->body)["mask"].get<std::vector<int>>()) back += m ? '1' : '0';
    CHECK(back == given);
  }

  SUBCASE("metrics count the requests just made") {
    for (int i = 0; i < 3; ++i) REQUIRE(cli.Get("/health"));
    REQUIRE(cli.Post("/v1/embeddings?model=nope", form({kPhoto})));
    auto m = cli.Get("/metrics");
    REQUIRE(m);
    CHECK(m->get_header_value("Content-Type").rfind("text/plain", 0) == 0);
    CHECK(m->body.find("vitmae_requests_total{route=\"/health\",status=\"200\"} 4\n") != std::string::npos);
    CHECK(m->body.find("vitmae_requests_total{route=\"/v1/models\",status=\"200\"} 1\n") != std::string::npos);
    CHECK(m->body.find("vitmae_requests_total{route=\"/v1/embeddings\",status=\"404\"} 1\n") != std::string::npos);
    CHECK(m->body.find("vitmae_request_duration_seconds_count{route=\"/v1/embeddings\"} 1\n") != std::string::npos);
    CHECK(m->body.find("# TYPE vitmae_batch_size histogram") != std::string::npos);
    CHECK(m->body.find("vitmae_images_per_second ") != std::string::npos);
  }
  CHECK(server.stop() == 0);
}

TEST_CASE("vitmae-server: concurrent requests run in batches, each with its batch-1 numbers") {
  ServerProcess server({"--model", std::string("photo=") + VITMAE_BUNDLED_MODEL, "--batch-wait-ms", "300"});
  auto model = vitmae::load_for_inference<vitmae::ViTMAEModel<float>>(VITMAE_BUNDLED_MODEL);
  model.config.mask_ratio = 0;
  const auto proc = vitmae::ImageProcessor::for_checkpoint(VITMAE_BUNDLED_MODEL, model.config);
  constexpr int kClients = 6;
  std::vector<std::string> bodies(kClients);
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i)
    clients.emplace_back([&, i] {
      httplib::Client c = server.client();
      auto r = c.Post("/v1/embeddings?seed=" + std::to_string(i), form({i % 2 ? kDress : kPhoto}));
      if (r && r->status == 200) bodies[static_cast<size_t>(i)] = r->body;
    });
  for (auto& t : clients) t.join();
  double worst = 0;
  for (int i = 0; i < kClients; ++i) {
    INFO("client " << i << " log: " << server.log());
    REQUIRE(!bodies[static_cast<size_t>(i)].empty());
    std::mt19937_64 rng(static_cast<std::uint64_t>(i));
    const auto alone = vitmae::image_features(model, proc, {i % 2 ? kDress : kPhoto}, 1, rng);
    const auto e =
        nlohmann::json::parse(bodies[static_cast<size_t>(i)])["data"][0]["embedding"].get<std::vector<float>>();
    worst = std::max(worst, max_abs_diff(e, alone.cls.row(0)));
  }
  // The products' rounding differs with the batch size (oneDNN's kernels): within 1e-5.
  MESSAGE("largest difference to batch-1 library calls: " << worst);
  CHECK(worst < 1e-5);
  auto m = server.client().Get("/metrics");
  REQUIRE(m);
  std::smatch count, sum;
  REQUIRE(std::regex_search(m->body, count, std::regex("vitmae_batch_size_count\\{model=\"photo\"\\} ([0-9]+)")));
  REQUIRE(std::regex_search(m->body, sum, std::regex("vitmae_batch_size_sum\\{model=\"photo\"\\} ([0-9]+)")));
  CHECK(std::stoi(sum[1]) == kClients);
  CHECK(std::stoi(count[1]) < kClients);  // at least one forward ran more than one request's image
  CHECK(server.stop() == 0);
}

TEST_CASE("vitmae-server: bad requests get their status and a one-line JSON error, and it serves on") {
  ServerProcess server({"--max-body-mb", "1", "--max-pixels", "1000000"});
  httplib::Client cli = server.client();
  const std::string photo = test::slurp(kPhoto);
  const std::string dir = test::tmp_dir("server_bad");
  vitmae::io::save_jpeg(dir + "/photo.jpg", vitmae::io::load_image(kPhoto, 3));
  const std::string jpeg = test::slurp(dir + "/photo.jpg");

  const auto status = [](const httplib::Result& r) { return r ? r->status : -1; };
  auto r = cli.Post("/v1/classify", "this is not an image", "image/png");
  CHECK(status(r) == 400);
  CHECK(error_of(r).find("not a readable image") != std::string::npos);
  r = cli.Post("/v1/classify", jpeg.substr(0, jpeg.size() / 2), "image/jpeg");
  CHECK(status(r) == 400);
  CHECK(error_of(r).find("truncated") != std::string::npos);
  r = cli.Post("/v1/classify", "", "image/png");
  CHECK(status(r) == 400);
  CHECK(error_of(r).find("empty") != std::string::npos);
  // A 20000x20000 PNG header (and nothing else): refused at its header, never decoded.
  std::string bomb("\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\x4e\x20\0\0\x4e\x20\x08\x02\0\0\0\0\0\0\0", 33);
  r = cli.Post("/v1/classify", bomb, "image/png");
  CHECK(status(r) == 413);
  CHECK(error_of(r).find("20000x20000") != std::string::npos);
  r = cli.Post("/v1/classify", std::string(2 << 20, 'x'), "image/png");  // 2 MiB, over --max-body-mb 1
  CHECK(status(r) == 413);
  CHECK(error_of(r).find("--max-body-mb") != std::string::npos);
  r = cli.Post("/v1/classify", photo, "text/plain");
  CHECK(status(r) == 415);
  CHECK(error_of(r).find("Content-Type") != std::string::npos);
  r = cli.Post("/v1/classify", httplib::MultipartFormDataItems{{"top_k", "3", "", ""}});
  CHECK(status(r) == 400);
  CHECK(error_of(r).find("no image") != std::string::npos);
  r = cli.Post("/v1/embeddings?model=nope", photo, "image/png");
  CHECK(status(r) == 404);
  CHECK(error_of(r).find("no model named 'nope'") != std::string::npos);
  r = cli.Post("/v1/embeddings", photo, "image/png");  // two models serve embeddings
  CHECK(status(r) == 400);
  CHECK(error_of(r).find("name one with ?model=") != std::string::npos);
  r = cli.Post("/v1/reconstruct?model=photo-mae&mask_ratio=1.5", photo, "image/png");
  CHECK(status(r) == 400);
  CHECK(error_of(r).find("mask_ratio must be in (0, 1)") != std::string::npos);
  r = cli.Post("/v1/classify?top_k=0", photo, "image/png");
  CHECK(status(r) == 400);
  r = cli.Post("/v1/reconstruct?model=fashion-mnist-classifier", photo, "image/png");
  CHECK(status(r) == 400);
  CHECK(error_of(r).find("does not serve /v1/reconstruct") != std::string::npos);
  for (const char* path : {"/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/index.html/../../x", "/server.cpp"}) {
    auto g = cli.Get(path);
    CHECK(status(g) == 404);
    error_of(g);
  }

  // A 1x1 image is an image: resized to the model's size as PIL would, and served.
  vitmae::io::save_png(dir + "/one.png", vitmae::io::Image8{1, 1, 3, {200, 30, 30}});
  r = cli.Post("/v1/classify", test::slurp(dir + "/one.png"), "image/png");
  CHECK(status(r) == 200);

  auto h = cli.Get("/health");
  CHECK(status(h) == 200);
  CHECK(server.stop() == 0);
}

TEST_CASE("vitmae-server: --api-key requires the bearer token on the API, not on the page") {
  ServerProcess server({"--model", std::string(VITMAE_FASHION_MNIST_EXAMPLE) + "/classifier", "--api-key", "s3cret"});
  httplib::Client cli = server.client();
  const std::string dress = test::slurp(kDress);
  auto r = cli.Post("/v1/classify", dress, "image/png");
  CHECK((r ? r->status : -1) == 401);
  CHECK(error_of(r).find("Authorization: Bearer") != std::string::npos);
  r = cli.Post("/v1/classify", {{"Authorization", "Bearer wrong"}}, dress, "image/png");
  CHECK((r ? r->status : -1) == 401);
  r = cli.Get("/metrics");
  CHECK((r ? r->status : -1) == 401);
  r = cli.Post("/v1/classify", {{"Authorization", "Bearer s3cret"}}, dress, "image/png");
  CHECK((r ? r->status : -1) == 200);
  r = cli.Get("/");
  CHECK((r ? r->status : -1) == 200);
  CHECK(r->get_header_value("Content-Type").rfind("text/html", 0) == 0);
  CHECK(cli.Get("/health")->status == 200);
  CHECK(server.stop() == 0);
}

TEST_CASE("vitmae-server: SIGTERM lets the requests in flight finish, then it exits 0") {
  ServerProcess server({"--model", std::string("photo=") + VITMAE_BUNDLED_MODEL, "--batch-wait-ms", "1500"});
  std::atomic<int> got{0};
  std::thread client([&] {  // waits 1.5 s in the batcher: in flight when SIGTERM comes
    auto r = server.client().Post("/v1/embeddings", test::slurp(kPhoto), "image/png");
    got = r ? r->status : -1;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  CHECK(server.stop() == 0);
  client.join();
  CHECK(got == 200);
  CHECK(server.log().find("SIGTERM: finishing the requests in flight") != std::string::npos);
}

TEST_CASE("vitmae-server: usage and model errors, each on one line") {
  using test::run;
  auto r = run("--port 70000", VITMAE_SERVER_EXE);
  CHECK(r.status == 2);
  CHECK(r.err.find("--port") != std::string::npos);
  r = run("--model /nonexistent/folder --port 0", VITMAE_SERVER_EXE);
  CHECK(r.status == 1);
  CHECK(r.err.find("/nonexistent/folder") != std::string::npos);
  CHECK(r.out.empty());  // never said it was listening
  r = run(std::string("--port 0 --model a=") + VITMAE_BUNDLED_MODEL + " --model a=" + VITMAE_BUNDLED_MODEL,
          VITMAE_SERVER_EXE);
  CHECK(r.status == 2);
  CHECK(r.err.find("two models named 'a'") != std::string::npos);
}

#endif  // VITMAE_SERVER_EXE
