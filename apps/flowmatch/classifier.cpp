// flowmatch classifier train: the evaluation classifier for image runs (flowmatch/classifier.h).

#include <cstdio>
#include <iostream>

#include "common.h"
#include "flowmatch/classifier.h"

namespace fmcli {

namespace fm = flowmatch;

namespace {

struct ClassifierFlags {
  CommonFlags common;
  std::string out;
  fm::ClassifierRunOptions options;
  bool quiet = false;
};

int run_classifier_train(ClassifierFlags& f) {
  f.options.device = apply_common_flags(f.common);
  f.options.seed = f.common.seed;
  ensure_new_output_folder(f.out);
  install_interrupt_handlers();
  const auto start = std::chrono::steady_clock::now();
  const json metrics = fm::train_classifier_run(
      f.out, f.options, [&](const std::string& line) { if (!f.quiet) std::cerr << line << "\n"; },
      [&](const fm::ClassifierProgress& p) {
        if (f.quiet) return;
        const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        const double done = static_cast<double>((p.epoch - 1) * p.steps_per_epoch + p.step) / static_cast<double>(p.epochs * p.steps_per_epoch);
        std::fprintf(stderr, "epoch %lld/%lld  step %lld/%lld  loss %.4f  %.0f images/s  elapsed %s  left %s\n", static_cast<long long>(p.epoch),
                     static_cast<long long>(p.epochs), static_cast<long long>(p.step), static_cast<long long>(p.steps_per_epoch), p.loss,
                     p.images_per_s, format_duration(elapsed).c_str(), format_duration(done > 0 ? elapsed * (1 - done) / done : 0).c_str());
      },
      [] { return interrupted(); });
  if (metrics.is_null()) {
    std::cerr << "interrupted: nothing written (the classifier trains in minutes; run the command again)\n";
    return kExitInterrupted;
  }
  std::printf("%s accuracy %.2f%% on %lld images; trained in %s; wrote %s/classifier.ckpt, config.json, metrics.json\n",
              metrics["held_out"].get<bool>() ? "test" : "training-set", 100 * metrics["test_accuracy"].get<double>(),
              static_cast<long long>(metrics["test_images"].get<int64_t>()), format_duration(metrics["train_seconds"].get<double>()).c_str(),
              f.out.c_str());
  return kExitOk;
}

}  // namespace

Command register_classifier(CLI::App& root) {
  auto flags = std::make_shared<ClassifierFlags>();
  ClassifierFlags& f = *flags;
  fm::ClassifierRunOptions& o = f.options;
  CLI::App* app = root.add_subcommand("classifier", "The image classifier that 'flowmatch eval' uses on image runs");
  app->require_subcommand(1, 1);
  CLI::App* train = app->add_subcommand("train", "Train the evaluation classifier (a small CNN) on an image data set");
  train->add_option("--out", f.out, "folder to create: classifier.ckpt, config.json, metrics.json (test accuracy)")->required();
  train->add_option("--data", o.data, "fashion-mnist or an image folder DIR/CLASS/*.png|jpg")->capture_default_str();
  train->add_option("--data-dir", o.data_dir, "where the Fashion-MNIST IDX files are")->capture_default_str();
  train->add_option("--image-channels", o.image_channels, "image folder: 1 (grey), 3 (RGB), 0 (as the first image)")
      ->check(CLI::IsMember({0, 1, 3}))->capture_default_str();
  train->add_option("--epochs", o.epochs, "passes over the training images")->check(positive_number())->capture_default_str();
  train->add_option("--batch", o.batch, "batch size")->check(positive_number())->capture_default_str();
  train->add_option("--lr", o.lr, "AdamW learning rate (cosine decay to 0)")->check(positive_number())->capture_default_str();
  train->add_option("--width", o.width, "channels of the first convolutions")->check(positive_number())->capture_default_str();
  train->add_flag("--quiet", f.quiet, "no progress lines");
  add_common_flags(train, f.common);
  return {app, [flags] { return run_classifier_train(*flags); }};
}

}  // namespace fmcli
