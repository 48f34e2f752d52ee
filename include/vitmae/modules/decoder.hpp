// SPDX-License-Identifier: Apache-2.0
// ViTMAEDecoder: decoder_embed, mask tokens, unshuffle, decoder_pos_embed, decoder_layers,
// decoder_norm, decoder_pred; with its backward.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "vitmae/config.hpp"
#include "vitmae/modules/encoder.hpp"
#include "vitmae/modules/layer.hpp"
#include "vitmae/modules/layer_norm.hpp"
#include "vitmae/modules/linear.hpp"
#include "vitmae/ops/interpolate.hpp"
#include "vitmae/ops/sincos_pos_embed.hpp"

namespace vitmae {

template <class Scalar = float>
struct Decoder {
  Linear<Scalar> decoder_embed;      // hidden -> decoder_hidden
  RowVector<Scalar> mask_token;      // (decoder_hidden)
  Matrix<Scalar> decoder_pos_embed;  // (1+L, decoder_hidden)
  std::vector<Layer<Scalar>> decoder_layers;
  LayerNorm<Scalar> decoder_norm;
  Linear<Scalar> decoder_pred;  // decoder_hidden -> p*p*C
  Index num_positions = 0;      // rows of decoder_pos_embed, 1+L (recorded: all a decoder without storage has)

  struct Cache {
    Matrix<Scalar> embedded, unshuffled, layers_out, normed;  // decoder_embed(x), + mask tokens and positions, ...
    LayerStackCache<Scalar> layers;
    typename LayerNorm<Scalar>::Cache norm;
    IndexMatrix ids_restore;
    Matrix<Scalar> dnormed, dlayers_out, dunshuffled, dembedded;
  };

  Decoder() = default;
  explicit Decoder(const Config& c, Storage s = Storage::zeros)
      : decoder_embed(c.hidden_size, c.decoder_hidden_size, true, s),
        mask_token(detail::zeros<RowVector<Scalar>>(s, c.decoder_hidden_size)),
        decoder_pos_embed(detail::allocated<Matrix<Scalar>>(
            s,
            [&] {
              return ops::get_2d_sincos_pos_embed<Scalar>(c.decoder_hidden_size, c.grid_size(), c.grid_size(), true);
            })),
        decoder_layers(detail::layers<Scalar>(c.decoder_config(), s)),
        decoder_norm(c.decoder_hidden_size, c.layer_norm_eps, s),
        decoder_pred(c.decoder_hidden_size, c.patch_size * c.patch_size * c.num_channels, true, s),
        num_positions(1 + c.num_patches()) {}

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
    detail::require(out == L, "ViTMAEDecoder.interpolate_pos_encoding: floor(", L0, " * (", L, "/", L0, ")) = ", out,
                    " rows, expected ", L, " (HF fails here too)");
    Matrix<Scalar> table(1 + L, decoder_pos_embed.cols());  // (1+L, decoder_hidden)
    table.row(0) = decoder_pos_embed.row(0);
    table.bottomRows(L) = ops::bicubic_resize<Scalar>(decoder_pos_embed.bottomRows(L0), 1, L0, 1, L, 1.0, factor);
    return table;
  }

