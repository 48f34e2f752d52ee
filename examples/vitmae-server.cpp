// SPDX-License-Identifier: Apache-2.0
// vitmae-server: the library behind an HTTP API and a web page. Models are loaded once; the images
// of concurrent requests for the same model run as one forward (server/batcher.hpp); /metrics
// speaks Prometheus. The HTTP layer is Debian's cpp-httplib. See examples/server/README.md.
#include "server/batcher.hpp"
#include "server/metrics.hpp"
#include "server/models.hpp"
#include "server_page.hpp"  // generated from examples/server/page by CMake
// (after Eigen: httplib.h includes <resolv.h>, whose `_res` macro breaks Eigen's products)

#include <httplib.h>
#include <malloc.h>
#include <pthread.h>
#include <vitmae/cli/inference_flags.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using vitmae_server::Route;

struct Args : vitmae::cli::InferenceArgs {
  std::vector<std::string> models;
  std::string host = "127.0.0.1", api_key;
  long port = 8080, max_batch = 16, batch_wait_ms = 5, max_body_mb = 32, max_images = 64, timeout_s = 30,
       http_threads = 16;
  long long max_pixels = 40'000'000;
};

vitmae::cli::CommandLine command_line(Args& a) {
  vitmae::cli::CommandLine cl(
      "vitmae-server",
      "usage: vitmae-server [--model [NAME=]DIR ...] [--port N] [--host ADDR] [--api-key KEY]\n"
      "                     [--dtype float32|bfloat16|int8] [--threads N] [--max-batch N] [--batch-wait-ms MS]\n"
      "Serves models over HTTP: POST /v1/embeddings, /v1/classify and /v1/reconstruct, GET /v1/models,\n"
      "/health and /metrics (Prometheus), and a web page at /. Concurrent requests for one model run\n"
      "as one forward pass. The first line it prints is 'listening on http://HOST:PORT'; SIGINT or\n"
      "SIGTERM stops it after the requests in flight.\n");
  cl.section("The models and how they run");
  cl.list("--model", "[NAME=]DIR", a.models,
          "a checkpoint folder, repeatable: a ViTMAE (embeddings, reconstructions), a ViTMAE\n"
          "encoder (embeddings) or a ViT classifier (classification), named NAME or by the\n"
          "folder (default: the bundled photo-mae, examples/model, and the Fashion-MNIST\nfashion-mnist-mae and "
          "fashion-mnist-classifier)");
  vitmae::cli::choice(cl, "--dtype", "T", a.dtype, {"float32", "bfloat16", "int8"},
                      "float32, bfloat16 or int8 (default float32): the precision of the products;\n"
                      "bfloat16 and int8: the Linear layers and the patch projection in bfloat16\n"
                      "(float32 sums; AVX512_BF16 or AMX, elsewhere float32, saying so) or int8,\n"
                      "each about half the time");
  cl.integer("--threads", "N", a.threads, 1, 1024, "threads for the matrix products (default: all cores)");
  cl.integer("--max-batch", "N", a.max_batch, 1, 4096, "images per forward pass at most (default 16)");
  cl.integer("--batch-wait-ms", "MS", a.batch_wait_ms, 0, 10000,
             "how long a request waits for others to share its forward (default 5)");
  cl.section("HTTP");
  cl.integer("--port", "N", a.port, 0, 65535, "the port (default 8080; 0: a free one, printed)");
  cl.text("--host", "ADDR", a.host, "the address to bind (default 127.0.0.1: this machine only; 0.0.0.0: all)");
  cl.text("--api-key", "KEY", a.api_key,
          "require 'Authorization: Bearer KEY' on /v1/* and /metrics (default: none; the page\n"
          "asks for it)");
  cl.integer("--max-body-mb", "MB", a.max_body_mb, 1, 4096, "larger request bodies get 413 unread (default 32)");
  cl.integer("--max-pixels", "N", a.max_pixels, 1, 1LL << 40,
             "images whose header declares more pixels get 413 undecoded (default 40000000)");
  cl.integer("--max-images", "N", a.max_images, 1, 100000, "images per request at most (default 64)");
  cl.integer("--timeout-s", "S", a.timeout_s, 1, 3600, "read and write timeout per request (default 30)");
  cl.integer("--http-threads", "N", a.http_threads, 1, 1024, "connections served at once (default 16)");
  return cl;
}

