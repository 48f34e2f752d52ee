// SPDX-License-Identifier: Apache-2.0
// What the example programs print on stderr, as the tests match it: one stable phrase a message, in
// one namespace a program (the library's messages a program passes on included). A test checks the
// exit code and one of these phrases (and, where its name promises it, the file or value named); the
// exact wording of the library's messages is held by the library's own tests. Reworded: change it here.
#pragma once

namespace messages {

/// The one flag parser every program uses (cli/command_line.hpp, cli/program.hpp).
namespace cli {
inline constexpr const char* kUnknownArgument = "unknown argument";
inline constexpr const char* kPresetExpects = "--preset expects mae-vit-base, mae-vit-large or mae-vit-huge";
inline constexpr const char* kSynopsis = "\nusage: ";  // the synopsis on the lines after a usage error
// --dtype bfloat16 without bf16 products: "PROGRAM: --dtype bfloat16: WHY; running float32", one line
inline constexpr const char* kBfloat16Fallback = ": --dtype bfloat16: ";
inline constexpr const char* kRunningFloat32 = "; running float32\n";
}  // namespace cli

/// The image loader (io/image.hpp, io/file.hpp), as every program that reads images passes it on.
namespace images {
inline constexpr const char* kNotAnImage = "not a readable image";
inline constexpr const char* kCannotDecode = "cannot decode image";
inline constexpr const char* kCannotOpen = "cannot open image";
inline constexpr const char* kIsADirectory = "is a directory, expected an image file";
inline constexpr const char* kSkipBadImagesHint = "(--skip-bad-images leaves out the images that cannot be read)";
inline constexpr const char* kLeftOut = "--skip-bad-images: left out";  // then "N of M images" and their names
}  // namespace images

/// Data sets and list files (train/data.hpp, train/labelled.hpp, io/gzip.hpp).
namespace datasets {
inline constexpr const char* kNoImageFiles = "no image files found";
inline constexpr const char* kClassWithoutImages = "has no image files";
inline constexpr const char* kNotATrainingClass = "is not one of the training set's";
inline constexpr const char* kNotAModelClass = "is not one of the model's";
inline constexpr const char* kBadListLine = "expected 'path<TAB>label' or 'path label'";
inline constexpr const char* kImageNotADataset = "an image, not a dataset";
inline constexpr const char* kSplitMustBe = "SPLIT must be train or t10k";
inline constexpr const char* kFewerThanLabelsPerClass = "fewer than --labels-per-class";
inline constexpr const char* kTruncatedGzip = "truncated or corrupt gzip file";
inline constexpr const char* kIdxBadMagic = "not an IDX image file";
inline constexpr const char* kIdxTruncated = "truncated or oversized body";
}  // namespace datasets

namespace run {
using cli::kPresetExpects;
using cli::kUnknownArgument;
inline constexpr const char* kRequired = "--model, --input and --output are required";
inline constexpr const char* kDtypeExpects = "--dtype expects float32, float64, bfloat16 or int8";
inline constexpr const char* kCannotOpenConfig = "cannot open config file";
inline constexpr const char* kNotSafetensors = "safetensors header length";
inline constexpr const char* kWrongChannels = "channels, expected num_channels";
inline constexpr const char* kConfigDoesNotFit = "config.json asks for hidden_size";
}  // namespace run

namespace convert {
using cli::kPresetExpects;
using cli::kSynopsis;
inline constexpr const char* kDecoderNotUsed = "the MAE decoder's tensors in";
inline constexpr const char* kCannotOpenLabels = "cannot open the labels file";
inline constexpr const char* kCannotCreateFolder = "cannot create folder";
}  // namespace convert

namespace reconstruct {
using images::kCannotDecode;
using images::kIsADirectory;
inline constexpr const char* kOutFormat = "--out must end in .png, .jpg, .jpeg or .bmp";
inline constexpr const char* kCannotCreate = "cannot create";
}  // namespace reconstruct

namespace embed {
using images::kNotAnImage;
}  // namespace embed

namespace classify {
inline constexpr const char* kCannotOpenImage = images::kCannotOpen;
inline constexpr const char* kRequired = "--model and at least one image are required";
inline constexpr const char* kNotAClassifier = "not a ViT classifier";
inline constexpr const char* kJsonNotWeights = "a JSON file, not weights";
inline constexpr const char* kLabelsDisagree =
    "classifier.weight has shape";  // id2label and the classifier's rows disagree
}  // namespace classify

/// What vitmae-pretrain and vitmae-finetune share: one command line (cli/train_flags.hpp), one data
/// layer and one run (train/run.hpp, train/checkpoint.hpp).
namespace training {
using datasets::kImageNotADataset;
using images::kCannotDecode;
using images::kCannotOpen;
using images::kLeftOut;
using images::kNotAnImage;
using images::kSkipBadImagesHint;
inline constexpr const char* kResumingFrom = "resuming from step ";  // then "N of M"
inline constexpr const char* kResumeFlagChanged = "a resumed run must keep it (leave the flag out to keep it)";
inline constexpr const char* kResumeFlagAdded = "a resumed run must keep that (leave the flag out)";
inline constexpr const char* kResumeCheckpointDiffers = "the checkpoint was trained with";
inline constexpr const char* kResumeOtherImages = "a resumed run must train on the same images";
inline constexpr const char* kResumeNoCommandLine = "records no command line";
inline constexpr const char* kInt8Checkpoint = "an int8 checkpoint is for inference only";
inline constexpr const char* kConfigIsAFolder = "a folder, expected a config file";
inline constexpr const char* kModelTooLarge = "the model would have";
inline constexpr const char* kOutOfMemory = "out of memory while allocating the model";
}  // namespace training

namespace pretrain {
using namespace training;
using cli::kPresetExpects;
using datasets::kNoImageFiles;
inline constexpr const char* kRequired = "--data and --out are required";
inline constexpr const char* kBatchTooSmallForRanks = "cannot be split over";
inline constexpr const char* kOverlapNote = "beyond what overlapping it hid";
inline constexpr const char* kLastCheckpoint =
    "the last checkpoint, ";  // a rank lost: "..., the last checkpoint, DIR, is complete"
inline constexpr const char* kIsComplete = ", is complete";
inline constexpr const char* kPeakLrExample = "1.5e-4 * 8 / 256 = 4.7e-6";  // --help (stdout): --base-lr's example
}  // namespace pretrain

namespace finetune {
using namespace training;
using datasets::kBadListLine;
using datasets::kClassWithoutImages;
using datasets::kFewerThanLabelsPerClass;
using datasets::kIdxBadMagic;
using datasets::kIdxTruncated;
using datasets::kNotATrainingClass;
using datasets::kSplitMustBe;
using datasets::kTruncatedGzip;
inline constexpr const char* kCheckpointOfPretrain = "a checkpoint of vitmae-pretrain, not of vitmae-finetune";
inline constexpr const char* kUnknownClass = "--relabel draws a fresh classifier for the data's classes";
inline constexpr const char* kRelabelled = "classifier is for other classes: drawn afresh";
inline constexpr const char* kProbeMeanNoFinal = "--probe-features mean: no ";
inline constexpr const char* kShorterSideNotForProbe = "--shorter-side is for fine-tuning";
inline constexpr const char* kProbeInOneProcess = "--linear-probe runs in one process";
}  // namespace finetune

namespace evaluate {
using datasets::kNotAModelClass;
using images::kLeftOut;
using images::kSkipBadImagesHint;
inline constexpr const char* kRequired = "--model and --data are required";
}  // namespace evaluate

}  // namespace messages
