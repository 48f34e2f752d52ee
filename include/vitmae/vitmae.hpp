// SPDX-License-Identifier: Apache-2.0
// vitmae: HuggingFace's ViTMAE (ViTMAEConfig, ViTMAEModel, ViTMAEForPreTraining) and the classifier
// its encoder becomes (ViTConfig, ViTForImageClassification) on Eigen.
// The one header inference users include (training: vitmae/train.hpp).
#pragma once

#include "vitmae/config.hpp"
#include "vitmae/error.hpp"
#include "vitmae/images/image_processor.hpp"
#include "vitmae/images/pipelines.hpp"
#include "vitmae/images/visualize.hpp"
#include "vitmae/io/image.hpp"
#include "vitmae/io/npy.hpp"
#include "vitmae/io/safetensors.hpp"
#include "vitmae/models/flops.hpp"
#include "vitmae/models/for_pre_training.hpp"
#include "vitmae/models/model.hpp"
#include "vitmae/models/outputs.hpp"
#include "vitmae/models/vit_for_image_classification.hpp"
#include "vitmae/tensor.hpp"
#include "vitmae/vit_config.hpp"
#include "vitmae/weights/checkpoint.hpp"
#include "vitmae/weights/quantize.hpp"
#include "vitmae/weights/state_dict.hpp"

#define VITMAE_VERSION_MAJOR 0
#define VITMAE_VERSION_MINOR 1
#define VITMAE_VERSION_PATCH 0