  /// latents: B samples' (1+K, hidden) stacked as (B*(1+K), hidden); ids_restore (B, L) ->
  /// logits (B*(1+L), p*p*C), each sample's CLS row first (callers drop it, as HF's
  /// `logits[:, 1:, :]`). All samples go through each layer together.
  void forward(const Matrix<Scalar>& latents, const IndexMatrix& ids_restore, bool interpolate_pos_encoding,
               Matrix<Scalar>& logits, Cache& c) const {
    const Index B = ids_restore.rows(), L = ids_restore.cols();
    detail::require(B > 0 && latents.rows() % B == 0, "ViTMAEDecoder: ", latents.rows(), " latent rows for ", B,
                    " samples");
    const Index K = latents.rows() / B - 1, T = 1 + K, TL = 1 + L;
    detail::require(K <= L, "ViTMAEDecoder: ", K, " kept tokens but only ", L, " patches");
    const Matrix<Scalar> pos = position_table(L, interpolate_pos_encoding);  // (1+L, Dd)
    c.ids_restore = ids_restore;
    decoder_embed.forward(latents, c.embedded);  // (B*(1+K), Dd)
    // x_ = gather(cat([x[:, 1:], mask_tokens]), 1, ids_restore); x = cat([x[:, :1], x_]) + decoder_pos_embed
    c.unshuffled.resize(B * TL, c.embedded.cols());  // (B*(1+L), Dd)
    for (Index b = 0; b < B; ++b) {
      c.unshuffled.row(b * TL) = c.embedded.row(b * T);
      for (Index l = 0; l < L; ++l) {
        const Index r = ids_restore(b, l);
        if (r < K) c.unshuffled.row(b * TL + 1 + l) = c.embedded.row(b * T + 1 + r);
        else c.unshuffled.row(b * TL + 1 + l) = mask_token;
      }
      c.unshuffled.middleRows(b * TL, TL) += pos;
    }
    detail::layer_stack_forward<Scalar>(decoder_layers, c.unshuffled, TL, c.layers_out, c.layers, nullptr, nullptr);
    decoder_norm.forward(c.layers_out, c.normed, &c.norm);
    decoder_pred.forward(c.normed, logits);  // (B*(1+L), p*p*C)
  }

  /// dlogits: (B*(1+L), p*p*C) (CLS rows zero) -> dlatents (B*(1+K), hidden).
  void backward(const Matrix<Scalar>& latents, const Matrix<Scalar>& dlogits, Cache& c, Decoder& g,
                Matrix<Scalar>& dlatents) const {
    const Index B = c.ids_restore.rows(), L = c.ids_restore.cols(), K = latents.rows() / B - 1, T = 1 + K, TL = 1 + L;
    decoder_pred.backward(c.normed, dlogits, g.decoder_pred, &c.dnormed);
    decoder_norm.backward(c.dnormed, c.norm, g.decoder_norm, c.dlayers_out);
    detail::layer_stack_backward(decoder_layers, c.dlayers_out, TL, c.layers, g.decoder_layers, c.dunshuffled);
    // the gather's adjoint: kept rows go back to their token, masked rows to mask_token
    c.dembedded.setZero(B * T, c.dunshuffled.cols());
    for (Index b = 0; b < B; ++b) {
      c.dembedded.row(b * T) = c.dunshuffled.row(b * TL);
      for (Index l = 0; l < L; ++l) {
        const Index r = c.ids_restore(b, l);
        if (r < K) c.dembedded.row(b * T + 1 + r) += c.dunshuffled.row(b * TL + 1 + l);
        else g.mask_token += c.dunshuffled.row(b * TL + 1 + l);
      }
    }
    decoder_embed.backward(latents, c.dembedded, g.decoder_embed, &dlatents);
  }

  template <class Self, class V>
  static void parameters(Self& m, const std::string& prefix, V& visit) {
    const Index width = m.decoder_embed.out_features();
    const Index positions = m.decoder_pos_embed.size() > 0 ? m.decoder_pos_embed.rows() : m.num_positions;
    detail::visit_tensor(visit, prefix + "mask_token", m.mask_token, {1, 1, width}, ParamKind::token);
    detail::visit_tensor(visit, prefix + "decoder_pos_embed", m.decoder_pos_embed, {1, positions, width},
                         ParamKind::fixed_table);
    m.decoder_embed.visit_parameters(prefix + "decoder_embed.", visit);
    for (size_t i = 0; i < m.decoder_layers.size(); ++i)
      m.decoder_layers[i].visit_parameters(prefix + "decoder_layers." + std::to_string(i) + ".", visit);
    m.decoder_norm.visit_parameters(prefix + "decoder_norm.", visit);
    m.decoder_pred.visit_parameters(prefix + "decoder_pred.", visit);
  }
  VITMAE_VISIT_PARAMETERS
};

}  // namespace vitmae
