// SPDX-License-Identifier: Apache-2.0
// Helpers of the tests that talk to vitmae-server over HTTP: the server started on an ephemeral
// loopback port as a child process, multipart forms, the one-line JSON errors.
#pragma once

// Eigen first: httplib.h includes <resolv.h>, whose `_res` macro would rename a parameter of
// Eigen's products.
#include "test_util.hpp"
#include "vitmae/io/image.hpp"
#include "vitmae/tensor.hpp"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <regex>
#include <string>
#include <vector>

extern char** environ;

namespace server_test {

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

inline std::string base64_decode(const std::string& s) {
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

inline vitmae::io::Image8 decode_png(const std::string& bytes) {
  return vitmae::io::decode_image(std::vector<unsigned char>(bytes.begin(), bytes.end()), "the server's PNG");
}

inline const std::string kPhoto = std::string(VITMAE_BUNDLED_MODEL) + "/../data/chelsea.png";
inline const std::string kDress = std::string(VITMAE_FASHION_MNIST_EXAMPLE) + "/images/3-dress.png";
inline const std::string kBag = std::string(VITMAE_FASHION_MNIST_EXAMPLE) + "/images/8-bag.png";

inline httplib::MultipartFormDataItems form(const std::vector<std::string>& paths) {
  httplib::MultipartFormDataItems items;
  for (const std::string& p : paths) items.push_back({"image", test::slurp(p), p, "image/png"});
  return items;
}

/// A response's body is one line of JSON {"error": "..."}: the message.
inline std::string error_of(const httplib::Result& r) {
  REQUIRE(r);
  INFO("body: " << r->body);
  CHECK(r->get_header_value("Content-Type") == "application/json");
  CHECK(r->body.find('\n') == r->body.size() - 1);
  const auto j = nlohmann::json::parse(r->body);
  REQUIRE(j.contains("error"));
  CHECK(j.size() == 1);
  return j["error"].get<std::string>();
}

}  // namespace server_test
