// SPDX-License-Identifier: Apache-2.0
// ViTMAEConfig and ViTConfig (config.hpp, vit_config.hpp): HF's defaults and presets, config.json
// reading and writing, validation errors naming the key, and models too large for validate().
#include "test_util.hpp"

#include <fstream>

using vitmae::Config;
using json = nlohmann::json;

TEST_CASE("defaults are HF's ViTMAEConfig defaults") {
  const Config c;
  CHECK(c.hidden_size == 768);
  CHECK(c.num_hidden_layers == 12);
  CHECK(c.num_attention_heads == 12);
  CHECK(c.intermediate_size == 3072);
  CHECK(c.hidden_act == "gelu");
  CHECK(c.hidden_dropout_prob == 0.0);
  CHECK(c.attention_probs_dropout_prob == 0.0);
  CHECK(c.initializer_range == 0.02);
  CHECK(c.layer_norm_eps == 1e-12);
  CHECK(c.image_size == 224);
  CHECK(c.patch_size == 16);
  CHECK(c.num_channels == 3);
  CHECK(c.qkv_bias);
  CHECK(c.decoder_num_attention_heads == 16);
  CHECK(c.decoder_hidden_size == 512);
  CHECK(c.decoder_num_hidden_layers == 8);
  CHECK(c.decoder_intermediate_size == 2048);
  CHECK(c.mask_ratio == 0.75);
  CHECK_FALSE(c.norm_pix_loss);
  CHECK_NOTHROW(c.validate());
  CHECK(Config::from_json(json::object()).hidden_size == 768);  // missing keys take defaults
}

TEST_CASE("reads a hub config.json, ignoring unknown keys, writes it back") {
  const Config c = vitmae::load_config(test::data("hf/tiny_normpix_gelu_new/config.json"));
  CHECK(c.hidden_size == 64);
  CHECK(c.hidden_act == "gelu_new");
  CHECK(c.layer_norm_eps == 1e-6);
  CHECK_FALSE(c.qkv_bias);
  CHECK(c.mask_ratio == 0.6);
  CHECK(c.norm_pix_loss);
  json j = c.to_json();
  j["some_future_key"] = {1, 2, 3};
  const Config back = Config::from_json(j);
  CHECK(back.to_json() == c.to_json());
  CHECK(j["model_type"] == "vit_mae");
  CHECK(j["architectures"][0] == "ViTMAEForPreTraining");

  const std::string dir = test::tmp_dir("config_roundtrip");
  vitmae::io::write_file_atomic(dir + "/config.json", c.to_json().dump(2));
  CHECK(vitmae::load_config(dir + "/config.json").to_json() == c.to_json());
}

TEST_CASE("invalid values and wrong JSON types are clear errors") {
  auto with = [](const char* key, json v) {
    json j = json::object();
    j[key] = std::move(v);
    return j;
  };
  CHECK_THROWS_WITH_AS(Config::from_json(with("hidden_size", 100)),
                       doctest::Contains("'hidden_size' 100 is not a multiple of 'num_attention_heads' 12"),
                       vitmae::Error);
  CHECK_THROWS_WITH_AS(
      Config::from_json(with("decoder_num_attention_heads", 7)),
      doctest::Contains("'decoder_hidden_size' 512 is not a multiple of 'decoder_num_attention_heads' 7"),
      vitmae::Error);
  CHECK_THROWS_WITH_AS(Config::from_json(with("image_size", 225)),
                       doctest::Contains("'image_size' 225 is not a multiple of 'patch_size' 16"), vitmae::Error);
  CHECK_THROWS_WITH_AS(Config::from_json(with("patch_size", 448)),
                       doctest::Contains("'patch_size' 448 is larger than 'image_size' 224"), vitmae::Error);
  CHECK_THROWS_WITH_AS(Config::from_json(with("mask_ratio", 1.0)),
                       doctest::Contains("'mask_ratio' must be in [0, 1), got 1"), vitmae::Error);
  CHECK_THROWS_WITH_AS(Config::from_json(with("mask_ratio", -0.1)), doctest::Contains("'mask_ratio' must be in [0, 1)"),
                       vitmae::Error);
  CHECK_THROWS_WITH_AS(Config::from_json(with("hidden_act", "gelu_fancy")),
                       doctest::Contains("unknown activation 'gelu_fancy'"), vitmae::Error);
  CHECK_THROWS_WITH_AS(Config::from_json(with("hidden_size", "768")),
                       doctest::Contains("'hidden_size' must be an integer, got \"768\""), vitmae::Error);
  CHECK_THROWS_WITH_AS(Config::from_json(with("hidden_size", 76.5)),
                       doctest::Contains("'hidden_size' must be an integer"), vitmae::Error);
  CHECK_THROWS_WITH_AS(Config::from_json(with("qkv_bias", 1)), doctest::Contains("'qkv_bias' must be true or false"),
                       vitmae::Error);
  CHECK_THROWS_WITH_AS(Config::from_json(with("mask_ratio", "0.75")),
                       doctest::Contains("'mask_ratio' must be a number"), vitmae::Error);
  CHECK_THROWS_WITH_AS(Config::from_json(with("hidden_act", 3)), doctest::Contains("'hidden_act' must be a string"),
                       vitmae::Error);
  CHECK_THROWS_WITH_AS(Config::from_json(with("num_attention_heads", 0)),
                       doctest::Contains("'num_attention_heads' must be positive, got 0"), vitmae::Error);
  CHECK_THROWS_WITH_AS(Config::from_json(with("patch_size", -16)), doctest::Contains("'patch_size' must be positive"),
                       vitmae::Error);
  CHECK_THROWS_WITH_AS(Config::from_json(with("num_hidden_layers", -1)),
                       doctest::Contains("'num_hidden_layers' must be >= 0"), vitmae::Error);
  CHECK_THROWS_WITH_AS(Config::from_json(json::array()), doctest::Contains("expected a JSON object"), vitmae::Error);
  CHECK(Config::from_json(with("image_size", 224.0)).image_size == 224);  // integral floats are integers
}

