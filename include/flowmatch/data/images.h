#pragma once
/// \file
/// Labelled image data sets for flow matching on images: Fashion-MNIST (Debian's IDX files) and any
/// folder of PNG/JPEG/BMP images with one sub-folder per class, and the sampler that draws
/// dequantized minibatches scaled to [−1, 1].

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

namespace flowmatch::data {

/// Images (N, C, H, W) uint8, labels (N) int64 in [0, class_names.size()).
struct ImageDataset {
  at::Tensor images;
  at::Tensor labels;
  std::vector<std::string> class_names;
  int64_t channels() const { return images.size(1); }
  int64_t height() const { return images.size(2); }
  int64_t width() const { return images.size(3); }
  int64_t pixels_per_image() const { return images.size(1) * images.size(2) * images.size(3); }
};

/// Fashion-MNIST's ten class names, in label order.
const std::vector<std::string>& fashion_mnist_class_names();

/// The "train" or "test" split of Fashion-MNIST from `dir` (see idx.h), with its class names.
ImageDataset fashion_mnist_dataset(const std::string& split, const std::string& dir);

/// Every image file (.png, .jpg, .jpeg, .bmp, .tga, .gif; case-insensitive) in the sub-folders of
/// `dir`: each sub-folder is a class, labels follow the sorted sub-folder names. All images must
/// have the same width and height; they are converted to `channels` (1: grey, 3: RGB; 0: the
/// channel count of the first image, grey or RGB). Throws std::runtime_error naming the file that
/// cannot be decoded or whose size differs, or the folder when it holds no classes or no images.
ImageDataset load_image_folder(const std::string& dir, int64_t channels = 0);

/// The images a data setting names, split for training a model on them and scoring it: "fashion-mnist"
/// (Debian's files in `fashion_mnist_dir`, the test split held out) or an image folder (no held-out
/// split: `test` is the training images). `target` and `location` are how a folder records them
/// ("fashion-mnist" and the absolute data folder, or "image-folder" and the absolute image folder).
/// std::runtime_error "--data SETTING: ..." when they cannot be read.
struct ImageSplits {
  ImageDataset train, test;
  bool held_out = false;
  std::string target, location;
};
ImageSplits image_splits(const std::string& data, const std::string& fashion_mnist_dir, int64_t channels = 0);

/// uint8 pixels (any shape) to [−1, 1]: (p + u) / 256 · 2 − 1 with u ~ U(0, 1) drawn from
/// `generator` (uniform dequantization, so that likelihoods of the continuous model are bounds on the
/// discrete data's), or u = 1/2 when `generator` is not given.
at::Tensor pixels_to_unit_range(const at::Tensor& pixels, std::optional<at::Generator> generator = std::nullopt);
/// The inverse map to uint8 pixels (clamped to [0, 255]).
at::Tensor unit_range_to_pixels(const at::Tensor& x);

/// A minibatch of flattened images (n, C·H·W) in [−1, 1] and their labels (n).
struct LabeledBatch {
  at::Tensor x;
  at::Tensor labels;
};
using LabeledSampler = std::function<LabeledBatch(int64_t n, at::Generator& generator)>;

/// Draws images uniformly with replacement (indices and dequantization noise from `generator`).
LabeledSampler image_sampler(ImageDataset dataset);

}  // namespace flowmatch::data
