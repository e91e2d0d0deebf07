#pragma once
/// \file
/// A U-Net velocity network for images (Ho et al.'s DDPM layout, sized for small images):
/// residual blocks with GroupNorm and the time (and class) embedding added inside each block,
/// strided-convolution downsampling, nearest-neighbour upsampling, skip connections, and
/// multi-head self-attention at the lowest resolution.

#include <vector>

#include <torch/arg.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include "flowmatch/models/velocity_model.h"

namespace flowmatch::models {

/// Options for `UNet`.
///
/// Example (the Fashion-MNIST default):
/// ```
/// UNet net(UNetOptions(1, 28).base_channels(32).channel_multipliers({1, 2, 2}).num_classes(10));
/// ```
struct UNetOptions {
  UNetOptions(int64_t in_channels = 1, int64_t image_size = 28) : in_channels_(in_channels), image_size_(image_size) {}
  /// Image channels C (1 for grey, 3 for RGB).
  TORCH_ARG(int64_t, in_channels);
  /// Height = width of the (square) images; divisible by 2^(levels − 1).
  TORCH_ARG(int64_t, image_size);
  /// Channels at the first level; level k has base_channels · channel_multipliers[k].
  TORCH_ARG(int64_t, base_channels) = 32;
  /// One entry per resolution level (the resolution halves between levels).
  TORCH_ARG(std::vector<int64_t>, channel_multipliers) = std::vector<int64_t>{1, 2, 2};
  /// Residual blocks per level on the way down (the way up has one more, for the extra skip).
  TORCH_ARG(int64_t, blocks_per_level) = 1;
  /// Self-attention at the lowest resolution (after each block of that level and in the middle).
  TORCH_ARG(bool, attention) = true;
  TORCH_ARG(int64_t, attention_heads) = 4;
  TORCH_ARG(double, dropout) = 0.0;
  /// Number of classes for class conditioning (0: unconditional). A conditional network has one
  /// more embedding row, the learned "no class" entry used for label `kNullLabel`.
  TORCH_ARG(int64_t, num_classes) = 0;
  /// Groups of every GroupNorm (divides every level's channel count).
  TORCH_ARG(int64_t, groups) = 8;
};

nlohmann::json to_json(const UNetOptions& options);
/// Throws std::invalid_argument naming the bad field.
UNetOptions unet_options_from_json(const nlohmann::json& j);

/// A residual block: x + conv(act(norm(conv(act(norm(x))) + proj(embedding)))), with a 1×1
/// convolution on the skip when the channel count changes.
class ResidualBlockImpl : public torch::nn::Module {
 public:
  ResidualBlockImpl(int64_t in_channels, int64_t out_channels, int64_t embedding_dim, int64_t groups, double dropout);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& embedding);

 private:
  torch::nn::GroupNorm norm1_{nullptr}, norm2_{nullptr};
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, skip_{nullptr};
  torch::nn::Linear embedding_projection_{nullptr};
  double dropout_;
};
TORCH_MODULE(ResidualBlock);

/// Multi-head self-attention over the pixels of a feature map, with a residual connection.
class SelfAttentionImpl : public torch::nn::Module {
 public:
  SelfAttentionImpl(int64_t channels, int64_t heads, int64_t groups);
  at::Tensor forward(const at::Tensor& x);

 private:
  torch::nn::GroupNorm norm_{nullptr};
  torch::nn::Conv2d qkv_{nullptr}, projection_{nullptr};
  int64_t heads_;
};
TORCH_MODULE(SelfAttention);

/// v(x, t[, class]) for images. `x` is (B, C, H, W) or flattened (B, C·H·W); the output has the
/// shape of `x`. Times are embedded sinusoidally (of 1000·t) and passed through a two-layer MLP;
/// a class embedding is added to it when the network is conditional.
class UNetImpl : public VelocityModel {
 public:
  explicit UNetImpl(UNetOptions options = UNetOptions());
  /// Unconditional velocity; for a conditional network this is the "no class" velocity.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t) override;
  at::Tensor forward_conditional(const at::Tensor& x, const at::Tensor& t, const at::Tensor& labels) override;
  int64_t num_classes() const override { return options.num_classes(); }
  std::vector<int64_t> sample_shape() const override {
    return {options.in_channels() * options.image_size() * options.image_size()};
  }
  nlohmann::json spec() const override;
  UNetOptions options;

 private:
  at::Tensor run(const at::Tensor& x, const at::Tensor& t, const at::Tensor& labels);
  torch::nn::Conv2d input_{nullptr}, output_{nullptr};
  torch::nn::GroupNorm output_norm_{nullptr};
  torch::nn::Linear time_hidden_{nullptr}, time_output_{nullptr};
  torch::nn::Embedding class_embedding_{nullptr};
  torch::nn::ModuleList down_blocks_{nullptr}, down_attention_{nullptr}, downsamples_{nullptr};
  torch::nn::ModuleList middle_{nullptr};
  torch::nn::ModuleList up_blocks_{nullptr}, up_attention_{nullptr}, upsamples_{nullptr};
  at::Tensor frequencies_;
};
TORCH_MODULE(UNet);

}  // namespace flowmatch::models
