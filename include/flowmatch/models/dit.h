#pragma once
/// \file
/// DiT (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers") as a velocity network for
/// images: the image is cut into p × p patches, each linearly embedded, with fixed 2-D sin-cos
/// positions; adaLN-Zero blocks (transformer.h's AdaLNBlock) conditioned on the time embedding plus
/// a class embedding (with a learned "no class" row for classifier-free guidance); the read-out
/// (adaLN, LayerNorm, linear to p·p·C values per patch) is zero-initialised, so the untrained
/// network outputs exactly zero. Samples are (B, C·H·W) or (B, C, H, W).

#include <memory>
#include <vector>

#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include "flowmatch/models/transformer.h"
#include "flowmatch/models/velocity_model.h"

namespace flowmatch::models {

/// (B, C, H, W) → (B, (H/p)(W/p), C·p·p): patches in row-major order, each flattened (channel, row, column).
at::Tensor patchify(const at::Tensor& images, int64_t patch);
/// The inverse of patchify for images of `channels` × `height` × `width`.
at::Tensor unpatchify(const at::Tensor& patches, int64_t channels, int64_t height, int64_t width, int64_t patch);
/// Fixed 2-D sin-cos positions (as MAE/DiT, row first: their code puts the column first) for a grid of
/// rows × columns: (rows·columns, width); the first half of each row encodes the row index, the second the column (each half: sin then cos of
/// position·10000^(−k/(width/4))). width divisible by 4.
at::Tensor sincos_positions_2d(int64_t rows, int64_t columns, int64_t width);

/// What the image transformers (DiT, MMDiT) share: checks of the image shape, the patch and the
/// blocks, each throwing std::invalid_argument that starts with `type` and names the bad value.
void check_image_transformer(const std::string& type, int64_t channels, int64_t height, int64_t image_width, int64_t patch,
                             int64_t width, int64_t heads, int64_t depth, int64_t mlp_ratio);
/// An image transformer's stored description: its options, with the integer image shape checked.
nlohmann::json image_transformer_options(const std::string& type, const nlohmann::json& spec);
/// The options every image transformer's description carries (image shape, patch, width, depth, heads,
/// mlp_ratio, num_classes), read into its Options (the defaults where absent) and written back.
template <class Options>
Options read_image_transformer_options(const std::string& type, const nlohmann::json& spec) {
  const nlohmann::json options = image_transformer_options(type, spec);
  Options o(options["channels"].get<int64_t>(), options["height"].get<int64_t>(), options["image_width"].get<int64_t>());
  try {
    o.patch(options.value("patch", o.patch()))
        .width(options.value("width", o.width()))
        .depth(options.value("depth", o.depth()))
        .heads(options.value("heads", o.heads()))
        .mlp_ratio(options.value("mlp_ratio", o.mlp_ratio()))
        .num_classes(options.value("num_classes", o.num_classes()));
  } catch (const nlohmann::json::exception& e) {
    throw std::invalid_argument(type + " options " + options.dump() + ": " + e.what());
  }
  return o;
}
template <class Options>
nlohmann::json image_transformer_spec(const Options& o) {
  return {{"channels", o.channels()}, {"height", o.height()}, {"image_width", o.image_width()}, {"patch", o.patch()},
          {"width", o.width()},       {"depth", o.depth()},   {"heads", o.heads()},             {"mlp_ratio", o.mlp_ratio()},
          {"num_classes", o.num_classes()}};
}
/// The description's image part from the data: channels, height, image_width, num_classes, and the
/// patch (2 when it divides the image, else 1) unless given; throws unless the samples are images.
void describe_image_transformer(const std::string& type, const std::vector<int64_t>& shape, int64_t classes, nlohmann::json& options);

/// The image side the image transformers (DiT, MMDiT) share: patches linearly embedded with fixed 2-D
/// positions, the time embedding (sinusoidal features of 1000·t, two layers), and the read-out (adaLN
/// from the conditioning, LayerNorm, linear to each patch's pixels) that starts at zero. Its layers are
/// registered in the owning network as patch_embedding, positions, time_in, time_out (`create_input`)
/// and final_norm, final_modulation, head (`create_output`).
struct ImagePatches {
  int64_t channels = 0, height = 0, image_width = 0, patch = 1;
  torch::nn::Linear patch_embedding{nullptr};
  at::Tensor positions;  // fixed (N, d), a buffer
  torch::nn::Linear time_in{nullptr}, time_out{nullptr};
  torch::nn::LayerNorm final_norm{nullptr};
  torch::nn::Linear final_modulation{nullptr}, head{nullptr};

  void create_input(torch::nn::Module& owner, int64_t channels, int64_t height, int64_t image_width, int64_t patch, int64_t width);
  void create_output(torch::nn::Module& owner, int64_t width);
  /// x (B, C·H·W) or (B, C, H, W) → patch tokens with positions (B, N, d); `type` names the network in
  /// the shape error.
  at::Tensor tokens(const at::Tensor& x, const char* type);
  /// The time embedding (B, d), before any SiLU.
  at::Tensor time_embedding(const at::Tensor& t, int64_t batch, const at::TensorOptions& options);
  /// Tokens h (B, N, d) and the conditioning c (B, d) back to pixels, shaped like x.
  at::Tensor read_out(const at::Tensor& h, const at::Tensor& c, const at::Tensor& x);
};

struct DiTOptions {
  DiTOptions(int64_t channels, int64_t height, int64_t width) : channels_(channels), height_(height), image_width_(width) {}
  TORCH_ARG(int64_t, channels);
  TORCH_ARG(int64_t, height);
  TORCH_ARG(int64_t, image_width);
  /// p: patch side, dividing height and width.
  TORCH_ARG(int64_t, patch) = 2;
  /// Model width d (divisible by 4 for the 2-D positions, and by heads).
  TORCH_ARG(int64_t, width) = 256;
  TORCH_ARG(int64_t, depth) = 6;
  TORCH_ARG(int64_t, heads) = 4;
  TORCH_ARG(int64_t, mlp_ratio) = 4;
  /// > 0: class-conditional with this many classes (and the "no class" label kNullLabel).
  TORCH_ARG(int64_t, num_classes) = 0;
};

class DiTImpl : public VelocityModel {
 public:
  explicit DiTImpl(DiTOptions options);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t) override;
  at::Tensor forward_conditional(const at::Tensor& x, const at::Tensor& t, const at::Tensor& labels) override;
  int64_t num_classes() const override { return options_.num_classes(); }
  std::vector<int64_t> sample_shape() const override { return {options_.channels(), options_.height(), options_.image_width()}; }
  nlohmann::json spec() const override;
  const DiTOptions& options() const { return options_; }

 private:
  at::Tensor run(const at::Tensor& x, const at::Tensor& t, const at::Tensor& labels);

  DiTOptions options_;
  ImagePatches image_;
  torch::nn::Embedding class_embedding_{nullptr};
  std::vector<AdaLNBlock> blocks_;
};

/// The registration of "dit": user options width, depth, heads, mlp_ratio, patch (default 2 when it
/// divides the image, else 1); the data give the image shape and the classes.
ModelRegistration dit_registration();

}  // namespace flowmatch::models
