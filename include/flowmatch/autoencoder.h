#pragma once
/// \file
/// The image autoencoder of latent flow matching (Rombach et al. 2022's latent diffusion, as Stable
/// Diffusion 3 and Flux use one): a convolutional encoder from C×H×W images to a latent of
/// `latent_channels`×(H/4)×(W/4) (4×7×7 for Fashion-MNIST), a mirrored decoder, and with a KL weight a
/// diagonal Gaussian posterior regularised towards N(0, I). A flow is trained on the training set's
/// latents normalised as SD3 does, z' = (z − shift)·scale with one shift and one scale from the
/// training set, and its samples are decoded into images (`LatentAutoencoder`).

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>
#include <c10/core/Device.h>
#include <nlohmann/json.hpp>

#include "flowmatch/data/images.h"

namespace flowmatch {

/// Options for `Autoencoder`.
struct AutoencoderOptions {
  AutoencoderOptions(int64_t in_channels = 1, int64_t height = 28, int64_t width = 28)
      : in_channels_(in_channels), height_(height), width_(width) {}
  TORCH_ARG(int64_t, in_channels);
  /// Image height and width, each divisible by 4 (two stride-2 stages).
  TORCH_ARG(int64_t, height);
  TORCH_ARG(int64_t, width);
  TORCH_ARG(int64_t, latent_channels) = 4;
  /// Channels at full resolution; the two lower resolutions have twice as many. A multiple of 8
  /// (GroupNorm of 8 groups).
  TORCH_ARG(int64_t, channels) = 32;
  /// Weight of KL(q(z|x) ‖ N(0, I)) against the reconstruction's squared error (both summed per image);
  /// 0: a deterministic encoder (no posterior variance).
  TORCH_ARG(double, kl_weight) = 1e-6;
};

nlohmann::json to_json(const AutoencoderOptions& options);
/// std::invalid_argument naming the bad value.
AutoencoderOptions autoencoder_options_from_json(const nlohmann::json& j);

/// The diagonal Gaussian posterior q(z | x) (std = 0 for a deterministic encoder).
struct LatentPosterior {
  at::Tensor mean;  ///< (B, latent_channels, H/4, W/4)
  at::Tensor std;   ///< same shape; zeros when kl_weight is 0
  /// KL(q ‖ N(0, I)) summed over each image's latent, (B) (std > 0: a KL-weighted encoder's).
  at::Tensor kl() const;
};

/// Encoder: conv 3×3 → SiLU → conv 3×3 stride 2 (2×channels) → residual block → conv 3×3 stride 2 →
/// residual block → GroupNorm → SiLU → conv 3×3 to the latent's mean (and log-variance with a KL weight).
/// Decoder: conv 3×3 → residual block → transposed conv 2×2 stride 2 → residual block → transposed conv
/// 2×2 stride 2 (channels) → GroupNorm → SiLU → conv 3×3 to the image. Residual blocks are GroupNorm →
/// SiLU → conv 3×3, twice, plus the input. Images in [−1, 1], (B, C, H, W) or flattened (B, C·H·W).
class AutoencoderImpl : public torch::nn::Module {
 public:
  explicit AutoencoderImpl(AutoencoderOptions options = AutoencoderOptions());
  LatentPosterior encode(const at::Tensor& images);
  /// Latents (B, latent_channels, H/4, W/4) or flattened to images (B, C, H, W).
  at::Tensor decode(const at::Tensor& latents);
  /// The latent's shape {latent_channels, H/4, W/4}.
  std::vector<int64_t> latent_shape() const;
  AutoencoderOptions options;

