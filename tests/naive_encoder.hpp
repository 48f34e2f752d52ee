// SPDX-License-Identifier: Apache-2.0
// An independent float64 ViTMAE / ViT encoder for the tests, written from the math as plain loops
// (HF's ViTMAEModel and ViTModel: patch embedding conv, position table, masking by gather, pre-LN
// layers). It uses no library module or op: only the safetensors reader for the weights and the
// fixture's tensors, and a JSON reader for config.json.
#pragma once

#include "test_util.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace test::naive {

/// What the encoder computed for a batch, every tensor flattened batch-major in HF's layout.
struct Encoded {
  std::vector<std::vector<double>>
      hidden_states;  // [layers + 1] of [B, T, hidden]: each layer's input, then the last output
  std::vector<std::vector<double>> attentions;  // [layers] of [B, heads, T, T]: softmax probabilities
  std::vector<double> last_hidden_state;        // [B, T, hidden]: after the final LayerNorm (T = 1 + kept patches)
};

/// A weight of the checkpoint as float64 values, row-major in torch's layout (Linear (out, in),
/// the conv (hidden, C, p, p), LayerNorm (hidden)); empty when absent.
inline std::vector<double> weight(const vitmae::io::SafetensorsFile& w, const std::string& name) {
  return w.contains(name) ? w.get<double>(name).data : std::vector<double>();
}

/// y (n, out) = x (n, in) times W^T (W: (out, in)) plus b (out), b empty for none: torch's Linear.
inline std::vector<double> linear(const std::vector<double>& x, long n, long in, const std::vector<double>& W,
                                  const std::vector<double>& b, long out) {
  std::vector<double> y(static_cast<size_t>(n * out));
  for (long i = 0; i < n; ++i)
    for (long o = 0; o < out; ++o) {
      double s = b.empty() ? 0.0 : b[static_cast<size_t>(o)];
      for (long k = 0; k < in; ++k) s += x[static_cast<size_t>(i * in + k)] * W[static_cast<size_t>(o * in + k)];
      y[static_cast<size_t>(i * out + o)] = s;
    }
  return y;
}

/// torch.nn.LayerNorm over each row of x (n, d): (x - mean) / sqrt(biased variance + eps) * w + b.
inline std::vector<double> layer_norm(const std::vector<double>& x, long n, long d, const std::vector<double>& w,
                                      const std::vector<double>& b, double eps) {
  std::vector<double> y(x.size());
  for (long i = 0; i < n; ++i) {
    double mean = 0, var = 0;
    for (long k = 0; k < d; ++k) mean += x[static_cast<size_t>(i * d + k)];
    mean /= static_cast<double>(d);
    for (long k = 0; k < d; ++k) {
      const double c = x[static_cast<size_t>(i * d + k)] - mean;
      var += c * c;
    }
    var /= static_cast<double>(d);
    for (long k = 0; k < d; ++k)
      y[static_cast<size_t>(i * d + k)] =
          (x[static_cast<size_t>(i * d + k)] - mean) / std::sqrt(var + eps) * w[static_cast<size_t>(k)] +
          b[static_cast<size_t>(k)];
  }
  return y;
}

/// HF's ACT2FN: "gelu" is the exact erf GELU, "gelu_new" the tanh approximation.
inline double activation(const std::string& act, double x) {
  if (act == "gelu") return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
  if (act == "gelu_new") return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
  FAIL("the naive encoder does not know hidden_act '" << act << "'");
  return 0;
}

/// torch's bicubic kernel (A = -0.75) at distance x.
inline double cubic(double x) {
  const double A = -0.75;
  x = std::abs(x);
  if (x <= 1) return ((A + 2) * x - (A + 3)) * x * x + 1;
  if (x < 2) return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
  return 0.0;
}

