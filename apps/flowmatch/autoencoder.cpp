// flowmatch autoencoder train: the image autoencoder of latent runs (flowmatch/autoencoder.h).

#include <cstdio>
#include <iostream>

#include "common.h"
#include "flowmatch/autoencoder.h"

namespace fmcli {

namespace fm = flowmatch;

namespace {

struct AutoencoderFlags {
  CommonFlags common;
  std::string out;
  fm::AutoencoderRunOptions options;
  bool quiet = false;
};

int run_autoencoder_train(AutoencoderFlags& f) {
  f.options.device = apply_common_flags(f.common);
  f.options.seed = f.common.seed;
  if (!f.options.resume) ensure_new_output_folder(f.out);
  install_interrupt_handlers();
  const auto start = std::chrono::steady_clock::now();
  const json metrics = fm::train_autoencoder_run(
      f.out, f.options, [&](const std::string& line) { if (!f.quiet) std::cerr << line << "\n"; },
      [&](const fm::AutoencoderProgress& p) {
        if (f.quiet) return;
        const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), done = double(p.step) / p.steps;
        std::fprintf(stderr, "step %lld/%lld  reconstruction mse %.5f  kl %.1f  %.0f images/s  elapsed %s  left %s\n",
                     static_cast<long long>(p.step), static_cast<long long>(p.steps), p.reconstruction_mse, p.kl, p.images_per_s,
                     format_duration(elapsed).c_str(), format_duration(done > 0 ? elapsed * (1 - done) / done : 0).c_str());
      },
      [] { return interrupted(); });
  if (metrics.is_null()) {
    std::cerr << "interrupted: the training state is kept in " << f.out << "/training-state.ckpt (the same command with --resume continues)\n";
    return kExitInterrupted;
  }
  std::printf("%s reconstruction: mse %.5f, PSNR %.2f dB; latent shift %.4f, scale %.4f; wrote %s: autoencoder.ckpt, latents-train.ckpt, ...\n",
              metrics["held_out"].get<bool>() ? "test" : "training-set", metrics["test_reconstruction_mse"].get<double>(),
              metrics["test_psnr_db"].get<double>(), metrics["latent_shift"].get<double>(), metrics["latent_scale"].get<double>(), f.out.c_str());
  return kExitOk;
}

}  // namespace

Command register_autoencoder(CLI::App& root) {
  auto flags = std::make_shared<AutoencoderFlags>();
  AutoencoderFlags& f = *flags;
  fm::AutoencoderRunOptions& o = f.options;
  CLI::App* app = root.add_subcommand("autoencoder", "The image autoencoder whose latent space a run trains in ('train --autoencoder DIR')");
  app->require_subcommand(1, 1);
  CLI::App* train = app->add_subcommand("train", "Train a convolutional autoencoder (latent C x H/4 x W/4) on an image data set");
  train->add_option("--out", f.out, "folder to create: autoencoder.ckpt, config.json, metrics.json, latents-train.ckpt, reconstructions.png")->required();
  train->add_option("--data", o.data, "fashion-mnist or an image folder DIR/CLASS/*.png|jpg")->capture_default_str();
  train->add_option("--data-dir", o.data_dir, "where the Fashion-MNIST IDX files are")->capture_default_str();
  train->add_option("--image-channels", o.image_channels, "image folder: 1 (grey), 3 (RGB), 0 (as the first image)")
      ->check(CLI::IsMember({0, 1, 3}))->capture_default_str();
  train->add_option("--latent-channels", o.latent_channels, "channels of the latent (4: a 4x7x7 latent for 28x28 images)")
      ->check(positive_number())->capture_default_str();
  train->add_option("--channels", o.channels, "convolution channels at full resolution (twice as many below; a multiple of 8)")
      ->check(positive_number())->capture_default_str();
  train->add_option("--kl-weight", o.kl_weight, "weight of the KL term against the summed squared error (0: deterministic encoder)")
      ->check(non_negative_number())->capture_default_str();
  train->add_option("--steps", o.steps, "training steps")->check(positive_number())->capture_default_str();
  train->add_option("--batch", o.batch, "batch size")->check(positive_number())->capture_default_str();
  train->add_option("--lr", o.lr, "AdamW learning rate (cosine decay to 0)")->check(positive_number())->capture_default_str();
  train->add_flag("--resume", o.resume, "continue the training stopped in --out (its training-state.ckpt, written every 250 steps and on Ctrl-C); give the same flags");
  train->add_flag("--quiet", f.quiet, "no progress lines");
  add_common_flags(train, f.common);
  return {app, [flags] { return run_autoencoder_train(*flags); }};
}

}  // namespace fmcli
