#pragma once
/// \file
/// An E(n)-equivariant graph network (Satorras, Hoogeboom & Welling 2021) as the velocity of n
/// identical particles in R^d (equivariant flow matching, Klein, Krämer & Noé 2023). Node features
/// start from the time (t and sinusoidal features of it); each layer forms messages from both
/// nodes' features and their squared distance (optionally gated by an attention weight), moves each
/// particle along its differences to the others with a bounded weight (tanh times
/// `coordinate_range`, over ‖x_i − x_j‖ + 1, averaged over the neighbours) and updates the features
/// residually. The velocity is the total displacement with its mean removed. Rotating, translating
/// or permuting the input does the same to the output (translations: nothing); the output has zero
/// mean. A particle mask (Conditioning::mask, (B, n) bool) leaves out absent particles, so one
/// network serves systems of several sizes. Samples are (B, n·d), particle by particle.

#include <memory>
#include <vector>

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>

#include "flowmatch/models/velocity_model.h"

namespace flowmatch::models {

struct EGNNOptions {
  EGNNOptions(int64_t particles, int64_t particle_dim) : particles_(particles), particle_dim_(particle_dim) {}
  TORCH_ARG(int64_t, particles);
  TORCH_ARG(int64_t, particle_dim);
  /// Node feature and message width.
  TORCH_ARG(int64_t, width) = 64;
  /// Message-passing layers.
  TORCH_ARG(int64_t, depth) = 4;
  /// Gate each message by sigmoid(linear(message)).
  TORCH_ARG(bool, attention) = false;
  /// The bound of a pair's coordinate weight (tanh · range).
  TORCH_ARG(double, coordinate_range) = 15.0;
  /// Sinusoidal features of t beside t itself (even, ≥ 0; their frequencies reach 1000 per unit time,
  /// which makes the ODE stiff: 0 by default).
  TORCH_ARG(int64_t, time_features) = 0;
};

class EGNNImpl : public VelocityModel {
 public:
  explicit EGNNImpl(EGNNOptions options);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t) override;
  /// Reads `mask` ((B, n) bool, true where a particle exists); labels and contexts are refused.
  at::Tensor forward_with(const at::Tensor& x, const at::Tensor& t, const Conditioning& c) override;
  std::vector<int64_t> sample_shape() const override { return {options_.particles() * options_.particle_dim()}; }
  nlohmann::json spec() const override;
  const EGNNOptions& options() const { return options_; }

 private:
  at::Tensor run(const at::Tensor& x, const at::Tensor& t, const at::Tensor& mask);

  EGNNOptions options_;
  torch::nn::Linear embed_{nullptr};
  torch::nn::ModuleList edge1_, edge2_, gate_, node1_, node2_, coord1_, coord2_;
};

/// The registration of "egnn" (the particle count and dimension come from the data as the options
/// "particles" and "particle_dim"; user options width, depth (layers), attention, coordinate-range, time-features).
ModelRegistration egnn_registration();

}  // namespace flowmatch::models