TEST_CASE("config files: missing and malformed files name the file") {
  CHECK_THROWS_WITH_AS(vitmae::load_config("/nonexistent/config.json"),
                       doctest::Contains("/nonexistent/config.json: cannot open"), vitmae::Error);
  const std::string dir = test::tmp_dir("config_bad");
  std::ofstream(dir + "/config.json") << "{\"hidden_size\": 64,";
  CHECK_THROWS_WITH_AS(vitmae::load_config(dir + "/config.json"), doctest::Contains("config.json: not valid JSON"),
                       vitmae::Error);
}

TEST_CASE("presets have the MAE release's sizes") {
  const auto b = vitmae::Config::preset("mae-vit-base");
  CHECK(b.hidden_size == 768);
  CHECK(b.layer_norm_eps == 1e-6);
  const auto l = vitmae::Config::preset("mae-vit-large");
  CHECK(l.hidden_size == 1024);
  CHECK(l.num_hidden_layers == 24);
  CHECK(l.num_attention_heads == 16);
  const auto h = vitmae::Config::preset("mae-vit-huge");
  CHECK(h.hidden_size == 1280);
  CHECK(h.num_hidden_layers == 32);
  CHECK(h.patch_size == 14);
  CHECK(h.decoder_hidden_size == 512);
  CHECK_THROWS_WITH_AS(vitmae::Config::preset("mae-vit-giant"), doctest::Contains("unknown name 'mae-vit-giant'"),
                       vitmae::Error);
}

TEST_CASE("a config whose model is too large is refused by validate(), naming the sizes") {
  vitmae::Config c;  // the issue's: image_size 65536, patch 1
  c.image_size = 65536;
  c.patch_size = 1;
  double count = 0;
  for (const auto& t : vitmae::tensor_specs<vitmae::ForPreTraining<float>>(c)) {  // allocates nothing
    double n = 1;
    for (auto d : t.shape) n *= static_cast<double>(d);
    count += n;
  }
  char expected_count[64];
  std::snprintf(expected_count, sizeof expected_count, "%.0f", count);
  CHECK(std::string(expected_count) == "5497668815875");
  CHECK_THROWS_WITH_AS(
      c.validate("config.json"),
      "vitmae: config.json: the model would have 5497668815875 parameters (21990.7 GB as float32), more than the "
      "limit of 4000000000: check image_size 65536 / patch_size 1 (4294967296 patches), hidden_size 768 x "
      "num_hidden_layers 12, decoder_hidden_size 512 x decoder_num_hidden_layers 8",
      vitmae::Error);
  // Just below the limit passes; MAE's largest is far below.
  vitmae::Config huge = vitmae::Config::preset("mae-vit-huge");
  CHECK_NOTHROW(huge.validate());
  huge.num_hidden_layers = 5000;
  CHECK_THROWS_WITH_AS(huge.validate(), doctest::Contains("more than the limit of 4000000000"), vitmae::Error);
}

TEST_CASE("ViTConfig: HF's fields and defaults, id2label rules, errors naming the key") {
  const vitmae::ViTConfig d;
  CHECK(d.hidden_size == 768);
  CHECK(d.encoder_stride == 16);
  CHECK(d.num_labels() == 2);
  CHECK(d.id2label[1] == "LABEL_1");
  const auto c = vitmae::load_vit_config(test::data("hf_vit/cls_tiny/config.json"));
  CHECK(c.num_labels() == 10);
  CHECK(c.id2label[9] == "Ankle boot");
  CHECK(c.label_id("Sneaker") == 7);
  const auto j = c.to_json();
  CHECK(j["model_type"] == "vit");
  CHECK(j["architectures"][0] == "ViTForImageClassification");
  CHECK(j["label2id"]["Dress"] == 3);
  CHECK(j["id2label"]["3"] == "Dress");
  const auto back = vitmae::ViTConfig::from_json(j);
  CHECK(back.id2label == c.id2label);
  CHECK(back.hidden_size == c.hidden_size);
  CHECK(vitmae::ViTConfig::from_json(nlohmann::json{{"num_labels", 5}}).num_labels() == 5);
  CHECK_THROWS_WITH_AS(vitmae::ViTConfig::from_json(nlohmann::json{{"id2label", {{"0", "a"}, {"2", "b"}}}}, "x.json"),
                       doctest::Contains("x.json: 'id2label' key '2' is not a class index in 0 ... 1"), vitmae::Error);
  CHECK_THROWS_WITH_AS(vitmae::ViTConfig::from_json(nlohmann::json{{"problem_type", "ranking"}}, "x.json"),
                       doctest::Contains("x.json: 'problem_type' must be null"), vitmae::Error);
  CHECK_THROWS_WITH_AS(
      vitmae::ViTConfig::from_json(nlohmann::json{{"hidden_size", 10}, {"num_attention_heads", 3}}, "x.json"),
      doctest::Contains("'hidden_size' 10 is not a multiple of 'num_attention_heads' 3"), vitmae::Error);
  CHECK_THROWS_WITH_AS(c.label_id("Hat"), doctest::Contains("label 'Hat' is not one of the model's 10 labels"),
                       vitmae::Error);
}