/// An HTTP error: the status and the message of its {"error": ...} body.
struct HttpError : std::runtime_error {
  int status;
  HttpError(int s, const std::string& message) : std::runtime_error(message), status(s) {}
};

void send_error(httplib::Response& res, int status, const std::string& message) {
  res.status = status;
  res.set_content(nlohmann::json{{"error", message}}.dump() + "\n", "application/json");
}

void send_json(httplib::Response& res, const nlohmann::json& j) {
  res.set_content(j.dump() + "\n", "application/json");
}

/// A request's parameters (query string, and the text parts of a multipart form) and images
/// (the file parts of a multipart form, or the whole body with an image content type).
struct Request {
  std::map<std::string, std::string> params;
  std::vector<std::pair<std::string, std::string>> images;  // (what errors call it, bytes)

  bool has(const std::string& k) const { return params.count(k) > 0; }
  std::string get(const std::string& k, const std::string& fallback = "") const {
    const auto it = params.find(k);
    return it == params.end() ? fallback : it->second;
  }
  double number(const std::string& k, double fallback) const {
    if (!has(k)) return fallback;
    const std::string& v = params.at(k);
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0' || !std::isfinite(x)) throw HttpError(400, k + " must be a number, got '" + v + "'");
    return x;
  }
  long long integer(const std::string& k, long long fallback, long long lo, long long hi) const {
    if (!has(k)) return fallback;
    const std::string& v = params.at(k);
    char* end = nullptr;
    errno = 0;
    const long long x = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || errno != 0 || x < lo || x > hi)
      throw HttpError(
          400, k + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got '" + v + "'");
    return x;
  }
};

std::string base64(const std::string& in) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  for (size_t i = 0; i < in.size(); i += 3) {
    const size_t n = std::min<size_t>(3, in.size() - i);
    std::uint32_t v = 0;
    for (size_t j = 0; j < 3; ++j) v = v << 8 | (j < n ? static_cast<unsigned char>(in[i + j]) : 0u);
    for (size_t j = 0; j < 4; ++j) out += j <= n ? k[(v >> (18 - 6 * j)) & 63] : '=';
  }
  return out;
}

/// The path a page file is served at: "/" for index.html, else its own.
std::string page_route(const vitmae_server::PageFile& f) { return std::string(f.path) == "/index.html" ? "/" : f.path; }

bool is_image_content_type(const std::string& type) {
  const std::string t = type.substr(0, type.find(';'));
  return t.rfind("image/", 0) == 0 || t == "application/octet-stream";
}

Request read_request(const httplib::Request& req, long max_images) {
  Request r;
  for (const auto& [k, v] : req.params) r.params[k] = v;
  const std::string type = req.get_header_value("Content-Type");
  if (req.is_multipart_form_data()) {
    for (const auto& [name, part] : req.files) {
      if (!part.filename.empty() || name == "image" || name == "images" || name == "file")
        r.images.emplace_back("upload '" + (part.filename.empty() ? name : part.filename) + "'", part.content);
      else r.params[name] = part.content;
    }
  } else if (is_image_content_type(type)) {
    r.images.emplace_back("the request body", req.body);
  } else {
    throw HttpError(415,
                    "expected an image body (Content-Type image/png, image/jpeg, ... or "
                    "application/octet-stream) or a multipart form with image files, got Content-Type '" +
                        type + "'");
  }
  if (r.images.empty()) throw HttpError(400, "the form has no image (send a file part, e.g. curl -F image=@photo.png)");
  if (static_cast<long>(r.images.size()) > max_images)
    throw HttpError(413, std::to_string(r.images.size()) + " images in one request, more than --max-images " +
                             std::to_string(max_images));
  return r;
}

class Server {
 public:
  Server(const Args& a, std::vector<std::unique_ptr<vitmae_server::ServedModel>> models)
      : a_(a),
        models_(std::move(models)),
        batcher_(static_cast<size_t>(a.max_batch), std::chrono::milliseconds(a.batch_wait_ms), metrics_) {}

  httplib::Server& http() { return http_; }
  void stop_batching() { batcher_.stop(); }