 private:
  torch::nn::Sequential encoder_{nullptr}, decoder_{nullptr};
};
TORCH_MODULE(Autoencoder);

struct AutoencoderTrainingOptions {
  TORCH_ARG(int64_t, steps) = 3000;
  TORCH_ARG(int64_t, batch_size) = 64;
  TORCH_ARG(double, lr) = 1e-3;
  TORCH_ARG(uint64_t, seed) = 0;
  /// A checkpoint of the training state (weights, AdamW's moments, the step, the generator), written
  /// every `state_every` steps and when stopped; when the file exists, training continues from it (the
  /// result is the same as without the stop), after checking it was made with these options and this
  /// architecture. Empty: none.
  TORCH_ARG(std::string, state_file) = "";
  TORCH_ARG(int64_t, state_every) = 250;
};

struct AutoencoderProgress {
  int64_t step = 0, steps = 0;
  double reconstruction_mse = 0;  ///< mean squared error per pixel since the last report
  double kl = 0;                  ///< mean KL per image since the last report
  double images_per_s = 0;
};

/// Trains with AdamW, a cosine learning-rate decay and gradient clipping at norm 1 on (dequantized)
/// images of `data` in [−1, 1]: loss = per-image summed squared error + kl_weight · per-image KL, with
/// z drawn from the posterior (the reparameterisation). `progress` is called every 50 steps and at the
/// end; `should_stop` returning true stops training (the weights so far kept, and the state written
/// when `options.state_file` is set) and false is returned.
bool train_autoencoder(AutoencoderImpl& autoencoder, const data::ImageDataset& data, const AutoencoderTrainingOptions& options,
                       const std::function<void(const AutoencoderProgress&)>& progress = {},
                       const std::function<bool()>& should_stop = {});

/// The posterior means and standard deviations of `images` (uint8 (N, C, H, W)) in batches, on the CPU.
LatentPosterior encode_images(AutoencoderImpl& autoencoder, const at::Tensor& images, int64_t batch_size = 500);

/// A trained autoencoder with its latent normalisation: what a latent run samples through.
struct LatentAutoencoder {
  std::shared_ptr<AutoencoderImpl> network;
  double shift = 0, scale = 1;  ///< z' = (z − shift) · scale
  std::string dir;              ///< its folder
  std::string id;               ///< drawn when it was trained: a run checks it is decoded by its own autoencoder
  /// Images in [−1, 1] (B, C·H·W) → normalised latents (B, latent size) (posterior means).
  at::Tensor encode(const at::Tensor& images) const;
  /// Normalised latents (B, latent size) → images in [−1, 1] (B, C·H·W), in batches of 500.
  at::Tensor decode(const at::Tensor& latents) const;
};

/// The description a run keeps of an autoencoder folder (dir, id, image and latent shapes, shift,
/// scale, KL weight, the images it was trained on): std::invalid_argument when `dir` holds none.
nlohmann::json describe_autoencoder(const std::string& dir);
/// Loads the autoencoder in `description["dir"]` onto `device`; std::runtime_error naming the folder
/// when it is missing, damaged, or not the one described (another id).
LatentAutoencoder load_latent_autoencoder(const nlohmann::json& description, const c10::Device& device = c10::kCPU);
/// The training set's posterior (N, latent shape) kept by `flowmatch autoencoder train`
/// (DIR/latents-train.ckpt); an undefined mean when it is absent or was made from other images
/// (`images` training images expected).
LatentPosterior stored_training_latents(const std::string& dir, int64_t images);

/// What `train_autoencoder_run` trains on and how.
struct AutoencoderRunOptions {
  std::string data = "fashion-mnist";  ///< or an image folder DIR/CLASS/*.png|jpg
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  int64_t image_channels = 0;
  int64_t latent_channels = 4, channels = 32;
  double kl_weight = 1e-6;
  int64_t steps = 3000, batch = 64;
  double lr = 1e-3;
  uint64_t seed = 0;
  c10::Device device = c10::kCPU;
  /// Continue the training stopped in `out` (OUT/training-state.ckpt) instead of starting one.
  bool resume = false;
};
/// Trains an autoencoder on `options.data` and writes OUT/autoencoder.ckpt, config.json (options,
/// latent shift and scale from the training set), metrics.json (test reconstruction error and PSNR),
/// latents-train.ckpt (the training set's posterior, read by latent runs) and reconstructions.png
/// (test images above their reconstructions). Returns the metrics, or null when `should_stop` ended
/// training: then OUT holds only training-state.ckpt, which `options.resume` continues from (the
/// state is also written every 250 steps, so a killed run loses at most that much). `started` is told
/// the data size and parameter count.
nlohmann::json train_autoencoder_run(const std::string& out, const AutoencoderRunOptions& options,
                                     const std::function<void(const std::string&)>& started = {},
                                     const std::function<void(const AutoencoderProgress&)>& progress = {},
                                     const std::function<bool()>& should_stop = {});

}  // namespace flowmatch
