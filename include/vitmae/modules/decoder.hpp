// SPDX-License-Identifier: Apache-2.0
// ViTMAEDecoder: decoder_embed, mask tokens, unshuffle, decoder_pos_embed, decoder_layers,
// decoder_norm, decoder_pred.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "vitmae/config.hpp"
#include "vitmae/modules/layer.hpp"
#include "vitmae/modules/layer_norm.hpp"
#include "vitmae/modules/linear.hpp"
#include "vitmae/ops/interpolate.hpp"
#include "vitmae/ops/sincos_pos_embed.hpp"

namespace vitmae {

template <class Scalar = float>
struct Decoder {
  Linear<Scalar> decoder_embed;            // hidden -> decoder_hidden
  RowVector<Scalar> mask_token;            // (decoder_hidden)
  Matrix<Scalar> decoder_pos_embed;        // (1+L, decoder_hidden)
  std::vector<Layer<Scalar>> decoder_layers;
  LayerNorm<Scalar> decoder_norm;
  Linear<Scalar> decoder_pred;             // decoder_hidden -> p*p*C

  Decoder() = default;
  explicit Decoder(const Config& c)
      : decoder_embed(c.hidden_size, c.decoder_hidden_size),
        mask_token(RowVector<Scalar>::Zero(c.decoder_hidden_size)),
        decoder_pos_embed(ops::get_2d_sincos_pos_embed<Scalar>(c.decoder_hidden_size, c.grid_size(), c.grid_size(), true)),
        decoder_layers(static_cast<size_t>(c.decoder_num_hidden_layers), Layer<Scalar>(c.decoder_config())),
        decoder_norm(c.decoder_hidden_size, c.layer_norm_eps),
        decoder_pred(c.decoder_hidden_size, c.patch_size * c.patch_size * c.num_channels) {}

  /// The decoder position table for L patches. Without interpolation the stored table, which
  /// must have L rows. With it, HF's ViTMAEDecoder.interpolate_pos_encoding: the patch rows are
  /// laid out as a 1 x L0 strip and stretched by bicubic interpolation with scale_factor
  /// (1, L / L0) along the strip, not as a 2-D grid. That mixes positions across grid rows;
  /// we match it because trained checkpoints expect it.
  Matrix<Scalar> position_table(Index L, bool interpolate_pos_encoding) const {
    const Index L0 = decoder_pos_embed.rows() - 1;
    if (!interpolate_pos_encoding) {
      detail::require(L == L0, "ViTMAEDecoder: ", L, " patches but decoder_pos_embed has ", L0,
                      " patch rows; pass interpolate_pos_encoding to run other sizes");
      return decoder_pos_embed;
    }
    const double factor = static_cast<double>(L) / static_cast<double>(L0);
    const Index out = static_cast<Index>(std::floor(static_cast<double>(L0) * factor));
    detail::require(out == L, "ViTMAEDecoder.interpolate_pos_encoding: floor(", L0, " * (", L, "/",
                    L0, ")) = ", out, " rows, expected ", L, " (HF fails here too)");
    Matrix<Scalar> table(1 + L, decoder_pos_embed.cols());  // (1+L, decoder_hidden)
    table.row(0) = decoder_pos_embed.row(0);
    table.bottomRows(L) = ops::bicubic_resize<Scalar>(decoder_pos_embed.bottomRows(L0), 1, L0, 1, L, 1.0, factor);
    return table;
  }

  /// decoder_embed's output x (B*(1+K), Dd) -> the layers' input (B*(1+L), Dd): per sample CLS,
  /// then for patch l kept token ids_restore[l] when ids_restore[l] < K, else the mask token
  /// (x_ = gather(cat([x[:, 1:], mask_tokens]), 1, ids_restore)), plus the position table.
  Matrix<Scalar> unshuffle(const Matrix<Scalar>& x, const std::vector<std::vector<Index>>& ids_restore,
                           const Matrix<Scalar>& pos) const {
    const Index B = static_cast<Index>(ids_restore.size());
    const Index L = static_cast<Index>(ids_restore[0].size()), K = x.rows() / B - 1;
    Matrix<Scalar> h(B * (1 + L), x.cols());
    for (Index b = 0; b < B; ++b) {
      const Index in = b * (1 + K), out = b * (1 + L);
      h.row(out) = x.row(in);
      for (Index l = 0; l < L; ++l) {
        const Index r = ids_restore[static_cast<size_t>(b)][static_cast<size_t>(l)];
        if (r < K) h.row(out + 1 + l) = x.row(in + 1 + r);
        else h.row(out + 1 + l) = mask_token;
      }
      h.middleRows(out, 1 + L) += pos;  // hidden_states = x + decoder_pos_embed
    }
    return h;
  }

  /// latents: B samples' (1+K, hidden) stacked as (B*(1+K), hidden); ids_restore[b] (L) each
  /// -> logits per sample (L, p*p*C), CLS removed. All samples go through each layer together.
  std::vector<Matrix<Scalar>> forward(const Matrix<Scalar>& latents, const std::vector<std::vector<Index>>& ids_restore,
                                      const Matrix<Scalar>& pos) const {
    const Index B = static_cast<Index>(ids_restore.size());
    detail::require(B > 0 && latents.rows() % B == 0, "ViTMAEDecoder: ", latents.rows(), " latent rows for ", B, " samples");
    const Index L = static_cast<Index>(ids_restore[0].size()), K = latents.rows() / B - 1;
    detail::require(K <= L, "ViTMAEDecoder: ", K, " kept tokens but only ", L, " patches");
    Matrix<Scalar> h = unshuffle(decoder_embed.forward(latents), ids_restore, pos);  // (B*(1+L), Dd)
    for (const Layer<Scalar>& layer : decoder_layers) h = layer.forward(h, nullptr, 1 + L);
    const Matrix<Scalar> logits = decoder_pred.forward(decoder_norm.forward(h));  // (B*(1+L), p*p*C)
    std::vector<Matrix<Scalar>> out(static_cast<size_t>(B));
    for (Index b = 0; b < B; ++b) out[static_cast<size_t>(b)] = logits.middleRows(b * (1 + L) + 1, L);  // remove cls token
    return out;
  }

  template <class V>
  void visit_parameters(const std::string& prefix, V&& visit) {
    visit(prefix + "mask_token", mask_token, std::vector<Index>{1, 1, mask_token.size()});
    visit(prefix + "decoder_pos_embed", decoder_pos_embed,
          std::vector<Index>{1, decoder_pos_embed.rows(), decoder_pos_embed.cols()});
    decoder_embed.visit_parameters(prefix + "decoder_embed.", visit);
    for (size_t i = 0; i < decoder_layers.size(); ++i)
      decoder_layers[i].visit_parameters(prefix + "decoder_layers." + std::to_string(i) + ".", visit);
    decoder_norm.visit_parameters(prefix + "decoder_norm.", visit);
    decoder_pred.visit_parameters(prefix + "decoder_pred.", visit);
  }
};

}  // namespace vitmae
