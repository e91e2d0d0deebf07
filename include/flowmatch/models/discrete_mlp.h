#pragma once
/// \file
/// A posterior network for short token sequences (discrete flow matching, discrete_path.h): each of
/// the L tokens of x_t (B, L) int64 is embedded (ids < `input_vocabulary`, the mask token included),
/// the embeddings side by side go through an MLP with the time (mlp.h), and a linear read-out gives
/// the logits of p_θ(x₁ⁱ | x_t) over the V data tokens: (B, L, V). As flow_matching's 2-D discrete
/// notebook network (embeddings, SiLU MLP, read-out), with our MLP's time encodings.

#include <memory>

#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include "flowmatch/models/mlp.h"
#include "flowmatch/models/velocity_model.h"

namespace flowmatch::models {

struct DiscreteMLPOptions {
  DiscreteMLPOptions(int64_t vocabulary, int64_t length) : vocabulary_(vocabulary), input_vocabulary_(vocabulary), length_(length) {}
  /// V: the data tokens (the logits' width).
  TORCH_ARG(int64_t, vocabulary);
  /// Ids the network reads: V, or V + 1 with a mask token.
  TORCH_ARG(int64_t, input_vocabulary);
  /// L: tokens per sequence.
  TORCH_ARG(int64_t, length);
  /// Width of each token's embedding.
  TORCH_ARG(int64_t, embedding) = 64;
  /// The MLP over the L embeddings (its dim is set to L × embedding).
  TORCH_ARG(MLPOptions, mlp) = MLPOptions().width(128).depth(3).activation(Activation::SiLU);
};

class DiscreteMLPImpl : public VelocityModel {
 public:
  explicit DiscreteMLPImpl(DiscreteMLPOptions options);
  /// x: (B, L) token ids (int64, or floats holding them); t: (B) or 0-dim. Returns logits (B, L, V).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t) override;
  std::vector<int64_t> sample_shape() const override { return {options_.length()}; }
  nlohmann::json spec() const override;
  const DiscreteMLPOptions& options() const { return options_; }

 private:
  DiscreteMLPOptions options_;
  torch::nn::Embedding embedding_{nullptr};
  std::shared_ptr<MLPImpl> mlp_;
  torch::nn::Linear head_{nullptr};
};

/// The registration of "discrete-mlp": user options width, depth, activation, time-encoding,
/// time-features and embedding; the data give vocabulary and input_vocabulary.
ModelRegistration discrete_mlp_registration();

}  // namespace flowmatch::models
