// SPDX-License-Identifier: Apache-2.0
// The floating-point operations of one image's forward pass, counted as the reference computes
// it (a multiply-add is 2): every Linear on every token, attention's scores and context, the
// patch projection on all L patches; norms, activations and softmax left out. Divided by a
// measured time they give GFLOP/s and, against a machine's peak, its efficiency (vitmae-bench);
// a training step costs about 3 forwards.
#pragma once

#include "vitmae/config.hpp"
#include "vitmae/ops/random_masking.hpp"
#include "vitmae/vit_config.hpp"

namespace vitmae {

/// One transformer layer on T tokens of width D, with an MLP of width I: query, key, value and
/// the output projection (8 T D^2), the MLP (4 T D I), the scores and the context (4 T^2 D).
inline double layer_flops(double T, double D, double I) {
  return 2 * T * D * 3 * D + 2 * T * D * D + 4 * T * D * I + 4 * T * T * D;
}

/// ViTMAE on one image of the config's size: the patch projection, the encoder on the 1 + K
/// tokens kept at `mask_ratio` (K = int(L * (1 - mask_ratio))), and with `decoder`
/// (ViTMAEForPreTraining) the decoder's embedding, its layers on 1 + L tokens and its
/// prediction head. vit-mae-base: 19.56e9 with the decoder at 0.75, 35.13e9 without at 0.
inline double forward_flops(const Config& c, bool decoder, double mask_ratio) {
  const double L = static_cast<double>(c.num_patches()),
               P = static_cast<double>(c.patch_size * c.patch_size * c.num_channels);
  const double K = static_cast<double>(ops::num_kept(c.num_patches(), mask_ratio));
  double f = 2 * L * P * c.hidden_size + c.num_hidden_layers * layer_flops(K + 1, c.hidden_size, c.intermediate_size);
  if (decoder)
    f += 2 * (K + 1) * c.hidden_size * c.decoder_hidden_size +
         c.decoder_num_hidden_layers * layer_flops(L + 1, c.decoder_hidden_size, c.decoder_intermediate_size) +
         2 * (L + 1) * c.decoder_hidden_size * P;
  return f;
}

/// ViTForImageClassification on one image: the patch projection, the encoder on all 1 + L
/// tokens, the classifier on the CLS token.
inline double forward_flops(const ViTConfig& c) {
  const double L = static_cast<double>(c.num_patches()),
               P = static_cast<double>(c.patch_size * c.patch_size * c.num_channels);
  return 2 * L * P * c.hidden_size + c.num_hidden_layers * layer_flops(L + 1, c.hidden_size, c.intermediate_size) +
         2.0 * c.hidden_size * static_cast<double>(c.num_labels());
}

}  // namespace vitmae
