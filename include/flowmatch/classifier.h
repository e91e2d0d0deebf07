#pragma once
/// \file
/// A small convolutional classifier for evaluating image generators without Inception weights:
/// its accuracy on class-conditional samples measures whether samples show their class, and its
/// penultimate features stand in for Inception's in the Fréchet distance (metrics.h).

#include <functional>
#include <memory>
#include <string>

#include <torch/arg.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <c10/core/Device.h>
#include <nlohmann/json.hpp>

#include "flowmatch/data/images.h"

namespace flowmatch {

/// Options for `ImageClassifier`.
struct ImageClassifierOptions {
  ImageClassifierOptions(int64_t in_channels = 1, int64_t image_size = 28, int64_t num_classes = 10)
      : in_channels_(in_channels), image_size_(image_size), num_classes_(num_classes) {}
  TORCH_ARG(int64_t, in_channels);
  /// Height = width; divisible by 4 (two 2×2 poolings).
  TORCH_ARG(int64_t, image_size);
  TORCH_ARG(int64_t, num_classes);
  /// Channels of the first two convolutions (the last two have twice as many).
  TORCH_ARG(int64_t, width) = 32;
  /// Size of the feature vector (the penultimate layer) used for the Fréchet distance.
  TORCH_ARG(int64_t, feature_dim) = 128;
  TORCH_ARG(double, dropout) = 0.3;
};

nlohmann::json to_json(const ImageClassifierOptions& options);
ImageClassifierOptions image_classifier_options_from_json(const nlohmann::json& j);

/// conv3×3 ×2 → max-pool → conv3×3 ×2 → max-pool → linear (features, ReLU) → dropout → linear (logits).
/// Inputs are images in [−1, 1], (B, C, H, W) or flattened (B, C·H·W).
class ImageClassifierImpl : public torch::nn::Module {
 public:
  explicit ImageClassifierImpl(ImageClassifierOptions options = ImageClassifierOptions());
  at::Tensor forward(const at::Tensor& x);
  /// The penultimate activations (B, feature_dim), after the ReLU.
  at::Tensor features(const at::Tensor& x);
  ImageClassifierOptions options;

 private:
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, conv3_{nullptr}, conv4_{nullptr};
  torch::nn::Linear hidden_{nullptr}, output_{nullptr};
};
TORCH_MODULE(ImageClassifier);

struct ClassifierTrainingOptions {
  TORCH_ARG(int64_t, epochs) = 10;
  TORCH_ARG(int64_t, batch_size) = 128;
  TORCH_ARG(double, lr) = 1e-3;
  TORCH_ARG(uint64_t, seed) = 0;
  /// Random horizontal flips and ±2-pixel shifts of the training images.
  TORCH_ARG(bool, augment) = true;
};

struct ClassifierProgress {
  int64_t epoch = 0, epochs = 0, step = 0, steps_per_epoch = 0;
  double loss = 0, images_per_s = 0;
};

/// Trains with AdamW and a cosine learning-rate decay on (dequantized) images of `data` in [−1, 1].
/// `progress` is called every 50 steps and at the end of each epoch; when `should_stop` returns true
/// training stops (the weights so far are kept) and false is returned.
bool train_image_classifier(ImageClassifierImpl& classifier, const data::ImageDataset& data,
                            const ClassifierTrainingOptions& options,
                            const std::function<void(const ClassifierProgress&)>& progress = {},
                            const std::function<bool()>& should_stop = {});

/// Fraction of `x` (images in [−1, 1]) classified as `labels`, in batches (evaluation mode).
double classifier_accuracy(ImageClassifierImpl& classifier, const at::Tensor& x, const at::Tensor& labels, int64_t batch_size = 500);
/// Features of `x` in batches (evaluation mode), (N, feature_dim) float64 on the CPU.
at::Tensor classifier_features(ImageClassifierImpl& classifier, const at::Tensor& x, int64_t batch_size = 500);

/// Writes the classifier (options, weights and `meta`) as a checkpoint file (checkpoint.h), atomically.
void save_image_classifier(const std::string& path, ImageClassifierImpl& classifier, const nlohmann::json& meta = {});
/// Reads a file written by save_image_classifier; std::runtime_error naming the file when it is not one.
std::shared_ptr<ImageClassifierImpl> load_image_classifier(const std::string& path, nlohmann::json* meta = nullptr);

/// What `train_classifier_run` trains on and how.
struct ClassifierRunOptions {
  std::string data = "fashion-mnist";  ///< or an image folder DIR/CLASS/*.png|jpg
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  int64_t image_channels = 0;  ///< image folder: 1, 3, or 0 (as the first image)
  int64_t epochs = 10, batch = 128, width = 32;
  double lr = 1e-3;
  uint64_t seed = 0;
  c10::Device device = c10::kCPU;
};
/// Trains the evaluation classifier on `options.data` and writes OUT/classifier.ckpt, config.json and
/// metrics.json (test accuracy; an image folder has no held-out split, so its accuracy is on the
/// training images). Returns the metrics, or null when `should_stop` ended training (nothing written).
/// `started` is told the data size and parameter count before training.
nlohmann::json train_classifier_run(const std::string& out, const ClassifierRunOptions& options,
                                    const std::function<void(const std::string&)>& started = {},
                                    const std::function<void(const ClassifierProgress&)>& progress = {},
                                    const std::function<bool()>& should_stop = {});

}  // namespace flowmatch