  void routes() {
    const long threads = a_.http_threads;
    http_.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
    http_.set_payload_max_length(static_cast<size_t>(a_.max_body_mb) << 20);
    http_.set_read_timeout(a_.timeout_s);
    http_.set_write_timeout(a_.timeout_s);
    http_.set_keep_alive_timeout(5);
    http_.set_tcp_nodelay(true);           // else Nagle and delayed ACKs hold each answer's last segment 40 ms
    http_.set_keep_alive_max_count(1000);  // cpp-httplib's 5 makes a client reconnect every 5 requests
    http_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (a_.api_key.empty() || !(req.path.rfind("/v1/", 0) == 0 || req.path == "/metrics"))
        return httplib::Server::HandlerResponse::Unhandled;
      if (req.get_header_value("Authorization") == "Bearer " + a_.api_key)
        return httplib::Server::HandlerResponse::Unhandled;
      res.set_header("WWW-Authenticate", "Bearer");
      send_error(res, 401, "this server requires an API key: send 'Authorization: Bearer KEY'");
      return httplib::Server::HandlerResponse::Handled;
    });
    http_.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      if (res.status == 404) send_error(res, 404, "no such path: " + req.path);
      else if (res.status == 413) send_error(res, 413, "the request body is larger than --max-body-mb");
      else if (res.status == 400) send_error(res, 400, "malformed HTTP request");
      else if (res.status == 408) send_error(res, 408, "the request was not sent in time (--timeout-s)");
      else send_error(res, res.status, "HTTP error " + std::to_string(res.status));
    });
    http_.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      metrics_.request(route_label(req.path), res.status);
    });
    for (const vitmae_server::PageFile& f : vitmae_server::kPage) {
      http_.Get(page_route(f), [&f](const httplib::Request&, httplib::Response& res) {
        res.set_content(reinterpret_cast<const char*>(f.data), f.size, f.type);
        res.set_header("Cache-Control", "no-cache");
      });
    }
    http_.Get("/health", [](const httplib::Request&, httplib::Response& res) { send_json(res, {{"status", "ok"}}); });
    http_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics_.render(), "text/plain; version=0.0.4");
    });
    http_.Get("/v1/models", api("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
                nlohmann::json list = nlohmann::json::array();
                for (const auto& m : models_) list.push_back(m->describe());
                send_json(res, {{"models", list}});
              }));
    http_.Post("/v1/embeddings", api("/v1/embeddings", [this](const httplib::Request& req, httplib::Response& res) {
                 embeddings(req, res);
               }));
    http_.Post("/v1/classify", api("/v1/classify", [this](const httplib::Request& req, httplib::Response& res) {
                 classify(req, res);
               }));
    http_.Post("/v1/reconstruct", api("/v1/reconstruct", [this](const httplib::Request& req, httplib::Response& res) {
                 reconstruct(req, res);
               }));
  }

 private:
  static std::string route_label(const std::string& path) {
    for (const char* r : {"/v1/embeddings", "/v1/classify", "/v1/reconstruct", "/v1/models", "/health", "/metrics"})
      if (path == r) return r;
    for (const vitmae_server::PageFile& f : vitmae_server::kPage)
      if (path == page_route(f)) return "page";
    return "other";
  }

  // An API handler: errors become {"error": ...} with their status, and the time is measured.
  template <class F>
  httplib::Server::Handler api(const char* route, F f) {
    return [this, route, f](const httplib::Request& req, httplib::Response& res) {
      const auto t0 = std::chrono::steady_clock::now();
      try {
        f(req, res);
      } catch (const HttpError& e) {
        send_error(res, e.status, e.what());
      } catch (const vitmae::Error& e) {  // the images or parameters the request sent
        send_error(res, 400, e.what());
      } catch (const std::bad_alloc&) {
        send_error(res, 503, "out of memory");
      } catch (const std::exception& e) {
        send_error(res, 500, e.what());
      }
      metrics_.latency(route, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    };
  }

  // The model a request names with ?model=, or the only one that serves `route`.
  const vitmae_server::ServedModel& model_for(const Request& r, Route route) const {
    const std::string path = vitmae_server::route_path(route);
    std::string names;
    for (const auto& m : models_) names += (names.empty() ? "" : ", ") + m->name;
    if (r.has("model")) {
      for (const auto& m : models_)
        if (m->name == r.get("model")) {
          if (!m->serves(route))
            throw HttpError(400, "model '" + m->name + "' (" + m->kind + ") does not serve " + path);
          return *m;
        }
      throw HttpError(404, "no model named '" + r.get("model") + "' (loaded: " + names + ")");
    }
    std::vector<const vitmae_server::ServedModel*> can;
    for (const auto& m : models_)
      if (m->serves(route)) can.push_back(m.get());
    if (can.empty()) throw HttpError(404, "no loaded model serves " + path + " (loaded: " + names + ")");
    if (can.size() > 1) {
      std::string which;
      for (const auto* m : can) which += (which.empty() ? "" : ", ") + m->name;
      throw HttpError(400, "several models serve " + path + ": name one with ?model= (" + which + ")");
    }
    return *can[0];
  }

  // Decodes and preprocesses a request's images for `m`; an image whose header declares more
  // than --max-pixels pixels is refused before it is decoded.
  std::vector<vitmae_server::Upload> uploads(const Request& r, const vitmae_server::ServedModel& m) const {
    std::vector<vitmae_server::Upload> out;
    for (const auto& [what, bytes] : r.images) {
      const std::vector<unsigned char> data(bytes.begin(), bytes.end());
      const vitmae::io::DeclaredSize d = vitmae::io::declared_image_size(data);
      if (d.width * d.height > a_.max_pixels)
        throw HttpError(413, what + ": the image is " + std::to_string(d.width) + "x" + std::to_string(d.height) +
                                 ", more pixels than --max-pixels " + std::to_string(a_.max_pixels));
      out.push_back(m.prepare(vitmae::io::decode_image(data, what, a_.max_pixels)));
    }
    return out;
  }

  // Decodes a request's images for `m` (announced to the batcher meanwhile, so that a batch
  // forming waits for them) and runs them under `key`, with one row of `noise` per image.
  vitmae_server::Job run_job(const Request& r, const vitmae_server::ServedModel& m, vitmae_server::BatchKey key,
                             vitmae::Matrix<float> noise) {
    vitmae_server::Batcher::Preparing preparing(batcher_, &m);
    vitmae_server::Job job;
    job.model = &m;
    job.key = key;
    job.images = uploads(r, m);
    job.noise = std::move(noise);
    batcher_.run(job, preparing);
    return job;
  }

  // Each request's noise: `seed` drives one stream over its images in order, as the programs do.
  static vitmae::Matrix<float> seeded_noise(size_t images, vitmae::Index patches, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    return vitmae::ops::uniform_noise<float>(static_cast<vitmae::Index>(images), patches, rng);
  }

  void embeddings(const httplib::Request& req, httplib::Response& res) {
    const Request r = read_request(req, a_.max_images);
    const vitmae_server::ServedModel& m = model_for(r, Route::embeddings);
    const std::string pooling = r.get("pooling", "cls");
    if (pooling != "cls" && pooling != "mean")
      throw HttpError(400, "pooling must be cls or mean, got '" + pooling + "'");
    const auto seed = static_cast<std::uint64_t>(r.integer("seed", 0, 0, INT64_MAX));
    const vitmae_server::Job job =
        run_job(r, m, {Route::embeddings, 0.0}, seeded_noise(r.images.size(), m.num_patches(), seed));
    nlohmann::json data = nlohmann::json::array();
    for (size_t i = 0; i < job.results.size(); ++i) {
      const vitmae::RowVector<float>& e = pooling == "cls" ? job.results[i].cls : job.results[i].mean;
      data.push_back({{"index", i}, {"embedding", std::vector<float>(e.data(), e.data() + e.size())}});
    }
    send_json(res, {{"model", m.name}, {"pooling", pooling}, {"data", data}});
  }

  void classify(const httplib::Request& req, httplib::Response& res) {
    const Request r = read_request(req, a_.max_images);
    const vitmae_server::ServedModel& m = model_for(r, Route::classify);
    const long top_k = static_cast<long>(r.integer("top_k", 5, 1, 1000000));
    const vitmae_server::Job job =
        run_job(r, m, {Route::classify, 0.0}, vitmae::Matrix<float>(static_cast<vitmae::Index>(r.images.size()), 0));
    vitmae::Matrix<float> logits(static_cast<vitmae::Index>(job.results.size()), job.results[0].logits.size());
    for (size_t i = 0; i < job.results.size(); ++i) logits.row(static_cast<vitmae::Index>(i)) = job.results[i].logits;
    nlohmann::json data = nlohmann::json::array();
    const auto tops = m.top_classes(logits, top_k);
    for (size_t i = 0; i < tops.size(); ++i) {
      nlohmann::json top = nlohmann::json::array();
      for (const vitmae::ClassScore& c : tops[i])
        top.push_back({{"index", c.index}, {"label", c.label}, {"prob", c.score}});
      data.push_back({{"index", i}, {"top", top}});
    }
    send_json(res, {{"model", m.name}, {"data", data}});
  }

  void reconstruct(const httplib::Request& req, httplib::Response& res) {
    const Request r = read_request(req, a_.max_images);
    const vitmae_server::ServedModel& m = model_for(r, Route::reconstruct);
    if (r.images.size() != 1)
      throw HttpError(400, "/v1/reconstruct takes one image, got " + std::to_string(r.images.size()));
    const std::string format = r.get("format", "png");
    if (format != "png" && format != "json") throw HttpError(400, "format must be png or json, got '" + format + "'");
    const vitmae::Index L = m.num_patches();
    double ratio = r.number("mask_ratio", m.config().mask_ratio);
    const auto seed = static_cast<std::uint64_t>(r.integer("seed", 0, 0, INT64_MAX));
    vitmae::Matrix<float> noise;
    if (r.has("mask")) {
      // A given mask, L characters '0' (seen) or '1' (hidden), patches in row-major order. It
      // becomes noise whose argsort keeps exactly the '0's, in patch order, with the mask ratio
      // that keeps as many.
      const std::string mask = r.get("mask");
      long seen = 0;
      noise.resize(1, L);
      if (static_cast<vitmae::Index>(mask.size()) != L || mask.find_first_not_of("01") != std::string::npos)
        throw HttpError(400, "mask must be " + std::to_string(L) + " characters 0 (seen) or 1 (hidden), one per patch");
      for (vitmae::Index l = 0; l < L; ++l) {
        seen += mask[static_cast<size_t>(l)] == '0';
        noise(0, l) = (mask[static_cast<size_t>(l)] == '1' ? 1.0f : 0.0f) + 0.5f * static_cast<float>(l + 1) / (L + 1);
      }
      if (seen == 0 || seen == L) throw HttpError(400, "mask must hide at least one patch and show at least one");
      ratio = 1.0 - (static_cast<double>(seen) + 0.5) / static_cast<double>(L);
    } else {
      if (!(ratio > 0 && ratio < 1))
        throw HttpError(400, "mask_ratio must be in (0, 1), got " + r.get("mask_ratio", std::to_string(ratio)));
      noise = seeded_noise(1, L, seed);
    }
    const vitmae_server::Job job = run_job(r, m, {Route::reconstruct, ratio}, std::move(noise));
    const vitmae_server::ImageResult& out = job.results[0];
    const auto rec = m.reconstruction(job.images[0], out);
    const std::string png = vitmae::io::encode_png(rec.panel, "the panel");
    std::string mask_text;
    for (vitmae::Index l = 0; l < out.mask.size(); ++l) mask_text += out.mask(l) != 0 ? '1' : '0';
    const vitmae::Index grid_w = job.images[0].resized.width / m.config().patch_size;
    if (format == "png") {
      res.set_header("X-Vitmae-Loss", std::to_string(rec.loss));
      res.set_header("X-Vitmae-Mean-Fill-Loss", std::to_string(rec.mean_fill_loss));
      res.set_header("X-Vitmae-Mask", mask_text);
      res.set_content(png, "image/png");
      return;
    }
    std::vector<int> mask(static_cast<size_t>(out.mask.size()));
    for (size_t l = 0; l < mask.size(); ++l) mask[l] = mask_text[l] == '1';
    send_json(res, {{"model", m.name},
                    {"loss", rec.loss},
                    {"mean_fill_loss", rec.mean_fill_loss},
                    {"mask_ratio", ratio},
                    {"seed", seed},
                    {"mask", mask},
                    {"grid", {L / grid_w, grid_w}},
                    {"width", rec.panel.width},
                    {"height", rec.panel.height},
                    {"panel_png", base64(png)}});
  }

  const Args& a_;
  std::vector<std::unique_ptr<vitmae_server::ServedModel>> models_;
  vitmae_server::Metrics metrics_;
  vitmae_server::Batcher batcher_;
  httplib::Server http_;
};

