// flowmatch classifier train: the small CNN that evaluates image runs (flowmatch eval) without
// Inception weights. Saved like a run: DIR/config.json, DIR/classifier.ckpt, DIR/metrics.json.

#include <cstdio>
#include <filesystem>
#include <iostream>

#include <ATen/ATen.h>

#include "common.h"
#include "flowmatch/classifier.h"
#include "flowmatch/data/idx.h"

namespace fmcli {

namespace fm = flowmatch;
namespace fs = std::filesystem;

namespace {

struct ClassifierFlags {
  CommonFlags common;
  std::string out, data = "fashion-mnist", data_dir = fm::data::kFashionMnistDir;
  int64_t epochs = 10, batch = 128, width = 32, image_channels = 0;
  double lr = 1e-3;
  bool quiet = false;
};

int run_classifier_train(ClassifierFlags& f) {
  const c10::Device device = apply_common_flags(f.common);
  ensure_new_output_folder(f.out);
  fm::data::ImageDataset train, test;
  json data_spec;
  try {
    if (f.data == "fashion-mnist") {
      train = fm::data::fashion_mnist_dataset("train", f.data_dir);
      test = fm::data::fashion_mnist_dataset("test", f.data_dir);
      data_spec = {{"target", "fashion-mnist"}, {"data_dir", fs::absolute(f.data_dir).string()}};
    } else {
      train = fm::data::load_image_folder(f.data, f.image_channels);
      test = train;  // an image folder has no held-out split: the accuracy below is on the training images
      data_spec = {{"target", "image-folder"}, {"folder", fs::absolute(f.data).string()}};
    }
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("--data ") + f.data + ": " + e.what());
  }
  if (train.height() != train.width()) throw UsageError("--data: the classifier needs square images");
  data_spec["image_shape"] = {train.channels(), train.height(), train.width()};
  data_spec["num_classes"] = static_cast<int64_t>(train.class_names.size());
  data_spec["class_names"] = train.class_names;
  at::manual_seed(f.common.seed);
  fm::ImageClassifier classifier(fm::ImageClassifierOptions(train.channels(), train.height(), static_cast<int64_t>(train.class_names.size()))
                                     .width(f.width));
  classifier->to(device);
  const auto options = fm::ClassifierTrainingOptions().epochs(f.epochs).batch_size(f.batch).lr(f.lr).seed(f.common.seed);
  if (!f.quiet) {
    std::cerr << "training a classifier on " << train.images.size(0) << " images (" << train.class_names.size() << " classes), "
              << fm::models::parameter_count(*classifier) << " parameters, " << at::get_num_threads() << " thread(s), " << f.epochs
              << " epochs of batch " << f.batch << "\n";
  }
  install_interrupt_handlers();
  const auto start = std::chrono::steady_clock::now();
  const bool finished = fm::train_image_classifier(
      *classifier, train, options,
      [&](const fm::ClassifierProgress& p) {
        if (f.quiet) return;
        const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        const double done = static_cast<double>((p.epoch - 1) * p.steps_per_epoch + p.step) / static_cast<double>(p.epochs * p.steps_per_epoch);
        std::fprintf(stderr, "epoch %lld/%lld  step %lld/%lld  loss %.4f  %.0f images/s  elapsed %s  left %s\n",
                     static_cast<long long>(p.epoch), static_cast<long long>(p.epochs), static_cast<long long>(p.step),
                     static_cast<long long>(p.steps_per_epoch), p.loss, p.images_per_s, format_duration(elapsed).c_str(),
                     format_duration(done > 0 ? elapsed * (1 - done) / done : 0).c_str());
      },
      [] { return interrupted(); });
  if (!finished) {
    std::cerr << "interrupted: nothing written (the classifier trains in minutes; run the command again)\n";
    return kExitInterrupted;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  at::Tensor test_x = fm::data::pixels_to_unit_range(test.images);
  const double accuracy = fm::classifier_accuracy(*classifier, test_x, test.labels);
  json metrics = {{"test_accuracy", accuracy},
                  {"test_images", test.images.size(0)},
                  {"held_out", f.data == "fashion-mnist"},
                  {"train_seconds", seconds},
                  {"train_images_per_s", static_cast<double>(train.images.size(0) * f.epochs) / seconds},
                  {"parameters", fm::models::parameter_count(*classifier)}};
  json config = {{"flowmatch_version", FLOWMATCH_VERSION},
                 {"kind", "image_classifier"},
                 {"data", data_spec},
                 {"model", fm::to_json(classifier->options)},
                 {"training", {{"epochs", f.epochs}, {"batch", f.batch}, {"lr", f.lr}, {"seed", f.common.seed}}}};
  fs::create_directories(f.out);
  fm::save_image_classifier(f.out + "/classifier.ckpt", *classifier, {{"test_accuracy", accuracy}, {"data", data_spec}});
  write_json_atomic(f.out + "/config.json", config);
  write_json_atomic(f.out + "/metrics.json", metrics);
  char line[200];
  std::snprintf(line, sizeof line, "%s accuracy %.2f%% on %lld images; trained in %s; wrote %s/classifier.ckpt, config.json, metrics.json\n",
                f.data == "fashion-mnist" ? "test" : "training-set", 100 * accuracy, static_cast<long long>(test.images.size(0)),
                format_duration(seconds).c_str(), f.out.c_str());
  std::cout << line;
  return kExitOk;
}

}  // namespace

Command register_classifier(CLI::App& root) {
  auto flags = std::make_shared<ClassifierFlags>();
  ClassifierFlags& f = *flags;
  CLI::App* app = root.add_subcommand("classifier", "The image classifier that 'flowmatch eval' uses on image runs");
  app->require_subcommand(1, 1);
  CLI::App* train = app->add_subcommand("train", "Train the evaluation classifier (a small CNN) on an image data set");
  train->add_option("--out", f.out, "folder to create: classifier.ckpt, config.json, metrics.json (test accuracy)")->required();
  train->add_option("--data", f.data, "fashion-mnist or an image folder DIR/CLASS/*.png|jpg")->capture_default_str();
  train->add_option("--data-dir", f.data_dir, "where the Fashion-MNIST IDX files are")->capture_default_str();
  train->add_option("--image-channels", f.image_channels, "image folder: 1 (grey), 3 (RGB), 0 (as the first image)")
      ->check(CLI::IsMember({0, 1, 3}))->capture_default_str();
  train->add_option("--epochs", f.epochs, "passes over the training images")->check(CLI::PositiveNumber)->capture_default_str();
  train->add_option("--batch", f.batch, "batch size")->check(CLI::PositiveNumber)->capture_default_str();
  train->add_option("--lr", f.lr, "AdamW learning rate (cosine decay to 0)")->check(CLI::PositiveNumber)->capture_default_str();
  train->add_option("--width", f.width, "channels of the first convolutions")->check(CLI::PositiveNumber)->capture_default_str();
  train->add_flag("--quiet", f.quiet, "no progress lines");
  add_common_flags(train, f.common);
  return {app, [flags] { return run_classifier_train(*flags); }};
}

}  // namespace fmcli
