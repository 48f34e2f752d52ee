// SPDX-License-Identifier: Apache-2.0
// ViTMAEConfig: HF defaults, config.json reading and writing, validation errors.
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