/// torch.nn.functional.interpolate(mode="bicubic", align_corners=False, size=(gh, gw)) of the
/// table's patch rows seen as a (g0, g0) grid of d channels; row 0 (the CLS position) is kept.
inline std::vector<double> resize_table(const std::vector<double>& table, long g0, long d, long gh, long gw) {
  std::vector<double> out(static_cast<size_t>((1 + gh * gw) * d));
  for (long k = 0; k < d; ++k) out[static_cast<size_t>(k)] = table[static_cast<size_t>(k)];
  auto tap = [&](double scale, long o, long j) {  // the j-th of 4 taps of output o: (source index, weight)
    const double src = scale * (static_cast<double>(o) + 0.5) - 0.5;
    const double f = std::floor(src);
    const long i = std::clamp(static_cast<long>(f) - 1 + j, 0L, g0 - 1);
    return std::make_pair(i, cubic(src - f - static_cast<double>(j - 1)));
  };
  for (long oy = 0; oy < gh; ++oy)
    for (long ox = 0; ox < gw; ++ox)
      for (long k = 0; k < d; ++k) {
        double v = 0;
        for (long a = 0; a < 4; ++a)
          for (long c = 0; c < 4; ++c) {
            const auto [iy, wy] = tap(static_cast<double>(g0) / static_cast<double>(gh), oy, a);
            const auto [ix, wx] = tap(static_cast<double>(g0) / static_cast<double>(gw), ox, c);
            v += wy * wx * table[static_cast<size_t>((1 + iy * g0 + ix) * d + k)];
          }
        out[static_cast<size_t>((1 + oy * gw + ox) * d + k)] = v;
      }
  return out;
}

/// MAE's fixed 2-D sin-cos table (1 + g*g, d), row 0 zeros: the first half of each row encodes the
/// patch's column, the second its row, each as sin(pos * omega_i) then cos(pos * omega_i) with
/// omega_i = 1 / 10000^(i / (d/4)).
inline std::vector<double> sincos_table(long d, long g) {
  std::vector<double> t(static_cast<size_t>((1 + g * g) * d), 0.0);
  const long quarter = d / 4;
  for (long r = 0; r < g; ++r)
    for (long c = 0; c < g; ++c)
      for (long i = 0; i < quarter; ++i) {
        const double omega = 1.0 / std::pow(10000.0, static_cast<double>(i) / static_cast<double>(quarter));
        double* row = &t[static_cast<size_t>((1 + r * g + c) * d)];
        row[i] = std::sin(static_cast<double>(c) * omega);
        row[quarter + i] = std::cos(static_cast<double>(c) * omega);
        row[2 * quarter + i] = std::sin(static_cast<double>(r) * omega);
        row[3 * quarter + i] = std::cos(static_cast<double>(r) * omega);
      }
  return t;
}

