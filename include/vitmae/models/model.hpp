// SPDX-License-Identifier: Apache-2.0
// ViTMAEModel: embeddings (with random masking), encoder, final layernorm; with its backward.
// One template with ViTModel (encoder_model.hpp).
#pragma once

#include "vitmae/models/encoder_model.hpp"
