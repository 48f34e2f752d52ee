// SPDX-License-Identifier: Apache-2.0
// vitmae-server's dynamic batching: the images of requests for the same model and batch key
// that arrive within `wait` of each other run as one forward of at most `max_batch` images, on
// one worker thread (the forward itself uses every --threads core).
//
// While the worker runs a forward, the requests that arrive queue up and make the next batch:
// under load, batches form without waiting. A request that finds the worker idle waits up to
// `wait` only while other requests for its model are still being decoded (announced by
// a Preparing guard), so a lone client is never delayed.
//
// Fairness: the next batch goes to the request that has waited longest since it was last served,
// and is filled round-robin, one image per request in turn, from the requests that share its
// model and key. A request of many images is cut across batches, and a request that arrives
// behind it waits for at most the batch in flight, never for the whole of it.
#pragma once

#include "metrics.hpp"
#include "models.hpp"

#include <malloc.h>
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace vitmae_server {

/// One request's images for one model, with their masking noise (one row per image).
struct Job {
  const ServedModel* model = nullptr;
  BatchKey key;
  std::vector<Upload> images;
  vitmae::Matrix<float> noise;
  std::vector<ImageResult> results;  // filled by the batcher, in image order
  std::string error;                 // set when a forward failed

  // The batcher's bookkeeping.
  std::size_t next = 0, done = 0;
  std::chrono::steady_clock::time_point last_served;
  bool served = false;
};

class Batcher {
 public:
  Batcher(std::size_t max_batch, std::chrono::microseconds wait, Metrics& metrics)
      : max_batch_(max_batch), wait_(wait), metrics_(metrics), worker_([this] { loop(); }) {}
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;
  ~Batcher() { stop(); }

  /// A request for `model` being decoded, from its handler's start to its run() (or its error).
  class Preparing {
   public:
    Preparing(Batcher& b, const ServedModel* model) : b_(b), model_(model) {
      std::lock_guard<std::mutex> lock(b_.m_);
      ++b_.preparing_[model_];
    }
    Preparing(const Preparing&) = delete;
    Preparing& operator=(const Preparing&) = delete;
    ~Preparing() {
      {
        std::lock_guard<std::mutex> lock(b_.m_);
        if (!done_) --b_.preparing_[model_];
      }
      b_.work_.notify_all();
    }

   private:
    friend class Batcher;
    Batcher& b_;
    const ServedModel* model_;
    bool done_ = false;
  };

  /// Runs `job`'s images in batches with the others' and returns when all are done; `p`
  /// announced it while it was being prepared.
  /// @throws std::runtime_error with the forward's message when one failed.
  void run(Job& job, Preparing& p) {
    job.results.assign(job.images.size(), {});
    std::unique_lock<std::mutex> lock(m_);
    if (!p.done_) --preparing_[p.model_];
    p.done_ = true;
    if (job.images.empty()) return;
    job.last_served = std::chrono::steady_clock::now();
    jobs_.push_back(&job);
    depth(job.model->name);
    work_.notify_one();
    done_.wait(lock, [&] { return job.done == job.images.size(); });
    if (!job.error.empty()) throw std::runtime_error(job.error);
  }

  /// Finishes the jobs queued, then stops the worker.
  void stop() {
    {
      std::lock_guard<std::mutex> lock(m_);
      stopping_ = true;
    }
    work_.notify_all();
    if (worker_.joinable()) worker_.join();
  }

 private:
  // Images of `model` and `key` waiting to be handed out. Holds m_.
  std::size_t pending(const ServedModel* model, const BatchKey& key) const {
    std::size_t n = 0;
    for (const Job* j : jobs_)
      if (j->model == model && j->key == key) n += j->images.size() - j->next;
    return n;
  }

  void depth(const std::string& model) {  // holds m_
    std::size_t n = 0;
    for (const Job* j : jobs_)
      if (j->model->name == model) n += j->images.size() - j->next;
    metrics_.queue_depth(model, n);
  }

  void loop() {
    std::unique_lock<std::mutex> lock(m_);
    bool trimmed = true;
    for (;;) {
      // Idle for kTrimAfter after a batch: the freed request buffers go back to the system, so
      // resident memory between bursts does not depend on how the last one fragmented the heap.
      if (!work_.wait_for(lock, kTrimAfter, [&] { return stopping_ || !jobs_.empty(); }) && !trimmed) {
        lock.unlock();
        malloc_trim(0);
        lock.lock();
        trimmed = true;
        continue;
      }
      if (jobs_.empty() && !stopping_) continue;
      if (jobs_.empty()) return;  // stopping, nothing left
      trimmed = false;
      const auto by_wait = [](const Job* a, const Job* b) { return a->last_served < b->last_served; };
      Job* first = *std::min_element(jobs_.begin(), jobs_.end(), by_wait);
      if (!first->served) {  // a new request waits up to `wait` for those being prepared
        const auto deadline = first->last_served + wait_;
        while (!stopping_ && pending(first->model, first->key) < max_batch_ && preparing_[first->model] > 0 &&
               std::chrono::steady_clock::now() < deadline)
          work_.wait_until(lock, deadline);
      }
      std::vector<Job*> group;
      for (Job* j : jobs_)
        if (j->model == first->model && j->key == first->key) group.push_back(j);
      std::stable_sort(group.begin(), group.end(), by_wait);
      std::vector<std::pair<Job*, std::size_t>> items;
      for (bool more = true; more && items.size() < max_batch_;) {
        more = false;
        for (Job* j : group)
          if (j->next < j->images.size() && items.size() < max_batch_) {
            items.emplace_back(j, j->next++);
            more = true;
          }
      }
      const auto now = std::chrono::steady_clock::now();
      for (Job* j : group) {
        j->last_served = now;
        j->served = true;
      }
      jobs_.erase(std::remove_if(jobs_.begin(), jobs_.end(), [](const Job* j) { return j->next == j->images.size(); }),
                  jobs_.end());
      depth(first->model->name);
      lock.unlock();

      std::vector<const Upload*> images;
      vitmae::Matrix<float> noise(static_cast<vitmae::Index>(items.size()), first->noise.cols());
      for (std::size_t i = 0; i < items.size(); ++i) {
        images.push_back(&items[i].first->images[items[i].second]);
        noise.row(static_cast<vitmae::Index>(i)) =
            items[i].first->noise.row(static_cast<vitmae::Index>(items[i].second));
      }
      std::vector<ImageResult> results;
      std::string error;
      try {
        results = first->model->run(first->key, images, noise);
        metrics_.batch(first->model->name, items.size());
      } catch (const std::bad_alloc&) {
        error = "out of memory running a batch of " + std::to_string(items.size()) + " images";
      } catch (const std::exception& e) {
        error = e.what();
      }

      lock.lock();
      for (std::size_t i = 0; i < items.size(); ++i) {
        Job* j = items[i].first;
        if (error.empty()) j->results[items[i].second] = std::move(results[i]);
        else j->error = error;
        ++j->done;
      }
      done_.notify_all();
    }
  }

  static constexpr std::chrono::milliseconds kTrimAfter{200};
  const std::size_t max_batch_;
  const std::chrono::microseconds wait_;
  Metrics& metrics_;
  std::mutex m_;
  std::condition_variable work_, done_;
  std::vector<Job*> jobs_;                       // jobs with images not yet handed out
  std::map<const ServedModel*, int> preparing_;  // requests being decoded, by model
  bool stopping_ = false;
  std::thread worker_;  // last: it starts once the rest is built
};

}  // namespace vitmae_server
