// SPDX-License-Identifier: Apache-2.0
// vitmae-server's /metrics, in Prometheus' text format (version 0.0.4): requests by route and
// status, request latency and batch size as histograms, queue depth, images run and images per
// second over the last ten seconds.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace vitmae_server {

class Metrics {
 public:
  /// A request answered, counted by route ("other" for a path that is no route) and status.
  void request(const std::string& route, int status) {
    std::lock_guard<std::mutex> lock(m_);
    ++requests_[{route, status}];
  }

  /// The time an API route took, from its handler's start to its response.
  void latency(const std::string& route, double seconds) {
    std::lock_guard<std::mutex> lock(m_);
    latency_.try_emplace(route, kLatencyBounds).first->second.observe(seconds);
  }

  /// A forward of `images` images of `model`.
  void batch(const std::string& model, std::size_t images) {
    std::lock_guard<std::mutex> lock(m_);
    batch_.try_emplace(model, kBatchBounds).first->second.observe(static_cast<double>(images));
    images_[model] += images;
    const auto now = std::chrono::steady_clock::now();
    recent_.emplace_back(now, images);
    forget(now);
  }

  /// Images waiting for a forward, by model.
  void queue_depth(const std::string& model, std::size_t images) {
    std::lock_guard<std::mutex> lock(m_);
    queue_[model] = images;
  }

  std::string render() {
    std::lock_guard<std::mutex> lock(m_);
    std::ostringstream o;
    o << "# HELP vitmae_requests_total HTTP requests answered, by route and status.\n"
         "# TYPE vitmae_requests_total counter\n";
    for (const auto& [k, n] : requests_)
      o << "vitmae_requests_total{route=\"" << k.first << "\",status=\"" << k.second << "\"} " << n << "\n";
    o << "# HELP vitmae_request_duration_seconds Time an API request took, by route.\n"
         "# TYPE vitmae_request_duration_seconds histogram\n";
    for (const auto& [route, h] : latency_) h.render(o, "vitmae_request_duration_seconds", "route", route);
    o << "# HELP vitmae_batch_size Images per forward pass, by model.\n"
         "# TYPE vitmae_batch_size histogram\n";
    for (const auto& [model, h] : batch_) h.render(o, "vitmae_batch_size", "model", model);
    o << "# HELP vitmae_queue_depth Images waiting for a forward pass, by model.\n"
         "# TYPE vitmae_queue_depth gauge\n";
    for (const auto& [model, n] : queue_) o << "vitmae_queue_depth{model=\"" << model << "\"} " << n << "\n";
    o << "# HELP vitmae_images_total Images run through a model.\n"
         "# TYPE vitmae_images_total counter\n";
    for (const auto& [model, n] : images_) o << "vitmae_images_total{model=\"" << model << "\"} " << n << "\n";
    const auto now = std::chrono::steady_clock::now();
    forget(now);
    std::size_t n = 0;
    for (const auto& r : recent_) n += r.second;
    o << "# HELP vitmae_images_per_second Images run per second over the last 10 seconds, all models.\n"
         "# TYPE vitmae_images_per_second gauge\n"
         "vitmae_images_per_second "
      << static_cast<double>(n) / kWindowSeconds << "\n";
    return o.str();
  }

 private:
  static constexpr double kWindowSeconds = 10;
  inline static const std::vector<double> kLatencyBounds{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  inline static const std::vector<double> kBatchBounds{1, 2, 4, 8, 16, 32, 64, 128};

  struct Histogram {
    std::vector<double> bounds;
    std::vector<std::uint64_t> counts;  // cumulative is computed when rendered
    double sum = 0;
    std::uint64_t count = 0;
    explicit Histogram(const std::vector<double>& b) : bounds(b), counts(b.size(), 0) {}
    void observe(double v) {
      for (std::size_t i = 0; i < bounds.size(); ++i)
        if (v <= bounds[i]) {
          ++counts[i];
          break;
        }
      sum += v;
      ++count;
    }
    void render(std::ostringstream& o, const std::string& metric, const std::string& label,
                const std::string& value) const {
      std::uint64_t cumulative = 0;
      for (std::size_t i = 0; i < bounds.size(); ++i) {
        cumulative += counts[i];
        o << metric << "_bucket{" << label << "=\"" << value << "\",le=\"" << bounds[i] << "\"} " << cumulative << "\n";
      }
      o << metric << "_bucket{" << label << "=\"" << value << "\",le=\"+Inf\"} " << count << "\n";
      o << metric << "_sum{" << label << "=\"" << value << "\"} " << sum << "\n";
      o << metric << "_count{" << label << "=\"" << value << "\"} " << count << "\n";
    }
  };

  void forget(std::chrono::steady_clock::time_point now) {
    while (!recent_.empty() && now - recent_.front().first > std::chrono::duration<double>(kWindowSeconds))
      recent_.pop_front();
  }

  std::mutex m_;
  std::map<std::pair<std::string, int>, std::uint64_t> requests_;
  std::map<std::string, Histogram> latency_, batch_;
  std::map<std::string, std::uint64_t> images_;
  std::map<std::string, std::size_t> queue_;
  std::deque<std::pair<std::chrono::steady_clock::time_point, std::size_t>> recent_;
};

}  // namespace vitmae_server
