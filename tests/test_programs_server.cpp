// SPDX-License-Identifier: Apache-2.0
// vitmae-server, started on an ephemeral loopback port: every route's results against the
// library's own calls on the same images, its metrics, and batching of concurrent requests. The
// hostile requests are in test_server_hostile.cpp.
#ifdef VITMAE_SERVER_EXE

#include <doctest/doctest.h>

#include <random>
#include <string>
#include <thread>
#include <vector>

#include "program_util.hpp"
#include "server_util.hpp"
#include "vitmae/images/pipelines.hpp"
#include "vitmae/images/visualize.hpp"
#include "vitmae/vitmae.hpp"

using namespace server_test;

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
        REQUIRE(static_cast<vitmae::Index>(D) == same.size());
        CHECK(test::allclose(e.data(), same.data(), same.size(), 0.0, 0.0).max_abs < 1e-5);
        CHECK(test::allclose(e.data(), one.data(), one.size(), 0.0, 0.0).max_abs < 1e-5);
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
    const int S = static_cast<int>(model.config().image_size), G = S / static_cast<int>(model.config().patch_size);
    const size_t L = static_cast<size_t>(G) * G;
    layout.scale = vitmae::PanelLayout::scale_for(S, S);
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
    CHECK(j["grid"] == nlohmann::json{G, G});
    const auto mask = j["mask"].get<std::vector<int>>();
    REQUIRE(mask.size() == L);
    int hidden = 0;
    for (size_t l = 0; l < L; ++l) {
      CHECK(mask[l] == static_cast<int>(out.mask(0, static_cast<vitmae::Index>(l))));
      hidden += mask[l];
    }
    CHECK(hidden == static_cast<int>(L) - static_cast<int>(static_cast<double>(L) * (1 - 0.6)));  // HF's len_keep
    const vitmae::io::Image8 got = decode_png(base64_decode(j["panel_png"].get<std::string>()));
    CHECK(got.width == panel.width);
    CHECK(got.height == panel.height);
    // The same pixels up to one step of a few: the server is built at -O3, this test at -O1, and
    // g++ may fuse a product and a sum into one FMA at -O3 (its -ffp-contract=fast), which moves
    // the last bit of some reconstructed values and so, now and then, a pixel's rounding.
    REQUIRE(got.data.size() == panel.data.size());
    size_t moved = 0;
    int furthest = 0;
    for (size_t k = 0; k < got.data.size(); ++k) {
      const int step = std::abs(int(got.data[k]) - int(panel.data[k]));
      moved += step != 0;
      furthest = std::max(furthest, step);
    }
    CAPTURE(moved);
    CHECK(furthest <= 1);
    CHECK(moved * 10000 <= got.data.size());  // at most 0.01% of the values (4 of 610,176 seen)

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
    std::string given(L, '1');
    for (size_t l = 0; l < L; l += 3) given[l] = '0';
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
    // A request is counted once its answer is written (cpp-httplib's logger): a /metrics on a new
    // connection may come first by a hair, so it is read again until the counts are in (2 s).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    auto m = cli.Get("/metrics");
    REQUIRE(m);
    while (m->body.find("vitmae_requests_total{route=\"/v1/embeddings\",status=\"404\"} 1\n") == std::string::npos &&
           std::chrono::steady_clock::now() < deadline) {
      m = cli.Get("/metrics");
      REQUIRE(m);
    }
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
    REQUIRE(static_cast<vitmae::Index>(e.size()) == alone.cls.cols());
    const vitmae::RowVector<float> one = alone.cls.row(0);
    worst = std::max(worst, test::allclose(e.data(), one.data(), one.size(), 0.0, 0.0).max_abs);
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

TEST_CASE("vitmae-server: an encoder-only ViTMAEModel folder serves embeddings, not reconstructions") {
  const std::string dir = test::tmp_dir("server_encoder") + "/encoder";
  const auto model = vitmae::ViTMAEModel<float>::from_pretrained(VITMAE_BUNDLED_MODEL);
  model.save_pretrained(dir);
  test::copy(std::string(VITMAE_BUNDLED_MODEL) + "/preprocessor_config.json", dir + "/preprocessor_config.json");
  ServerProcess server({"--model", dir, "--dtype", "int8"});
  httplib::Client cli = server.client();
  auto models = cli.Get("/v1/models");
  REQUIRE(models);
  const auto m = nlohmann::json::parse(models->body)["models"][0];
  CHECK(m["name"] == "encoder");  // named by its folder
  CHECK(m["kind"] == "mae-encoder");
  CHECK(m["dtype"] == "int8");
  CHECK(m["routes"] == nlohmann::json{"/v1/embeddings"});
  auto r = cli.Post("/v1/embeddings?pooling=mean", test::slurp(kPhoto), "image/png");
  REQUIRE(r);
  CHECK(r->status == 200);
  // int8 against the float32 library: the cosine of the mean features.
  auto f32 = vitmae::load_for_inference<vitmae::ViTMAEModel<float>>(VITMAE_BUNDLED_MODEL);
  f32.config.mask_ratio = 0;
  std::mt19937_64 rng(0);
  const auto ref = vitmae::image_features(f32, vitmae::ImageProcessor::for_checkpoint(VITMAE_BUNDLED_MODEL, f32.config),
                                          {kPhoto}, 1, rng);
  const auto e = nlohmann::json::parse(r->body)["data"][0]["embedding"].get<std::vector<float>>();
  const Eigen::Map<const vitmae::RowVector<float>> got(e.data(), static_cast<vitmae::Index>(e.size()));
  const double cosine = got.dot(ref.mean.row(0)) / (got.norm() * ref.mean.row(0).norm());
  MESSAGE("int8 server against the float32 library, cosine " << cosine);
  CHECK(cosine > 0.9999);  // measured 0.999998
  r = cli.Post("/v1/reconstruct", test::slurp(kPhoto), "image/png");
  REQUIRE(r);
  CHECK(r->status == 404);  // no loaded model has a decoder
  CHECK(error_of(r).find("no loaded model serves /v1/reconstruct") != std::string::npos);
  CHECK(server.stop() == 0);
}

#endif  // VITMAE_SERVER_EXE