/// The encoder of the checkpoint in `dir` (an hf/ case: ViTMAE, masked with the fixture's
/// ids_restore; an hf_vit/ case: ViT, every patch kept) on the fixture's pixel_values, in float64.
/// `weights_dir`: the case whose config.json and model.safetensors to take instead of dir's.
inline Encoded encode(const std::string& dir, const std::string& weights_dir = "") {
  INFO("naive encoder on " << dir);
  const std::string model = weights_dir.empty() ? dir : weights_dir;
  const vitmae::io::SafetensorsFile io(test::data(dir + "/io.safetensors"));
  const vitmae::io::SafetensorsFile w(test::data(model + "/model.safetensors"));
  const nlohmann::json cfg = vitmae::io::read_json_file(test::data(model + "/config.json"));
  const bool mae = cfg.value("model_type", std::string("vit_mae")) == "vit_mae";
  const long D = cfg.at("hidden_size"), heads = cfg.at("num_attention_heads"), layers = cfg.at("num_hidden_layers");
  const long M = cfg.at("intermediate_size"), p = cfg.at("patch_size"),
             g0 = static_cast<long>(cfg.at("image_size")) / p;
  const double eps = cfg.value("layer_norm_eps", 1e-12);
  const std::string act = cfg.value("hidden_act", std::string("gelu"));
  const bool interpolate =
      io.metadata().count("interpolate_pos_encoding") && io.metadata().at("interpolate_pos_encoding") == "true";

  const vitmae::Tensor<double> px = io.get<double>("pixel_values");  // [B, C, H, W]
  const long B = px.size(0), C = px.size(1), H = px.size(2), W = px.size(3), gh = H / p, gw = W / p, L = gh * gw;

  // The position table: the checkpoint's (MAE's is the fixed sin-cos table unless a case says
  // otherwise), bicubic-resized to the input's grid when it asks for interpolate_pos_encoding and
  // the grid differs (an identity at the same size).
  std::vector<double> table = weight(w, "vit.embeddings.position_embeddings");  // (1 + g0*g0, D)
  if (table.empty()) table = sincos_table(D, g0);
  if (interpolate && (gh != g0 || gw != g0)) table = resize_table(table, g0, D, gh, gw);
  REQUIRE(static_cast<long>(table.size()) == (1 + L) * D);

  // Which patches each sample keeps, in order: MAE's ids_keep = argsort(noise)[:len_keep], taken
  // from the fixture's ids_restore (ids_shuffle is its inverse) and checked against a stable
  // argsort of the noise; ViT keeps every patch in place.
  std::vector<std::vector<long>> keep(static_cast<size_t>(B));
  if (mae) {
    const auto ids = io.get<std::int64_t>("ids_restore");
    const auto mask = io.get<double>("mask");
    const auto noise = io.get<double>("noise");
    for (long b = 0; b < B; ++b) {
      std::vector<long> shuffle(static_cast<size_t>(L)), sorted(static_cast<size_t>(L));
      long len_keep = 0;
      for (long j = 0; j < L; ++j) {
        shuffle[static_cast<size_t>(ids.data[static_cast<size_t>(b * L + j)])] = j;
        len_keep += mask.data[static_cast<size_t>(b * L + j)] == 0.0;
      }
      for (long j = 0; j < L; ++j) sorted[static_cast<size_t>(j)] = j;
      std::stable_sort(sorted.begin(), sorted.end(), [&](long x, long y) {
        return noise.data[static_cast<size_t>(b * L + x)] < noise.data[static_cast<size_t>(b * L + y)];
      });
      CHECK(sorted == shuffle);
      keep[static_cast<size_t>(b)].assign(shuffle.begin(), shuffle.begin() + len_keep);
    }
  } else {
    for (long b = 0; b < B; ++b)
      for (long j = 0; j < L; ++j) keep[static_cast<size_t>(b)].push_back(j);
  }
  const long T = 1 + static_cast<long>(keep[0].size());

  Encoded out;
  out.hidden_states.assign(static_cast<size_t>(layers + 1), std::vector<double>());
  out.attentions.assign(static_cast<size_t>(layers), std::vector<double>());
  const std::vector<double> conv = weight(w, "vit.embeddings.patch_embeddings.projection.weight");  // (D, C, p, p)
  const std::vector<double> conv_bias = weight(w, "vit.embeddings.patch_embeddings.projection.bias");
  const std::vector<double> cls = weight(w, "vit.embeddings.cls_token");
  REQUIRE(static_cast<long>(conv.size()) == D * C * p * p);
  for (long b = 0; b < B; ++b) {
    // Embeddings: the CLS token plus position row 0, then each kept patch's conv output plus its
    // position row (1 + its index in the grid).
    std::vector<double> x(static_cast<size_t>(T * D));
    for (long k = 0; k < D; ++k)
      x[static_cast<size_t>(k)] = cls[static_cast<size_t>(k)] + table[static_cast<size_t>(k)];
    for (long t = 1; t < T; ++t) {
      const long patch = keep[static_cast<size_t>(b)][static_cast<size_t>(t - 1)], py = patch / gw, pxl = patch % gw;
      for (long k = 0; k < D; ++k) {
        double s = conv_bias[static_cast<size_t>(k)];
        for (long c = 0; c < C; ++c)
          for (long i = 0; i < p; ++i)
            for (long j = 0; j < p; ++j)
              s += conv[static_cast<size_t>(((k * C + c) * p + i) * p + j)] *
                   px.data[static_cast<size_t>(((b * C + c) * H + py * p + i) * W + pxl * p + j)];
        x[static_cast<size_t>(t * D + k)] = s + table[static_cast<size_t>((1 + patch) * D + k)];
      }
    }
    // The pre-LN layers: x + attention(layernorm_before(x)), then that + MLP(layernorm_after(that)).
    const long d = D / heads;
    for (long l = 0; l < layers; ++l) {
      std::vector<double>& input = out.hidden_states[static_cast<size_t>(l)];
      input.insert(input.end(), x.begin(), x.end());
      const std::string n = "vit.encoder.layer." + std::to_string(l) + ".";
      auto norm = [&](const std::string& name) {  // LayerNorm `name` of this layer on x
        return layer_norm(x, T, D, weight(w, n + name + ".weight"), weight(w, n + name + ".bias"), eps);
      };
      auto dense = [&](const std::vector<double>& in, long width, const std::string& name,
                       long outputs) {  // Linear `name`
        return linear(in, T, width, weight(w, n + name + ".weight"), weight(w, n + name + ".bias"), outputs);
      };
      const std::vector<double> a = norm("layernorm_before");
      const std::vector<double> q = dense(a, D, "attention.attention.query", D);
      const std::vector<double> kk = dense(a, D, "attention.attention.key", D);
      const std::vector<double> v = dense(a, D, "attention.attention.value", D);
      std::vector<double> context(static_cast<size_t>(T * D), 0.0);
      for (long h = 0; h < heads; ++h)
        for (long i = 0; i < T; ++i) {
          // softmax over j of q_i . k_j / sqrt(d), the row's max subtracted first
          std::vector<double> prob(static_cast<size_t>(T));
          double largest = -INFINITY, sum = 0;
          for (long j = 0; j < T; ++j) {
            double s = 0;
            for (long e = 0; e < d; ++e)
              s += q[static_cast<size_t>(i * D + h * d + e)] * kk[static_cast<size_t>(j * D + h * d + e)];
            prob[static_cast<size_t>(j)] = s / std::sqrt(static_cast<double>(d));
            largest = std::max(largest, prob[static_cast<size_t>(j)]);
          }
          for (long j = 0; j < T; ++j)
            sum += prob[static_cast<size_t>(j)] = std::exp(prob[static_cast<size_t>(j)] - largest);
          for (long j = 0; j < T; ++j) prob[static_cast<size_t>(j)] /= sum;
          out.attentions[static_cast<size_t>(l)].insert(out.attentions[static_cast<size_t>(l)].end(), prob.begin(),
                                                        prob.end());
          for (long j = 0; j < T; ++j)
            for (long e = 0; e < d; ++e)
              context[static_cast<size_t>(i * D + h * d + e)] +=
                  prob[static_cast<size_t>(j)] * v[static_cast<size_t>(j * D + h * d + e)];
        }
      const std::vector<double> o = dense(context, D, "attention.output.dense", D);  // SelfOutput: no residual
      for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];                            // the first residual
      std::vector<double> mid = dense(norm("layernorm_after"), D, "intermediate.dense", M);
      for (double& m : mid) m = activation(act, m);
      const std::vector<double> y = dense(mid, M, "output.dense", D);
      for (size_t i = 0; i < x.size(); ++i) x[i] += y[i];  // Output adds the residual
    }
    std::vector<double>& output = out.hidden_states[static_cast<size_t>(layers)];
    output.insert(output.end(), x.begin(), x.end());
    const std::vector<double> last =
        layer_norm(x, T, D, weight(w, "vit.layernorm.weight"), weight(w, "vit.layernorm.bias"), eps);
    out.last_hidden_state.insert(out.last_hidden_state.end(), last.begin(), last.end());
  }
  return out;
}

/// `got` (n values) within `atol` of the naive encoder's `expected`, reported like check_close.
template <class Scalar>
void check_close_to(const std::string& what, const Scalar* got, long n, const std::vector<double>& expected,
                    double atol) {
  INFO(what);
  REQUIRE(n == static_cast<long>(expected.size()));
  const CloseReport r = allclose(got, expected.data(), n, 0.0, atol);
  INFO("max abs diff " << r.max_abs << "; " << r.message);
  CHECK(r.ok);
}

}  // namespace test::naive
