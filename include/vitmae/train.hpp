// SPDX-License-Identifier: Apache-2.0
// vitmae's training: the backward composition, AdamW and the MAE schedule, the image data
// pipeline, labelled datasets for fine-tuning, the Trainer, its checkpoints and the loss curve. Inference users include
// vitmae/vitmae.hpp only and never pay for this.
#pragma once

#include "vitmae/train/backward.hpp"
#include "vitmae/train/checkpoint.hpp"
#include "vitmae/train/data.hpp"
#include "vitmae/train/finetune.hpp"
#include "vitmae/train/labelled.hpp"
#include "vitmae/train/linear_probe.hpp"
#include "vitmae/train/optimizer.hpp"
#include "vitmae/train/plot.hpp"
#include "vitmae/train/trainer.hpp"
#include "vitmae/vitmae.hpp"
