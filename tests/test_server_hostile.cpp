// SPDX-License-Identifier: Apache-2.0
// vitmae-server against hostile and bad requests (each gets its status and a one-line JSON error,
// and the server serves on), the API key, SIGTERM in the middle of an upload, and its usage
// errors. It needs no model code of its own, so CI's sanitizer pass builds it with a sanitized
// vitmae-server (tests/CMakeLists.txt).
#ifdef VITMAE_SERVER_EXE

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "server_util.hpp"
#include "test_util.hpp"

using namespace server_test;

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
  ServerProcess server({"--model", std::string("photo=") + VITMAE_BUNDLED_MODEL});
  // A client in the middle of its upload when SIGTERM comes: half the body, a pause, the rest.
  const std::string body = test::slurp(kPhoto);
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(server.port()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  const std::string head =
      "POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
      "Connection: close\r\nContent-Length: " +
      std::to_string(body.size()) + "\r\n\r\n";
  const std::string first = head + body.substr(0, body.size() / 2), rest = body.substr(body.size() / 2);
  REQUIRE(send(fd, first.data(), first.size(), 0) == static_cast<ssize_t>(first.size()));
  // Once a later connection is answered, the server has taken this one (accepted in order, served
  // by a pool that starts tasks in order) and is reading its body.
  auto health = server.client().Get("/health");
  REQUIRE(health);
  REQUIRE(health->status == 200);
  std::atomic<int> status{-2};
  std::thread stopper([&] { status = server.stop(); });  // SIGTERM, then waits for the exit
  struct JoinAtExit {
    std::thread& t;
    ~JoinAtExit() {
      if (t.joinable()) t.join();
    }
  } join_at_exit{stopper};
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  CHECK(status == -2);  // still serving the upload
  REQUIRE(send(fd, rest.data(), rest.size(), 0) == static_cast<ssize_t>(rest.size()));
  std::string response;
  char buf[4096];
  for (ssize_t n; (n = recv(fd, buf, sizeof buf, 0)) > 0;) response.append(buf, static_cast<size_t>(n));
  close(fd);
  stopper.join();  // (JoinAtExit joins it when a REQUIRE above ends the test first)
  CHECK(response.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  CHECK(response.find("\"embedding\"") != std::string::npos);
  CHECK(status == 0);
  CHECK(server.log().find("SIGTERM: finishing the requests in flight") != std::string::npos);
}

TEST_CASE("vitmae-server: usage and model errors, each on one line") {
  auto r = test::run_program(VITMAE_SERVER_EXE, "--port 70000");
  CHECK(r.status == 2);
  CHECK(r.err.find("--port") != std::string::npos);
  r = test::run_program(VITMAE_SERVER_EXE, "--model /nonexistent/folder --port 0");
  CHECK(r.status == 1);
  CHECK(r.err.find("/nonexistent/folder") != std::string::npos);
  CHECK(r.out.empty());  // never said it was listening
  r = test::run_program(VITMAE_SERVER_EXE, std::string("--port 0 --model a=") + VITMAE_BUNDLED_MODEL +
                                               " --model a=" + VITMAE_BUNDLED_MODEL);
  CHECK(r.status == 2);
  CHECK(r.err.find("two models named 'a'") != std::string::npos);
}

#endif  // VITMAE_SERVER_EXE
