// SPDX-License-Identifier: Apache-2.0
// ViTConfig: mirrors transformers.ViTConfig (configuration_vit.py) with the label fields every
// PretrainedConfig has (id2label, label2id, problem_type; num_labels follows id2label).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "vitmae/config.hpp"
#include "vitmae/error.hpp"

namespace vitmae {

struct ViTConfig : EncoderConfig {
  std::int64_t encoder_stride = 16;
  std::int64_t pooler_output_size = 0;  // 0 is HF's None (hidden_size); kept for the round trip
  std::string pooler_act = "tanh";
  /// id2label[i] names class i; num_labels() is its size (transformers' default: LABEL_0, LABEL_1).
  std::vector<std::string> id2label = default_labels(2);
  /// "" (HF's None: decided from num_labels and the labels' type), "regression",
  /// "single_label_classification" or "multi_label_classification".
  std::string problem_type;

  std::int64_t num_labels() const { return static_cast<std::int64_t>(id2label.size()); }

  /// transformers' names for n classes: LABEL_0 ... LABEL_{n-1}.
  static std::vector<std::string> default_labels(std::int64_t n) {
    std::vector<std::string> out;
    for (std::int64_t i = 0; i < n; ++i) out.push_back("LABEL_" + std::to_string(i));
    return out;
  }

  /// The class index of a label name. @throws vitmae::Error when no class has that name.
  std::int64_t label_id(const std::string& name) const {
    for (size_t i = 0; i < id2label.size(); ++i)
      if (id2label[i] == name) return static_cast<std::int64_t>(i);
    detail::fail("label '", name, "' is not one of the model's ", id2label.size(), " labels (id2label)");
  }

  /// Checks every field; @throws vitmae::Error naming the field, what was expected and what was found.
  void validate(const std::string& where = "config") const {
    validate_encoder(where);
    detail::require(encoder_stride > 0, where, ": 'encoder_stride' must be positive, got ", encoder_stride);
    detail::require(pooler_output_size >= 0, where, ": 'pooler_output_size' must be positive, got ",
                    pooler_output_size);
    detail::require(problem_type.empty() || problem_type == "regression" ||
                        problem_type == "single_label_classification" || problem_type == "multi_label_classification",
                    where, ": 'problem_type' must be null, \"regression\", \"single_label_classification\" or ",
                    "\"multi_label_classification\", got \"", problem_type, "\"");
    detail::require(num_labels() <= 1000000, where, ": ", num_labels(), " labels, more than the limit of 1000000");
    const long double h = static_cast<long double>(hidden_size);
    check_model_size(encoder_parameters() + (h + 1) * static_cast<long double>(num_labels()), where,
                     ", num_labels " + std::to_string(num_labels()));
  }

  /// Reads an HF config.json object (model_type "vit"). id2label's keys must be 0 ... n-1; without
  /// id2label, num_labels (when given) makes LABEL_i names, as transformers does. Unknown keys are
  /// ignored. @throws vitmae::Error on a wrong JSON type or an invalid value, naming the key.
  static ViTConfig from_json(const nlohmann::json& j, const std::string& where = "config.json") {
    detail::require(j.is_object(), where, ": expected a JSON object, got ", j.type_name());
    ViTConfig c;
    const detail::JsonFields f{j, where};
    c.read_encoder(f);
    f.get("encoder_stride", c.encoder_stride);
    if (auto it = j.find("pooler_output_size"); it != j.end() && !it->is_null())
      f.get("pooler_output_size", c.pooler_output_size);
    f.get("pooler_act", c.pooler_act);
    if (auto it = j.find("problem_type"); it != j.end() && !it->is_null()) f.get("problem_type", c.problem_type);
    if (auto it = j.find("id2label"); it != j.end() && !it->is_null()) {
      c.id2label = read_id2label(*it, where);
    } else if (auto n = j.find("num_labels"); n != j.end()) {
      std::int64_t count = 0;
      f.get("num_labels", count);
      detail::require(count >= 0 && count <= 1000000, where, ": 'num_labels' must be in [0, 1000000], got ", count);
      c.id2label = default_labels(count);
    }
    c.validate(where);
    return c;
  }

  /// The config.json object transformers writes for ViTForImageClassification (label2id is
  /// id2label inverted).
  nlohmann::json to_json(const std::string& architecture = "ViTForImageClassification",
                         const std::string& torch_dtype = "float32") const {
    nlohmann::json j;
    j["architectures"] = {architecture};
    write_encoder(j);
    j["encoder_stride"] = encoder_stride;
    j["pooler_act"] = pooler_act;
    j["pooler_output_size"] = pooler_output_size > 0 ? nlohmann::json(pooler_output_size) : nlohmann::json(hidden_size);
    nlohmann::json id2l = nlohmann::json::object(), l2id = nlohmann::json::object();
    for (size_t i = 0; i < id2label.size(); ++i) {
      id2l[std::to_string(i)] = id2label[i];
      l2id[id2label[i]] = static_cast<std::int64_t>(i);
    }
    j["id2label"] = id2l;
    j["label2id"] = l2id;
    if (!problem_type.empty()) j["problem_type"] = problem_type;
    j["model_type"] = "vit";
    j["torch_dtype"] = torch_dtype;
    return j;
  }

  /// The classifier's config for an MAE encoder: ViTMAEConfig's encoder fields, these labels
  /// (what transformers' ViTForImageClassification.from_pretrained of a vit_mae folder keeps).
  static ViTConfig from_mae(const Config& mae, std::vector<std::string> labels) {
    ViTConfig c;
    static_cast<EncoderConfig&>(c) = static_cast<const EncoderConfig&>(mae);
    c.id2label = std::move(labels);
    c.validate("ViTConfig from the MAE config");
    return c;
  }

  /// The encoder's fields as a ViTMAEConfig (for the modules ViT and ViTMAE share).
  Config mae_config() const {
    Config c;
    static_cast<EncoderConfig&>(c) = *this;
    return c;
  }

 private:
  static std::vector<std::string> read_id2label(const nlohmann::json& v, const std::string& where) {
    detail::require(v.is_object(), where, ": 'id2label' must be an object {\"0\": name, ...}, got ", v.dump());
    const size_t n = v.size();
    std::vector<std::string> out(n);
    std::vector<bool> seen(n, false);
    for (auto it = v.begin(); it != v.end(); ++it) {
      const std::string& key = it.key();
      size_t used = 0;
      long long id = -1;
      try {
        id = std::stoll(key, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      detail::require(used == key.size() && !key.empty() && id >= 0 && static_cast<size_t>(id) < n, where,
                      ": 'id2label' key '", key, "' is not a class index in 0 ... ", n == 0 ? 0 : n - 1, " (its ", n,
                      " keys must be 0 ... n-1)");
      detail::require(!seen[static_cast<size_t>(id)], where, ": 'id2label' has class ", id, " twice");
      detail::require(it.value().is_string(), where, ": 'id2label' of class ", key, " must be a string, got ",
                      it.value().dump());
      out[static_cast<size_t>(id)] = it.value().get<std::string>();
      seen[static_cast<size_t>(id)] = true;
    }
    return out;
  }
};

}  // namespace vitmae
