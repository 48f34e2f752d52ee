// SPDX-License-Identifier: Apache-2.0
// vitmae: HuggingFace's ViTMAE (ViTMAEConfig, ViTMAEModel, ViTMAEForPreTraining) on Eigen.
// The one header users include.
#pragma once

#include "vitmae/config.hpp"
#include "vitmae/error.hpp"
#include "vitmae/for_pre_training.hpp"
#include "vitmae/image_processor.hpp"
#include "vitmae/io/checkpoint.hpp"
#include "vitmae/io/image.hpp"
#include "vitmae/io/safetensors.hpp"
#include "vitmae/io/state_dict.hpp"
#include "vitmae/model.hpp"
#include "vitmae/tensor.hpp"
#include "vitmae/train/backward.hpp"
#include "vitmae/train/data.hpp"
#include "vitmae/train/optimizer.hpp"
#include "vitmae/train/trainer.hpp"
#include "vitmae/visualize.hpp"

#define VITMAE_VERSION_MAJOR 0
#define VITMAE_VERSION_MINOR 1
#define VITMAE_VERSION_PATCH 0