// --model values: [NAME=]DIR, NAME defaulting to the folder's name; names must differ.
std::vector<std::pair<std::string, std::string>> model_folders(const Args& a) {
  std::vector<std::string> specs = a.models;
  if (specs.empty())
    specs = {std::string("photo-mae=") + VITMAE_BUNDLED_MODEL,
             std::string("fashion-mnist-mae=") + VITMAE_BUNDLED_FMNIST_MAE,
             std::string("fashion-mnist-classifier=") + VITMAE_BUNDLED_FMNIST_CLASSIFIER};
  std::vector<std::pair<std::string, std::string>> out;
  for (const std::string& s : specs) {
    const size_t eq = s.find('=');
    std::string name, dir = s;
    if (eq != std::string::npos && !std::filesystem::exists(s)) {
      name = s.substr(0, eq);
      dir = s.substr(eq + 1);
    } else {
      name = std::filesystem::path(s).lexically_normal().filename().string();
      if (name.empty()) name = std::filesystem::path(s).lexically_normal().parent_path().filename().string();
    }
    if (name.empty() || name.find_first_of("/?&= ") != std::string::npos)
      throw vitmae::cli::UsageError("--model '" + s + "': a model's name must be non-empty, without / ? & = or spaces");
    for (const auto& [n, d] : out)
      if (n == name)
        throw vitmae::cli::UsageError("--model: two models named '" + name + "' (" + d + " and " + dir +
                                      "): name them with NAME=DIR");
    out.emplace_back(name, dir);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  vitmae::cli::CommandLine cl = command_line(a);
  return vitmae::cli::run_main("vitmae-server", cl.head().c_str(), [&] {
    cl.parse(argc, argv);
    a.dtype = vitmae::cli::usable_dtype("vitmae-server", a.dtype);
    const auto folders = model_folders(a);
    vitmae::cli::set_threads(a.threads);
    // SIGINT and SIGTERM are taken by one thread (sigwait), blocked in every other one, which
    // inherit this mask; a client gone mid-response must not kill the server (SIGPIPE).
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    std::signal(SIGPIPE, SIG_IGN);
    // glibc gives each thread that allocates an arena of its own: with --http-threads decoding
    // images, resident memory creeps up as each one's arena fills. Two arenas keep it flat (and
    // the batcher trims the heaps when idle).
    mallopt(M_ARENA_MAX, 2);

    std::vector<std::unique_ptr<vitmae_server::ServedModel>> models;
    for (const auto& [name, dir] : folders) {
      vitmae::cli::doing("loading the model " + dir);
      models.push_back(vitmae_server::ServedModel::load(name, dir, a.dtype));
      std::fprintf(stderr, "vitmae-server: model '%s': %s (%s, %s)\n", name.c_str(), dir.c_str(),
                   models.back()->kind.c_str(), a.dtype.c_str());
    }
    Server server(a, std::move(models));
    server.routes();
    httplib::Server& http = server.http();
    const int port = a.port == 0
                         ? http.bind_to_any_port(a.host)
                         : (http.bind_to_port(a.host, static_cast<int>(a.port)) ? static_cast<int>(a.port) : -1);
    vitmae::detail::require(port > 0, "vitmae-server: cannot listen on ", a.host, ":", a.port,
                            " (in use, or not an address of this machine)");
    std::printf("listening on http://%s:%d\n", a.host.c_str(), port);
    std::fflush(stdout);

    std::atomic<bool> finished{false};
    std::thread stopper([&] {
      int sig = 0;
      sigwait(&stop_signals, &sig);
      if (finished) return;
      std::fprintf(stderr, "vitmae-server: %s: finishing the requests in flight\n",
                   sig == SIGINT ? "SIGINT" : "SIGTERM");
      while (!http.is_running() && !finished) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      http.stop();
    });
    const bool ok = http.listen_after_bind();
    finished = true;
    server.stop_batching();
    if (stopper.joinable()) {
      pthread_kill(stopper.native_handle(), SIGTERM);  // wakes its sigwait when no signal came
      stopper.join();
    }
    vitmae::detail::require(ok, "vitmae-server: the server stopped on an error");
    std::fprintf(stderr, "vitmae-server: stopped\n");
  });
}
